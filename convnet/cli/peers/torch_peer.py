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

import numpy as np
import torch
import torch.nn as nn


def seed_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 64, 7, padding=3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(), nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(256 * 9, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="eager32", choices=["eager32", "cl32", "cl_bf16", "compile", "graph"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--data", required=True, help="folder with x_train.npy, y_train.npy, x_test.npy")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    x = torch.from_numpy(np.load(os.path.join(args.data, "x_train.npy"))).to(device).unsqueeze(1)  # (N, 1, 28, 28)
    y = torch.from_numpy(np.load(os.path.join(args.data, "y_train.npy"))).long().to(device)
    x_test = torch.from_numpy(np.load(os.path.join(args.data, "x_test.npy"))).to(device).unsqueeze(1)
    channels_last = args.mode != "eager32"
    bf16 = args.mode in ("cl_bf16", "graph", "compile") and (device.type == "cuda" or args.mode == "cl_bf16")
    model = seed_cnn().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    capturable = args.mode == "graph"
    optimizer = torch.optim.NAdam(model.parameters(), lr=torch.tensor(1e-3, device=device) if capturable else 1e-3,
                                  capturable=capturable)
    loss_fn = nn.CrossEntropyLoss()

    def prepare(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.float().div_(255)
        return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch

    def forward_loss(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            return loss_fn(model(prepare(xb)), yb)

    if args.mode == "compile":
        forward_loss = torch.compile(forward_loss)

    def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        loss = forward_loss(xb, yb)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=not capturable)
        return loss

    bs = args.batch_size
    if args.mode == "graph":
        static_x, static_y = x[:bs].clone(), y[:bs].clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                step(static_x, static_y)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step(static_x, static_y)

        def run(xb: torch.Tensor, yb: torch.Tensor) -> None:
            static_x.copy_(xb)
            static_y.copy_(yb)
            graph.replay()
    else:
        run = step
    order = torch.randperm(len(x), device=device)
    for i in range(args.warmup):
        index = order[i * bs:(i + 1) * bs]
        run(x[index], y[index])
    sync()
    start = time.perf_counter()
    for i in range(args.steps):
        index = order[(i * bs) % (len(x) - bs):][:bs]
        run(x[index], y[index])
    sync()
    train_seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
        for j in range(0, 2000, 1000):
            model(prepare(x_test[j:j + 1000]))
        sync()
        start = time.perf_counter()
        for j in range(0, len(x_test), 1000):
            model(prepare(x_test[j:j + 1000]))
        sync()
    predict_seconds = time.perf_counter() - start
    print(json.dumps({"train_img_s": args.steps * bs / train_seconds, "predict_img_s": len(x_test) / predict_seconds}))


if __name__ == "__main__":
    main()
