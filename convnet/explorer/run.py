"""A run folder as the explorer shows it: the training curves (history.json), the test metrics (metrics.json),
the settings (config.json), and the run's test images, classified again for the confusion matrix and the most
confident mistakes.

The test images are loaded as the run loaded them (`runs.load_split` with the run's config, which `convnet
report` uses too), at most `test_limit` of them, once, when the explorer starts: the page's requests never
wait for a dataset to load.
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
from typing import Any

import numpy as np

from convnet._internal.checks import check_int

__all__ = ["RunData", "load_run", "RUN_FILES", "MAX_TEST_IMAGES", "MAX_MISTAKES"]

RUN_FILES = ("model.convnet", "history.json", "metrics.json", "config.json")  # what `convnet train` writes
MAX_TEST_IMAGES = 2000  # test images classified for the confusion matrix unless told otherwise
MAX_MISTAKES = 24  # the most confident mistakes listed


@dataclasses.dataclass
class RunData:
    """What a run folder holds, and its test images classified by the run's model."""

    folder: str
    history: dict[str, list[float]] | None  # history.json, None when missing
    metrics: dict[str, Any] | None  # metrics.json (None for a run that did not finish)
    config: dict[str, Any] | None  # config.json
    missing: list[str]  # the run files that are not there, or could not be read (with why)
    images: np.ndarray | None = None  # uint8 (N, H, W, C) test images, None when the dataset is not available
    labels: np.ndarray | None = None  # int64 (N,)
    probabilities: np.ndarray | None = None  # float32 (N, K), the model's outputs for `images`
    dataset_error: str | None = None  # why there are no test images

    def summary(self, class_names: list[str]) -> dict[str, Any]:
        """GET /api/run: curves, metrics, settings, confusion matrix and the most confident mistakes."""
        from convnet.inspection.viz import confusion_matrix
        answer: dict[str, Any] = {"folder": os.path.basename(os.path.normpath(self.folder)),
                                  "history": self.history, "metrics": self.metrics, "config": self.config,
                                  "missing": self.missing, "class_names": class_names,
                                  "test_images": 0, "dataset_error": self.dataset_error, "accuracy": None, "confusion": None,
                                  "mistakes": []}
        if self.images is None or self.labels is None or self.probabilities is None:
            return answer
        predicted = self.probabilities.argmax(axis=1)  # (N,)
        classes = max(len(class_names), self.probabilities.shape[1])
        confusion = confusion_matrix(self.labels, predicted, num_classes=classes)  # (K, K)
        wrong = np.flatnonzero(predicted != self.labels)
        confidence = self.probabilities[wrong, predicted[wrong]]  # (M,)
        order = wrong[np.argsort(-confidence, kind="stable")][:MAX_MISTAKES]
        answer.update({
            "test_images": len(self.labels), "accuracy": float(np.trace(confusion) / max(len(self.labels), 1)),
            "confusion": confusion.tolist(),
            "mistakes": [{"id": f"test-{i}", "true": int(self.labels[i]), "predicted": int(predicted[i]),
                          "probability": float(self.probabilities[i, predicted[i]])} for i in order]})
        return answer


def _read_json(folder: str, name: str, missing: list[str]) -> Any:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        missing.append(name)
        return None
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, ValueError) as error:
        missing.append(f"{name} (unreadable: {error})")
        return None


def load_run(folder: str, model: Any, test_limit: int | None = None, batch_size: int = 256) -> RunData:
    """The run in `folder` (its model already loaded as `model`), its test images classified by `model`.

    Args:
        folder: a folder written by `convnet train`.
        model: the run's model.
        test_limit: classify the first N test images of the run's split; default: the run's own test images, at
            most MAX_TEST_IMAGES.
        batch_size: images per forward pass.

    A dataset that cannot be loaded (its files missing) leaves the run without test images, with a warning and
    the reason in `dataset_error`; the curves and metrics are still shown.
    """
    from convnet.runs.config import TrainConfig, load_config
    from convnet.runs.job import load_split
    if test_limit is not None:
        test_limit = check_int("test_limit", test_limit, minimum=1)
    missing: list[str] = []
    history = _read_json(folder, "history.json", missing)
    metrics = _read_json(folder, "metrics.json", missing)
    raw_config = _read_json(folder, "config.json", missing)
    run = RunData(folder=folder, history=history if isinstance(history, dict) else None,
                  metrics=metrics if isinstance(metrics, dict) else None,
                  config=raw_config if isinstance(raw_config, dict) else None, missing=missing)
    if run.config is None:
        run.dataset_error = "the run has no readable config.json, so its dataset is unknown"
        return run
    try:
        config: TrainConfig = load_config(folder)
        own = config.test_limit
        limit = min(own or MAX_TEST_IMAGES, MAX_TEST_IMAGES) if test_limit is None else test_limit
        # `limit` bounds the training images loaded (only the test split is used here); the test split does not
        # depend on it. `test_limit` takes the first images of the test split, as the run did.
        *_, x_test, y_test = load_split(dataclasses.replace(config, limit=10, test_limit=limit))
    except (OSError, ValueError, TypeError, ImportError) as error:  # DatasetNotFoundError is a FileNotFoundError
        run.dataset_error = str(error).splitlines()[0] if str(error) else type(error).__name__
        warnings.warn(f"{folder}: the run's test images are not available ({run.dataset_error}); the run's curves "
                      f"and metrics are shown without them", UserWarning, stacklevel=2)
        return run
    run.images = np.round(x_test * 255).astype(np.uint8)  # (N, H, W, 1): load_split's pixels / 255, undone
    run.labels = y_test.astype(np.int64)
    run.probabilities = np.asarray(model.predict(x_test, batch_size=batch_size, verbose=0), np.float32)  # (N, K)
    return run
