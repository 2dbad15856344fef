"""The `convnet` command line: one module per command group (`main`: train, evaluate, predict, summary;
`inspect`: featuremaps, filters, explain, report, demo; `bench`; `experiments`), and the peers `bench` runs."""
from convnet.cli.main import main

__all__ = ["main"]
