"""`convnet explore`: a local web app to see inside a model, from a run folder, a model file or a preset.

    convnet explore [RUN_DIR | MODEL.convnet | --model PRESET] [--host 127.0.0.1] [--port 8000] [--no-browser]

`cli.build_parser` registers it with `add_cli(commands)`. Registering imports nothing heavy; the command
imports PyTorch, Starlette and uvicorn when it runs (the web server is the `explore` extra). Run alone, before
the main parser registers it: `python -m convnet.cli.explore RUN_DIR`.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from convnet.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, UsageError
from convnet.cli.completion import complete_with

__all__ = ["add_cli", "main", "DEFAULT_PORT"]

DEFAULT_PORT = 8000


def _threads(value: int | None) -> int:
    """PyTorch's threads for the model: `value`, or min(4, the CPU count)."""
    if value is None:
        return min(4, os.cpu_count() or 1)
    if value < 1:
        raise UsageError(f"--threads must be >= 1. Received: {value}")
    return value


def _cmd_explore(args: argparse.Namespace) -> int:
    if (args.target is None) == (args.model is None):
        raise UsageError("explore takes a RUN_DIR, a MODEL.convnet file or --model PRESET (one of them)")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in [0, 65535] (0 picks a free port). Received: {args.port}")
    if args.test_limit is not None and args.test_limit < 1:
        raise UsageError(f"--test-limit must be >= 1. Received: {args.test_limit}")
    threads = _threads(args.threads)
    try:
        from convnet.explorer import load_explorer, serve
    except ImportError as error:
        raise UsageError(f"convnet explore needs the web server packages ({error.name or error}): "
                         f"pip install 'convnet[explore]'") from None
    import torch
    torch.set_num_threads(threads)  # the model's intra-op threads; requests run one at a time in one worker
    print(f"Loading {args.target or 'the preset ' + args.model} ...", flush=True)
    explorer = load_explorer(args.target, args.model, device=args.device, test_limit=args.test_limit)
    run = explorer.run
    if run is not None and run.images is not None:
        accuracy = run.summary(explorer.class_names or [])["accuracy"]
        print(f"Classified {len(run.images)} test images of the run: accuracy {accuracy:.4f}", flush=True)
    serve(explorer, host=args.host, port=args.port, open_browser=not args.no_browser)
    print("convnet explore: stopped", flush=True)
    return 0


def add_cli(commands: Any) -> None:
    """Register `explore` with the sub-parsers of the `convnet` command line."""
    explore = commands.add_parser(
        "explore", help="a local web app to see inside a model (graph, feature maps, filters, explanations)",
        description="Start a local web app showing a model: its layer graph with shapes, parameters and receptive "
                    "fields; an input (upload, drawing, test image, sample photo) and the prediction; every layer's "
                    "feature maps (click a unit for its receptive field); the filters; Grad-CAM, saliency, "
                    "SmoothGrad and occlusion; a run's curves, confusion matrix and mistakes; the seed's 7x7 kernel "
                    "playground. Prints the URL and opens the browser; Ctrl-C stops it.")
    complete_with(explore.add_argument("target", nargs="?", metavar="RUN_DIR | MODEL.convnet",
                                       help="a run folder written by convnet train, or a .convnet file"), "file")
    complete_with(explore.add_argument("--model", metavar="PRESET", help="a preset instead (untrained: its random "
                                       "initial weights): seed, homl, lenet5, resnet20, mobilenet, fast"), "model")
    explore.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this "
                         "machine only; any other is warned about)")
    explore.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default: {DEFAULT_PORT}; 0 "
                         "picks a free one)")
    explore.add_argument("--no-browser", action="store_true", help="do not open the browser")
    explore.add_argument("--test-limit", type=int, metavar="N", help="classify the first N test images of the run "
                         "for the confusion matrix (default: the run's own, at most 2000)")
    explore.add_argument("--threads", type=int, metavar="N", help="PyTorch threads for the model (default: "
                         "min(4, CPUs))")
    complete_with(explore.add_argument("--device", default="auto"), "device")
    explore.set_defaults(run=_cmd_explore)


def main(argv: Sequence[str] | None = None) -> int:
    """`convnet explore` on its own: parse `argv` and run; the exit codes of `convnet` (0, 2 bad usage, 130)."""
    parser = argparse.ArgumentParser(prog="convnet")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["explore", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.run(args))
    except (UsageError, ValueError, TypeError, FileNotFoundError, ImportError) as error:
        print(f"convnet explore: error: {str(error).splitlines()[0] if str(error) else type(error).__name__}",
              file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("convnet explore: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
