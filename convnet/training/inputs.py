"""From the user's arrays to tensors `fit`, `evaluate` and `predict` can use: `as_inputs` (the one input
normaliser: an NHWC batch from an array or tensor), `as_targets` (labels checked against the loss),
`as_sample_weights` and `class_sample_weights` (Keras's `sample_weight` and `class_weight`) and
`split_validation` (Keras's `validation_split`)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from convnet._internal.checks import describe, shape_str

if TYPE_CHECKING:
    from convnet.models.sequential import Sequential


def to_tensor(x: Any, argument: str = "x") -> torch.Tensor:
    """`x` (a NumPy array, nested lists or a tensor) as a tensor of real numbers, its dtype unchanged; a
    tensor keeps its device and is detached. The type checks every input path shares: `as_inputs` for
    batches, `explain.prepare_image` for one image.

    Raises:
        TypeError: `x` is neither an array nor a tensor, or does not hold real numbers (`argument` names it).
    """
    if isinstance(x, torch.Tensor):
        tensor = x.detach()
    elif isinstance(x, (np.ndarray, list, tuple)):
        array = np.asarray(x)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"`{argument}` must hold numbers. Received: {argument}={describe(array)}")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    else:
        raise TypeError(f"`{argument}` must be a NumPy array or a torch.Tensor. Received: {argument}={describe(x)}")
    if tensor.is_complex():
        raise TypeError(f"`{argument}` must hold real numbers. Received: {argument}={describe(tensor)}")
    return tensor


def as_inputs(model: Sequential | None, x: Any, argument: str = "x") -> torch.Tensor:
    """`x` (a NumPy array, nested lists or a tensor) as an NHWC batch tensor of the model's input shape.

    uint8 stays uint8 to save memory and transfer (batches are cast to float32 on the device), other
    numbers become float32; a tensor keeps its device. A channel axis is added to (N, H, W) arrays when
    the model takes (H, W, 1). With `model` None (or not built), only "a batch of numbers" is checked.

    Raises:
        TypeError: `x` is not an array or tensor of real numbers (`argument` names it).
        ValueError: its shape is not model.input_shape (None as N), or it holds no sample.
    """
    tensor = to_tensor(x, argument)
    if not isinstance(x, torch.Tensor) and tensor.dtype not in (torch.float32, torch.uint8):
        tensor = tensor.float()  # bool, ints, float64...: float32, as Keras
    expected = None if model is None or model.input_shape is None else tuple(model.input_shape[1:])
    if expected is None:
        if tensor.dim() < 2:
            raise ValueError(f"`{argument}` must be a batch (N, ...). Received shape {shape_str(tensor.shape)}")
        return tensor
    if (len(expected) == 3 and expected[-1] == 1 and tensor.dim() == 3
            and all(e is None or e == s for e, s in zip(expected[:2], tensor.shape[1:]))):
        tensor = tensor.unsqueeze(-1)  # (N, H, W) -> (N, H, W, 1)
    if tensor.dim() != len(expected) + 1 or any(e is not None and e != s for e, s in zip(expected, tensor.shape[1:])):
        hint = "; add a batch axis with x[None]" if tuple(tensor.shape) == tuple(expected) else ""
        raise ValueError(f"`{argument}` has shape {shape_str(tensor.shape)} but the model expects "
                         f"{shape_str((None, *expected))}{hint}")
    if tensor.shape[0] == 0:
        raise ValueError(f"`{argument}` is empty (0 samples)")
    return tensor


def as_targets(model: Sequential, y: Any, count: int, argument: str = "y") -> torch.Tensor:
    """`y` checked against the loss: class indices in [0, classes) for sparse losses, arrays of the output
    shape otherwise; as many samples as x."""
    if y is None:
        raise ValueError(f"`{argument}` is required (the targets for the loss)")
    if isinstance(y, torch.Tensor):
        tensor = y.detach().cpu()
    else:
        array = np.asarray(y)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"`{argument}` must hold numbers. Received: {argument}={describe(array)}")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.dim() == 0 or tensor.shape[0] != count:
        got = "a scalar" if tensor.dim() == 0 else f"{tensor.shape[0]}"
        raise ValueError(f"`x` and `{argument}` must have the same number of samples: x has {count}, "
                         f"{argument} has {got}")
    loss = model.loss
    output = None if model.output_shape is None else tuple(model.output_shape[1:])
    if loss is not None and loss.label_kind == "sparse":
        if tensor.dim() == 2 and tensor.shape[1] == 1:
            tensor = tensor[:, 0]
        if tensor.dim() != 1:
            raise ValueError(f"`{argument}` must hold one class index per sample for {loss.name}, shape (N,). "
                             f"Received shape {shape_str(tensor.shape)}; for one-hot labels use "
                             f"loss='categorical_crossentropy'")
        if tensor.is_floating_point() and not torch.equal(tensor, tensor.round()):
            raise ValueError(f"`{argument}` must hold integer class indices for {loss.name}. "
                             f"Received non-integer values such as {tensor[tensor != tensor.round()][0].item()}")
        tensor = tensor.long()
        classes = output[-1] if output else None
        low, high = int(tensor.min()), int(tensor.max())
        if classes is None and low < 0:
            raise ValueError(f"`{argument}` holds labels in [{low}, {high}]; class indices cannot be negative")
        if classes is not None and (low < 0 or high >= classes):
            raise ValueError(f"`{argument}` holds labels in [{low}, {high}] but the model has {classes} outputs, "
                             f"so labels must be in [0, {classes - 1}]")
        return tensor
    tensor = tensor.float()
    if output is not None and tuple(tensor.shape[1:]) != tuple(output) and tensor[0].numel() != math.prod(output):
        raise ValueError(f"`{argument}` has shape {shape_str(tensor.shape)} but the model outputs "
                         f"{shape_str((None, *output))}")
    return tensor


def as_sample_weights(weights: Any, count: int, argument: str = "sample_weight") -> torch.Tensor:
    """Keras's `sample_weight`: one number per sample, shape (N,) (or (N, 1)), as float32 on the CPU.

    Raises:
        TypeError: not an array or tensor of real numbers.
        ValueError: not one weight per sample.
    """
    tensor = to_tensor(weights, argument).detach().cpu()
    if tensor.dim() == 2 and tensor.shape[1] == 1:
        tensor = tensor[:, 0]
    if tensor.dim() != 1 or tensor.shape[0] != count:
        raise ValueError(f"`{argument}` must hold one weight per sample, shape ({count},). Received shape "
                         f"{shape_str(tensor.shape)}")
    return tensor.float()


def class_sample_weights(class_weight: Any, y: torch.Tensor) -> torch.Tensor:
    """Keras's `class_weight` turned into per-sample weights (data_adapter_utils'
    `class_weight_to_sample_weights`): each sample weighs `class_weight[label]`, 1.0 for a class the dict
    leaves out. The label is `y` itself for class indices, the arg-max of one-hot rows, and `y` rounded
    for a single output ((N, 1) binary labels).

    >>> class_sample_weights({0: 0.5, 2: 3.0}, torch.tensor([0, 1, 2, 2])).tolist()
    [0.5, 1.0, 3.0, 3.0]

    Raises:
        TypeError: not a dict of integer class indices to numbers.
    """
    if not isinstance(class_weight, dict):
        raise TypeError(f"`class_weight` must be a dict mapping class indices to weights, e.g. {{0: 1.0, 1: 5.0}}. "
                        f"Received: class_weight={describe(class_weight)}")
    for key, value in class_weight.items():
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
            raise TypeError(f"`class_weight` keys must be integer class indices. Received the key {key!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"`class_weight[{key}]` must be a number. Received: {describe(value)}")
    labels = y.detach().cpu()
    if labels.dim() > 1:
        labels = labels.argmax(dim=-1) if labels.shape[-1] != 1 else labels[..., 0]  # (N, K) -> (N,)
    labels = labels.reshape(labels.shape[0], -1)[:, 0].double().round().long()  # (N,)
    weights = torch.ones(labels.shape[0], dtype=torch.float32)
    for key, value in class_weight.items():
        weights[labels == int(key)] = float(value)
    return weights


def split_validation(fraction: float, *tensors: torch.Tensor | None) -> tuple[list, list]:
    """Keras's rule: the *last* `fraction` of the samples, taken before shuffling, of each tensor (None
    stays None); returns (training part, validation part)."""
    count = next(t for t in tensors if t is not None).shape[0]
    split_at = int(count * (1 - fraction))
    if split_at == 0 or split_at == count:
        raise ValueError(f"`validation_split`={fraction} leaves no training or no validation samples "
                         f"out of {count}")
    return ([None if t is None else t[:split_at] for t in tensors],
            [None if t is None else t[split_at:] for t in tensors])
