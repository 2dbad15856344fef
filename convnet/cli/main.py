"""The `convnet` command line.

    convnet train [--epochs 10] [--limit N] ...      train a preset on a dataset, write a run folder
    convnet evaluate MODEL                           test loss and accuracy of a saved model
    convnet predict MODEL IMAGE...                   top-k classes for image files
    convnet summary MODEL | --model NAME             layer table with receptive fields
    convnet completion bash|zsh                      a shell completion script

Every bad argument ends the command with exit code 2 and one line on stderr saying what is wrong. Building
the parser imports nothing heavy (no PyTorch, NumPy or Matplotlib), so `--help`, `--version` and argparse's
usage errors answer at once; each command imports what it needs when it runs.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Union

from convnet import __version__
from convnet.cli import completion
from convnet.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CommandImage,
    UsageError,
    load_model_file,
    model_input,
)
from convnet.cli.completion import complete_with


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _int_or_str(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _converter(name: str, hint: Any) -> Callable[[str], Any]:
    """The function argparse turns an option's text into the field's type with, from its resolved type hint:
    int, float or str; `X | None` as X (None is the default, never typed); `int | str` as an int when the text
    is digits (`--verbose 2`), else the text (`--verbose auto`)."""
    if typing.get_origin(hint) in (Union, types.UnionType):  # Optional[X] and X | None alike
        kinds = {kind for kind in typing.get_args(hint) if kind is not type(None)}
        if kinds == {int, str}:
            return _int_or_str
        if len(kinds) == 1:
            return _converter(name, kinds.pop())
    elif hint in (int, float, str):
        return hint
    raise TypeError(f"the command line cannot read field `{name}` of type {hint!r}: give it int, float or str, "
                    f"optionally `| None`, or `int | str`")


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One --flag per field of the dataclass `cls`: converted by its type hint, help from its metadata
    ("help", and "choices" where the settings accept a fixed set, shown as the metavar), its default
    shown in the help, and what shell completion offers for it ("complete", else the choices)."""
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        choices = item.metadata.get("choices")
        # the choices are shown, not enforced here: the config checks them (case-insensitively, with close-match
        # suggestions), so that rule lives in one place
        metavar = "{" + ",".join(choices) + "}" if choices else item.name.upper()
        shown = "" if item.default is None else f" (default: {item.default})"
        # SUPPRESS: only the options given on the command line appear in the namespace, so a recipe can
        # tell them from defaults
        action = parser.add_argument(_flag(item.name), dest=item.name, type=_converter(item.name, hints[item.name]),
                                     default=argparse.SUPPRESS, metavar=metavar,
                                     help=item.metadata.get("help", "") + shown)
        complete_with(action, item.metadata.get("complete") or choices or None)


