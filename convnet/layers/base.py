"""The base of every convnet layer: `Layer`, the registry of layer classes that model files may name,
(de)serialization, the input-shape checks, and the conversion between PyTorch's weight layouts and
Keras's.

A new layer subclasses `Layer`, defines `build` (create weights for an input shape without the batch
axis), `call` (NHWC in, NHWC out), `compute_output_shape` and `get_config`, lists its weights in Keras's
order with `_variables()`, and is decorated with `@register` so that saved models can name it.
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from convnet import activations
from convnet import nn as ops
from convnet._internal.checks import (
    check_bool,
    check_str,
    describe,
    int_tuple,
    is_int,
    shape_str,
    suggest,
)
from convnet._internal.kernels import as_tensor, hwio_to_oihw, oihw_to_hwio
from convnet._internal.registry import Registry
from convnet.layers.node import Node, SymbolicTensor, is_symbolic, symbolic_call

Shape = tuple  # a shape without the batch axis; None marks an unknown spatial size
Geometry = tuple[tuple[int, int, int], tuple[int, int, int]]  # per axis (kernel span, stride, pad before)


# Class names are matched exactly, as Keras matches a saved "class_name" ("Conv2d" is not "Conv2D").
LAYER_CLASSES: Registry[type[Layer]] = Registry("layer class", normalise=str)


def register(cls: type[Layer]) -> type[Layer]:
    """Class decorator: make a Layer subclass loadable by name (its class name) from saved model files.

    A model file names its layers' classes; only registered classes are ever instantiated on load, so
    no code travels in a file.

    Raises:
        TypeError: `cls` is not a Layer subclass.
        ValueError: another class of that name is registered already (a file could not tell them apart).
    """
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise TypeError(f"register expects a Layer subclass. Received: {describe(cls)}")
    name = cls.__name__
    if name in LAYER_CLASSES:
        existing = LAYER_CLASSES.get(name)
        if existing is cls:
            return cls  # decorated twice: nothing to do
        if (existing.__module__, existing.__qualname__) == (cls.__module__, cls.__qualname__):
            return LAYER_CLASSES.replace(name, cls)  # the same definition run again (a notebook cell)
        raise ValueError(f"register: a layer class named {name!r} is already registered "
                         f"({existing.__module__}.{existing.__qualname__}), and a saved model names its layers' "
                         f"classes by name only; give the class another name. Received: {describe(cls)}")
    return LAYER_CLASSES.register(name, cls)


def get_layer_class(name: str) -> type[Layer]:
    """The registered Layer class called `name` (e.g. "Conv2D"); ValueError with close matches otherwise."""
    return LAYER_CLASSES.get(name)


def list_layers(pattern: str = "*") -> list[str]:
    """Names of the registered layer classes matching a shell-style `pattern` ("*Pooling*"), sorted."""
    return LAYER_CLASSES.names(pattern)


def _snake_case(name: str) -> str:
    """Keras's default layer names: Conv2D -> conv2d, MaxPooling2D -> max_pooling2d."""
    name = re.sub(r"(.)([A-Z][a-z0-9]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def check_input_shape(name: str, shape: Any) -> Shape:
    """A shape without the batch axis: a sequence of positive ints, None allowed for spatial sizes."""
    if is_int(shape):
        shape = (shape,)
    if not isinstance(shape, (Sequence, torch.Size, np.ndarray)) or isinstance(shape, str) or len(shape) == 0:
        raise TypeError(f"`{name}` must be a non-empty tuple of sizes without the batch axis, e.g. (28, 28, 1). "
                        f"Received: {name}={describe(shape)}")
    dims = tuple(shape)
    if not all((d is None or (is_int(d) and d > 0)) for d in dims) or dims[-1] is None:
        raise ValueError(f"`{name}` entries must be positive integers (None allowed for spatial sizes, not "
                         f"for channels), without the batch axis. Received: {name}={dims!r}")
    return tuple(None if d is None else int(d) for d in dims)


def int_pair(name: str, value: Any) -> tuple[int, int]:
    """An int or two ints as (height, width), each >= 1: Keras's `kernel_size`/`strides` rule."""
    height, width = int_tuple(name, value, 2)
    return height, width


def check_data_format(data_format: Any) -> None:
    """convnet layers are NHWC: `data_format` may be "channels_last" or None (Keras's default)."""
    if data_format not in (None, "channels_last"):
        raise ValueError(f"convnet layers are NHWC only: `data_format` must be 'channels_last' or None. "
                         f"Received: data_format={data_format!r}")


def spatial_output_size(size: int | None, kernel: int, stride: int, padding: str, dilation: int = 1) -> int | None:
    """`convnet.nn.output_size` along one axis, None for an unknown size."""
    return None if size is None else ops.output_size(size, kernel, stride, padding, dilation)


def window_geometry(input_shape: Shape, kernel: tuple[int, int], strides: tuple[int, int], padding: str,
                    dilation: tuple[int, int] = (1, 1)) -> Geometry:
    """(kernel span, stride, padding before) per spatial axis of a sliding window, for receptive fields."""
    axes = []
    for size, k, s, d in zip(input_shape[:2], kernel, strides, dilation):
        before = 0
        if padding == "same":
            before = ops.same_padding(size, k, s, d)[0] if size is not None else ((k - 1) * d) // 2
        axes.append(((k - 1) * d + 1, s, before))
    return tuple(axes)  # type: ignore[return-value]


class Layer(torch.nn.Module):
    """Base class of convnet layers.

    A layer is built lazily: its weights are created by `build(input_shape)` when the input shape
    (without the batch axis) becomes known, from `input_shape=` or from a model, else on first call.
    Subclasses define `build`, `call` and `compute_output_shape`, and list their weights with
    `_variables()` in Keras's order.
    """

    input_ndim: ClassVar[int | None] = None  # rank of the batch this layer takes, None for any rank >= 2
    # whether model.export may trace call(): None = yes for convnet's own layers (tests/test_export.py checks
    # each), no for a user's class until it says True; False = never (a Lambda holds Python code)
    exportable: ClassVar[bool | None] = None

    def __init__(self, *, name: str | None = None, input_shape: Sequence[int | None] | None = None,
                 trainable: bool = True, **unexpected: Any):
        super().__init__()
        self.train(False)  # inference mode until a model trains it, as Keras's layer(x) runs with training=False
        if unexpected:
            key = next(iter(unexpected))
            choices = [p for p in inspect.signature(type(self).__init__).parameters if p not in ("self", "kwargs")]
            choices += ["name", "input_shape", "trainable"]
            hint = suggest(key, choices)
            raise TypeError(f"{type(self).__name__}: unexpected keyword argument {key!r}.{hint} "
                            f"Accepted: {', '.join(dict.fromkeys(choices))}")
        if name is not None:
            check_str("name", name)
            if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
                raise ValueError(f"`name` may hold letters, digits, '_', '.' and '-' only. Received: name={name!r}")
        self.name = name or _snake_case(type(self).__name__)
        self._auto_named = name is None  # a model may rename it to keep names unique (conv2d -> conv2d_1)
        self.input_shape_arg = None if input_shape is None else check_input_shape("input_shape", input_shape)
        self._trainable = check_bool("trainable", trainable)
        self.built = False
        self.input_shape: Shape | None = None
        self.output_shape: Shape | None = None
        self._channels: int | None = None  # the last-axis size the weights were built for
        self._inbound_nodes: list[Node] = []  # one per call on symbolic tensors (graph definitions)

    # -- building ---------------------------------------------------------------------------------
    def build(self, input_shape: Shape) -> None:
        """Create the weights for inputs of `input_shape` (no batch axis). Layers without weights skip it."""

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return input_shape

    def build_for(self, input_shape: Shape) -> Shape:
        """Build for `input_shape` (or check it against the shape built for) and return the output shape."""
        input_shape = tuple(input_shape)
        self._check_shape(input_shape, batched=False)
        if not self.built:
            self.build(input_shape)
            self.built = True
            self.input_shape = input_shape
            self.output_shape = self.compute_output_shape(input_shape)
            self._apply_trainable()
            self._channels = input_shape[-1] if self._variables() else None
            return self.output_shape
        return self.compute_output_shape(input_shape)

    @property
    def label(self) -> str:
        """How messages name the layer: "Conv2D 'conv2d_1'"."""
        return f"{type(self).__name__} '{self.name}'"

    def _label(self) -> str:  # the older spelling of `label`, kept for subclasses written against it
        return self.label

    @property
    def auto_named(self) -> bool:
        """Whether the name was chosen by convnet (a model may then rename it), not given by the user."""
        return self._auto_named

    def _check_shape(self, shape: Sequence[int | None], batched: bool) -> None:
        """Rank and channel checks; `shape` includes the batch axis when `batched`."""
        rank = len(shape) + (0 if batched else 1)
        shown = shape_str(shape if batched else (None, *shape))
        if self.input_ndim is not None and rank != self.input_ndim:
            hint = ""
            if self.input_ndim == 4 and rank == 3 and batched:
                hint = "; add a batch axis with x[None]"
            elif self.input_ndim == 4 and rank == 3:
                hint = "; a 2-D image needs a channel axis, e.g. input_shape=(28, 28, 1)"
            raise ValueError(f"{self._label()}: expected a {self.input_ndim}-D batch (N, H, W, C), "
                             f"received shape {shown}{hint}")
        if self.input_ndim is None and rank < 2:
            raise ValueError(f"{self._label()}: expected a batch of rank >= 2, received shape {shown}")
        if self.built and self.input_shape is not None:
            expected, got = self.input_shape[-1], shape[-1]
            if self._channels is not None and got != expected:
                raise ValueError(f"{self._label()}: expected inputs with {expected} channels (last axis), "
                                 f"received shape {shown}")

    # -- calling ----------------------------------------------------------------------------------
    def call(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """On data: compute (torch.nn.Module's call). On symbolic tensors (`convnet.Input(...)` or another
        layer's output): record the call in a graph and return the symbolic output."""
        if args and is_symbolic(args[0]):
            if len(args) > 1 or kwargs:
                raise TypeError(f"{self.label}: a call in a graph definition takes the input tensor(s) only. "
                                f"Received extra arguments: {len(args) - 1} positional, {sorted(kwargs)}")
            return symbolic_call(self, args[0])
        return super().__call__(*args, **kwargs)

    @property
    def input(self) -> SymbolicTensor | list[SymbolicTensor]:
        """The symbolic input of the layer's first call in a graph, as Keras's `layer.input`."""
        node = self._first_node("input")
        return node.inputs if node.listed else node.inputs[0]

    @property
    def output(self) -> SymbolicTensor | list[SymbolicTensor]:
        """The symbolic output of the layer's first call in a graph, as Keras's `layer.output` (feature
        extraction: `Model(model.input, [layer.output for layer in model.layers])`)."""
        node = self._first_node("output")
        return node.outputs[0] if len(node.outputs) == 1 else list(node.outputs)

    def _first_node(self, what: str) -> Node:
        if not self._inbound_nodes:
            raise ValueError(f"{self.label} has never been called on a symbolic tensor, so it has no {what}; "
                             f"build a model with an input shape (layers.Input(shape=...)) first")
        return self._inbound_nodes[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            x = as_tensor("inputs", x)
        if not self.built:
            self._check_shape(tuple(x.shape), batched=True)
            self.build_for(tuple(x.shape[1:]))
            self.to(x.device)
        elif ((self.input_ndim is not None and x.dim() != self.input_ndim)
              or (self._channels is not None and x.shape[-1] != self._channels)):
            self._check_shape(tuple(x.shape), batched=True)
        weight: torch.Tensor | None = next(iter(self._parameters.values()), None)
        if weight is None:
            weight = next(iter(self._buffers.values()), None)
        if weight is not None and x.dtype != weight.dtype and not _autocast_on(x.device.type):
            x = x.to(weight.dtype)  # e.g. float64 input to a float32 layer, as Keras casts inputs
        return self.call(x)

    # -- weights ----------------------------------------------------------------------------------
    def _variables(self) -> list[tuple[str, torch.Tensor, str]]:
        """(Keras name, tensor, layout) for each weight in Keras's order. Layouts: "same"; "hwio" for a
        conv kernel stored (O, I, kh, kw); "io" for a dense kernel stored (O, I)."""
        return []

    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self._trainable = check_bool("trainable", value)
        self._apply_trainable()

    def _apply_trainable(self) -> None:
        for parameter in self.parameters(recurse=False):
            parameter.requires_grad_(self._trainable)

    @property
    def weights(self) -> list[torch.Tensor]:
        """The layer's tensors in Keras's order (PyTorch layouts)."""
        return [tensor for _, tensor, _ in self._variables()]

    def weight_names(self) -> list[str]:
        return [name for name, _, _ in self._variables()]

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the weights as NumPy arrays, in Keras's order and layouts."""
        return [to_keras_layout(tensor, layout).numpy() for _, tensor, layout in self._variables()]

    def keras_weight_shapes(self) -> list[tuple[int, ...]]:
        return [keras_layout_shape(tuple(tensor.shape), layout) for _, tensor, layout in self._variables()]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Load weights given in Keras's order and layouts (e.g. from `keras_layer.get_weights()`)."""
        variables = self._variables()
        if not self.built:
            raise ValueError(f"{self._label()}: the layer has no weights yet; build it first (give the model an "
                             f"input shape, or call it once).")
        if not isinstance(weights, (list, tuple)):
            raise TypeError(f"{self._label()}: set_weights expects a list of arrays. Received: {describe(weights)}")
        expected = self.keras_weight_shapes()
        if len(weights) != len(variables):
            names = ", ".join(f"{n} {shape_str(s)}" for (n, _, _), s in zip(variables, expected))
            raise ValueError(f"{self._label()}: set_weights expected {len(variables)} arrays ({names or 'none'}), "
                             f"received {len(weights)}")
        arrays = []
        for (name, _, _), shape, value in zip(variables, expected, weights):
            array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
            if array.dtype.kind not in "biuf":
                raise TypeError(f"{self._label()}: weight '{name}' must be numeric. Received: {describe(array)}")
            if tuple(array.shape) != shape:
                raise ValueError(f"{self._label()}: weight '{name}' must have shape {shape_str(shape)} (Keras layout), "
                                 f"received {shape_str(array.shape)}")
            arrays.append(array)
        with torch.no_grad():
            for (_, tensor, layout), array in zip(variables, arrays):
                tensor.copy_(from_keras_layout(torch.from_numpy(np.asarray(array, np.float32)), layout))

    def count_params(self) -> int:
        return sum(tensor.numel() for tensor in self.weights)

    def count_trainable_params(self) -> int:
        return sum(t.numel() for t in self.weights if isinstance(t, torch.nn.Parameter) and t.requires_grad)

    # -- receptive-field geometry -------------------------------------------------------------------
    def geometry(self, input_shape: Shape) -> Geometry | None:
        """Per spatial axis (kernel span, stride, padding before) for receptive-field arithmetic; identity
        for layers that act on each position alone, None for layers that mix all positions."""
        return ((1, 1, 0), (1, 1, 0)) if len(input_shape) == 3 else None

    # -- configuration ----------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"name": self.name, "trainable": self._trainable}
        if self.input_shape_arg is not None:
            config["input_shape"] = list(self.input_shape_arg)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Layer:
        return cls(**config)

    def __repr__(self) -> str:
        try:
            config = self.get_config()
        except ValueError:  # e.g. a Lambda, whose config cannot be written
            config = {"name": self.name}
        parameters = inspect.signature(type(self).__init__).parameters
        shown = []
        for key, value in config.items():
            parameter = parameters.get(key)
            required = parameter is not None and parameter.default is inspect.Parameter.empty
            if key == "name" or required or (parameter is not None and not _same(parameter.default, value)):
                shown.append(f"{key}={tuple(value) if isinstance(value, list) else value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 has no device argument
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def _same(default: Any, value: Any) -> bool:
    """Whether a config value equals a signature default, counting 1 and [1, 1] as equal."""
    if isinstance(value, (list, tuple)):
        if is_int(default):
            return all(v == default for v in value)
        return isinstance(default, (list, tuple)) and tuple(default) == tuple(value)
    return default == value


def existing_weights(*weights: tuple[str, torch.Tensor | None, str]) -> list[tuple[str, torch.Tensor, str]]:
    """The `Layer._variables()` entries, (Keras name, tensor, layout), whose tensor exists: an unbuilt layer's
    weights and a bias or scale the layer does without are None and left out."""
    return [(name, tensor, layout) for name, tensor, layout in weights if tensor is not None]


# Weight layouts: "same" (a bias, BatchNormalization's vectors), "hwio" (a conv kernel, stored by PyTorch as
# (O, I, kh, kw), by Keras as (kh, kw, I, O)), "io" (a dense kernel, stored (O, I), Keras's (I, O)).

def to_keras_layout(tensor: torch.Tensor, layout: str) -> torch.Tensor:
    """A stored weight as a float32 CPU copy in Keras's layout."""
    tensor = tensor.detach().cpu().float()
    if layout == "hwio":
        tensor = oihw_to_hwio(tensor)  # (O, I, kh, kw) -> (kh, kw, I, O)
    elif layout == "io":
        tensor = tensor.t()  # (O, I) -> (I, O)
    # always a copy: .contiguous() alone returns the parameter itself for a CPU float32 bias (or a
    # channels_last kernel), and the user's saved arrays would then change as training goes on
    return tensor.clone(memory_format=torch.contiguous_format)


def keras_layout_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """The Keras-layout shape of a stored weight, without touching its data (works on the meta device)."""
    if layout == "hwio":
        return (shape[2], shape[3], shape[1], shape[0])
    if layout == "io":
        return (shape[1], shape[0])
    return shape


def from_keras_layout(tensor: torch.Tensor, layout: str) -> torch.Tensor:
    """A weight given in Keras's layout, as PyTorch stores it (a view)."""
    if layout == "hwio":
        return hwio_to_oihw(tensor)  # (kh, kw, I, O) -> (O, I, kh, kw)
    if layout == "io":
        return tensor.t()  # (I, O) -> (O, I)
    return tensor


def activation_config(function: Callable) -> str | None:
    """An activation as a config writes it: its registered name, else the function's name (not loadable)."""
    name = activations.name_of(function)
    return name if name is not None else getattr(function, "__name__", "custom")


class ActivationMixin:
    """For layers with an `activation=` argument: stores it both as the function and as its registered
    name (for configs), and computes `activation(pre_activation(x))`. Subclasses override `pre_activation`."""

    activation: Callable[[torch.Tensor], torch.Tensor]
    activation_name: str | None

    def _set_activation(self, activation: Any) -> None:
        self.activation = activations.get(activation)
        self.activation_name = activations.name_of(self.activation)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """The output before the activation (logits for a softmax layer); used by the training engine to
        compute cross-entropies in log space."""
        return x

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.pre_activation(x))


def deserialize(spec: Any) -> Layer:
    """A layer from {"class_name": ..., "config": {...}}; only registered classes are instantiated.

    Raises:
        ValueError: a malformed entry, an unknown class (with close matches) or an invalid configuration.
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("class_name"), str) \
            or not isinstance(spec.get("config"), dict):
        raise ValueError(f"a layer entry must be {{'class_name': str, 'config': dict}}. Received: {describe(spec)}")
    cls = get_layer_class(spec["class_name"])
    try:
        return cls.from_config(dict(spec["config"]))
    except TypeError as error:
        raise ValueError(f"layer {spec['class_name']!r}: invalid configuration {spec['config']!r} ({error})") from None


def serialize(layer: Layer) -> dict[str, Any]:
    """{"class_name": ..., "config": {...}} for a layer of a registered class with a named activation.

    Raises:
        ValueError: the class is not registered, or the layer holds code (a custom activation, a Lambda).
    """
    name = type(layer).__name__
    if name not in LAYER_CLASSES or LAYER_CLASSES.get(name) is not type(layer):
        raise ValueError(f"{layer.label}: its class is not registered, so a file could not name it; decorate "
                         f"the class with @convnet.layers.register")
    if hasattr(layer, "activation_name") and layer.activation_name is None:
        raise ValueError(f"{layer.label}: a custom activation callable cannot be saved (files never carry "
                         f"code); use a named activation ({', '.join(activations.list_activations())})")
    return {"class_name": name, "config": layer.get_config()}
