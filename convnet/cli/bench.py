"""`convnet bench`: convnet's `fit` and `predict` on the seed CNN against the peers, side by side in one run.

Every measurement runs in a fresh process (so no contestant inherits another's warm caches or thread
pools), and the contestants take turns round by round, so slow drifts of a noisy machine hit all of them
alike. Each process trains a few warm-up batches, then times `steps` batches of Fashion-MNIST; figures are
training images per second, and predict images per second over the 10,000 test images.

Contestants: convnet (its public `fit`/`predict`; with `--functional`, also the same seed CNN built with the
functional API, to measure the graph's overhead), the hand-written PyTorch loops of `peers/torch_peer.py`
(eager32, cl32, and cl_bf16 / compile / CUDA graph where the device supports them), and the seed's Keras
code when a Python with Keras is given (`--keras-python`, or the `CONVNET_KERAS_PYTHON` variable).
Registering the command (`add_cli`) imports nothing heavy; NumPy and PyTorch load when it runs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from convnet.cli.completion import complete_with

TRAIN_GFLOP_PER_IMAGE = 0.537  # seed CNN: 3 x 2 x 89.46 M multiply-adds (forward, and backward for inputs and weights)


@dataclass
class BenchConfig:
    device: str = "auto"
    batch_sizes: tuple[int, ...] = (32, 128)
    steps: int | None = None        # timed steps per measurement (default: 20 on a CPU, 300 on a GPU)
    repeats: int = 3                # measurements per contestant and batch size, in separate processes
    peers: bool = False             # also run the hand-written PyTorch loops and Keras
    keras_python: str | None = None
    keras_backend: str | None = None  # default: tensorflow on a CPU, jax on a GPU
    out: str = "bench.json"
    data_dir: str | None = None
    predict_images: int = 10000     # test images each contestant predicts (fewer only for quick checks)
    functional: bool = False        # also time the seed CNN built with the functional API (graph overhead)
    export: bool = False            # also time predict of the seed CNN exported to ONNX, in ONNX Runtime


def _worker_convnet(args: argparse.Namespace) -> dict[str, float]:
    """The contestant: convnet's public API, as a user would call it."""
    import numpy as np
    import torch

    import convnet
    convnet.utils.set_random_seed(0)
    x = np.load(os.path.join(args.data, "x_train.npy"))[..., None].astype(np.float32) / 255
    y = np.load(os.path.join(args.data, "y_train.npy")).astype(np.int64)
    x_test = np.load(os.path.join(args.data, "x_test.npy"))[..., None].astype(np.float32) / 255
    model = convnet.zoo.seed_cnn()
    if args.api == "functional":  # the same layers (and initial weights) as a graph: Input -> ... -> Dense
        inputs = convnet.Input(shape=(28, 28, 1))
        outputs = inputs
        for layer in model.layers:
            outputs = layer(outputs)
        model = convnet.Model(inputs, outputs, name="seed_cnn_functional")
    model.compile(loss="sparse_categorical_crossentropy", optimizer="nadam", metrics=["accuracy"], device=args.device)
    bs = args.batch_size
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    model.fit(x[:args.warmup * bs], y[:args.warmup * bs], batch_size=bs, epochs=1, verbose=0)
    timed = args.steps * bs
    sync()
    start = time.perf_counter()
    model.fit(x[:timed], y[:timed], batch_size=bs, epochs=1, verbose=0)
    sync()
    train_seconds = time.perf_counter() - start
    model.predict(x_test[:2000], batch_size=1000, verbose=0)
    start = time.perf_counter()
    model.predict(x_test, batch_size=1000, verbose=0)
    predict_seconds = time.perf_counter() - start
    from convnet.training.engine import describe
    return {"train_img_s": timed / train_seconds, "predict_img_s": len(x_test) / predict_seconds,
            "engine": describe(model.engine)}


def _worker_export(args: argparse.Namespace) -> dict[str, Any]:
    """predict throughput of the seed CNN in convnet and, exported to ONNX, in ONNX Runtime (CPU provider:
    the same device on a CPU machine), on the same 10,000 test images and batch size, in one process."""
    import numpy as np

    import convnet
    from convnet.export import ExportedModel
    convnet.utils.set_random_seed(0)
    x_test = np.load(os.path.join(args.data, "x_test.npy"))[..., None].astype(np.float32) / 255
    model = convnet.zoo.seed_cnn()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="nadam", device=args.device)
    path = os.path.join(args.data, "seed.onnx")
    report = model.export(path, check=True)
    exported = ExportedModel(path)
    timings: dict[str, float] = {}
    for name, run in (("convnet", lambda x: model.predict(x, batch_size=args.batch_size, verbose=0)),
                      ("onnxruntime", lambda x: exported.predict(x, batch_size=args.batch_size))):
        run(x_test[:2 * args.batch_size])  # warm-up
        start = time.perf_counter()
        run(x_test)
        timings[f"predict_img_s_{name}"] = len(x_test) / (time.perf_counter() - start)
    return {**timings, "max_difference": report["max_difference"]}


