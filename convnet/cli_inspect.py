"""The inspection commands of the `convnet` command line (feature maps, filters, explanations, reports,
experiments). `cli.build_parser` calls `add_commands` with its sub-parsers."""
from __future__ import annotations

import argparse


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register the inspection sub-commands on the `convnet` parser."""
