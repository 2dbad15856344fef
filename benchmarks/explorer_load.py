"""`convnet explore` under load: latency of each endpoint alone, then many concurrent clients, against a real
server process (the command line, uvicorn) holding the seed CNN.

    python benchmarks/explorer_load.py [--target RUN_DIR | MODEL.convnet] [--clients 32] [--seconds 20]
                                       [--runs 30] [--browser]

1. Alone (one client, `--runs` requests each, after 3 warm-up requests): POST /api/predict with one 28x28 PNG,
   POST /api/featuremaps (every spatial layer), POST /api/explain (Grad-CAM), GET /api/model; with
   `--browser`, the page's first contentful paint in Chromium (Playwright, Debian's chromium).
2. Under load: `--clients` clients, each sending predict and feature-map requests in turn, back to back, for
   `--seconds` seconds: requests, failures (any status but 200, or a transport error), p50/p95/p99 latency per
   endpoint, and the server's resident memory (VmRSS, sampled every 0.25 s: at the start, the largest, at the
   end, and the mean of the first and last quarter, to show whether it grows).

Prints the machine, the library versions, the load average (`uptime`) before and after, and each figure with
its spread; the issue's targets beside the alone figures. The model is the seed's CNN (`--model seed`: its
random initial weights, which compute as fast as trained ones) unless `--target` names a run or a file.
`run_benchmark()` returns the figures (tests/test_explorer.py's slow test calls it).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import io
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

TARGETS_MS = {"predict": 20.0, "featuremaps": 200.0, "explain": 300.0, "first paint": 1000.0}  # the p50 targets
BOUNDARY = "convnetbench"


def _png(seed: int = 0) -> bytes:
    from PIL import Image
    pixels = np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(fields: dict[str, str], image: bytes) -> bytes:
    """A multipart/form-data body with the file field `image` and text fields."""
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
             for key, value in fields.items()]
    parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="digit.png"\r\n'
                 f"Content-Type: image/png\r\n\r\n".encode() + image + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


HEADERS = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


@contextlib.contextmanager
def server(target: str | None, threads: int | None) -> Iterator[tuple[str, int]]:
    """`convnet explore` as a process on a free port; yields (URL, process id); stops it with Ctrl-C (SIGINT)."""
    command = [sys.executable, "-m", "convnet.cli.explore", "--port", "0", "--no-browser", "--device", "cpu"]
    command += [target] if target else ["--model", "seed"]
    command += ["--threads", str(threads)] if threads else []
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout is not None
        url = None
        for line in process.stdout:
            match = re.search(r"at (http://\S+/) \(Ctrl-C stops\)", line)
            if match:
                url = match.group(1)
                break
        if url is None:
            raise SystemExit(f"the server did not start: {process.stderr.read() if process.stderr else ''}")
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def rss_mb(pid: int) -> float:
    """The process's resident memory, from /proc (Linux)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p95, p99, min, max of latencies in seconds, as milliseconds."""
    array = np.asarray(values) * 1000
    return {"n": len(values), "p50": float(np.percentile(array, 50)), "p95": float(np.percentile(array, 95)),
            "p99": float(np.percentile(array, 99)), "min": float(array.min()), "max": float(array.max())}


def alone(url: str, runs: int) -> dict[str, dict[str, float]]:
    """Each endpoint's latency with no other client: `runs` requests after 3 warm-up ones."""
    import httpx
    image = _png()
    requests = {"predict": ("POST", "api/predict", multipart({}, image)),
                "featuremaps": ("POST", "api/featuremaps", multipart({}, image)),
                "explain": ("POST", "api/explain", multipart({"method": "grad_cam"}, image)),
                "model": ("GET", "api/model", None)}
    figures = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        for name, (method, path, body) in requests.items():
            times = []
            for attempt in range(runs + 3):
                started = time.perf_counter()
                response = client.request(method, path, content=body, headers=HEADERS if body else None)
                elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    raise SystemExit(f"{name}: {response.status_code} {response.text[:200]}")
                if attempt >= 3:
                    times.append(elapsed)
            figures[name] = percentiles(times)
    return figures


