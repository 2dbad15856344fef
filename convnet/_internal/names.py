"""The names the command line offers without importing the registries that hold them (which import PyTorch):
for help texts and shell completion. tests/test_cli_startup.py keeps each list equal to its registry, so a
new preset, dataset or experiment fails a test until it is added here."""
from __future__ import annotations

__all__ = ["MODELS", "DATASETS", "OPTIMIZERS", "SCHEDULES", "EXPERIMENTS", "SAMPLE_IMAGES", "DEVICES", "NAMES"]

MODELS = ("fast", "homl", "lenet5", "mobilenet", "resnet20", "seed")  # convnet.zoo.list_models()
DATASETS = ("fashion-mnist", "mnist", "shapes")  # convnet.datasets.list_datasets()
OPTIMIZERS = ("adagrad", "adam", "adamax", "adamw", "nadam", "rmsprop", "sgd")  # convnet.optimizers.list_optimizers()
SCHEDULES = ("constant", "cosine", "onecycle", "step")  # convnet.schedules.list_schedules()
EXPERIMENTS = ("depthpool", "params", "pooling", "translation")  # convnet.inspection.experiments.list_experiments()
SAMPLE_IMAGES = ("china.jpg", "flower.jpg")  # convnet.datasets.list_sample_images()
DEVICES = ("auto", "cpu", "cuda")  # what convnet.utils.resolve_device takes (also "cuda:N")

# by the kind of value an option takes (TrainConfig's `complete` metadata, `completion.complete_with`)
NAMES: dict[str, tuple[str, ...]] = {"model": MODELS, "dataset": DATASETS, "optimizer": OPTIMIZERS,
                                     "schedule": SCHEDULES, "experiment": EXPERIMENTS, "sample": SAMPLE_IMAGES,
                                     "device": DEVICES}
