"""Activation functions by Keras name.

    >>> import torch
    >>> from convnet import activations
    >>> activations.get("relu")(torch.tensor([-1.0, 2.0])).tolist()
    [0.0, 2.0]
    >>> activations.list_activations()[:4]
    ['elu', 'exponential', 'gelu', 'hard_sigmoid']
    >>> activations.list_activations("*relu*")
    ['leaky_relu', 'relu', 'relu6']
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from convnet._internal.checks import describe
from convnet._internal.registry import Registry

Activation = Callable[[torch.Tensor], torch.Tensor]


def linear(x: torch.Tensor) -> torch.Tensor:
    return x


def softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis (the class or channel axis in NHWC), as Keras."""
    return torch.softmax(x, dim=-1)


def gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x)  # Keras's default is the exact (erf) form, approximate=False


def elu(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x, alpha=1.0)


def leaky_relu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, negative_slope=0.2)  # Keras's default slope


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return F.relu6(x + 3.0) / 6.0  # Keras 3's definition


def log_softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(x, dim=-1)


ACTIVATIONS: Registry[Activation] = Registry("activation")
for _name, _function in [
    ("linear", linear),
    ("relu", torch.relu),
    ("relu6", F.relu6),
    ("sigmoid", torch.sigmoid),
    ("tanh", torch.tanh),
    ("softmax", softmax),
    ("log_softmax", log_softmax),
    ("elu", elu),
    ("selu", F.selu),
    ("gelu", gelu),
    ("swish", F.silu),  # Keras's name first: name_of(F.silu) is "swish"
    ("silu", F.silu),
    ("softplus", F.softplus),
    ("softsign", F.softsign),
    ("leaky_relu", leaky_relu),
    ("exponential", torch.exp),
    ("hard_sigmoid", hard_sigmoid),
]:
    ACTIVATIONS.register(_name, _function)
del _name, _function


def list_activations(pattern: str = "*") -> list[str]:
    """The names `get` accepts that match a shell-style `pattern` ("*relu*"), sorted."""
    return ACTIVATIONS.names(pattern)


def get(identifier: str | Activation | None) -> Activation:
    """An activation function from a Keras name (any case), a callable, or None (linear).

    Raises:
        ValueError: unknown name (with close matches).
        TypeError: neither a string, a callable nor None.
    """
    if identifier is None:
        return linear
    if isinstance(identifier, str):
        return ACTIVATIONS.get(identifier, argument="activation")
    if callable(identifier):
        return identifier
    raise TypeError(f"`activation` must be a name such as 'relu', a callable or None. "
                    f"Received: activation={describe(identifier)}")


def name_of(function: Activation) -> str | None:
    """The registry name of a built-in activation, or None for a user's callable."""
    return ACTIVATIONS.name_of(function)
