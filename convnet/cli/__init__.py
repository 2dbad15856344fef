"""The `convnet` command line: one module per command group (`main`: train, evaluate, predict, summary;
`inspect`: featuremaps, filters, explain, report; `bench`; `experiments`; `completion`: bash and zsh scripts),
the names it offers without importing their registries (`names`), and the peers `bench` runs. Building the
parser imports nothing heavy; each command imports what it needs when it runs."""
from convnet.cli.main import main

__all__ = ["main"]