def measured_peak(device: str) -> dict[str, Any]:
    """The device's dense matrix-multiply rate, measured: the ceiling the % of peak refers to."""
    import torch
    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    n = 8192 if dev.type == "cuda" else 2048
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    a @ b
    sync()
    runs = 20 if dev.type == "cuda" else 5
    start = time.perf_counter()
    for _ in range(runs):
        a @ b
    sync()
    rate = 2 * n ** 3 * runs / (time.perf_counter() - start) / 1e9
    return {"gflops": rate, "what": f"{n}x{n} {str(dtype).replace('torch.', '')} matmul"}


def _run(command: list[str], env: dict[str, str] | None = None, timeout: float = 1800) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = round(time.perf_counter() - started, 1)
    return result


def contestants(config: BenchConfig, device: str
                ) -> tuple[list[tuple[str, list[str], dict[str, str] | None]], dict[str, str]]:
    """(name, command without the per-batch arguments, environment) for each contestant to run, and the peers
    not run on this device, each with the reason (printed under the table, kept in the JSON)."""
    import torch

    from convnet.training.engine import native_bf16
    python = sys.executable
    items: list[tuple[str, list[str], dict[str, str] | None]] = [
        ("convnet", [python, "-m", "convnet.cli.bench", "--worker", "convnet"], None)]
    if config.functional:
        items.append(("convnet functional", [python, "-m", "convnet.cli.bench", "--worker", "convnet",
                                             "--api", "functional"], None))
    left_out: dict[str, str] = {}
    if not config.peers:
        return items, left_out
    peer = [python, "-m", "convnet.cli.peers.torch_peer"]
    items += [("pytorch eager fp32", [*peer, "--mode", "eager32"], None),
              ("pytorch channels_last fp32", [*peer, "--mode", "cl32"], None)]
    if native_bf16(torch.device(device)):
        items.append(("pytorch channels_last bf16", [*peer, "--mode", "cl_bf16"], None))
    else:
        left_out["pytorch channels_last bf16"] = (f"{device} has no native bf16 kernels; emulated bf16 would be "
                                                  f"an unfair, many times slower contestant")
    if device.startswith("cuda"):
        items += [("pytorch torch.compile bf16", [*peer, "--mode", "compile"], None),
                  ("pytorch CUDA graph bf16", [*peer, "--mode", "graph"], None)]
    else:
        left_out["pytorch torch.compile bf16, CUDA graph bf16"] = "GPU-only peers"
    keras_python = config.keras_python or os.environ.get("CONVNET_KERAS_PYTHON")
    if keras_python:
        backend = config.keras_backend or ("jax" if device.startswith("cuda") else "tensorflow")
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers", "keras_peer.py")
        items.append((f"keras 3 ({backend})", [keras_python, script], env))
    else:
        left_out["keras 3"] = "no --keras-python (a Python with Keras installed) was given"
    return items, left_out


