"""Time to accuracy of `convnet train --model fast` (its default recipe) on Fashion-MNIST, over several seeds.

Each seed runs the training job exactly as `convnet train --model fast --seed S` runs it (`convnet.runs.train`
with the configuration the command line builds: the fast recipe, 5,000 validation images held out, a
checkpoint per epoch), plus one callback that scores the 10,000 test images after every epoch; the time that
scoring takes is kept off the training clock. Prints a Markdown table: per seed, the training seconds at
which the test accuracy first reached each threshold (checked at epoch ends), the final test accuracy and the
training time, then the median and range over the seeds; with the hardware, torch version, date, threads
and the load average (other processes on the machine slow every figure down).

    CONVNET_DATA=/work/shared/data python benchmarks/fast_preset.py --seeds 3
    python benchmarks/fast_preset.py --seeds 1 --limit 3000 --epochs 1       # a smoke run (minutes)

Measured on 2026-11-30 (01:27-01:33 UTC), 2-core AMD EPYC with AVX512_BF16 (so precision "auto" is bf16), torch
2.13.0+cpu, 2 threads, load average 1.3-2.1 (this run's own ~2 included, nothing else running); `--seeds 3`:

| seed | 90.0% | 91.0% | 92.0% | 93.0% | final test acc | train s | epochs |
|---|---|---|---|---|---|---|---|
| 0 | 42.3 | 56.8 | 56.8 | - | 92.64% | 71.1 | 5 |
| 1 | 41.8 | 41.8 | 54.9 | - | 92.56% | 68.3 | 5 |
| 2 | 39.4 | 39.4 | 52.8 | - | 92.91% | 66.9 | 5 |
| median | 41.8 | 41.8 | 54.9 | never | 92.64% | 68.3 | |

(On 2026-11-29, with other work on the machine, the same seeds gave the same accuracies in 104.3 s median.)

The 93.5%-within-15-minutes run, measured on 2026-11-30 (00:51-01:21 UTC), same machine, load average 0.3-2.0 (the
run's own ~2 included); `--seeds 3 --epochs 40 --augment flip-shift --thresholds 0.92 0.93 0.935 0.94`:

| seed | 92.0% | 93.0% | 93.5% | 94.0% | final test acc | train s | epochs |
|---|---|---|---|---|---|---|---|
| 0 | 300.2 | 404.0 | 493.7 | - | 93.74% | 595.6 | 40 |
| 1 | 217.1 | 435.9 | 507.7 | - | 93.42% | 580.5 | 40 |
| 2 | 251.9 | 424.7 | 497.0 | - | 93.53% | 569.4 | 40 |
| median | 251.9 | 424.7 | 497.0 | never | 93.53% | 580.5 | |
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Any

THRESHOLDS = (0.90, 0.91, 0.92, 0.93)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            for line in stream:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


def test_clock(x_test: Any, y_test: Any) -> Any:
    """A callback scoring the test set at each epoch end; `records` holds (epoch, training seconds so far,
    test accuracy), the seconds spent scoring left out."""
    from convnet import callbacks

    class TestClock(callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            self.records: list[tuple[int, float, float]] = []
            self.started = time.perf_counter()
            self.scoring = 0.0

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            now = time.perf_counter()
            assert self.model is not None
            _, accuracy = self.model.evaluate(x_test, y_test, batch_size=512, verbose=0)
            self.records.append((epoch + 1, now - self.started - self.scoring, float(accuracy)))
            self.scoring += time.perf_counter() - now

    return TestClock()


def run_seed(seed: int, args: argparse.Namespace, folder: str) -> dict[str, Any]:
    from convnet.runs.config import TrainConfig
    from convnet.runs.job import load_split, train
    given = {"model": args.model, "seed": seed, "device": args.device, "verbose": 0,
             "out": os.path.join(folder, f"seed{seed}")}
    given.update({key: getattr(args, key) for key in ("epochs", "augment", "limit") if getattr(args, key) is not None})
    config = TrainConfig(**given).with_recipe(keep=given)  # as `convnet train` resolves its options
    *_, x_test, y_test = load_split(config)
    clock = test_clock(x_test, y_test)
    load_before = load_average()
    result = train(config, callbacks=[clock])
    if result.diverged_at is not None:
        raise SystemExit(f"seed {seed}: training diverged at (epoch, batch) {result.diverged_at}")
    records = clock.records
    reached = {threshold: next((seconds for _, seconds, accuracy in records if accuracy >= threshold), None)
               for threshold in args.thresholds}
    return {"seed": seed, "config": config, "records": records, "reached": reached,
            "final": result.metrics["test_accuracy"], "seconds": records[-1][1], "epochs": records[-1][0],
            "load_before": load_before, "load_after": load_average(), "device": result.metrics["device"],
            "val_images": result.metrics["val_images"], "test_images": result.metrics["test_images"]}


def spread(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    middle = fmt.format(statistics.median(values))
    return middle if len(values) == 1 else f"{middle} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds (0, 1, ...)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--model", default="fast", help="a zoo preset (its own recipe, if it has one)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--augment", help="override the recipe's augmentation (none, flip, shift, flip-shift)")
    parser.add_argument("--limit", type=int, help="train on the first N images (smoke runs only)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=THRESHOLDS)
    parser.add_argument("--out", help="folder for the runs (default: a temporary folder, deleted)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1. Received: {args.seeds}")

    import torch

    from convnet.runs.job import environment
    env = environment()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.out or scratch
        runs = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            runs.append(run_seed(seed, args, folder))
            last = runs[-1]
            curve = ", ".join(f"ep{epoch} {seconds:.1f}s {accuracy:.2%}" for epoch, seconds, accuracy in last["records"])
            print(f"seed {seed}: {curve}", file=sys.stderr, flush=True)
    config = runs[0]["config"]
    recipe = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)
              if field.name in ("recipe", "epochs", "batch_size", "optimizer", "lr", "schedule", "label_smoothing",
                                "augment", "precision")}
    print(f"# `convnet train --model {args.model}`: time to test accuracy, {len(runs)} seeds\n")
    print(f"- date: {started}; hardware: {cpu_name()}, {os.cpu_count()} logical CPUs, device {runs[0]['device']} "
          f"({env['cuda_device']}); torch {torch.__version__} with {env['cpu_threads']} threads, "
          f"python {env['python']}, {env['platform']}")
    print(f"- settings: {recipe}" + (f"; limit {args.limit}" if args.limit else ""))
    command = (f"convnet train --model {args.model} --seed S" + (f" --epochs {args.epochs}" if args.epochs else "")
               + (f" --augment {args.augment}" if args.augment else "")
               + (f" --limit {args.limit}" if args.limit else ""))
    print(f"- command per seed: `{command}`, with CONVNET_DATA set")
    print(f"- training seconds include the per-epoch validation ({runs[0]['val_images']:,} images) and a checkpoint "
          f"per epoch, not the scoring of the {runs[0]['test_images']:,} test images done for this table; the load "
          f"average (1/5/15 min) before and after each run is shown\n")
    headers = ["seed", *(f"{threshold:.1%}" for threshold in args.thresholds), "final test acc", "train s", "epochs",
               "load before", "load after"]
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for run in runs:
        times = [("-" if run["reached"][t] is None else f"{run['reached'][t]:.1f}") for t in args.thresholds]
        print(f"| {run['seed']} | " + " | ".join(times) + f" | {run['final']:.2%} | {run['seconds']:.1f} | "
              f"{run['epochs']} | {run['load_before']} | {run['load_after']} |")
    times = []
    for threshold in args.thresholds:
        reached = [run["reached"][threshold] for run in runs]
        # the median time exists where most seeds got there; a seed that did not is slower than any that did
        count = sum(value is not None for value in reached)
        times.append(spread([v for v in reached if v is not None], "{:.1f}") + f" [{count}/{len(runs)}]")
    print("| median (range) | " + " | ".join(times) + f" | {spread([r['final'] for r in runs], '{:.2%}')} | "
          f"{spread([r['seconds'] for r in runs], '{:.1f}')} | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
