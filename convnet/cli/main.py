"""The `convnet` command line.

    convnet train [--epochs 10] [--limit N] ...      train a preset on a dataset, write a run folder
    convnet train --data DIR|FILE.npz ...            the same on your own images (a folder per class)
    convnet train --nproc-per-node N ...             the same, data-parallel on N processes (torchrun)
    convnet evaluate MODEL [--data DIR|FILE.npz]     test loss and accuracy of a saved model
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
from typing import Any, Union, cast

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
        # SUPPRESS: only the options given on the command line appear in the namespace, so a recipe can
        # tell them from defaults
        if hints[item.name] is bool:  # a switch: `--strict`, off unless given
            parser.add_argument(_flag(item.name), dest=item.name, action="store_true", default=argparse.SUPPRESS,
                                help=item.metadata.get("help", ""))
            continue
        shown = "" if item.default is None else f" (default: {item.default})"
        action = parser.add_argument(_flag(item.name), dest=item.name, type=_converter(item.name, hints[item.name]),
                                     default=argparse.SUPPRESS, metavar=metavar,
                                     help=item.metadata.get("help", "") + shown)
        complete_with(action, item.metadata.get("complete") or choices or None)


LAUNCH_OPTIONS = ("nproc_per_node", "nnodes", "node_rank", "rdzv_endpoint", "rdzv_id", "rdzv_timeout")
RDZV_TIMEOUT = 300.0  # seconds the launcher waits for the rendezvous endpoint to answer and every node to join


def _cmd_train(args: argparse.Namespace) -> int:
    from convnet.runs.config import TrainConfig, load_config
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    if args.resume:
        config = load_config(args.resume)
        _check_resume_options(args.resume, config, given)
    else:
        _check_data_options(given)
        config = TrainConfig(**given).with_recipe(keep=given).check_names()  # a typo answers before torch loads
    launch = _launch_settings(args)
    if launch is not None:
        return _launch(args, config, launch)
    from convnet import distributed
    distributed.init(device=config.device)  # started by torchrun: join its process group (else nothing happens)
    try:
        return _train(args, config, first=distributed.rank() == 0)
    except RuntimeError as error:
        if not distributed.is_distributed() or getattr(error, "raised_on_rank0", False):
            raise
        # a collective failed: another process died or stopped answering (gloo/nccl say which peer)
        print(f"convnet train: error: rank {distributed.rank()} lost the other processes "
              f"({str(error).splitlines()[0] if str(error) else type(error).__name__})", file=sys.stderr)
        return EXIT_FAILED
    finally:
        distributed.finish()


def _train(args: argparse.Namespace, config: Any, first: bool) -> int:
    """Train in this process (one of several under torchrun: `first` is rank 0, which alone prints)."""
    from convnet.datasets import DatasetNotFoundError
    from convnet.runs.job import CHECKPOINTS, train
    from convnet.training.loop import TrainingInterrupted
    if args.resume and first:
        print(f"Resuming the run in {args.resume} (its saved settings are used)", flush=True)
    try:
        result = train(config, resume=bool(args.resume))
    except DatasetNotFoundError:
        raise  # missing input, reported by main() as a usage error; nothing was written
    except OSError as error:  # a disk that fills up or fails during training: say what is kept
        if getattr(error, "raised_on_rank0", False):
            return EXIT_FAILED  # rank 0 says it
        folder = config.out or "the run folder"
        kept = _what_is_kept(folder, _resume_command(folder), advice="free some space and ")
        print(f"convnet train: error: writing failed ({error.strerror or error}); {kept}", file=sys.stderr)
        return EXIT_FAILED
    except TrainingInterrupted as interrupted:
        if not first:
            return EXIT_INTERRUPTED
        folder = config.out or os.path.dirname(os.path.dirname(interrupted.checkpoint or ""))
        print(f"Interrupted at epoch {interrupted.epoch + 1}, step {interrupted.step}.", file=sys.stderr)
        if interrupted.checkpoint:
            print(f"Checkpoint saved: {interrupted.checkpoint}\nResume with: {_resume_command(folder)}",
                  file=sys.stderr)
        return EXIT_INTERRUPTED
    if result.diverged_at is not None:
        if not first:
            return EXIT_FAILED
        epoch, batch = result.diverged_at
        last = os.path.join(result.folder, CHECKPOINTS, "last.ckpt")
        kept = f"the last good checkpoint is {last}" if os.path.exists(last) else "no epoch finished, so no checkpoint"
        print(f"Training stopped: the loss became NaN or infinite at epoch {epoch + 1}, batch {batch + 1}; {kept}. "
              f"Try a lower --lr.", file=sys.stderr)
        return EXIT_FAILED
    if not first:
        return 0
    metrics = result.metrics
    processes = f" x {metrics['world_size']} processes" if metrics.get("world_size", 1) > 1 else ""
    took = (f"training took {metrics['train_seconds']:.1f} s on {metrics['device']}{processes}"
            f"{' (this process, since resuming)' if metrics['resumed'] else ''}")
    if metrics["test_accuracy"] is not None:
        print(f"Test accuracy: {metrics['test_accuracy']:.4f} (loss {metrics['test_loss']:.4f}) on "
              f"{metrics['test_images']} test images; {took}")
    elif "val_accuracy" in metrics:
        print(f"No test set (no --test-data): validation accuracy {metrics['val_accuracy']:.4f} (loss "
              f"{metrics['val_loss']:.4f}) on {metrics['val_images']} held-out images; {took}")
    else:
        print(f"No test set (no --test-data) and no validation (--val-split 0); {took}")
    files = "model.convnet, history.csv, history.json, metrics.json, config.json"
    if "bad_files" in metrics:
        files += ", bad_files.json"
    print(f"Run saved in {result.folder}: {files}, {CHECKPOINTS}/")
    return 0


def _what_is_kept(folder: str, resume: str, advice: str = "") -> str:
    """What a failed run leaves, for its error line: the intact last checkpoint and the `resume` command
    (after `advice`), or that none was written yet."""
    from convnet.runs.job import CHECKPOINTS
    last = os.path.join(folder, CHECKPOINTS, "last.ckpt")
    if not os.path.exists(last):
        return "no checkpoint was written yet"
    return f"the last checkpoint is intact: {last}; {advice}resume with: {resume}"


def _resume_command(folder: str) -> str:
    """The command that continues the run in `folder`, with the launcher options of this one's processes."""
    from convnet import distributed
    command = f"convnet train --resume {folder}"
    world = distributed.world_size()
    if world == 1:
        return command
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if per_node == world:
        return f"{command} --nproc-per-node {world}"
    return f"{command} --nproc-per-node {per_node} --nnodes {world // per_node} (and the other options, on every node)"