def run(config: BenchConfig, log: Any = print) -> dict[str, Any]:
    """Measure every contestant at every batch size, `repeats` times, round by round; returns the results
    (also written as JSON to `config.out`)."""
    import numpy as np

    from convnet._internal.checks import check_int
    from convnet.runs.job import environment
    from convnet.utils import resolve_device
    device = str(resolve_device(config.device))
    steps = config.steps or (300 if device.startswith("cuda") else 20)
    check_int("steps", steps, minimum=1)
    check_int("repeats", config.repeats, minimum=1)
    check_int("predict_images", config.predict_images, minimum=1)
    for bs in config.batch_sizes:
        check_int("batch_size", bs, minimum=1)
    from convnet.datasets import fashion_mnist
    (x_train, y_train), (x_test, _) = fashion_mnist.load_data(data_dir=config.data_dir)
    needed = (steps + 3) * max(config.batch_sizes)
    if needed > len(x_train):
        raise ValueError(f"{steps} steps of batch {max(config.batch_sizes)} need {needed} images; Fashion-MNIST has "
                         f"{len(x_train)}: lower --steps")
    runners, left_out = contestants(config, device)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {name: {} for name, _, _ in runners}
    with tempfile.TemporaryDirectory() as data:
        np.save(os.path.join(data, "x_train.npy"), x_train)
        np.save(os.path.join(data, "y_train.npy"), y_train)
        np.save(os.path.join(data, "x_test.npy"), x_test[:config.predict_images])
        for repeat in range(config.repeats):
            for bs in config.batch_sizes:
                for name, command, env in runners:
                    arguments = ["--batch-size", str(bs), "--steps", str(steps), "--data", data]
                    if not command[-1].endswith("keras_peer.py"):
                        arguments += ["--device", device]
                    result = _run(command + arguments, env)
                    results[name].setdefault(str(bs), []).append(result)
                    shown = (f"{result['train_img_s']:,.0f} img/s" if "train_img_s" in result
                             else f"error: {result['error']}")
                    log(f"[round {repeat + 1}/{config.repeats}] batch {bs:>5}  {name:<28} {shown}")
    exported: dict[str, list[dict[str, Any]]] = {}
    if config.export:
        with tempfile.TemporaryDirectory() as data:
            np.save(os.path.join(data, "x_test.npy"), x_test[:config.predict_images])
            for repeat in range(config.repeats):
                for bs in config.batch_sizes:
                    result = _run([sys.executable, "-m", "convnet.cli.bench", "--worker", "export", "--batch-size",
                                   str(bs), "--steps", "1", "--data", data, "--device", device])
                    exported.setdefault(str(bs), []).append(result)
                    log(f"[round {repeat + 1}/{config.repeats}] batch {bs:>5}  predict: convnet vs ONNX Runtime "
                        + (f"{result['predict_img_s_convnet']:,.0f} vs {result['predict_img_s_onnxruntime']:,.0f} img/s"
                           if "predict_img_s_convnet" in result else f"error: {result['error']}"))
    peak = measured_peak(device)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "device": device, "environment": environment(),
              "steps": steps, "repeats": config.repeats, "predict_images": min(config.predict_images, len(x_test)),
              "peak": peak, "train_gflop_per_image": TRAIN_GFLOP_PER_IMAGE,
              "results": results, "summary": summarise(results, peak["gflops"]), "left_out": left_out,
              "export": {bs: _export_stats(runs) for bs, runs in exported.items()}}
    with open(config.out, "w") as stream:
        json.dump(report, stream, indent=2)
    return report


def _export_stats(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the convnet and ONNX Runtime predict rates over the runs, and their ratio."""
    good = [run for run in runs if "predict_img_s_convnet" in run]
    if not good:
        return {"error": runs[0].get("error", "failed") if runs else "not run"}
    convnet_rate = statistics.median(run["predict_img_s_convnet"] for run in good)
    ort_rate = statistics.median(run["predict_img_s_onnxruntime"] for run in good)
    return {"convnet": convnet_rate, "onnxruntime": ort_rate, "ratio": convnet_rate / ort_rate,
            "max_difference": max(run["max_difference"] for run in good)}


def export_table(export: dict[str, dict[str, Any]]) -> str:
    """The Markdown table of `--export`: predict images per second, convnet against ONNX Runtime."""
    from convnet._internal.table import markdown_table
    rows = []
    for bs, entry in sorted(export.items(), key=lambda item: int(item[0])):
        if "error" in entry:
            rows.append([bs, "-", "-", f"error: {entry['error']}"])
        else:
            rows.append([bs, f"{entry['convnet']:,.0f}", f"{entry['onnxruntime']:,.0f}",
                         f"{entry['ratio']:.2f}x (largest difference {entry['max_difference']:.1g})"])
    return markdown_table(["batch", "convnet predict (img/s)", "ONNX Runtime (img/s)", "convnet / ONNX Runtime"], rows)


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(results: dict[str, dict[str, list[dict[str, Any]]]], peak_gflops: float) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name, by_batch in results.items():
        for bs, runs in by_batch.items():
            train = [r["train_img_s"] for r in runs if "train_img_s" in r]
            predict = [r["predict_img_s"] for r in runs if "predict_img_s" in r]
            if train:
                entry = {"train": _stats(train), "predict": _stats(predict),
                         "percent_of_peak": 100 * statistics.median(train) * TRAIN_GFLOP_PER_IMAGE / peak_gflops}
                summary.setdefault(name, {})[bs] = entry
    for bs in {bs for by_batch in summary.values() for bs in by_batch}:
        peers = [s[bs]["train"]["median"] for name, s in summary.items() if not name.startswith("convnet") and bs in s]
        if "convnet" in summary and bs in summary["convnet"] and peers:
            summary["convnet"][bs]["ratio_to_best_peer"] = summary["convnet"][bs]["train"]["median"] / max(peers)
        graph = summary.get("convnet functional", {}).get(bs)
        if graph is not None and bs in summary.get("convnet", {}):  # the graph's speed relative to the stack's
            graph["ratio_to_sequential"] = graph["train"]["median"] / summary["convnet"][bs]["train"]["median"]
    return summary


def table(report: dict[str, Any]) -> str:
    """The Markdown table `convnet bench` prints."""
    from convnet._internal.table import markdown_table
    summary = report["summary"]
    sizes = sorted({int(bs) for s in summary.values() for bs in s})
    headers = ["contestant"] + [f"train, batch {bs} (img/s)" for bs in sizes] + ["predict (img/s)"]
    rows = []
    for name, by_batch in summary.items():
        cells = [name]
        for bs in sizes:
            entry = by_batch.get(str(bs))
            if entry is None:
                cells.append("-")
                continue
            t = entry["train"]
            cell = f"{t['median']:,.0f} ({t['min']:,.0f}-{t['max']:,.0f})"
            if "ratio_to_best_peer" in entry:
                cell += f", {entry['ratio_to_best_peer']:.2f}x best peer"
            if "ratio_to_sequential" in entry:
                cell += f", {entry['ratio_to_sequential']:.3f}x Sequential"
            cells.append(cell + f", {entry['percent_of_peak']:.0f}% of peak")
        last = by_batch[str(sizes[-1])] if str(sizes[-1]) in by_batch else next(iter(by_batch.values()))
        cells.append(f"{last['predict']['median']:,.0f}")
        rows.append(cells)
    return markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> None:
    """Worker entry point: `python -m convnet.cli.bench --worker convnet ...` (used by `run`)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", required=True, choices=["convnet", "export"])
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--data", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--api", default="sequential", choices=["sequential", "functional"])
    args = parser.parse_args(argv)
    print(json.dumps(_worker_convnet(args) if args.worker == "convnet" else _worker_export(args)))


