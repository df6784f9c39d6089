"""The huggingface example's endpoint code, written from clearml-serving's documented behaviour:
{"text": ...} → the tokenizer → three int32 arrays (input_ids, token_type_ids, attention_mask), the
model's inputs in --input-name order → {"data": logits}. clearml's file downloads its tokenizer
from the Hugging Face hub; this one loads the tokenizer saved beside it (make_model.py writes it),
so nothing is downloaded."""

import os

import numpy as np
from transformers import AutoTokenizer


class Preprocess(object):
    def __init__(self):
        self.tokenizer = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(__file__)))

    def preprocess(self, body, state, collect_custom_statistics_fn=None):
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            raise ValueError('send {"text": "..."}')
        tokens = self.tokenizer(body["text"], return_tensors="np")
        return [
            tokens["input_ids"].astype(np.int32),
            tokens["token_type_ids"].astype(np.int32),
            tokens["attention_mask"].astype(np.int32),
        ]

    def postprocess(self, data, state, collect_custom_statistics_fn=None):
        # `data` is the "output" tensor: one row of two logits (negative, positive) per text.
        return {"data": data.tolist()}
