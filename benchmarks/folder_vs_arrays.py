"""Training from a folder of PNGs against training from in-memory arrays: the seed CNN on Fashion-MNIST.

    CONVNET_DATA=/work/shared/data python benchmarks/folder_vs_arrays.py [--images 60000] [--epochs 3]
        [--batch-size 32] [--folder DIR] [--memory-budget BYTES]

Writes the Fashion-MNIST training images (convnet.datasets.fashion_mnist) as 28x28 grayscale PNGs, a folder per
class (unless --folder holds them already), reads them with `image_dataset_from_directory` (with the default
memory budget they are decoded once, by the scan, and kept as uint8), and trains two copies of the seed CNN
(convnet.zoo.get("seed"), the same initial weights) with the same batch size: one from the folder, one from the
arrays as `fashion_mnist.load_data()` gives them (uint8, (N, 28, 28, 1)). Epoch 1 runs whole, folder then
arrays. From epoch 2 on the two take turns every --chunk steps, in the order folder, arrays, arrays, folder, ...
(so that other work on a shared machine, and its trend, slows both alike): a folder turn is `fit` with
steps_per_epoch=chunk on the dataset's next epoch order, an arrays turn `fit` on chunk * batch_size samples drawn
from the arrays (copied before the clock starts). Prints the seconds of epoch 1, the seconds of epochs 2 to
--epochs and their folder / arrays ratio (the claim: within 10%), and the quartiles of the step times.

Measured 2026-11-30 01:37-01:40 UTC on this project's VM (2-core AMD EPYC, no GPU; Python 3.11.7, torch
2.13.0+cpu, NumPy 2.4.6, Pillow 13.0.0, 2 torch threads), nothing else running (load average 0.75 before, 1.97
after, the run's own), one run of

    CONVNET_DATA=/work/shared/data python benchmarks/folder_vs_arrays.py --images 10000 --epochs 3 --chunk 10

    epoch 1:        folder 30.7 s, arrays 31.3 s, folder / arrays 0.980
    epochs 2-3:     folder 56.9 s, arrays 56.4 s, folder / arrays 1.009  (63 turns of 10 steps)
    step times (ms), quartiles: folder 87 / 90 / 93; arrays 85 / 90 / 92; median folder / arrays 1.006

An earlier measurement, 2026-11-30 00:15-00:20 UTC, on this project's VM (2-core AMD EPYC, no GPU; Python 3.11.7, torch
2.13.0+cpu, 2 torch threads), shared with other work (load average 3.8-4.1 during the run), one run of

    CONVNET_DATA=/work/shared/data python benchmarks/folder_vs_arrays.py --images 3000 --epochs 3 --chunk 10

(the first 3,000 images: the seed CNN takes 0.25-0.35 s a step of 32 on these two shared cores, so the whole
60,000 would take about an hour an epoch):

    epoch 1:     folder 44.6 s, arrays 31.0 s, folder / arrays 1.441   (whole epochs, not interleaved; the folder
                                                                          ran first, in a fresh process)
    epochs 2-3:  folder 61.9 s, arrays 69.0 s, folder / arrays 0.897   (19 turns of 10 steps)
    step times (ms), quartiles: folder 255 / 290 / 340; arrays 246 / 294 / 347; median folder / arrays 0.988

So from the second epoch the folder trains at the arrays' pace (the median step within 2%; the totals differ by
the machine's noise, here in the folder's favour). Epoch-by-epoch turns instead of 10-step turns gave ratios from
0.6 to 3.0 on the same machine: the load, not the data path, decided them.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np


def write_folder(folder: str, x: np.ndarray, y: np.ndarray, names: list[str]) -> None:
    """x (N, 28, 28) uint8 as PNGs in one folder per class (`names[label]`)."""
    from PIL import Image

    for name in names:
        os.makedirs(os.path.join(folder, name), exist_ok=True)
    for i, (image, label) in enumerate(zip(x, y)):
        Image.fromarray(image).save(os.path.join(folder, names[int(label)], f"{i:06d}.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60000, help="the first N training images")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--folder", help="a folder to write the PNGs to (kept), or that holds them already")
    parser.add_argument("--memory-budget", type=int, default=None, help="bytes (default: the dataset's default)")
    parser.add_argument("--chunk", type=int, default=10, help="steps per turn from epoch 2 on")
    args = parser.parse_args()

    import torch

    import convnet
    from convnet.datasets import fashion_mnist, image_dataset_from_directory

    load_before = os.getloadavg()
    (x_train, y_train), _ = fashion_mnist.load_data()
    x_train, y_train = x_train[:args.images], y_train[:args.images]
    names = [f"{label}_{name.replace('/', '-').replace(' ', '_')}" for label, name in enumerate(fashion_mnist.class_names)]
    folder = args.folder or tempfile.mkdtemp(prefix="convnet-fashion-")
    try:
        if not os.path.isdir(folder) or not any(os.scandir(folder)):
            started = time.perf_counter()
            write_folder(folder, x_train, y_train, names)
            print(f"wrote {len(x_train):,} PNGs in {time.perf_counter() - started:.0f} s to {folder}", flush=True)
        options = {} if args.memory_budget is None else {"memory_budget": args.memory_budget}
        started = time.perf_counter()
        data = image_dataset_from_directory(folder, image_size=(28, 28), color_mode="grayscale",
                                            batch_size=args.batch_size, seed=0, verbose=False, **options)
        scan = time.perf_counter() - started
        print(f"{data!r}: scan {scan:.1f} s", flush=True)
        x_arrays = x_train[..., None]  # (N, 28, 28) -> (N, 28, 28, 1), uint8 as load_data gives it

        def model() -> convnet.Sequential:
            convnet.utils.set_random_seed(0)
            net = convnet.zoo.get("seed")
            net.compile(optimizer="nadam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], device="cpu")
            return net

        class StepTimes(convnet.callbacks.Callback):
            """The seconds between consecutive batch ends: a step and the gathering of its batch."""

            def __init__(self) -> None:
                super().__init__()
                self.times: list[float] = []

            def on_train_batch_end(self, batch: int, logs: object = None) -> None:
                self.times.append(time.perf_counter())

        from_folder, from_arrays = model(), model()
        steps_per_epoch = len(data)
        print(f"epoch 1, whole, folder then arrays; epochs 2 to {args.epochs} in turns of {args.chunk} steps "
              f"(folder, arrays, arrays, folder, ...)", flush=True)
        first: dict[str, float] = {}
        for name in ("folder", "arrays"):
            started = time.perf_counter()
            if name == "folder":
                from_folder.fit(data, epochs=1, verbose=0)
            else:
                from_arrays.fit(x_arrays, y_train, batch_size=args.batch_size, epochs=1, verbose=0)
            first[name] = time.perf_counter() - started
            print(f"epoch 1 {name:<6} {first[name]:7.1f} s  (load {os.getloadavg()[0]:.2f})", flush=True)
        seconds = {"folder": 0.0, "arrays": 0.0}
        step_times: dict[str, list[float]] = {"folder": [], "arrays": []}
        rng = np.random.default_rng(0)
        turns = -(-steps_per_epoch * (args.epochs - 1) // args.chunk)
        for turn in range(turns):
            order = ("folder", "arrays") if turn % 2 == 0 else ("arrays", "folder")  # ABBA: a load trend hits both
            chosen = rng.choice(len(x_arrays), args.chunk * args.batch_size, replace=False)
            x_part, y_part = x_arrays[chosen], y_train[chosen]  # (chunk * batch, 28, 28, 1): copied before timing
            for name in order:
                steps = StepTimes()
                started = time.perf_counter()
                if name == "folder":  # `chunk` batches of the dataset's order for epoch `turn + 1`
                    from_folder.fit(data, steps_per_epoch=args.chunk, epochs=turn + 2, initial_epoch=turn + 1,
                                    verbose=0, callbacks=[steps])
                else:
                    from_arrays.fit(x_part, y_part, batch_size=args.batch_size, epochs=1, verbose=0,
                                    callbacks=[steps])
                seconds[name] += time.perf_counter() - started
                step_times[name] += list(np.diff(steps.times))
            if turn % 10 == 9 or turn == turns - 1:
                print(f"  turn {turn + 1}/{turns}: folder {seconds['folder']:.1f} s, arrays {seconds['arrays']:.1f} s "
                      f"(load {os.getloadavg()[0]:.2f})", flush=True)
        load_after = os.getloadavg()
        import PIL
        print(f"\n{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"{torch.get_num_threads()} torch threads; Python {platform.python_version()}, torch {torch.__version__}, "
              f"NumPy {np.__version__}, Pillow {PIL.__version__}, convnet {importlib.metadata.version('convnet')}; "
              f"{time.strftime('%Y-%m-%d %H:%M %Z')}")
        print(f"load average (1, 5, 15 min): before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
              f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
        print(f"seed CNN, {len(x_train):,} images of 28x28, batches of {args.batch_size} ({steps_per_epoch} steps an "
              f"epoch), 1 run\n")
        print(f"epoch 1:        folder {first['folder']:.1f} s, arrays {first['arrays']:.1f} s, folder / arrays "
              f"{first['folder'] / first['arrays']:.3f}")
        print(f"epochs 2-{args.epochs}:     folder {seconds['folder']:.1f} s, arrays {seconds['arrays']:.1f} s, "
              f"folder / arrays {seconds['folder'] / seconds['arrays']:.3f}  ({turns} turns of {args.chunk} steps)")
        quartiles = {name: np.percentile(times, [25, 50, 75]) * 1e3 for name, times in step_times.items()}
        print("step times (ms), quartiles: " + "; ".join(
            f"{name} {q[0]:.0f} / {q[1]:.0f} / {q[2]:.0f}" for name, q in quartiles.items())
            + f"; median folder / arrays {quartiles['folder'][1] / quartiles['arrays'][1]:.3f}")
    finally:
        if not args.folder:
            shutil.rmtree(folder, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