def _check_data_options(given: dict[str, Any]) -> None:
    """UsageError for the built-in datasets' options given with --data, which names the images instead."""
    if "data" not in given:
        return
    for name, instead in (("dataset", "--data names the images to train on; give one of them"),
                          ("data_dir", "it is where the built-in datasets' files are; --data names your images"),
                          ("val_size", "it holds out images of a built-in dataset; with --data, use --val-split "
                                       "FRACTION")):
        if name in given:
            raise UsageError(f"{_flag(name)} cannot be used with --data: {instead}")


_PATHS = ("out", "data", "test_data")  # settings that name a file or folder: compared as absolute paths


def _check_resume_options(folder: str, config: Any, given: dict[str, Any]) -> None:
    """UsageError when options given with --resume differ from the run's saved settings (which it continues with):
    resuming another model, batch size or data would not continue that run."""
    saved = {**dataclasses.asdict(config), "out": folder}

    def same(name: str, value: Any) -> bool:
        if name in _PATHS and isinstance(value, str) and isinstance(saved[name], str):
            return os.path.abspath(value) == os.path.abspath(saved[name])
        return bool(saved[name] == value)
    differing = [name for name, value in given.items() if not same(name, value)]
    if differing:
        shown = ", ".join(f"{_flag(name)} {given[name]} (the run has {getattr(config, name)})" for name in differing)
        raise UsageError(f"--resume {folder} continues that run with the settings it was started with; {shown}: drop "
                         f"{'that option' if len(differing) == 1 else 'those options'}, or start a new run in another "
                         f"folder (--out)")


