"""Benchmark peer: the seed CNN trained by a hand-written PyTorch loop, the way a PyTorch user would write it.

Modes: eager32 (NCHW, float32), cl32 (channels_last, float32), cl_bf16 (channels_last + bf16 autocast),
compile (torch.compile of the forward and loss), graph (CUDA only: the whole step in one CUDA graph).
Run by `convnet bench` in its own process; prints one JSON line:

    python -m convnet.cli.peers.torch_peer --mode cl32 --batch-size 128 --steps 20 --data DIR --device cpu
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

MODES = ("eager32", "cl32", "cl_bf16", "compile", "graph")
Step = Callable[[torch.Tensor, torch.Tensor], object]


def seed_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 64, 7, padding=3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(), nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(256 * 9, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="eager32", choices=MODES)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--data", required=True, help="folder with x_train.npy, y_train.npy, x_test.npy")
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


@dataclass
class Setup:
    """How a mode runs: the memory layout, bf16 autocast, and whether the optimizer must be CUDA-graph capturable."""
    device: torch.device
    channels_last: bool
    bf16: bool
    capturable: bool

    @classmethod
    def of(cls, mode: str, device: torch.device) -> Setup:
        # compile and graph use bf16 on a GPU only; cl_bf16 is only run where bf16 is native (bench decides)
        bf16 = mode in ("cl_bf16", "graph", "compile") and (device.type == "cuda" or mode == "cl_bf16")
        return cls(device=device, channels_last=mode != "eager32", bf16=bf16, capturable=mode == "graph")

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 images (N, 1, 28, 28) -> float32 in [0, 1], in the mode's memory layout."""
        batch = batch.float().div_(255)
        return batch.contiguous(memory_format=torch.channels_last) if self.channels_last else batch

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16)


def load_data(folder: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test) on `device`: uint8 images (N, 1, 28, 28) and int64 labels."""
    def images(name: str) -> torch.Tensor:
        return torch.from_numpy(np.load(os.path.join(folder, name))).to(device).unsqueeze(1)  # (N, 28, 28) -> (N, 1, 28, 28)
    y = torch.from_numpy(np.load(os.path.join(folder, "y_train.npy"))).long().to(device)
    return images("x_train.npy"), y, images("x_test.npy")


def build(setup: Setup) -> tuple[nn.Sequential, torch.optim.Optimizer]:
    """The model and NAdam (PyTorch's, lr 1e-3), on the device in the mode's layout."""
    model = seed_cnn().to(setup.device)
    if setup.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # accepted, not in the stubs
    lr = torch.tensor(1e-3, device=setup.device) if setup.capturable else 1e-3  # a graph replays a tensor lr
    optimizer = torch.optim.NAdam(model.parameters(), lr=lr, capturable=setup.capturable)
    return model, optimizer


def training_step(mode: str, setup: Setup, model: nn.Module, optimizer: torch.optim.Optimizer) -> Step:
    """One optimisation step on a batch; the forward and loss compiled in `compile` mode."""
    loss_fn = nn.CrossEntropyLoss()

    def forward_loss(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with setup.autocast():
            return loss_fn(model(setup.prepare(xb)), yb)

    if mode == "compile":
        forward_loss = torch.compile(forward_loss)

    def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        loss = forward_loss(xb, yb)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=not setup.capturable)  # a captured graph keeps its gradient buffers
        return loss

    return step


def graphed(step: Step, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Step:
    """`step` captured in a CUDA graph after 3 warm-up steps on a side stream; each call copies its batch
    into the graph's static inputs and replays it."""
    static_x, static_y = x[:batch_size].clone(), y[:batch_size].clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            step(static_x, static_y)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(static_x, static_y)

    def replay(xb: torch.Tensor, yb: torch.Tensor) -> None:
        static_x.copy_(xb)
        static_y.copy_(yb)
        graph.replay()

    return replay


def time_training(run: Step, setup: Setup, x: torch.Tensor, y: torch.Tensor, batch_size: int, warmup: int,
                  steps: int) -> float:
    """Seconds for `steps` steps on shuffled batches, after `warmup` untimed ones."""
    order = torch.randperm(len(x), device=setup.device)
    for i in range(warmup):
        index = order[i * batch_size:(i + 1) * batch_size]
        run(x[index], y[index])
    setup.sync()
    start = time.perf_counter()
    for i in range(steps):
        index = order[(i * batch_size) % (len(x) - batch_size):][:batch_size]
        run(x[index], y[index])
    setup.sync()
    return time.perf_counter() - start


def time_predict(model: nn.Module, setup: Setup, x_test: torch.Tensor) -> float:
    """Seconds to predict every test image in batches of 1000, after 2000 untimed images."""
    model.eval()
    with torch.no_grad(), setup.autocast():
        for j in range(0, 2000, 1000):
            model(setup.prepare(x_test[j:j + 1000]))
        setup.sync()
        start = time.perf_counter()
        for j in range(0, len(x_test), 1000):
            model(setup.prepare(x_test[j:j + 1000]))
        setup.sync()
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    setup = Setup.of(args.mode, torch.device(args.device))
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    x, y, x_test = load_data(args.data, setup.device)
    model, optimizer = build(setup)
    step = training_step(args.mode, setup, model, optimizer)
    run = graphed(step, x, y, args.batch_size) if args.mode == "graph" else step
    train_seconds = time_training(run, setup, x, y, args.batch_size, args.warmup, args.steps)
    predict_seconds = time_predict(model, setup, x_test)
    print(json.dumps({"train_img_s": args.steps * args.batch_size / train_seconds,
                      "predict_img_s": len(x_test) / predict_seconds}))


if __name__ == "__main__":
    main()
