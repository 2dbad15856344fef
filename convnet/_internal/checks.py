"""Argument normalisation and validation, written once for the whole package.

Every public function checks its input through these helpers, so that each rule (and the wording of
its error) lives in one place. Errors follow one pattern: what is wrong, what was expected, and
"Received: ..." with the offending value.
"""
from __future__ import annotations

import difflib
import math
import numbers
import sys
from collections.abc import Iterable, Sequence
from typing import Any


def _is(value: Any, module: str, *names: str) -> bool:
    """isinstance(value, module.name) for any of `names`, without importing `module`: a value cannot be a
    NumPy array or a torch tensor before NumPy or torch was imported, so these checks need neither (the
    command line answers a typo without importing PyTorch)."""
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(value, tuple(getattr(loaded, name) for name in names))


def describe(value: Any) -> str:
    """A short, readable description of a value for error messages."""
    if _is(value, "torch", "Tensor"):
        return f"a torch.Tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if _is(value, "numpy", "ndarray"):
        return f"a NumPy array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} (type {type(value).__name__})"


def is_int(value: Any) -> bool:
    """True for Python and NumPy integers, False for bools."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """`value` as an int within [minimum, maximum]; TypeError/ValueError naming `name` otherwise."""
    if not is_int(value):
        raise TypeError(f"`{name}` must be an integer. Received: {name}={describe(value)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}. Received: {name}={value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{name}` must be <= {maximum}. Received: {name}={value}")
    return value


def check_float(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
                include_min: bool = True, include_max: bool = True) -> float:
    """`value` as a finite float within the given bounds."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"`{name}` must be a number. Received: {name}={describe(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite. Received: {name}={value}")
    if minimum is not None and (value < minimum or (value == minimum and not include_min)):
        bound = ">=" if include_min else ">"
        raise ValueError(f"`{name}` must be {bound} {minimum}. Received: {name}={value}")
    if maximum is not None and (value > maximum or (value == maximum and not include_max)):
        bound = "<=" if include_max else "<"
        raise ValueError(f"`{name}` must be {bound} {maximum}. Received: {name}={value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not (isinstance(value, bool) or _is(value, "numpy", "bool_")):
        raise TypeError(f"`{name}` must be True or False. Received: {name}={describe(value)}")
    return bool(value)


def check_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be a string. Received: {name}={describe(value)}")
    return value


def suggest(name: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest of `choices`, or ''."""
    close = difflib.get_close_matches(str(name).lower(), [c.lower() for c in choices], n=3, cutoff=0.5)
    lookup = {c.lower(): c for c in choices}
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(lookup[c]) for c in close) + "?"


def unknown_name(kind: str, name: Any, choices: Iterable[str], argument: str | None = None,
                 sort: bool = True) -> ValueError:
    """The error for a name missing from a registry: lists the choices and the closest matches."""
    choices = sorted(choices) if sort else list(choices)
    where = f"`{argument}`: " if argument else ""
    hint = suggest(str(name), choices) if isinstance(name, str) else ""
    return ValueError(f"{where}unknown {kind} {name!r}.{hint} Available: {', '.join(choices)}.")


def check_choice(name: str, value: Any, choices: Sequence[str], *, kind: str | None = None) -> str:
    """`value` lower-cased if it is one of `choices` (case-insensitive), else a ValueError with hints."""
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be one of {', '.join(map(repr, choices))}. "
                        f"Received: {name}={describe(value)}")
    lowered = value.lower()
    if lowered not in [c.lower() for c in choices]:
        raise unknown_name(kind or name, value, choices, argument=name)
    return lowered


def int_or_ints(name: str, value: Any) -> int | list[int]:
    """An int, or a non-empty sequence of ints as a list (Keras's `axis` arguments)."""
    if is_int(value):
        return int(value)
    if isinstance(value, Sequence) and not isinstance(value, str) and value and all(is_int(v) for v in value):
        return [int(v) for v in value]
    raise TypeError(f"`{name}` must be an int or a list of ints. Received: {name}={describe(value)}")


def int_tuple(name: str, value: Any, n: int, *, minimum: int = 1) -> tuple[int, ...]:
    """An int or a sequence of `n` ints, as an n-tuple of ints >= minimum (Keras's `kernel_size` rule)."""
    if is_int(value):
        values = (int(value),) * n
    elif (isinstance(value, Sequence) or _is(value, "numpy", "ndarray")) and not isinstance(value, str):
        values = tuple(value)
        if len(values) != n or not all(is_int(v) for v in values):
            raise ValueError(f"`{name}` must be an integer or a sequence of {n} integers. "
                             f"Received: {name}={value!r}")
        values = tuple(int(v) for v in values)
    else:
        raise TypeError(f"`{name}` must be an integer or a sequence of {n} integers. "
                        f"Received: {name}={describe(value)}")
    if any(v < minimum for v in values):
        raise ValueError(f"`{name}` values must be >= {minimum}. Received: {name}={value!r}")
    return values


def nhwc_ints(name: str, value: Any) -> tuple[int, int, int, int]:
    """TensorFlow's rule for `strides`, `dilations` and `ksize`: an int, or a list of 1, 2 or 4 ints.

    One int applies to both spatial axes; two are (height, width); four are (batch, height, width,
    depth), as in `tf.nn.conv2d`. Returns all four, the batch and depth entries being 1 unless given.
    """
    if is_int(value):
        values: tuple[int, ...] = (int(value),)
    elif (isinstance(value, Sequence) or _is(value, "numpy", "ndarray")) and not isinstance(value, str):
        values = tuple(value)
        if not all(is_int(v) for v in values):
            raise TypeError(f"`{name}` must contain integers. Received: {name}={value!r}")
        values = tuple(int(v) for v in values)
    else:
        raise TypeError(f"`{name}` must be an integer or a list of 1, 2 or 4 integers. "
                        f"Received: {name}={describe(value)}")
    if len(values) == 1:
        values = (1, values[0], values[0], 1)
    elif len(values) == 2:
        values = (1, values[0], values[1], 1)
    elif len(values) != 4:
        raise ValueError(f"`{name}` must have 1, 2 or 4 elements (N, H, W, C order for 4). "
                         f"Received: {name}={list(values)} ({len(values)} elements)")
    if any(v < 1 for v in values):
        raise ValueError(f"`{name}` values must be >= 1. Received: {name}={list(values)}")
    return values[0], values[1], values[2], values[3]


def shape_str(shape: Sequence[int | None]) -> str:
    """(None, 28, 28, 1) style text for a shape, None for unknown axes."""
    items = ", ".join("None" if s is None else str(int(s)) for s in shape)
    return f"({items},)" if len(shape) == 1 else f"({items})"