def _cmd_train(args: argparse.Namespace) -> int:
    from convnet.runs.config import TrainConfig, load_config
    if args.resume:
        config = load_config(args.resume)
        print(f"Resuming the run in {args.resume} (its saved settings are used)", flush=True)
    else:
        given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
        config = TrainConfig(**given).with_recipe(keep=given).check_names()  # a typo answers before torch loads
    from convnet.datasets import DatasetNotFoundError
    from convnet.runs.job import CHECKPOINTS, train
    from convnet.training.loop import TrainingInterrupted
    try:
        result = train(config, resume=bool(args.resume))
    except DatasetNotFoundError:
        raise  # missing input, reported by main() as a usage error; nothing was written
    except OSError as error:  # a disk that fills up or fails during training: say what is kept
        folder = config.out or "the run folder"
        last = os.path.join(folder, CHECKPOINTS, "last.ckpt")
        kept = (f"the last checkpoint is intact: {last}; free some space and resume with: convnet train --resume "
                f"{folder}" if os.path.exists(last) else "no checkpoint was written yet")
        print(f"convnet train: error: writing failed ({error.strerror or error}); {kept}", file=sys.stderr)
        return EXIT_FAILED
    except TrainingInterrupted as interrupted:
        folder = config.out or os.path.dirname(os.path.dirname(interrupted.checkpoint or ""))
        print(f"Interrupted at epoch {interrupted.epoch + 1}, step {interrupted.step}.", file=sys.stderr)
        if interrupted.checkpoint:
            print(f"Checkpoint saved: {interrupted.checkpoint}\nResume with: convnet train --resume {folder}",
                  file=sys.stderr)
        return EXIT_INTERRUPTED
    if result.diverged_at is not None:
        epoch, batch = result.diverged_at
        last = os.path.join(result.folder, CHECKPOINTS, "last.ckpt")
        kept = f"the last good checkpoint is {last}" if os.path.exists(last) else "no epoch finished, so no checkpoint"
        print(f"Training stopped: the loss became NaN or infinite at epoch {epoch + 1}, batch {batch + 1}; {kept}. "
              f"Try a lower --lr.", file=sys.stderr)
        return EXIT_FAILED
    metrics = result.metrics
    print(f"Test accuracy: {metrics['test_accuracy']:.4f} (loss {metrics['test_loss']:.4f}) on "
          f"{metrics['test_images']} test images; training took {metrics['train_seconds']:.1f} s on "
          f"{metrics['device']}{' (this process, since resuming)' if metrics['resumed'] else ''}")
    print(f"Run saved in {result.folder}: model.convnet, history.csv, history.json, metrics.json, config.json, "
          f"{CHECKPOINTS}/")
    return 0




