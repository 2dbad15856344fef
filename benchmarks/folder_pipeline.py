"""How fast convnet reads a folder of 28x28 PNGs, and that streaming keeps memory flat.

    python benchmarks/folder_pipeline.py [--images 20000] [--runs 3] [--workers 1 2] [--folder DIR]

Writes a folder of synthetic shapes (convnet.datasets.shapes) as 28x28 grayscale PNGs, one folder per class,
unless --folder holds one already (it is kept; a temporary one is deleted). Then, --runs times each, taking
turns so that a busy machine slows them alike:

- decode: `ImageReader.read` over the files in one thread (open, bomb check, decode, PNG CRC check);
- scan + cache: `image_dataset_from_directory` with the default memory budget (every file decoded once,
  kept as uint8), per number of worker threads;
- streamed epoch: one epoch with memory_budget=0 (decoded every epoch, `prefetch` batches ahead);
- cached epoch: one epoch from the uint8 cache.

Memory: one streamed epoch over the whole folder with the resident set size (RSS, /proc/self/statm)
sampled every 50 batches: after building the dataset, its largest value during the epoch, and at the end.

Prints the machine, the load average before and after (the machine may be shared), the library versions,
and per figure the median and the range over the runs.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np


def rss_mib() -> float:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def write_folder(folder: str, images: int) -> None:
    from PIL import Image

    from convnet.datasets.shapes import CLASS_NAMES, draw_shapes

    rng = np.random.default_rng(0)
    for name in CLASS_NAMES:
        os.makedirs(os.path.join(folder, name.replace(" ", "_")), exist_ok=True)
    for start in range(0, images, 10000):  # drawn in chunks: 200,000 at once would take 600 MB of float32
        labels = np.arange(start, min(start + 10000, images)) % len(CLASS_NAMES)
        for i, (image, label) in enumerate(zip(draw_shapes(labels, 28, rng), labels), start):
            Image.fromarray(image).save(os.path.join(folder, CLASS_NAMES[label].replace(" ", "_"), f"{i:06d}.png"))


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):>10,.0f}  ({min(values):,.0f} to {max(values):,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--folder", help="a folder of class folders to read (written there first if empty)")
    args = parser.parse_args()

    from convnet.datasets import image_dataset_from_directory
    from convnet.datasets.local.pipeline import ImageReader

    load_before = os.getloadavg()
    folder = args.folder or tempfile.mkdtemp(prefix="convnet-folder-")
    try:
        if not any(os.scandir(folder)) if os.path.isdir(folder) else True:
            os.makedirs(folder, exist_ok=True)
            started = time.perf_counter()
            write_folder(folder, args.images)
            print(f"wrote {args.images:,} PNGs in {time.perf_counter() - started:.0f} s to {folder}")
        options = {"image_size": (28, 28), "color_mode": "grayscale", "batch_size": args.batch_size, "seed": 0,
                   "verbose": False}
        paths = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in sorted(names)]
        sample = paths[:min(len(paths), 5000)]
        reader = ImageReader(1, (28, 28))
        rates: dict[str, list[float]] = {}
        for _ in range(args.runs):
            started = time.perf_counter()
            for path in sample:
                reader.read(path)
            rates.setdefault("decode, 1 thread (5,000 files)", []).append(len(sample) / (time.perf_counter() - started))
            for workers in args.workers:
                started = time.perf_counter()
                data = image_dataset_from_directory(folder, workers=workers, **options)
                rates.setdefault(f"scan + cache, {workers} threads", []).append(
                    data.num_samples / (time.perf_counter() - started))
                started = time.perf_counter()
                count = sum(len(y) for _, y in data)
                rates.setdefault("cached epoch", []).append(count / (time.perf_counter() - started))
                streamed = image_dataset_from_directory(folder, workers=workers, memory_budget=0, **options)
                started = time.perf_counter()
                count = sum(len(y) for _, y in streamed)
                rates.setdefault(f"streamed epoch, {workers} threads", []).append(
                    count / (time.perf_counter() - started))
                del data, streamed

        streamed = image_dataset_from_directory(folder, memory_budget=0, **options)
        built = rss_mib()
        samples = []
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a bad file would be a broken benchmark
            for step, _ in enumerate(streamed.iter_from(0)):
                if step % 50 == 0:
                    samples.append(rss_mib())
        end = rss_mib()
        load_after = os.getloadavg()

        import PIL
        print(f"\n{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
              f"Python {platform.python_version()}, NumPy {np.__version__}, Pillow {PIL.__version__}, "
              f"convnet {importlib.metadata.version('convnet')}; {time.strftime('%Y-%m-%d %H:%M')}")
        print(f"load average (1, 5, 15 min): before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
              f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
        print(f"{len(paths):,} PNGs of 28x28, batches of {args.batch_size}, {args.runs} runs: images/s, median "
              f"(range)\n")
        for name, values in rates.items():
            print(f"  {name:<34} {spread(values)}")
        print(f"\nstreamed epoch of {streamed.num_samples:,} images ({len(streamed):,} batches), RSS in MiB: after "
              f"building {built:.0f}, during the epoch {min(samples):.0f} to {max(samples):.0f} "
              f"({len(samples)} samples), at the end {end:.0f}")
        half = len(samples) // 2
        print(f"  growth from the first to the second half of the epoch: "
              f"{max(samples[half:]) - max(samples[:half]):+.1f} MiB")
    finally:
        if not args.folder:
            shutil.rmtree(folder, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
