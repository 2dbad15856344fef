"""From the user's arrays to tensors `fit`, `evaluate` and `predict` can use: `as_inputs` (the one input
normaliser: an NHWC batch from an array or tensor), `as_targets` (labels checked against the loss),
`as_sample_weights` and `class_sample_weights` (Keras's `sample_weight` and `class_weight`) and
`split_validation` (Keras's `validation_split`); data given as batches (a `FolderDataset`, a generator, a
DataLoader) is read epoch by epoch through `BatchSource`."""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from convnet._internal.checks import check_int, describe, shape_str
from convnet.datasets.local.folder import FolderDataset

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


def is_batches(data: Any) -> bool:
    """Whether `data` is given as batches (a FolderDataset, a generator, a DataLoader: any iterable that is not
    an array, a tensor, a list or a tuple) rather than as in-memory arrays."""
    return isinstance(data, FolderDataset) or (
        isinstance(data, Iterable) and not isinstance(data, (np.ndarray, torch.Tensor, list, tuple, str, bytes)))


def check_steps(argument: str, steps: Any) -> int | None:
    """`steps_per_epoch`, `validation_steps` or `steps`: None or a positive int."""
    return None if steps is None else check_int(argument, steps, minimum=1)


class BatchSource:
    """The batches of one epoch after another, from a `FolderDataset` or any iterable of (x, y) batches.

    A FolderDataset's epoch `e` is its `iter_from(e, step)`: a pure function of (seed, epoch, step), so a fit
    resumes in the middle of an epoch without decoding the skipped batches (`resumable`); `steps` (Keras's
    `steps_per_epoch`) takes the first `steps` batches of each epoch's order.

    Any other iterable follows Keras 3's `EpochIterator`: without `steps`, each epoch is a fresh `iter(data)`
    run until it is exhausted; with `steps`, one iterator is kept across epochs, and a new one is made when an
    iterable of known length (`len(data)`, a DataLoader) has given all its batches at the end of an epoch. An
    iterator that runs out before `steps` batches ends that epoch with the batches it gave, with Keras's warning
    "Your input ran out of data", and the next epoch starts a new `iter(data)` (a DataLoader's next pass), as
    Keras 3 does: training goes on. An epoch that gets no batch at all (a generator exhausted by the epochs before)
    sets `ran_out`: the fit ends there (Keras replays the batches it peeked at to learn the shapes, an artefact of
    its generator adapter, not copied).
    """

    def __init__(self, data: Any, steps: int | None, argument: str = "x"):
        if not is_batches(data):
            raise TypeError(f"`{argument}` must be arrays, a FolderDataset or an iterable of (x, y) batches. "
                            f"Received: {argument}={describe(data)}")
        self.data, self.argument = data, argument
        self.dataset = data if isinstance(data, FolderDataset) else None
        self.length: int | None = None  # batches per pass over the data, when known
        try:
            self.length = len(data)
        except TypeError:
            pass
        self.steps = steps if steps is not None else self.length  # None: until the iterator is exhausted
        if self.dataset is not None and steps is not None and steps > len(self.dataset):
            raise ValueError(f"`{argument}`: steps (={steps}) must be at most the dataset's {len(self.dataset)} "
                             f"batches per epoch (a FolderDataset's epoch is one pass over its files)")
        self.batch_size = None if self.dataset is None else self.dataset.batch_size
        self.resumable = self.dataset is not None
        self.persistent = steps is not None and self.dataset is None
        if self.dataset is not None and self.dataset.batch_size is None:
            raise ValueError(f"`{argument}` is a FolderDataset of single images (made with batch_size=None); give "
                             f"one of batches (batch_size=32, say)")
        self.iterator: Iterator[Any] | None = None
        self.drawn = 0  # batches drawn from `iterator`
        self.pending: Any = None  # the batch `shapes` drew to see the shapes, given first by the next epoch
        self.ran_out = False

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
        """The shapes of x and y in a batch (y None: batches of x alone). A dataset says them without reading
        a file; an iterable's first batch is drawn and kept for the first epoch."""
        if self.dataset is not None:
            spec = self.dataset.element_spec
            x_shape = (1, *spec[0][0][1:])
            return x_shape, None if len(spec) == 1 else (1, *spec[1][0][1:])
        if self.pending is None:
            self.iterator, self.drawn = iter(self.data), 0
            try:
                self.pending = next(self.iterator)
            except StopIteration:
                raise ValueError(f"`{self.argument}` gave no batch: it is empty or already exhausted") from None
            self.drawn = 1
        x, y = split_batch(self.pending, self.argument)
        return tuple(np.shape(x)), None if y is None else tuple(np.shape(y))

    def epoch(self, epoch: int, step: int = 0) -> Iterator[Any]:
        """Batches `step`, step + 1, ... of epoch `epoch` as the data gives them ((x, y), or x alone)."""
        if self.dataset is not None:
            batches = self.dataset.iter_from(epoch, step)
            yield from (batch for _, batch in zip(range(step, self.steps or len(self.dataset)), batches))
            return
        if step:
            raise ValueError(f"`{self.argument}`: an iterable cannot be rewound to step {step} of an epoch")
        if self.pending is None and (self.iterator is None or not self.persistent):
            self.iterator, self.drawn = iter(self.data), 0
        assert self.iterator is not None
        given = 0
        while self.steps is None or given < self.steps:
            if self.pending is not None:
                batch, self.pending = self.pending, None
            else:
                try:
                    batch = next(self.iterator)
                except StopIteration:
                    break
                self.drawn += 1
            given += 1
            yield batch
        if given == 0 or (self.steps is not None and given < self.steps):
            self.ran_out = given == 0
            self.iterator = None  # Keras: the next epoch starts a new iter(data)
            warnings.warn("Your input ran out of data; interrupting training. Make sure that your dataset or "
                          "generator can generate at least `steps_per_epoch * epochs` batches.", stacklevel=2)
        elif self.length is not None and self.drawn >= self.length:
            self.iterator = None  # Keras makes a new iterator once a sized input has given all its batches

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint records of the data, for a resume to check (a dataset's `state_dict`)."""
        if self.dataset is not None:
            return {"dataset": self.dataset.state_dict(), "batch_size": self.batch_size, "steps": self.steps,
                    "shuffle": self.dataset.shuffle}
        return {"data": type(self.data).__name__, "steps": self.steps}


def split_batch(batch: Any, argument: str = "x") -> tuple[Any, Any]:
    """(x, y) of one batch: (x, y), (x, y, ...) or x alone (y None)."""
    if isinstance(batch, (tuple, list)):
        if len(batch) == 1:
            return batch[0], None
        if len(batch) == 2:
            return batch[0], batch[1]
        raise ValueError(f"each batch of `{argument}` must be (x, y) or x; a batch with sample weights (x, y, w) is "
                         f"not supported. Received a batch of {len(batch)} items")
    return batch, None