def first_paint(url: str, runs: int = 5) -> dict[str, float] | None:
    """The page's first contentful paint in Chromium, `runs` fresh loads; None without Playwright or Chromium."""
    import shutil
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    executable = os.environ.get("CONVNET_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not executable:
        return None
    paints = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        for _ in range(runs):
            context = browser.new_context()
            page = context.new_page()
            page.goto(url)
            page.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0")
            paints.append(page.evaluate("performance.getEntriesByName('first-contentful-paint')[0].startTime") / 1000)
            context.close()
        browser.close()
    return percentiles(paints)


async def _clients(url: str, clients: int, seconds: float) -> dict[str, Any]:
    import httpx
    bodies = {"predict": multipart({}, _png(1)), "featuremaps": multipart({}, _png(2))}
    latencies: dict[str, list[float]] = {name: [] for name in bodies}
    failures: list[str] = []
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        async def client(index: int) -> None:
            turn = index
            while time.perf_counter() < deadline:
                name = ("predict", "featuremaps")[turn % 2]
                turn += 1
                started = time.perf_counter()
                try:
                    response = await http.post(f"api/{name}", content=bodies[name], headers=HEADERS)
                    await response.aread()
                    if response.status_code != 200:
                        failures.append(f"{name}: {response.status_code} {response.text[:120]}")
                        continue
                except httpx.HTTPError as error:
                    failures.append(f"{name}: {type(error).__name__}: {error}")
                    continue
                latencies[name].append(time.perf_counter() - started)
        await asyncio.gather(*(client(i) for i in range(clients)))
    return {"latencies": latencies, "failures": failures}


def under_load(url: str, pid: int, clients: int, seconds: float) -> dict[str, Any]:
    """`clients` concurrent clients for `seconds`, the server's memory sampled meanwhile."""
    memory: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            memory.append(rss_mb(pid))
            done.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    result = asyncio.run(_clients(url, clients, seconds))
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    quarter = max(len(memory) // 4, 1)
    latencies = result["latencies"]
    total = sum(len(values) for values in latencies.values())
    return {"clients": clients, "seconds": wall, "requests": total + len(result["failures"]),
            "failures": result["failures"], "per_second": total / wall,
            "latency": {name: percentiles(values) for name, values in latencies.items() if values},
            "memory_mb": {"start": memory[0], "max": max(memory), "end": memory[-1],
                          "first_quarter": statistics.fmean(memory[:quarter]),
                          "last_quarter": statistics.fmean(memory[-quarter:]), "samples": len(memory)}}


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def processor() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what `platform` knows."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def versions() -> str:
    import torch
    names = ("starlette", "uvicorn", "httpx")
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} missing")
    return f"Python {platform.python_version()}, torch {torch.__version__}, " + ", ".join(found)


def run_benchmark(target: str | None = None, clients: int = 32, seconds: float = 20.0, runs: int = 30,
                  browser: bool = False, threads: int | None = None) -> dict[str, Any]:
    """The figures: {"before", "after" (uptime), "alone", "first_paint", "load"}."""
    figures: dict[str, Any] = {"before": uptime(), "cpus": os.cpu_count(), "processor": processor()}
    with server(target, threads) as (url, pid):
        figures["alone"] = alone(url, runs)
        figures["first_paint"] = first_paint(url) if browser else None
        under_load(url, pid, clients, 2.0)  # warm-up: the first requests of each connection, the allocator
        figures["load"] = under_load(url, pid, clients, seconds)
    figures["after"] = uptime()
    return figures


def report(figures: dict[str, Any]) -> str:
    lines = [f"convnet explore under load: {figures['cpus']} CPU(s), {figures['processor']}; {versions()}",
             f"before: {figures['before']}", "",
             "Alone (one client), milliseconds:", "| request | p50 | p95 | min | max | runs | target (p50) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    rows = dict(figures["alone"])
    if figures.get("first_paint"):
        rows["first paint"] = figures["first_paint"]
    for name, item in rows.items():
        target = TARGETS_MS.get(name)
        mark = "" if target is None else f"< {target:g} ({'met' if item['p50'] < target else 'MISSED'})"
        lines.append(f"| {name} | {item['p50']:.1f} | {item['p95']:.1f} | {item['min']:.1f} | {item['max']:.1f} | "
                     f"{item['n']} | {mark} |")
    load = figures["load"]
    memory = load["memory_mb"]
    lines += ["", f"Under load: {load['clients']} clients for {load['seconds']:.1f} s, predict and feature maps in turn: "
              f"{load['requests']} requests, {len(load['failures'])} failed, {load['per_second']:.1f} answered per second",
              "| request | p50 | p95 | p99 | max | answered |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, item in load["latency"].items():
        lines.append(f"| {name} | {item['p50']:.0f} | {item['p95']:.0f} | {item['p99']:.0f} | {item['max']:.0f} | "
                     f"{item['n']} |")
    lines += [f"server memory (RSS): {memory['start']:.0f} MB at the start, {memory['max']:.0f} MB at most, "
              f"{memory['end']:.0f} MB at the end; mean of the first quarter {memory['first_quarter']:.0f} MB, of the "
              f"last {memory['last_quarter']:.0f} MB ({memory['samples']} samples)",
              f"after: {figures['after']}"]
    lines += [f"failure: {failure}" for failure in load["failures"][:5]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", help="a run folder or a .convnet file (default: --model seed)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=30, help="requests per endpoint, one client")
    parser.add_argument("--threads", type=int, help="the server's PyTorch threads (default: its own, min(4, CPUs))")
    parser.add_argument("--browser", action="store_true", help="also time the page's first paint in Chromium")
    args = parser.parse_args()
    print(report(run_benchmark(args.target, args.clients, args.seconds, args.runs, args.browser, args.threads)))


if __name__ == "__main__":
    main()