def _launch_settings(args: argparse.Namespace) -> dict[str, Any] | None:
    """The launcher options, checked (UsageError), or None when none was given (train in this process)."""
    given = {name: getattr(args, name) for name in LAUNCH_OPTIONS if getattr(args, name, None) is not None}
    if not given:
        return None
    if os.environ.get("TORCHELASTIC_RUN_ID") is not None or os.environ.get("LOCAL_RANK") is not None:
        raise UsageError(f"this process was started by torchrun already; {', '.join(map(_flag, given))} belong on "
                         f"the command line of the launcher, not of its processes")
    settings = {"nproc_per_node": 1, "nnodes": 1, "node_rank": 0, "rdzv_endpoint": None, "rdzv_id": "convnet-train",
                "rdzv_timeout": RDZV_TIMEOUT, **given}
    for name in ("nproc_per_node", "nnodes"):
        if settings[name] < 1:
            raise UsageError(f"{_flag(name)} must be a positive number of "
                             f"{'processes' if name == 'nproc_per_node' else 'machines'}. Received: {settings[name]}")
    if not 0 <= settings["node_rank"] < settings["nnodes"]:
        raise UsageError(f"--node-rank must be 0 to {settings['nnodes'] - 1} (--nnodes {settings['nnodes']}). "
                         f"Received: {settings['node_rank']}")
    if settings["rdzv_timeout"] <= 0:
        raise UsageError(f"--rdzv-timeout must be a positive number of seconds. Received: {settings['rdzv_timeout']}")
    endpoint = settings["rdzv_endpoint"]
    if endpoint is None and settings["nnodes"] > 1:
        raise UsageError(f"--nnodes {settings['nnodes']} needs --rdzv-endpoint HOST:PORT: the address, reachable from "
                         f"every machine, where the first node (--node-rank 0) hosts the rendezvous")
    if endpoint is not None:
        host, _, port = endpoint.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--rdzv-endpoint must be HOST:PORT, e.g. 10.0.0.1:29400. Received: {endpoint!r}")
    return settings


