"""Weight initializers with Keras's names, defaults and fan rules.

Shapes are Keras layouts: a Conv2D kernel (kh, kw, in, out), a Dense kernel (in, out). For a kernel,
fan_in = kh * kw * in and fan_out = kh * kw * out (Keras's `compute_fans`). Truncated normals cut at two
standard deviations and widen the standard deviation by 1 / 0.8796..., as Keras's VarianceScaling does, so
that the truncated distribution keeps the intended variance. "orthogonal" is Keras's `Orthogonal`: a kernel
flattened to (kh * kw * in, out) has orthonormal columns (or rows, when it is wider than tall).

    >>> import torch
    >>> torch.manual_seed(0) and None
    >>> w = get("glorot_uniform")((3, 3, 1, 64))
    >>> tuple(w.shape), bool(w.abs().max() <= (6 / (9 * 1 + 9 * 64)) ** 0.5)
    ((3, 3, 1, 64), True)
    >>> serialize(get("HeNormal")), list_initializers("he_*")   # Keras 3's class spelling works too
    ('he_normal', ['he_normal', 'he_uniform'])
    >>> q = get("orthogonal")((3, 3, 8, 16)).reshape(72, 16)   # flattened as Keras: (kh * kw * in, out)
    >>> bool(torch.allclose(q.T @ q, torch.eye(16), atol=1e-5))
    True
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import torch

from convnet._internal.checks import check_float, check_int, describe
from convnet._internal.registry import Registry

_TRUNCATED_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2]


def compute_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) for a Keras-layout weight shape."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer:
    """Base class: `init(shape)` returns a float32 CPU tensor drawn from torch's global generator."""

    name = "initializer"

    def __call__(self, shape: tuple[int, ...]) -> torch.Tensor:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class VarianceScaling(Initializer):
    """Keras's VarianceScaling: variance scale / fan, from a uniform, a truncated normal or a plain
    ("untruncated") normal; "normal" means "truncated_normal", as in Keras."""

    def __init__(self, scale: float = 1.0, mode: str = "fan_in", distribution: str = "truncated_normal"):
        self.scale = check_float("scale", scale, minimum=0.0, include_min=False)
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"`mode` must be 'fan_in', 'fan_out' or 'fan_avg'. Received: mode={mode!r}")
        if isinstance(distribution, str) and distribution.lower() == "normal":
            distribution = "truncated_normal"
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError("`distribution` must be 'truncated_normal', 'untruncated_normal' or 'uniform'. "
                             f"Received: distribution={distribution!r}")
        self.mode, self.distribution = mode, distribution

    def __call__(self, shape: tuple[int, ...]) -> torch.Tensor:
        fan_in, fan_out = compute_fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = self.scale / max(1.0, fan)
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            return torch.empty(shape).uniform_(-limit, limit)
        if self.distribution == "untruncated_normal":
            return torch.empty(shape).normal_(0.0, math.sqrt(variance))
        std = math.sqrt(variance) / _TRUNCATED_STD
        return torch.nn.init.trunc_normal_(torch.empty(shape), 0.0, std, -2 * std, 2 * std)

    def get_config(self) -> dict[str, Any]:
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution}


