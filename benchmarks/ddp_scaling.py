"""Scaling efficiency of data-parallel `fit` (convnet.distributed) from 1 process to N, against the ideal.

    python benchmarks/ddp_scaling.py [--model lenet5] [--batch-size 256] [--processes 1,2] [--threads 1]
                                     [--images 4096] [--epochs 2] [--repeats 3] [--device cpu] [--out FILE.json]

Strong scaling: the same training (the same global batch, the same images, the same number of steps) on 1, 2, ...
processes joined by a process group (gloo on the CPU, each process with `--threads` threads; nccl with one GPU per
process on CUDA). Each configuration trains one unmeasured epoch (warm-up: allocation, the optimizer's state, a
CUDA graph's capture), then `--epochs` measured epochs; this repeats `--repeats` times, in turns, so that a noisy
machine slows every configuration alike. Reported per configuration: images per second (median and range), the
efficiency = throughput(N) / (N x throughput(1)) against the ideal 100%, and the share of each step spent in the
all-reduce (which includes waiting for the slower rank). Prints the machine, the library versions, the load average
before and after, and writes the figures as JSON with `--out`.

Processes are forked on the CPU (they start in milliseconds; startup is not what is measured) and spawned on CUDA.
Data: Fashion-MNIST from $CONVNET_DATA when it is there, else random images of the same shape (the speed is the same).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch


def load_images(count: int) -> tuple[np.ndarray, np.ndarray, str]:
    """`count` training images (N, 28, 28, 1) in [0, 1] with labels, and where they come from."""
    try:
        from convnet.datasets import fashion_mnist
        (x, y), _ = fashion_mnist.load_data()
        source = "fashion-mnist"
    except Exception:  # no dataset here: random images train at the same speed
        rng = np.random.default_rng(0)
        x, y, source = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), rng.integers(0, 10, count), "random"
    x, y = x[:count], y[:count]
    return (x.astype(np.float32) / 255)[..., None], y.astype(np.int64), source


def build(model_name: str, device: str) -> Any:
    from convnet import zoo
    from convnet.utils import set_random_seed
    set_random_seed(0)
    model = zoo.get(model_name, input_shape=(28, 28, 1), num_classes=10)
    model.compile(optimizer="nadam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], device=device)
    return model


def train_on_rank(rank: int, world: int, port: int, settings: dict[str, Any], out: str) -> None:
    """One process of a measurement: join the group, warm up, time `fit`, write the rank's figures to `out`."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(settings["threads"])
    from convnet import distributed
    if world > 1:
        distributed.init(device=settings["device"], timeout=300)
    x, y, _ = load_images(settings["images"])
    model = build(settings["model"], settings["device"])
    reduce_seconds = [0.0]
    original = distributed.GradientReducer.reduce

    def timed_reduce(self: Any, sums: torch.Tensor) -> torch.Tensor:  # the all-reduce, waiting for peers included
        started = time.perf_counter()
        result = original(self, sums)
        reduce_seconds[0] += time.perf_counter() - started
        return result
    distributed.GradientReducer.reduce = timed_reduce  # type: ignore[method-assign]
    model.fit(x, y, batch_size=settings["batch_size"], epochs=1, verbose=0)  # warm-up
    if settings["device"] == "cuda":
        torch.cuda.synchronize()
    reduce_seconds[0] = 0.0
    started = time.perf_counter()
    model.fit(x, y, batch_size=settings["batch_size"], epochs=settings["epochs"], verbose=0)
    if settings["device"] == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    with open(out, "w") as stream:
        json.dump({"seconds": seconds, "reduce_seconds": reduce_seconds[0]}, stream)
    distributed.finish()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def measure(world: int, settings: dict[str, Any]) -> dict[str, float]:
    """One timed fit on `world` processes: its wall time (the slowest rank's) and all-reduce share."""
    method = "spawn" if settings["device"] == "cuda" else "fork"  # a forked CUDA context is unusable
    context = multiprocessing.get_context(method)
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        outs = [os.path.join(folder, f"rank{rank}.json") for rank in range(world)]
        processes = [context.Process(target=train_on_rank, args=(rank, world, port, settings, outs[rank]))
                     for rank in range(world)]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        if any(process.exitcode != 0 for process in processes):
            raise SystemExit(f"a process of the {world}-process run failed: exit codes "
                             f"{[process.exitcode for process in processes]}")
        figures = []
        for out in outs:
            with open(out) as stream:
                figures.append(json.load(stream))
    seconds = max(figure["seconds"] for figure in figures)
    return {"seconds": seconds, "images_per_s": settings["epochs"] * settings["images"] / seconds,
            "reduce_share": max(figure["reduce_seconds"] / figure["seconds"] for figure in figures)}


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lenet5", help="a zoo model (default: lenet5)")
    parser.add_argument("--batch-size", type=int, default=256, help="the global batch (default: 256)")
    parser.add_argument("--processes", default="1,2", help="process counts to compare, the first one the baseline")
    parser.add_argument("--threads", type=int, default=1, help="threads per process on the CPU (default: 1)")
    parser.add_argument("--images", type=int, default=4096, help="training images per epoch (default: 4096)")
    parser.add_argument("--epochs", type=int, default=2, help="measured epochs per run (default: 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration (default: 3)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    counts = [int(part) for part in args.processes.split(",")]
    settings = {"model": args.model, "batch_size": args.batch_size, "threads": args.threads, "images": args.images,
                "epochs": args.epochs, "device": args.device}
    from convnet import distributed
    for count in counts:
        distributed.check_batch_size(args.batch_size, count)
    source = load_images(16)[2]
    load_before = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{torch.cuda.get_device_name(0) if args.device == 'cuda' else 'CPU'}; python {sys.version.split()[0]}, "
          f"torch {torch.__version__}, numpy {np.__version__}; {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} (1, 5, 15 min)")
    print(f"fit of {args.model} on {args.images} {source} images, global batch {args.batch_size}, {args.epochs} "
          f"measured epochs after one of warm-up, {args.threads} thread(s) per process on {args.device}; "
          f"{args.repeats} runs per configuration, in turns", flush=True)
    runs: dict[int, list[dict[str, float]]] = {count: [] for count in counts}
    for _ in range(args.repeats):
        for count in counts:
            runs[count].append(measure(count, settings))
    load_after = os.getloadavg()
    base = statistics.median(run["images_per_s"] for run in runs[counts[0]])
    report: dict[str, Any] = {"settings": settings, "source": source, "load_before": load_before,
                              "load_after": load_after, "configurations": {}}
    print("\n| processes | images/s (median, range) | efficiency vs ideal | all-reduce share of the step |")
    print("|---|---|---|---|")
    for count in counts:
        speed = summary([run["images_per_s"] for run in runs[count]])
        efficiency = speed["median"] / (base * count / counts[0])
        share = summary([run["reduce_share"] for run in runs[count]])
        report["configurations"][count] = {"images_per_s": speed, "efficiency": efficiency, "reduce_share": share,
                                           "runs": runs[count]}
        print(f"| {count} | {speed['median']:.0f} ({speed['min']:.0f} to {speed['max']:.0f}) | {efficiency:.0%} | "
              f"{share['median']:.0%} |" if count > 1 else
              f"| {count} | {speed['median']:.0f} ({speed['min']:.0f} to {speed['max']:.0f}) | 100% (baseline) | - |")
    print(f"\nload average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if args.out:
        with open(args.out, "w") as stream:
            json.dump(report, stream, indent=2)


if __name__ == "__main__":
    main()
