"""How fast convnet reads a folder of 28x28 PNGs, and that streaming keeps memory flat.

    python benchmarks/folder_pipeline.py [--images 20000] [--runs 3] [--workers 1 2] [--folder DIR]
        [--distinct N]

Writes a folder of synthetic shapes (convnet.datasets.shapes) as 28x28 grayscale PNGs, one folder per class,
unless --folder holds one already (it is kept; a temporary one is deleted). With --distinct N, only N distinct
PNGs are drawn and written, and the others are hard links to them under their own names (a folder of 200,000
files in seconds, and a few MB of disk); every name is still opened, decoded and checked as a file of its own.
Then, --runs times each, taking turns so that a busy machine slows them alike:

- decode: `ImageReader.read` over the files in one thread (open, bomb check, decode, PNG CRC check);
- scan + cache: `image_dataset_from_directory` with the default memory budget (every file decoded once,
  kept as uint8), per number of worker threads;
- streamed epoch: one epoch with memory_budget=0 (decoded every epoch, `prefetch` batches ahead);
- cached epoch: one epoch from the uint8 cache.

Memory: one streamed epoch over the whole folder with the resident set size (RSS, /proc/self/statm)
sampled every 50 batches: after building the dataset, its largest value during the epoch, and at the end;
and the RSS after 10%, 50% and 100% of the epoch's batches.

Prints the machine, the load average before and after (the machine may be shared), the library versions,
and per figure the median and the range over the runs.

Measured 2026-11-30 00:20-00:27 UTC on this project's VM (2-core AMD EPYC, no GPU; Python 3.11.7, NumPy 2.4.6,
Pillow 13.0.0), shared with other work (load average 1.2 before, 3.8 after), with

    python benchmarks/folder_pipeline.py --images 200000 --distinct 5000 --runs 2 --workers 1 2

(5,000 distinct PNGs, the other 195,000 names hard links to them), images/s, median (range over 2 runs):

    decode, 1 thread (5,000 files)    12,472  (12,165 to 12,779)
    scan + cache, 1 thread            10,092   (9,393 to 10,790)
    streamed epoch, 1 thread          10,908  (10,583 to 11,234)
    scan + cache, 2 threads            7,650   (5,631 to 9,668)
    streamed epoch, 2 threads          8,404   (5,954 to 10,854)

The streamed epoch of the 200,000 images (6,250 batches of 32, memory_budget=0): resident memory 298.4 MiB after
10% of the batches, 298.4 MiB after 50% and 298.4 MiB after 100% (+0.0 MiB), 298 MiB in all 125 samples.
A second thread slows the 28x28 PNGs on these two shared cores (the Python around each decode dominates).
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


def write_folder(folder: str, images: int, distinct: int | None = None) -> None:
    """`images` PNGs in a folder per class; with `distinct`, image i >= distinct is a hard link to image
    i % distinct (the same class, since distinct is rounded to a multiple of the classes)."""
    from PIL import Image

    from convnet.datasets.shapes import CLASS_NAMES, draw_shapes

    rng = np.random.default_rng(0)
    classes = len(CLASS_NAMES)
    drawn = images if distinct is None else min(images, max(classes, distinct - distinct % classes))

    def path(i: int) -> str:
        return os.path.join(folder, CLASS_NAMES[i % classes].replace(" ", "_"), f"{i:06d}.png")

    for name in CLASS_NAMES:
        os.makedirs(os.path.join(folder, name.replace(" ", "_")), exist_ok=True)
    for start in range(0, drawn, 10000):  # drawn in chunks: 200,000 at once would take 600 MB of float32
        labels = np.arange(start, min(start + 10000, drawn)) % classes
        for i, image in enumerate(draw_shapes(labels, 28, rng), start):
            Image.fromarray(image).save(path(i))
    for i in range(drawn, images):
        os.link(path(i % drawn), path(i))


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):>10,.0f}  ({min(values):,.0f} to {max(values):,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--folder", help="a folder of class folders to read (written there first if empty)")
    parser.add_argument("--distinct", type=int, help="draw only this many PNGs; the others are hard links to them")
    args = parser.parse_args()

    from convnet.datasets import FolderDataset, image_dataset_from_directory
    from convnet.datasets.local.pipeline import ImageReader

    def dataset(**overrides: object) -> FolderDataset:
        made = image_dataset_from_directory(folder, **{**options, **overrides})
        assert isinstance(made, FolderDataset), "no subset: one dataset"
        return made

    load_before = os.getloadavg()
    folder = args.folder or tempfile.mkdtemp(prefix="convnet-folder-")
    try:
        if not any(os.scandir(folder)) if os.path.isdir(folder) else True:
            os.makedirs(folder, exist_ok=True)
            started = time.perf_counter()
            write_folder(folder, args.images, args.distinct)
            print(f"wrote {args.images:,} PNGs ({args.distinct or args.images:,} distinct) in "
                  f"{time.perf_counter() - started:.0f} s to {folder}", flush=True)
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
                data = dataset(workers=workers)
                rates.setdefault(f"scan + cache, {workers} threads", []).append(
                    data.num_samples / (time.perf_counter() - started))
                started = time.perf_counter()
                count = sum(len(y) for _, y in data)
                rates.setdefault("cached epoch", []).append(count / (time.perf_counter() - started))
                streamed = dataset(workers=workers, memory_budget=0)
                started = time.perf_counter()
                count = sum(len(y) for _, y in streamed)
                rates.setdefault(f"streamed epoch, {workers} threads", []).append(
                    count / (time.perf_counter() - started))
                del data, streamed

        streamed = dataset(memory_budget=0)
        built = rss_mib()
        samples = []
        marks = {max(1, round(len(streamed) * share)): share for share in (0.1, 0.5, 1.0)}  # batches taken -> share
        at: dict[float, float] = {}
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a bad file would be a broken benchmark
            for step, _ in enumerate(streamed.iter_from(0)):
                if step % 50 == 0:
                    samples.append(rss_mib())
                if step + 1 in marks:
                    at[marks[step + 1]] = rss_mib()
        epoch_s = time.perf_counter() - started
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
        print(f"  RSS after 10% of the batches {at[0.1]:.1f} MiB, after 50% {at[0.5]:.1f} MiB, after 100% "
              f"{at[1.0]:.1f} MiB ({at[1.0] - at[0.1]:+.1f} MiB from 10% to 100%); the epoch took {epoch_s:.0f} s, "
              f"{streamed.num_samples / epoch_s:,.0f} images/s")
        half = len(samples) // 2
        if half:
            print(f"  growth from the first to the second half of the epoch: "
                  f"{max(samples[half:]) - max(samples[:half]):+.1f} MiB")
    finally:
        if not args.folder:
            shutil.rmtree(folder, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