class Constant(Initializer):
    def __init__(self, value: float = 0.0):
        self.value = check_float("value", value)

    def __call__(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.full(shape, self.value)

    def get_config(self) -> dict[str, Any]:
        return {"value": self.value}


class RandomNormal(Initializer):
    def __init__(self, mean: float = 0.0, stddev: float = 0.05):
        self.mean = check_float("mean", mean)
        self.stddev = check_float("stddev", stddev, minimum=0.0)

    def __call__(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.empty(shape).normal_(self.mean, self.stddev)

    def get_config(self) -> dict[str, Any]:
        return {"mean": self.mean, "stddev": self.stddev}


class TruncatedNormal(RandomNormal):
    def __call__(self, shape: tuple[int, ...]) -> torch.Tensor:
        lo, hi = self.mean - 2 * self.stddev, self.mean + 2 * self.stddev
        return torch.nn.init.trunc_normal_(torch.empty(shape), self.mean, self.stddev, lo, hi)


class RandomUniform(Initializer):
    def __init__(self, minval: float = -0.05, maxval: float = 0.05):
        self.minval = check_float("minval", minval)
        self.maxval = check_float("maxval", maxval, minimum=self.minval)

    def __call__(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.empty(shape).uniform_(self.minval, self.maxval)

    def get_config(self) -> dict[str, Any]:
        return {"minval": self.minval, "maxval": self.maxval}


class Orthogonal(Initializer):
    """Keras 3's `Orthogonal(gain, seed)`: the shape is flattened to (prod(shape[:-1]), shape[-1]) (a conv
    kernel (kh, kw, in, out) to (kh * kw * in, out)); a normal matrix of the taller orientation is QR-factored,
    Q's columns are multiplied by the signs of R's diagonal (so Q is uniformly distributed), Q is transposed
    back when the flattened shape is wider than tall, and scaled by `gain`. The result has orthonormal columns
    (times `gain`) when rows >= columns, else orthonormal rows.

    Args:
        gain: the factor applied to the orthogonal matrix.
        seed: an int makes every call draw the same matrix (Keras's rule for an int seed); None draws from
            torch's global generator.

    Raises:
        ValueError: a shape of rank < 2 (at call).
    """

    def __init__(self, gain: float = 1.0, seed: int | None = None):
        self.gain = check_float("gain", gain)
        self.seed = None if seed is None else check_int("seed", seed)

    def __call__(self, shape: tuple[int, ...]) -> torch.Tensor:
        if len(shape) < 2:
            raise ValueError(f"the orthogonal initializer needs a shape of rank >= 2. Received: shape={tuple(shape)}")
        rows, cols = math.prod(shape[:-1]), shape[-1]
        generator = None if self.seed is None else torch.Generator().manual_seed(self.seed)
        a = torch.randn(max(rows, cols), min(rows, cols), generator=generator)  # (tall, short)
        q, r = torch.linalg.qr(a)  # reduced: q (tall, short), r (short, short)
        q = q * torch.sign(torch.diagonal(r))  # column j times sign(r[j, j])
        if rows < cols:
            q = q.t()  # (short, tall) -> (rows, cols)
        return (self.gain * q).reshape(shape).contiguous()  # (rows, cols) -> shape

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"gain": self.gain}
        if self.seed is not None:
            config["seed"] = self.seed
        return config


def to_snake_case(name: str) -> str:
    """Keras 3's name rule (`keras.src.utils.naming.to_snake_case`): "HeNormal", "he_normal" and
    "HE_NORMAL" are one name; the registries of named things that Keras also names by class use it."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


INITIALIZERS: Registry[Callable[[], Initializer]] = Registry("initializer", normalise=to_snake_case)
INITIALIZERS.register("glorot_uniform", lambda: VarianceScaling(1.0, "fan_avg", "uniform"))
INITIALIZERS.register("glorot_normal", lambda: VarianceScaling(1.0, "fan_avg", "truncated_normal"))
INITIALIZERS.register("he_uniform", lambda: VarianceScaling(2.0, "fan_in", "uniform"))
INITIALIZERS.register("he_normal", lambda: VarianceScaling(2.0, "fan_in", "truncated_normal"))
INITIALIZERS.register("lecun_uniform", lambda: VarianceScaling(1.0, "fan_in", "uniform"))
INITIALIZERS.register("lecun_normal", lambda: VarianceScaling(1.0, "fan_in", "truncated_normal"))
INITIALIZERS.register("zeros", lambda: Constant(0.0))
INITIALIZERS.register("ones", lambda: Constant(1.0))
INITIALIZERS.register("random_normal", RandomNormal)
INITIALIZERS.register("random_uniform", RandomUniform)
INITIALIZERS.register("truncated_normal", TruncatedNormal)
INITIALIZERS.register("variance_scaling", VarianceScaling)
INITIALIZERS.register("orthogonal", Orthogonal)

# The classes a serialized {"class_name", "config"} may name; matched exactly, as Keras matches class names.
CLASSES: Registry[type[Initializer]] = Registry("initializer class", normalise=str)
for _cls in (VarianceScaling, Constant, RandomNormal, TruncatedNormal, RandomUniform, Orthogonal):
    CLASSES.register(_cls.__name__, _cls)
del _cls


def list_initializers(pattern: str = "*") -> list[str]:
    """The names `get` accepts that match a shell-style `pattern` ("he_*"), sorted."""
    return INITIALIZERS.names(pattern)


def get(identifier: str | Initializer | dict) -> Initializer:
    """An initializer from a Keras name ("glorot_uniform", "he_normal", "orthogonal", "variance_scaling", or
    Keras 3's class spelling "HeNormal", "Zeros", "Orthogonal"), an Initializer, or a serialized
    {"class_name": ..., "config": ...} dict.

    Raises:
        ValueError: an unknown name or class name (with close matches).
        TypeError: anything else.
    """
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, str):
        initializer = INITIALIZERS.get(identifier, argument="initializer")()
        initializer.name = to_snake_case(identifier)
        return initializer
    if isinstance(identifier, dict) and isinstance(identifier.get("class_name"), str):
        cls = CLASSES.get(identifier["class_name"], argument="initializer")
        return cls(**identifier.get("config", {}))
    raise TypeError(f"an initializer must be a name such as 'glorot_uniform' or an Initializer. "
                    f"Received: {describe(identifier)}")


def serialize(initializer: Initializer) -> str | dict:
    """The name of a named initializer, else {"class_name", "config"}."""
    if initializer.name in INITIALIZERS:
        return initializer.name
    return {"class_name": type(initializer).__name__, "config": initializer.get_config()}
