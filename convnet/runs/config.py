"""The settings of a training run (`TrainConfig`), its choices and recipes, and reading them back from a run
folder. Torch-free, so that `convnet train --help` and the command line's argument errors answer at once:
`validate` imports what it checks with (the zoo, the optimizers, the device) when it runs.

    >>> TrainConfig(epochs=1).with_recipe().epochs
    1
    >>> TrainConfig(recipe="fast").with_recipe(keep={"epochs"}).batch_size
    256
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainConfig", "AUGMENTATIONS", "PRECISIONS", "RECIPES", "MODEL_RECIPES", "CONFIG_FILE", "COLOR_MODES",
           "DEFAULT_VAL_SPLIT", "load_config", "parse_image_size", "data_kind", "class_folders"]


def _option(default: Any, help: str, choices: Sequence[str] = (), complete: str | None = None) -> Any:
    """A field with its command-line help and, where the setting takes one of a fixed set, the choices
    (`validate` checks them; `convnet train --help` shows them). `complete` names what shell completion
    offers for the value where that is not the choices: "model", "dataset", "optimizer", "schedule", "device",
    "dir" or "file"."""
    return field(default=default, metadata={"help": help, "choices": tuple(choices), "complete": complete})


AUGMENTATIONS = ("none", "flip", "shift", "flip-shift")
PRECISIONS = ("auto", "float32", "bfloat16")  # convnet.training.engine.PRECISIONS (a test keeps them equal)
RECIPES: dict[str, dict[str, Any]] = {
    # the `fast` preset's recipe (`convnet train --model fast` uses it unless told otherwise), chosen on single
    # runs on a 2-core CPU (one seed each): 6 epochs peaking at 0.004, 0.008 and 0.015 gave 92.56%, 92.91% and
    # 92.98% test accuracy, and 5 epochs at 0.008 92.80%; flips alone beat flips with 2-pixel shifts by a point
    # (92.56% against 91.51%) in so few epochs; measured over 3 seeds: benchmarks/fast_preset.py
    "fast": {"batch_size": 256, "optimizer": "nadam", "lr": 0.01, "schedule": "onecycle", "label_smoothing": 0.1,
             "augment": "flip", "epochs": 5, "precision": "auto"},
}
# the recipe a model preset trains with when no --recipe is given (its settings still yield to explicit options)
MODEL_RECIPES = {"fast": "fast"}
CONFIG_FILE = "config.json"
COLOR_MODES = ("grayscale", "rgb", "rgba")  # image_dataset_from_directory's, 1, 3 and 4 channels
DEFAULT_VAL_SPLIT = 0.1  # of a --data run's training images; the built-in datasets hold out at most 10% too
_DATA_OPTIONS = ("test_data", "image_size", "color_mode", "val_split")  # the settings that go with `data`


def parse_image_size(text: str) -> tuple[int, int]:
    """(height, width) from "64x48" (height 64, width 48, Keras's image_size order) or "28" (a square).

        >>> parse_image_size("64x48"), parse_image_size("28")
        ((64, 48), (28, 28))
    """
    parts = text.lower().split("x") if isinstance(text, str) else []
    if len(parts) not in (1, 2) or not all(part.strip().isdigit() and int(part) >= 1 for part in parts):
        raise ValueError(f"`image_size` must be HEIGHTxWIDTH in pixels (e.g. 64x48: height 64, width 48) or one "
                         f"number for a square (e.g. 28). Received: image_size={text!r}")
    height = int(parts[0])
    return height, int(parts[-1])


def data_kind(path: str, argument: str = "data") -> str:
    """"folder" or "npz": what `path` is, or a ValueError/FileNotFoundError naming `argument`."""
    if not isinstance(path, str) or not path:
        raise TypeError(f"`{argument}` must be the path of a folder or an .npz file. Received: {argument}={path!r}")
    if os.path.isdir(path):
        return "folder"
    if not os.path.exists(path):
        raise FileNotFoundError(f"`{argument}`: no such folder or file: {path!r}")
    if path.lower().endswith(".npz"):
        return "npz"
    raise ValueError(f"`{argument}` must be a folder holding one subfolder of images per class, or an .npz file "
                     f"(np.savez of x_train, y_train, x_test, y_test). Received: {argument}={path!r}, a file that is "
                     f"neither")


def class_folders(folder: str) -> list[str]:
    """The class folders of an image folder, as image_dataset_from_directory reads them: its subfolders whose
    names do not start with ".", sorted (label i is the i-th)."""
    return sorted(name for name in os.listdir(folder)
                  if os.path.isdir(os.path.join(folder, name)) and not name.startswith("."))


@dataclass
class TrainConfig:
    """Everything `convnet train` needs; the CLI's flags are generated from these fields and their help."""

    model: str = _option("seed", "model preset: seed (the seed's CNN), homl (the book's), lenet5, resnet20, mobilenet "
                                 "or fast (trained with --recipe fast unless another recipe is given)", complete="model")
    dataset: str = _option("fashion-mnist", "dataset: fashion-mnist, mnist or shapes (synthetic: 12000 training "
                                            "and 2000 test images, drawn on the fly)", complete="dataset")
    data: str | None = _option(None, "train on your own images instead of --dataset: a folder holding one subfolder "
                                     "of images per class (the class names), or an .npz file (x_train, y_train, "
                                     "x_test, y_test, optionally class_names)", complete="file")
    test_data: str | None = _option(None, "with a --data folder: a folder with the same class folders, evaluated at "
                                          "the end (default: none; the validation accuracy is reported instead)",
                                    complete="dir")
    image_size: str | None = _option(None, "with a --data folder: the size every image is resized to, HEIGHTxWIDTH "
                                           "(64x48: height 64, width 48) or one number for a square (default: the "
                                           "size of the first image)")
    color_mode: str | None = _option(None, "with a --data folder: grayscale, rgb or rgba (default: grayscale if the "
                                           "first image has one channel, else rgb)", choices=COLOR_MODES)
    val_split: float | None = _option(None, "with --data: the fraction of the training images held out for "
                                            f"validation, 0 for none (default: {DEFAULT_VAL_SPLIT})")
    strict: bool = _option(False, "with a --data folder: refuse to train if an image file cannot be read (default: "
                                  "skip it; the run lists it in bad_files.json)")
    epochs: int = _option(10, "passes over the training images")
    batch_size: int = _option(128, "images per optimisation step")
    optimizer: str = _option("nadam", "nadam, adam, adamw, sgd, rmsprop, adagrad or adamax", complete="optimizer")
    lr: float | None = _option(None, "learning rate (default: the optimizer's Keras default, 0.001 for nadam)")
    seed: int = _option(0, "random seed for weights, shuffling and dropout (same seed, same CPU run)")
    limit: int | None = _option(None, "train on the first N training images only (quick runs)")
    val_size: int = _option(5000, "images held out from the end of the training set for validation "
                                  "(at most 10%% of the training images)")
    test_limit: int | None = _option(None, "evaluate on the first N test images only (quick runs)")
    device: str = _option("auto", "auto (CUDA if present, else CPU), cpu or cuda", complete="device")
    data_dir: str | None = _option(None, "folder holding the dataset files (default: $CONVNET_DATA/<dataset>, "
                                         "then ~/.cache/convnet/<dataset>, then download)", complete="dir")
    out: str | None = _option(None, "run folder (default: runs/<model>-<dataset>-<date>-<time>)", complete="dir")
    verbose: int | str = _option("auto", "0 silent, 1 progress bar, 2 one line per epoch, auto (1 in a terminal)")
    checkpoint_minutes: float = _option(10.0, "also checkpoint within an epoch every this many minutes "
                                              "(a checkpoint is always written at the end of each epoch)")
    schedule: str = _option("constant", "learning-rate schedule: constant, onecycle (peak --lr), cosine or step",
                            complete="schedule")
    label_smoothing: float = _option(0.0, "label smoothing of the cross-entropy (0 to 1)")
    augment: str = _option("none", "on-device augmentation: none, flip (horizontal flips), shift (up to 2 pixels), "
                                   "flip-shift (both)", choices=AUGMENTATIONS)
    precision: str = _option("float32", "float32 (as Keras), bfloat16, or auto (bf16 where the hardware "
                                         "computes it natively, else float32)", choices=PRECISIONS)
    recipe: str | None = _option(None, "a preset that sets several options at once (the model's own by default: "
                                       "fast for --model fast): fast (batch 256, nadam with a one-cycle schedule "
                                       "peaking at 0.01, label smoothing 0.1, flip augmentation, 5 epochs, "
                                       "precision auto)", choices=tuple(RECIPES))

    def check_names(self) -> TrainConfig:
        """Check the names (model, dataset, optimizer, schedule, augment, precision, recipe) against the lists
        the registries hold, without importing them: a mistyped name on the command line answers at once, in
        the same words as the registries (tests/test_cli_startup.py keeps the lists equal to them)."""
        from convnet._internal import names
        from convnet._internal.checks import check_choice, check_str, unknown_name
        for option, known in (("model", names.MODELS), ("optimizer", names.OPTIMIZERS), ("schedule", names.SCHEDULES)):
            value = check_str(option, getattr(self, option))
            if value.lower() not in known:
                raise unknown_name(option, value, known, argument=option)
        dataset = check_str("dataset", self.dataset)
        if self.data is None and dataset.lower().replace("_", "-") not in names.DATASETS:
            raise unknown_name("dataset", dataset, names.DATASETS, argument="dataset")
        check_choice("augment", self.augment, AUGMENTATIONS)
        check_choice("precision", self.precision, PRECISIONS)
        if self.recipe is not None:
            check_choice("recipe", self.recipe, tuple(RECIPES))
        return self.check_data()

    def check_data(self) -> TrainConfig:
        """Check the settings of your own images (`data` and the options that go with it) from the file system
        alone, without reading an image: what `data` is, a folder's class folders (two at least, the same in
        `test_data`), the image size, color mode and validation split."""
        from convnet._internal.checks import check_bool, check_choice, check_float
        check_bool("strict", self.strict)
        if self.data is None:
            given = [name for name in _DATA_OPTIONS if getattr(self, name) is not None] + (["strict"] * self.strict)
            if given:
                raise ValueError(f"`{given[0]}` goes with `data` (training on your own images), which is not given: "
                                 f"pass --data FOLDER or --data FILE.npz")
            return self
        kind = data_kind(self.data)
        if kind == "folder":
            classes = class_folders(self.data)
            if len(classes) < 2:
                raise ValueError(f"`data`: the folder {self.data!r} must hold one subfolder of images per class, two "
                                 f"at least (a classifier needs two classes). Found: {classes or 'no subfolder'}")
        if self.image_size is not None:
            parse_image_size(self.image_size)
        if self.color_mode is not None:
            self.color_mode = check_choice("color_mode", self.color_mode, COLOR_MODES)
        if self.val_split is not None:
            check_float("val_split", self.val_split, minimum=0.0, maximum=1.0, include_max=False)
        if kind == "npz":
            if self.test_data is not None:
                raise ValueError(f"`test_data` goes with a --data folder; the .npz file {self.data!r} holds its own "
                                 f"test set (x_test, y_test)")
            return self
        for name in ("limit", "test_limit"):
            if getattr(self, name) is not None:
                raise ValueError(f"`{name}` takes the built-in datasets and .npz files; a --data folder is read whole "
                                 f"(make a smaller folder for a quick run)")
        if self.test_data is not None:
            if data_kind(self.test_data, "test_data") != "folder":
                raise ValueError(f"`test_data` must be a folder with the same class folders as `data`. Received: "
                                 f"test_data={self.test_data!r}, a file")
            test_classes = class_folders(self.test_data)
            if test_classes != classes:
                only_train = sorted(set(classes) - set(test_classes))
                only_test = sorted(set(test_classes) - set(classes))
                raise ValueError(f"`test_data`: the class folders of {self.test_data!r} differ from those of "
                                 f"{self.data!r}, so a label would not mean one class: only in the training folder: "
                                 f"{only_train or 'none'}; only in the test folder: {only_test or 'none'}")
        return self

    def validate(self) -> TrainConfig:
        """Check every setting (ValueError naming the field, with close matches for names); imports the
        registries and PyTorch it checks against, so it is the first step that costs an import of torch."""
        from convnet import optimizers, schedules, zoo
        from convnet._internal.checks import check_choice, check_float, check_int, unknown_name
        from convnet.datasets import get_dataset
        from convnet.training.engine import resolve_precision
        from convnet.utils import resolve_device
        self.check_names()
        if self.data is None:
            get_dataset(self.dataset, argument="dataset")
        if self.model not in zoo.list_models():
            raise unknown_name("model", self.model, zoo.list_models(), argument="model")
        check_int("epochs", self.epochs, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        optimizers.get(self.optimizer, self.lr)
        check_int("seed", self.seed, minimum=0)
        if self.limit is not None:
            check_int("limit", self.limit, minimum=2)
        check_int("val_size", self.val_size, minimum=0)
        if self.test_limit is not None:
            check_int("test_limit", self.test_limit, minimum=1)
        resolve_device(self.device)
        check_float("checkpoint_minutes", self.checkpoint_minutes, minimum=0.0)
        schedules.from_name(self.schedule, 0.001)
        check_float("label_smoothing", self.label_smoothing, minimum=0.0, maximum=1.0)
        check_choice("augment", self.augment, AUGMENTATIONS)
        resolve_precision(self.precision, resolve_device(self.device))
        if self.recipe is not None:
            check_choice("recipe", self.recipe, tuple(RECIPES))
        return self

    def with_recipe(self, keep: Collection[str] = ()) -> TrainConfig:
        """A copy with the recipe's settings applied, except the fields named in `keep` (the options a user
        gave explicitly). Without a recipe, the model's own (MODEL_RECIPES: `fast` trains with "fast"), which
        the copy then names. `train` does not apply recipes itself: resolve them first.

            >>> TrainConfig(model="fast").with_recipe().recipe
            'fast'
        """
        recipe_name = self.recipe
        if recipe_name is None and isinstance(self.model, str):
            recipe_name = MODEL_RECIPES.get(self.model.lower())
        if recipe_name is None:
            return self
        recipe = recipe_name.lower() if isinstance(recipe_name, str) else None  # case-insensitive, as validate
        if recipe is None or recipe not in RECIPES:
            from convnet._internal.checks import check_choice
            check_choice("recipe", recipe_name, tuple(RECIPES))  # raises, with close matches
        settings = {"recipe": recipe, **RECIPES[recipe]}
        return dataclasses.replace(self, **{k: v for k, v in settings.items() if k not in keep})


def load_config(folder: str) -> TrainConfig:
    """The TrainConfig a run folder was started with (for `convnet train --resume`)."""
    path = os.path.join(folder, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"{folder!r} is not a run folder: it has no {CONFIG_FILE}")
    try:
        with open(path, encoding="utf-8") as stream:
            saved = json.load(stream)
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        config = TrainConfig(**{key: value for key, value in saved.items() if key in names})
    except (json.JSONDecodeError, TypeError) as error:
        raise ValueError(f"{path}: not a valid run configuration ({error})") from None
    config.out = folder
    return config
