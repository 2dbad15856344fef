"""Benchmark peer: the seed's own Keras code (Keras 3, any backend). Standalone: it imports keras and
NumPy only, so it runs in a separate environment where Keras is installed:

    KERAS_BACKEND=tensorflow /path/to/keras-env/bin/python convnet/cli/peers/keras_peer.py \\
        --batch-size 128 --steps 20 --data DIR

It trains on `warmup` batches first (Keras traces its graph then), times `steps` more, and prints one
JSON line with images per second for training and for predict.
"""
import argparse
import json
import os
import time
from typing import Any

import numpy as np


def seed_model(keras: Any) -> Any:
    """The seed's CNN, exactly as the seed's Keras code builds it (also used by tests/test_keras_compat.py)."""
    return keras.models.Sequential([
        keras.Input(shape=[28, 28, 1]),
        keras.layers.Conv2D(64, 7, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(128, 3, activation="relu", padding="same"),
        keras.layers.Conv2D(128, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(256, 3, activation="relu", padding="same"),
        keras.layers.Conv2D(256, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(10, activation="softmax")])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--data", required=True)
    args = parser.parse_args()
    import keras
    keras.utils.set_random_seed(0)
    x = np.load(os.path.join(args.data, "x_train.npy")).astype("float32")[..., None] / 255
    y = np.load(os.path.join(args.data, "y_train.npy"))
    x_test = np.load(os.path.join(args.data, "x_test.npy")).astype("float32")[..., None] / 255
    model = seed_model(keras)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="nadam", metrics=["accuracy"])
    bs = args.batch_size
    model.fit(x[:args.warmup * bs], y[:args.warmup * bs], batch_size=bs, epochs=1, verbose=0)
    timed = args.steps * bs
    start = time.perf_counter()
    model.fit(x[:timed], y[:timed], batch_size=bs, epochs=1, verbose=0)
    train_seconds = time.perf_counter() - start
    model.predict(x_test[:2000], batch_size=1000, verbose=0)
    start = time.perf_counter()
    model.predict(x_test, batch_size=1000, verbose=0)
    predict_seconds = time.perf_counter() - start
    print(json.dumps({"train_img_s": timed / train_seconds, "predict_img_s": len(x_test) / predict_seconds,
                      "backend": keras.backend.backend(), "keras": keras.__version__}))


if __name__ == "__main__":
    main()