def add_cli(commands: argparse._SubParsersAction) -> None:
    # the defaults are BenchConfig's, so they are stated once
    default = BenchConfig()
    sizes = ",".join(map(str, default.batch_sizes))
    bench = commands.add_parser("bench", help="time fit and predict of the seed CNN against the peers",
                                description=(__doc__ or "").split("\n\n")[0])
    complete_with(bench.add_argument("--device", default=default.device,
                                     help=f"auto, cpu or cuda (default: {default.device})"), "device")
    bench.add_argument("--batch-size", default=sizes, help=f"comma-separated batch sizes (default: {sizes})")
    bench.add_argument("--steps", type=int, default=default.steps,
                       help="timed steps per measurement (default: 20 on CPU, 300 on GPU)")
    bench.add_argument("--repeats", type=int, default=default.repeats,
                       help=f"measurements per contestant and batch size (default: {default.repeats})")
    bench.add_argument("--peers", action="store_true", help="also run hand-written PyTorch and, if given, Keras")
    complete_with(bench.add_argument("--keras-python", default=default.keras_python,
                                     help="a Python with Keras installed (default: $CONVNET_KERAS_PYTHON)"), "file")
    complete_with(bench.add_argument("--keras-backend", default=default.keras_backend,
                                     help="Keras backend for the peer (default: tensorflow on CPU, jax on GPU)"),
                  ["tensorflow", "jax", "torch"])
    complete_with(bench.add_argument("--data-dir", default=default.data_dir,
                                     help="folder holding fashion-mnist (default: $CONVNET_DATA, the cache)"), "dir")
    complete_with(bench.add_argument("--out", default=default.out,
                                     help=f"where to write the JSON results (default: {default.out})"), "file")
    bench.add_argument("--functional", action="store_true",
                       help="also time the seed CNN built with the functional API (graph overhead)")
    bench.add_argument("--export", action="store_true",
                       help="also compare predict with the seed CNN exported to ONNX, run by ONNX Runtime")
    bench.add_argument("--predict-images", type=int, default=default.predict_images,
                       help=f"test images each contestant predicts (default: all {default.predict_images})")
    bench.set_defaults(run=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    try:
        sizes = tuple(int(v) for v in args.batch_size.split(","))
    except ValueError:
        raise ValueError(f"--batch-size must be comma-separated integers, e.g. 32,128. Received: "
                         f"{args.batch_size!r}") from None
    config = BenchConfig(device=args.device, batch_sizes=sizes, steps=args.steps, repeats=args.repeats,
                         peers=args.peers, keras_python=args.keras_python, keras_backend=args.keras_backend,
                         out=args.out, data_dir=args.data_dir, predict_images=args.predict_images,
                         functional=args.functional, export=args.export)
    report = run(config, log=lambda line: print(line, flush=True))
    env = report["environment"]
    print(f"\nDevice: {report['device']} ({env['processor']}, {env['cpu_threads']} threads; CUDA: {env['cuda_device']}); "
          f"torch {env['torch']}; {report['repeats']} runs x {report['steps']} steps each; peak "
          f"{report['peak']['gflops']:,.0f} GFLOP/s ({report['peak']['what']}); {report['date']}\n")
    print(table(report))
    for name, reason in report["left_out"].items():
        print(f"Not run: {name} ({reason})")
    if report["export"]:
        print("\nPredict, the seed CNN exported to ONNX (checked against predict) in ONNX Runtime:\n")
        print(export_table(report["export"]))
    print(f"\nWritten: {config.out}")
    return 0


if __name__ == "__main__":
    main()
