"""Builds the keras example's model with Keras (TensorFlow): dense_input [784] → Dense(10) →
softmax named activation_2, with the pytorch example's ten digit templates as weights (digit k is a
bright band at rows 2k+4..2k+5), saved as model.keras. clearml-serving's example trains a network
on MNIST; this one needs no dataset and still tells the example's images apart.

Usage: python make_model.py --out DIR   → DIR/model.keras (run it with an interpreter that has
tensorflow-cpu, e.g. the service environment serval builds for `--extra-python-packages`)
"""

import argparse
import os

import numpy as np


def templates():
    weights = np.zeros((784, 10), dtype=np.float32)
    for digit in range(10):
        image = np.zeros((28, 28), dtype=np.float32)
        image[2 * digit + 4 : 2 * digit + 6, 4:24] = 1.0
        weights[:, digit] = image.flatten()
    return (weights - weights.mean(axis=1, keepdims=True)) / 255.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    out = parser.parse_args().out
    os.makedirs(out, exist_ok=True)
    import keras

    inputs = keras.Input(shape=(784,), name="dense_input")
    logits = keras.layers.Dense(10, name="dense")(inputs)
    outputs = keras.layers.Activation("softmax", name="activation_2")(logits)
    model = keras.Model(inputs, outputs)
    model.get_layer("dense").set_weights([templates(), np.zeros(10, dtype=np.float32)])
    path = os.path.join(out, "model.keras")
    model.save(path)
    print(path)


if __name__ == "__main__":
    main()