def _cmd_evaluate(args: argparse.Namespace) -> int:
    from convnet.datasets import get_dataset
    from convnet.runs.config import TrainConfig
    from convnet.runs.job import load_split
    model = load_model_file(args.model, args.device, compile=True)
    if not model.compiled:
        model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"], device=args.device)
    name = args.dataset or model.metadata.get("dataset")
    if name is None:
        raise UsageError(f"{args.model} does not say which dataset it was trained on; pass --dataset")
    get_dataset(name)
    config = TrainConfig(dataset=name, data_dir=args.data_dir, test_limit=args.limit, device=args.device)
    *_, x_test, y_test = load_split(config)
    results = model.evaluate(x_test, y_test, batch_size=args.batch_size, verbose=0, return_dict=True)
    shown = ", ".join(f"{key} {value:.4f}" for key, value in results.items())
    print(f"{args.model} on {len(x_test)} {name} test images: {shown}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np
    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1. Received: {args.top_k}")
    names, convert, run = _predictor(args.model, args.device)
    for path in args.images:
        pixels, note = convert(CommandImage(path=path))  # resized and converted to fit, and scaled
        probabilities = run(pixels)
        print(note or path)
        for rank, index in enumerate(np.argsort(-probabilities)[:args.top_k], start=1):
            label = names[index] if names and index < len(names) else str(index)
            print(f"  {rank}. {label:<14} {probabilities[index] * 100:6.2f}%")
    return 0


def _predictor(path: str, device: str) -> tuple[list[str] | None, Callable, Callable]:
    """(class names, image -> (pixels, note), pixels -> probabilities) for a .convnet file, or for an exported
    .onnx/.pt2 file run as it will be deployed (ONNX Runtime, torch.export)."""
    if not path.lower().endswith((".onnx", ".pt2")):
        model = load_model_file(path, device, compile=True)

        def convert(image: CommandImage) -> tuple[Any, str | None]:
            return model_input(model, image)

        def run(pixels: Any) -> Any:
            return model.predict(pixels[None], verbose=0)[0]
        return model.metadata.get("class_names"), convert, run
    from convnet.cli.common import image_input
    from convnet.export import ExportedModel
    exported = ExportedModel(path)
    if len(exported.input_shapes) != 1:
        raise UsageError(f"{path} takes {len(exported.input_shapes)} inputs; predict takes one image per call")
    scale = float((exported.metadata.get("preprocessing") or {}).get("scale", 1.0))

    def convert_exported(image: CommandImage) -> tuple[Any, str | None]:
        return image_input(exported.input_shapes[0], scale, os.path.basename(path), image)

    def run_exported(pixels: Any) -> Any:
        return exported.predict(pixels[None])[0]
    return exported.class_names, convert_exported, run_exported


def _cmd_summary(args: argparse.Namespace) -> int:
    from convnet import zoo
    if (args.file is None) == (args.model is None):
        raise UsageError("summary takes a model file or --model NAME (one of them)")
    model = zoo.get_model(args.model) if args.model else load_model_file(args.file, "cpu", compile=True)
    model.summary()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The whole command line's parser; builds without importing PyTorch (tests/test_cli_startup.py)."""
    from convnet.runs.config import TrainConfig
    parser = argparse.ArgumentParser(prog="convnet", description="Convolutional neural networks with TensorFlow's "
                                     "semantics and a Keras-style API, on PyTorch.")
    parser.add_argument("--version", action="version", version=f"convnet {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    train = commands.add_parser("train", help="train a model preset on a dataset and save the run",
                                description="Train a preset (the seed CNN by default) on Fashion-MNIST, print "
                                            "per-epoch validation and final test accuracy, and write the run folder.")
    add_dataclass_options(train, TrainConfig)
    complete_with(train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its "
                                     "last checkpoint, with the settings it was started with"), "dir")
    train.set_defaults(run=_cmd_train)

    evaluate = commands.add_parser("evaluate", help="test loss and accuracy of a saved model")
    evaluate.add_argument("model", metavar="MODEL", help="a .convnet file")
    complete_with(evaluate.add_argument("--dataset", help="dataset to test on (default: the one the model was "
                                        "trained on)"), "dataset")
    complete_with(evaluate.add_argument("--data-dir", help="folder holding the dataset files"), "dir")
    evaluate.add_argument("--limit", type=int, help="the first N test images only")
    evaluate.add_argument("--batch-size", type=int, default=512)
    complete_with(evaluate.add_argument("--device", default="auto"), "device")
    evaluate.set_defaults(run=_cmd_evaluate)

    predict = commands.add_parser("predict", help="top-k classes for image files",
                                  description="Classify image files; each is converted to the model's input size "
                                              "and channels (and the command says so).")
    predict.add_argument("model", metavar="MODEL", help="a .convnet file, or an exported .onnx or .pt2 file (run "
                                                         "by ONNX Runtime or torch.export, as deployed)")
    predict.add_argument("images", metavar="IMAGE", nargs="+", help="PNG, JPEG or other image files")
    predict.add_argument("--top-k", type=int, default=3, help="classes to show per image (default: 3)")
    complete_with(predict.add_argument("--device", default="auto"), "device")
    predict.set_defaults(run=_cmd_predict)

    summary = commands.add_parser("summary", help="layer table of a model file or preset")
    summary.add_argument("file", metavar="MODEL", nargs="?", help="a .convnet file")
    complete_with(summary.add_argument("--model", help="a preset name instead: seed, homl, lenet5"), "model")
    summary.set_defaults(run=_cmd_summary)

    from convnet.cli.inspect import add_commands
    add_commands(commands)
    from convnet.cli.experiments import add_commands as add_experiment
    add_experiment(commands)
    from convnet.cli.bench import add_cli as add_bench
    add_bench(commands)
    from convnet.cli.export import add_cli as add_export
    add_export(commands)
    completion.add_commands(commands, parser, __version__)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 2 bad usage or input, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (UsageError, ValueError, TypeError, FileNotFoundError, ImportError) as error:  # DatasetNotFoundError too
        if os.environ.get("CONVNET_DEBUG"):
            raise
        message = str(error).splitlines()
        print(f"convnet {args.command}: error: {message[0] if message else type(error).__name__}", file=sys.stderr)
        for line in message[1:]:
            print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"convnet {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into `head`, say: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