def _launch(args: argparse.Namespace, config: Any, settings: dict[str, Any]) -> int:
    """Run `convnet train` on `nproc_per_node` processes of this machine through torch.distributed.run (torchrun's
    elastic launch: rendezvous, monitoring, signal forwarding; no restarts, a failed run is resumed by hand).
    Returns the workers' common exit code; 1 with one line when a process died; 130 after Ctrl-C, which torchrun
    forwards to every process (they stop at the same step and rank 0 saves a checkpoint)."""
    import signal

    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError

    from convnet import distributed
    from convnet.runs.job import default_folder
    from convnet.utils import resolve_device
    world = settings["nproc_per_node"] * settings["nnodes"]
    config.validate()  # say a bad setting once, here, rather than once per process
    distributed.check_batch_size(config.batch_size, world)
    import torch
    if resolve_device(config.device).type == "cuda" and settings["nproc_per_node"] > torch.cuda.device_count():
        raise UsageError(f"--nproc-per-node {settings['nproc_per_node']} on CUDA needs a GPU per process; this machine "
                         f"has {torch.cuda.device_count()}")
    folder = args.resume or config.out or default_folder(config)  # named here, so that every node uses the same
    worker = ["--resume", args.resume] if args.resume else [*_train_argv(args), "--out", folder]
    timeout, endpoint = settings["rdzv_timeout"], settings["rdzv_endpoint"]
    launcher = ["--nproc-per-node", str(settings["nproc_per_node"]), "--nnodes", str(settings["nnodes"]),
                "--max-restarts", "0", "--monitor-interval", "0.2"]
    if endpoint is None:
        launcher.append("--standalone")  # one machine: a rendezvous on a free local port
    else:
        conf = f"join_timeout={timeout:g},read_timeout={timeout:g}"
        if args.node_rank is not None:  # else c10d decides from the host name which node hosts the rendezvous
            conf += f",is_host={int(settings['node_rank'] == 0)}"
        launcher += ["--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", settings["rdzv_id"],
                     "--node-rank", str(settings["node_rank"]), "--rdzv-conf", conf]
    try:
        torchrun.run(torchrun.get_args_parser().parse_args([*launcher, "-m", "convnet", "train", *worker]))
    except ChildFailedError as failed:
        codes = {failure.exitcode for failure in failed.failures.values()}
        if len(codes) == 1 and min(codes) > 0:
            return int(min(codes))  # every process ended alike (a bad input, an interruption): rank 0 said why
        rank, failure = failed.get_first_failure()
        how = (f"was killed by {failure.signal_name()}" if failure.exitcode < 0 else
               f"exited with code {failure.exitcode}")
        kept = _what_is_kept(folder, f"convnet train --resume {folder} {' '.join(_launch_argv(args))}")
        print(f"convnet train: error: rank {rank} {how}, so the other processes were stopped; {kept}", file=sys.stderr)
        return EXIT_FAILED
    except SignalException as stopped:
        return EXIT_INTERRUPTED if stopped.sigval == signal.SIGINT else 128 + int(stopped.sigval)
    except RendezvousError as error:
        where = endpoint or "this machine"
        raise UsageError(f"the {settings['nnodes']} machine(s) did not meet at the rendezvous on {where} within "
                         f"{timeout:g} s ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                         f"check the address and port, and start every node") from None
    return 0


def _train_argv(args: argparse.Namespace) -> list[str]:
    """The TrainConfig options given on the command line (`--out` apart), as the processes' arguments."""
    from convnet.runs.config import TrainConfig
    return [part for item in dataclasses.fields(TrainConfig) if hasattr(args, item.name) and item.name != "out"
            for part in ((_flag(item.name),) if isinstance(getattr(args, item.name), bool)  # a switch, given
                         else (_flag(item.name), str(getattr(args, item.name))))]


def _launch_argv(args: argparse.Namespace) -> list[str]:
    """The launcher options given on the command line, as arguments."""
    return [part for name in LAUNCH_OPTIONS if getattr(args, name, None) is not None
            for part in (_flag(name), str(getattr(args, name)))]


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from convnet.runs.config import TrainConfig
    from convnet.runs.job import load_split
    model = load_model_file(args.model, args.device, compile=True)
    if not model.compiled:
        model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"], device=args.device)
    source = model.metadata.get("data") or {}  # a `convnet train --data` model: its test folder or .npz file
    recorded = source.get("test_path") or (source.get("path") if source.get("kind") == "npz" else None)
    if args.data is None and args.dataset is None and recorded is not None:
        args.data = recorded
    if args.data is not None:
        return _evaluate_data(args, model)
    name = args.dataset or model.metadata.get("dataset")
    if name is None:
        where = f" (it was trained on {source['path']}, without --test-data)" if source.get("path") else ""
        raise UsageError(f"{args.model} does not say which dataset it was trained on{where}; pass --data FOLDER "
                         f"(one subfolder per class) or FILE.npz, or --dataset NAME")
    from convnet.datasets import get_dataset
    get_dataset(name)
    config = TrainConfig(dataset=name, data_dir=args.data_dir, test_limit=args.limit, device=args.device)
    *_, x_test, y_test = load_split(config)
    results = model.evaluate(x_test, y_test, batch_size=args.batch_size, verbose=0, return_dict=True)
    shown = ", ".join(f"{key} {value:.4f}" for key, value in results.items())
    print(f"{args.model} on {len(x_test)} {name} test images: {shown}")
    return 0


def _evaluate_data(args: argparse.Namespace, model: Any) -> int:
    """`evaluate MODEL --data FOLDER|FILE.npz`: a folder read at the model's input size and channels, its class
    folders checked against the model's class names; an .npz file's test arrays. Pixels times the model's
    preprocessing scale."""
    import numpy as np

    from convnet.datasets import image_dataset_from_directory, load_npz
    from convnet.models.model import sample_shape
    from convnet.runs.config import class_folders, data_kind
    from convnet.runs.job import as_pixels, color_mode_of, pixel_factor
    if args.dataset is not None:
        raise UsageError("--dataset cannot be used with --data: --data names the images to evaluate on; give one")
    shape = sample_shape(model)
    if shape is None or len(shape) != 3 or shape[2] not in (1, 3, 4):
        raise UsageError(f"{args.model} takes inputs of shape {shape}, not images (height, width, 1, 3 or 4 channels)")
    height, width, channels = shape
    scale = float((model.metadata.get("preprocessing") or {}).get("scale", 1.0))
    names = [str(name) for name in model.metadata.get("class_names") or []]
    kind = data_kind(args.data)
    if kind == "folder":
        classes = class_folders(args.data)
        if names and classes != names:
            only_model, only_folder = sorted(set(names) - set(classes)), sorted(set(classes) - set(names))
            raise UsageError(f"the class folders of {args.data} differ from the classes of {args.model}, so a label "
                             f"would not mean the model's class: only in the model: {only_model or 'none'}; only in "
                             f"the folder: {only_folder or 'none'}")
        if args.limit is not None:
            raise UsageError("--limit takes an .npz file's test arrays or a built-in dataset; a folder is read whole")
        data = cast(Any, image_dataset_from_directory)(args.data, image_size=(height, width), batch_size=args.batch_size,
                                            color_mode=color_mode_of(channels),
                                            shuffle=False, verbose=False)
        count = data.num_samples
        batches = data if scale == 1.0 else ((x * np.float32(scale), y) for x, y in data)  # 0-255 -> the model's
        results = model.evaluate(batches, verbose=0, return_dict=True)
        if data.bad_files:
            print(f"Skipped {len(data.bad_files)} image file(s) that cannot be used, e.g. {data.bad_files[0][0]}: "
                  f"{data.bad_files[0][1]}")
    else:
        arrays = load_npz(args.data)
        own = list(arrays.class_names)
        numbered = own == [str(i) for i in range(len(own))]  # load_npz's names for a file without class_names
        if names and ((own != names and not numbered) or len(own) > len(names)):
            raise UsageError(f"the classes of {args.data} differ from those of {args.model}: "
                             f"{list(arrays.class_names)} and {names}")
        if arrays.input_shape != (height, width, channels):
            raise UsageError(f"{args.data} holds images of {arrays.input_shape} but {args.model} takes {shape}")
        (_, _), (x_test, y_test) = arrays.load_data()
        if args.limit is not None:
            x_test, y_test = x_test[:args.limit], y_test[:args.limit]
        x = as_pixels(x_test, pixel_factor(x_test))  # pixels 0-255, as `convnet train --data` takes them
        count = len(x)
        results = model.evaluate(x * np.float32(scale), y_test.astype(np.int64), batch_size=args.batch_size,
                                 verbose=0, return_dict=True)
    shown = ", ".join(f"{key} {value:.4f}" for key, value in results.items())
    print(f"{args.model} on {count} images of {args.data}: {shown}")
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
                                description="Train a preset (the seed CNN by default) on Fashion-MNIST, or on your "
                                            "own images with --data (a folder holding one subfolder of images per "
                                            "class, or an .npz file), print per-epoch validation and final test "
                                            "accuracy, and write the run folder.")
    add_dataclass_options(train, TrainConfig)
    complete_with(train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its "
                                     "last checkpoint, with the settings it was started with"), "dir")
    launch = train.add_argument_group(
        "data-parallel training (launched through torchrun, torch.distributed.run)",
        "--batch-size stays the global batch: each of the N processes takes an equal slice of every batch. One "
        "process per GPU (nccl), or per group of CPU cores (gloo; OMP_NUM_THREADS threads each, 1 by default).")
    launch.add_argument("--nproc-per-node", type=int, metavar="N", help="processes on this machine")
    launch.add_argument("--nnodes", type=int, metavar="M", help="machines taking part (default: 1); start the same "
                        "command on each, with its --node-rank")
    launch.add_argument("--node-rank", type=int, metavar="R", help="this machine's index, 0 to M-1; node 0 hosts the "
                        "rendezvous")
    launch.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="where the machines meet (c10d rendezvous): "
                        "node 0's address and a free port")
    launch.add_argument("--rdzv-id", metavar="ID", help="a name shared by the machines of one run (default: "
                        "convnet-train)")
    launch.add_argument("--rdzv-timeout", type=float, metavar="SECONDS", help=f"how long to wait for the endpoint to "
                        f"answer and every machine to join (default: {RDZV_TIMEOUT:g})")
    train.set_defaults(run=_cmd_train)

    evaluate = commands.add_parser("evaluate", help="test loss and accuracy of a saved model",
                                   description="Test loss and accuracy of a saved model on the test set it was trained "
                                               "with (a built-in dataset, the run's --test-data folder or its .npz "
                                               "file), or on --dataset or --data.")
    evaluate.add_argument("model", metavar="MODEL", help="a .convnet file")
    complete_with(evaluate.add_argument("--dataset", help="dataset to test on (default: the one the model was "
                                        "trained on)"), "dataset")
    complete_with(evaluate.add_argument("--data-dir", help="folder holding the dataset files"), "dir")
    complete_with(evaluate.add_argument("--data", help="your own images instead: a folder with one subfolder per "
                                        "class (the model's class names; read at its input size and channels), or "
                                        "an .npz file (its x_test, y_test)"), "file")
    evaluate.add_argument("--limit", type=int, help="the first N test images only (not with a --data folder)")
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
    from convnet.cli.explore import add_cli as add_explore
    add_explore(commands)
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
        if getattr(error, "raised_on_rank0", False):  # one of several processes: rank 0 says it
            return EXIT_USAGE
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
