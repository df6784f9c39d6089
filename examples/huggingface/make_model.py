"""Builds the huggingface example's files with no download: a word-level tokenizer (the
`tokenizers`/`transformers` formats, saved with the endpoint code) and a tiny ONNX text classifier
saved as `model.bin`, with the three int32 inputs of a BERT-style model.

The classifier: logits = sum over the text's tokens (attention_mask) of a per-word score — each
positive word adds [0, 2], each negative word [2, 0], others nothing. clearml-serving's example
serves a TensorRT plan of a fine-tuned MiniLM through Triton; serval runs this ONNX model natively
(the file's content says what it is, whatever its name).

Usage: python make_model.py --out DIR   → DIR/model.bin, DIR/preprocess/ (the code + tokenizer)
"""

import argparse
import os
import shutil

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

POSITIVE = ["good", "great", "love", "excellent", "happy", "fun"]
NEGATIVE = ["bad", "terrible", "hate", "awful", "sad", "boring"]
OTHER = ["i", "this", "is", "a", "an", "the", "movie", "example", "to", "show", "how", "clearml",
         "triton", "binaries", "are", "deployed", "it", "was", "not"]


def vocabulary():
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + POSITIVE + NEGATIVE + OTHER
    return {w: i for i, w in enumerate(words)}


def build_model(vocab):
    scores = np.zeros((len(vocab), 2), dtype=np.float32)
    for w in POSITIVE:
        scores[vocab[w]] = [0.0, 2.0]
    for w in NEGATIVE:
        scores[vocab[w]] = [2.0, 0.0]
    names = ["input_ids", "token_type_ids", "attention_mask"]
    nodes = [
        helper.make_node("Gather", ["scores", "input_ids"], ["word"]),
        helper.make_node("Gather", ["segments", "token_type_ids"], ["segment"]),
        helper.make_node("Add", ["word", "segment"], ["token"]),
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask", "last"], ["mask3"]),
        helper.make_node("Mul", ["token", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "tokens_axis"], ["output"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_text_classifier",
        [helper.make_tensor_value_info(n, TensorProto.INT32, [None, None]) for n in names],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 2])],
        initializer=[
            numpy_helper.from_array(scores, "scores"),
            numpy_helper.from_array(np.zeros((2, 2), dtype=np.float32), "segments"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "last"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "tokens_axis"),
        ],
    )
    model = helper.make_model(graph, producer_name="serval-example", opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def save_tokenizer(vocab, folder):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    fast.save_pretrained(folder)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    out = parser.parse_args().out
    vocab = vocabulary()
    code = os.path.join(out, "preprocess")
    os.makedirs(code, exist_ok=True)
    onnx.save(build_model(vocab), os.path.join(out, "model.bin"))
    save_tokenizer(vocab, code)
    here = os.path.dirname(os.path.abspath(__file__))
    shutil.copy(os.path.join(here, "preprocess.py"), os.path.join(code, "__init__.py"))
    print(os.path.join(out, "model.bin"))


if __name__ == "__main__":
    main()
