"""How long the `convnet` command line takes to answer `--help`, `--version`, a command's `--help` and a usage
error, measured as whole processes (start-up, imports, parsing, exit), as a user waits for them.

    python benchmarks/cli_latency.py [--runs 7] [--import-torch] [--script PATH ...]

Each command runs `--runs` times as `python -m convnet ...` and as the `convnet` script on PATH (or each
`--script` given, e.g. a pyenv shim, which adds its own start-up); the commands take turns round by round, so
a noisy machine slows them alike. Prints a Markdown table (median and range per command) under the machine,
the Python and torch versions and the date. With `--import-torch`, one more row times `python -c "import
torch"` for scale (what every row paid before the command line loaded PyTorch lazily).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = (["--help"], ["--version"], ["train", "--help"], ["bench", "--help"], ["featuremaps", "--help"],
            ["experiment", "--help"], ["train", "--epochs", "x"])
EXPECTED_CODES: dict[tuple[str, ...], int] = {("train", "--epochs", "x"): 2}  # a usage error; every other command exits 0


def _time(command: list[str], code: int) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    if done.returncode != code:
        raise SystemExit(f"{' '.join(command)} exited with {done.returncode}, expected {code}")
    return seconds


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def measure(runs: int, import_torch: bool, scripts: list[str]) -> list[tuple[str, list[float]]]:
    """(shown command, seconds of each run) for every command and launcher."""
    launchers = [("python -m convnet", [sys.executable, "-m", "convnet"])]
    launchers += [(script if len(scripts) > 1 else "convnet", [script]) for script in scripts]
    plan = [(f"{shown} {' '.join(argv)}", [*launcher, *argv], EXPECTED_CODES.get(tuple(argv), 0))
            for shown, launcher in launchers for argv in COMMANDS]
    if import_torch:
        plan.append(('python -c "import torch" (for scale)', [sys.executable, "-c", "import torch"], 0))
    times: dict[str, list[float]] = {shown: [] for shown, _, _ in plan}
    for _shown, command, code in plan:  # one unmeasured run each: the first start reads files from disk
        _time(command, code)
    for _ in range(runs):
        for shown, command, code in plan:
            times[shown].append(_time(command, code))
    return list(times.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per command (default: 7)")
    parser.add_argument("--import-torch", action="store_true", help="also time `import torch` alone, for scale")
    parser.add_argument("--script", action="append", metavar="PATH",
                        help="a `convnet` launcher to time (repeatable; default: the one on PATH)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs must be >= 1. Received: {args.runs}")
    scripts = args.script or [found for found in [shutil.which("convnet")] if found]
    results = measure(args.runs, args.import_torch, scripts)
    print(f"Machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
          f"(load average {os.getloadavg()[0]:.1f} at the end); Python {platform.python_version()}, torch "
          f"{_version('torch')}, convnet {_version('convnet')}; {args.runs} runs per command, whole processes; "
          f"python: {sys.executable}; script: {', '.join(scripts) or 'none on PATH'}; "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}\n")
    print("| command | median (s) | range (s) |")
    print("|---|---:|---:|")
    for shown, seconds in results:
        print(f"| `{shown}` | {statistics.median(seconds):.3f} | {min(seconds):.3f}-{max(seconds):.3f} |")


if __name__ == "__main__":
    main()
