"""`convnet experiment NAME`: run one of the experiments behind the README's claims
(`convnet.inspection.experiments`), print its Markdown table and the files it wrote. `cli.main.build_parser`
calls `add_commands` with its sub-parsers; registering imports nothing heavy (the experiment names come from
`_internal.names`), the experiments load when the command runs.

    convnet experiment NAME [--quick] [--out DIR] [--seed S] [--data-dir DIR] [--device D]
"""
from __future__ import annotations

import argparse

from convnet._internal.names import EXPERIMENTS
from convnet.cli.completion import complete_with

__all__ = ["add_commands"]


def _cmd_experiment(args: argparse.Namespace) -> int:
    from convnet.inspection.experiments import run_experiment
    result = run_experiment(args.name, quick=args.quick, out_dir=args.out, seed=args.seed, data_dir=args.data_dir,
                            device=args.device)
    print(result.table_markdown)
    print(f"\n{result.name}: {result.seconds:.0f} s. Wrote {result.json_path}, {result.markdown_path}"
          + "".join(f", {path}" for path in result.plots))
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register `convnet experiment` on the `convnet` parser's sub-parsers."""
    names = ", ".join(EXPERIMENTS)
    parser = commands.add_parser(
        "experiment", help="run an experiment behind the README's claims and write its table and plots",
        description=f"Run one experiment ({names}): print its Markdown table and write results.json, results.md "
                    f"and PNG plots to the output folder.")
    complete_with(parser.add_argument("name", metavar="NAME", help=f"one of: {names}"), "experiment")
    parser.add_argument("--quick", action="store_true", help="the small version (under two minutes on a CPU)")
    complete_with(parser.add_argument("--out", metavar="DIR", help="output folder (default: "
                                      "runs/experiments/NAME[-quick])"), "dir")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    complete_with(parser.add_argument("--data-dir", metavar="DIR", help="folder holding fashion-mnist/ (default: "
                                      "$CONVNET_DATA)"), "dir")
    complete_with(parser.add_argument("--device", default="cpu", help="where models train (default: cpu, for "
                                      "repeatable numbers)"), "device")
    parser.set_defaults(run=_cmd_experiment)
