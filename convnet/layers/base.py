"""Keras-style layers: Keras's names, arguments, defaults and weight layouts, computed by PyTorch.

Layers take and return NHWC tensors, as in Keras. Inside, a convolution or pooling views its input as
NCHW through a permute, which is PyTorch's channels_last memory format: no copies are made.
Weights are stored in PyTorch's layouts (a Conv2D kernel as (out, in, kh, kw), a Dense kernel as
(out, in)) and converted at the boundary: `get_weights()` / `set_weights()` speak Keras's layouts,
(kh, kw, in, out) and (in, out), so weights copied from a Keras model give the same outputs.

    >>> import torch
    >>> from convnet import layers
    >>> conv = layers.Conv2D(8, 3, padding="same", activation="relu")
    >>> tuple(conv(torch.zeros(2, 28, 28, 1)).shape)
    (2, 28, 28, 8)
    >>> [w.shape for w in conv.get_weights()]
    [(3, 3, 1, 8), (8,)]
"""
from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from convnet import activations, initializers
from convnet import nn as ops
from convnet._internal.checks import (
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_str,
    describe,
    int_tuple,
    is_int,
    shape_str,
    suggest,
    unknown_name,
)

Shape = tuple  # a shape without the batch axis; None marks an unknown spatial size
Geometry = tuple[tuple[int, int, int], tuple[int, int, int]]  # per axis (kernel span, stride, pad before)

_REGISTRY: dict[str, type[Layer]] = {}


def register(cls: type[Layer]) -> type[Layer]:
    """Class decorator: make a Layer subclass loadable by name from saved model files.

    A model file names its layers' classes; only registered classes are ever instantiated on load, so
    no code travels in a file.
    """
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise TypeError(f"register expects a Layer subclass. Received: {describe(cls)}")
    _REGISTRY[cls.__name__] = cls
    return cls


def get_layer_class(name: str) -> type[Layer]:
    """The registered Layer class called `name` (e.g. "Conv2D"); ValueError with close matches otherwise."""
    if name not in _REGISTRY:
        raise unknown_name("layer class", name, _REGISTRY)
    return _REGISTRY[name]


def list_layers() -> list[str]:
    """Names of the registered layer classes."""
    return sorted(_REGISTRY)


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


def _conv_out(size: int | None, kernel: int, stride: int, padding: str, dilation: int = 1) -> int | None:
    return None if size is None else ops.output_size(size, kernel, stride, padding, dilation)


class Layer(torch.nn.Module):
    """Base class of convnet layers.

    A layer is built lazily: its weights are created by `build(input_shape)` when the input shape
    (without the batch axis) becomes known, from `input_shape=` or from a model, else on first call.
    Subclasses define `build`, `call` and `compute_output_shape`, and list their weights with
    `_variables()` in Keras's order.
    """

    input_ndim: ClassVar[int | None] = None  # rank of the batch this layer takes, None for any rank >= 2

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
        self._auto_named = name is None
        self.input_shape_arg = None if input_shape is None else check_input_shape("input_shape", input_shape)
        self._trainable = check_bool("trainable", trainable)
        self.built = False
        self.input_shape: Shape | None = None
        self.output_shape: Shape | None = None
        self._channels: int | None = None  # the last-axis size the weights were built for

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

    def _label(self) -> str:
        return f"{type(self).__name__} '{self.name}'"

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            x = ops._as_tensor("inputs", x)
        if not self.built:
            self._check_shape(tuple(x.shape), batched=True)
            self.build_for(tuple(x.shape[1:]))
            self.to(x.device)
        elif ((self.input_ndim is not None and x.dim() != self.input_ndim)
              or (self._channels is not None and x.shape[-1] != self._channels)):
            self._check_shape(tuple(x.shape), batched=True)
        weight = next(iter(self._parameters.values()), None)
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
        return [_to_keras(tensor, layout).numpy() for _, tensor, layout in self._variables()]

    def keras_weight_shapes(self) -> list[tuple[int, ...]]:
        return [_keras_shape(tuple(tensor.shape), layout) for _, tensor, layout in self._variables()]

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
        for (name, tensor, layout), shape, value in zip(variables, expected, weights):
            array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
            if array.dtype.kind not in "biuf":
                raise TypeError(f"{self._label()}: weight '{name}' must be numeric. Received: {describe(array)}")
            if tuple(array.shape) != shape:
                raise ValueError(f"{self._label()}: weight '{name}' must have shape {shape_str(shape)} (Keras layout), "
                                 f"received {shape_str(array.shape)}")
            arrays.append(array)
        with torch.no_grad():
            for (_, tensor, layout), array in zip(variables, arrays):
                tensor.copy_(_from_keras(torch.from_numpy(np.asarray(array, np.float32)), layout))

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


def _to_keras(tensor: torch.Tensor, layout: str) -> torch.Tensor:
    tensor = tensor.detach().cpu().float()
    if layout == "hwio":
        return tensor.permute(2, 3, 1, 0).contiguous()  # (O, I, kh, kw) -> (kh, kw, I, O)
    if layout == "io":
        return tensor.t().contiguous()  # (O, I) -> (I, O)
    return tensor.contiguous()


def _keras_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """The Keras-layout shape of a stored weight, without touching its data (works on the meta device)."""
    if layout == "hwio":
        return (shape[2], shape[3], shape[1], shape[0])
    if layout == "io":
        return (shape[1], shape[0])
    return shape


def _from_keras(tensor: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "hwio":
        return tensor.permute(3, 2, 0, 1)  # (kh, kw, I, O) -> (O, I, kh, kw)
    if layout == "io":
        return tensor.t()  # (I, O) -> (O, I)
    return tensor


def _activation_config(function: Callable) -> str | None:
    name = activations.name_of(function)
    return name if name is not None else getattr(function, "__name__", "custom")


class _ActivationMixin:
    """Stores `activation` both as the function and as its registered name (for configs)."""

    def _set_activation(self, activation: Any) -> None:
        self.activation = activations.get(activation)
        self.activation_name = activations.name_of(self.activation)

    def _linear(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self._linear(x))

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """The output before the activation (logits for a softmax layer); used by the training engine to
        compute cross-entropies in log space."""
        return self._linear(x)


@register
class Input(Layer):
    """Declares the input shape of a Sequential model (no batch axis): `Input(shape=(28, 28, 1))`."""

    def __init__(self, shape: Sequence[int | None], batch_size: int | None = None, name: str | None = None):
        super().__init__(name=name)
        self.shape = check_input_shape("shape", shape)
        self.batch_size = None if batch_size is None else check_int("batch_size", batch_size, minimum=1)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def get_config(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "batch_size": self.batch_size, "name": self.name}


InputLayer = Input


@register
class Conv2D(_ActivationMixin, Layer):
    """2-D convolution over NHWC inputs, as `keras.layers.Conv2D`.

    Output shape: (N, H', W', filters), H' = ceil(H / s) for "same", ceil((H - (k - 1) * d) / s) for
    "valid" (TensorFlow's SAME rule: the extra padding pixel goes bottom/right). Kernel in Keras layout:
    (kh, kw, C / groups, filters).
    """

    input_ndim = 4

    def __init__(self, filters: int, kernel_size: int | Sequence[int], strides: int | Sequence[int] = 1,
                 padding: str = "valid", activation: Any = None, use_bias: bool = True,
                 dilation_rate: int | Sequence[int] = 1, groups: int = 1,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 data_format: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.filters = check_int("filters", filters, minimum=1)
        self.kernel_size = int_tuple("kernel_size", kernel_size, 2)
        self.strides = int_tuple("strides", strides, 2)
        self.padding = check_choice("padding", padding, ("valid", "same"))
        self.dilation_rate = int_tuple("dilation_rate", dilation_rate, 2)
        self.groups = check_int("groups", groups, minimum=1)
        if self.filters % self.groups:
            raise ValueError(f"`filters` (={self.filters}) must be divisible by `groups` (={self.groups})")
        self._set_activation(activation)
        self.use_bias = check_bool("use_bias", use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        if data_format not in (None, "channels_last"):
            raise ValueError(f"convnet layers are NHWC only: `data_format` must be 'channels_last' or None. "
                             f"Received: data_format={data_format!r}")
        self.kernel: torch.nn.Parameter | None = None
        self.bias: torch.nn.Parameter | None = None
        self._pads: dict[tuple[int, int], ops.Pads] = {}

    def build(self, input_shape: Shape) -> None:
        channels = input_shape[-1]
        if channels % self.groups:
            raise ValueError(f"{self._label()}: the input channels ({channels}) must be divisible by `groups` "
                             f"(={self.groups}). Received input shape {shape_str((None, *input_shape))}")
        kh, kw = self.kernel_size
        kernel = self.kernel_initializer((kh, kw, channels // self.groups, self.filters))
        self.kernel = torch.nn.Parameter(_from_keras(kernel, "hwio").contiguous())
        if self.use_bias:
            self.bias = torch.nn.Parameter(self.bias_initializer((self.filters,)))

    def _padding_for(self, height: int, width: int) -> ops.Pads:
        pads = self._pads.get((height, width))
        if pads is None:
            pads = ops.resolve_padding(self._label(), self.padding, (height, width), self.kernel_size,
                                       self.strides, self.dilation_rate)
            self._pads[(height, width)] = pads
        return pads

    def _linear(self, x: torch.Tensor) -> torch.Tensor:
        pads = self._padding_for(x.shape[1], x.shape[2])
        out = ops._conv2d_nchw(ops._to_nchw(x), self.kernel, self.bias, self.strides, self.dilation_rate,
                               pads, self.groups)
        return ops._to_nhwc(out)  # (N, H', W', filters)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        h, w = (_conv_out(size, k, s, self.padding, d) for size, k, s, d in
                zip(input_shape[:2], self.kernel_size, self.strides, self.dilation_rate))
        if (h is not None and h < 1) or (w is not None and w < 1):
            fit = [(k - 1) * d + 1 if size is None else size  # an unknown size stands in as one that fits
                   for size, k, d in zip(input_shape[:2], self.kernel_size, self.dilation_rate)]
            self._padding_for(fit[0], fit[1])  # raises the "does not fit" message
        return (h, w, self.filters)

    def geometry(self, input_shape: Shape) -> Geometry:
        return _window_geometry(input_shape, self.kernel_size, self.strides, self.padding, self.dilation_rate)

    def _variables(self) -> list[tuple[str, torch.Tensor, str]]:
        if self.kernel is None:
            return []
        variables = [("kernel", self.kernel, "hwio")]
        if self.bias is not None:
            variables.append(("bias", self.bias, "same"))
        return variables

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding,
                "activation": _activation_config(self.activation), "use_bias": self.use_bias,
                "dilation_rate": list(self.dilation_rate), "groups": self.groups,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer)}


def _window_geometry(input_shape: Shape, kernel: tuple[int, int], strides: tuple[int, int], padding: str,
                     dilation: tuple[int, int] = (1, 1)) -> Geometry:
    axes = []
    for size, k, s, d in zip(input_shape[:2], kernel, strides, dilation):
        before = 0
        if padding == "same":
            before = ops.same_padding(size, k, s, d)[0] if size is not None else ((k - 1) * d) // 2
        axes.append(((k - 1) * d + 1, s, before))
    return tuple(axes)  # type: ignore[return-value]


class _Pooling2D(Layer):
    input_ndim = 4
    kind = "max"

    def __init__(self, pool_size: int | Sequence[int] = (2, 2), strides: int | Sequence[int] | None = None,
                 padding: str = "valid", data_format: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.pool_size = int_tuple("pool_size", pool_size, 2)
        self.strides = self.pool_size if strides is None else int_tuple("strides", strides, 2)
        self.padding = check_choice("padding", padding, ("valid", "same"))
        if data_format not in (None, "channels_last"):
            raise ValueError(f"convnet layers are NHWC only: `data_format` must be 'channels_last' or None. "
                             f"Received: data_format={data_format!r}")
        self._pads: dict[tuple[int, int], ops.Pads] = {}

    def call(self, x: torch.Tensor) -> torch.Tensor:
        pads = self._pads.get((x.shape[1], x.shape[2]))
        if pads is None:
            pads = ops.resolve_padding(self._label(), self.padding, (x.shape[1], x.shape[2]), self.pool_size,
                                       self.strides)
            self._pads[(x.shape[1], x.shape[2])] = pads
        out = ops._spatial_pool_nchw(self.kind, ops._to_nchw(x), self.pool_size, self.strides, pads)
        return ops._to_nhwc(out)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        h, w = (_conv_out(size, k, s, self.padding) for size, k, s in
                zip(input_shape[:2], self.pool_size, self.strides))
        if (h is not None and h < 1) or (w is not None and w < 1):
            fit = tuple(k if size is None else size for size, k in zip(input_shape[:2], self.pool_size))
            ops.resolve_padding(self._label(), self.padding, fit, self.pool_size, self.strides)  # raises
        return (h, w, input_shape[2])

    def geometry(self, input_shape: Shape) -> Geometry:
        return _window_geometry(input_shape, self.pool_size, self.strides, self.padding)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pool_size": list(self.pool_size), "strides": list(self.strides),
                "padding": self.padding}


@register
class MaxPooling2D(_Pooling2D):
    """Max pooling, as `keras.layers.MaxPooling2D` (strides default to pool_size; SAME pads with -inf)."""

    kind = "max"


@register
class AveragePooling2D(_Pooling2D):
    """Average pooling, as `keras.layers.AveragePooling2D` (SAME averages over real pixels only)."""

    kind = "avg"


MaxPool2D = MaxPooling2D
AvgPool2D = AveragePooling2D


@register
class GlobalAveragePooling2D(Layer):
    """Mean over height and width: (N, H, W, C) -> (N, C), or (N, 1, 1, C) with keepdims=True."""

    input_ndim = 4
    reduce = staticmethod(lambda x, keepdim: x.mean(dim=(1, 2), keepdim=keepdim))

    def __init__(self, keepdims: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.keepdims = check_bool("keepdims", keepdims)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return type(self).reduce(x, self.keepdims)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (1, 1, input_shape[-1]) if self.keepdims else (input_shape[-1],)

    def geometry(self, input_shape: Shape) -> None:
        return None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "keepdims": self.keepdims}


@register
class GlobalMaxPooling2D(GlobalAveragePooling2D):
    """Max over height and width: (N, H, W, C) -> (N, C)."""

    reduce = staticmethod(lambda x, keepdim: x.amax(dim=(1, 2), keepdim=keepdim))


@register
class DepthMaxPool(Layer):
    """The seed's depth-wise max pooling as a layer: the max over each group of `pool_size` consecutive
    channels, (N, H, W, C) -> (N, H, W, C / pool_size), as
    `tf.nn.max_pool(x, ksize=(1, 1, 1, k), strides=(1, 1, 1, k), padding="VALID")`."""

    input_ndim = 4

    def __init__(self, pool_size: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.pool_size = check_int("pool_size", pool_size, minimum=1)

    def build(self, input_shape: Shape) -> None:
        if input_shape[-1] % self.pool_size:
            raise ValueError(f"{self._label()}: `pool_size` (={self.pool_size}) must divide the input depth "
                             f"({input_shape[-1]}) evenly. Received input shape {shape_str((None, *input_shape))}")

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % self.pool_size:
            self.build(tuple(x.shape[1:]))  # raises the message
        return ops._depth_max_pool_nhwc(x, self.pool_size)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (*input_shape[:-1], input_shape[-1] // self.pool_size)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pool_size": self.pool_size}


@register
class Flatten(Layer):
    """(N, H, W, C) -> (N, H * W * C) in (H, W, C) order, as Keras (so Dense weights carry over)."""

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)  # (N, H, W, C) -> (N, H*W*C); also for N = 0

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if any(d is None for d in input_shape):
            raise ValueError(f"{self._label()}: cannot flatten an input of unknown size "
                             f"{shape_str((None, *input_shape))}; give the model a fixed input shape, or use "
                             f"GlobalAveragePooling2D")
        return (int(np.prod(input_shape)),)

    def geometry(self, input_shape: Shape) -> None:
        return None


@register
class Dense(_ActivationMixin, Layer):
    """Fully connected layer on the last axis, as `keras.layers.Dense`: (..., in) -> (..., units).
    Kernel in Keras layout: (in, units)."""

    def __init__(self, units: int, activation: Any = None, use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros", **kwargs: Any):
        super().__init__(**kwargs)
        self.units = check_int("units", units, minimum=1)
        self._set_activation(activation)
        self.use_bias = check_bool("use_bias", use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel: torch.nn.Parameter | None = None
        self.bias: torch.nn.Parameter | None = None

    def build(self, input_shape: Shape) -> None:
        features = input_shape[-1]
        self.kernel = torch.nn.Parameter(self.kernel_initializer((features, self.units)).t().contiguous())
        if self.use_bias:
            self.bias = torch.nn.Parameter(self.bias_initializer((self.units,)))

    def _linear(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.kernel, self.bias)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (*input_shape[:-1], self.units)

    def _variables(self) -> list[tuple[str, torch.Tensor, str]]:
        if self.kernel is None:
            return []
        variables = [("kernel", self.kernel, "io")]
        if self.bias is not None:
            variables.append(("bias", self.bias, "same"))
        return variables

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "activation": _activation_config(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer)}


@register
class Dropout(Layer):
    """Sets a fraction `rate` of inputs to 0 during training and scales the rest by 1 / (1 - rate)."""

    def __init__(self, rate: float, **kwargs: Any):
        super().__init__(**kwargs)
        self.rate = check_float("rate", rate, minimum=0.0, maximum=1.0, include_max=False)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.rate, self.training) if self.rate > 0 else x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate}


@register
class Activation(_ActivationMixin, Layer):
    """Applies an activation by name ("relu", "softmax", ...) or callable."""

    def __init__(self, activation: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self._set_activation(activation)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "activation": _activation_config(self.activation)}


@register
class Rescaling(Layer):
    """x * scale + offset, as `keras.layers.Rescaling` (e.g. scale=1/255 for uint8 images)."""

    def __init__(self, scale: float, offset: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.scale = check_float("scale", scale)
        self.offset = check_float("offset", offset)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


@register
class BatchNormalization(Layer):
    """Batch normalization over the last (channel) axis, as `keras.layers.BatchNormalization`.

    Keras's conventions: momentum 0.99 means moving = moving * 0.99 + batch * 0.01, and the moving
    variance tracks the biased batch variance. Weights in Keras's order: gamma, beta, moving_mean,
    moving_variance. A non-trainable layer normalises with its moving statistics, as in Keras 3.
    """

    def __init__(self, axis: int = -1, momentum: float = 0.99, epsilon: float = 1e-3, center: bool = True,
                 scale: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        if axis != -1:
            raise ValueError(f"convnet layers are NHWC: BatchNormalization normalises the last axis; `axis` must "
                             f"be -1. Received: axis={axis!r}")
        self.momentum = check_float("momentum", momentum, minimum=0.0, maximum=1.0)
        self.epsilon = check_float("epsilon", epsilon, minimum=0.0, include_min=False)
        self.center = check_bool("center", center)
        self.scale = check_bool("scale", scale)
        self.gamma: torch.nn.Parameter | None = None
        self.beta: torch.nn.Parameter | None = None

    def build(self, input_shape: Shape) -> None:
        channels = input_shape[-1]
        if self.scale:
            self.gamma = torch.nn.Parameter(torch.ones(channels))
        if self.center:
            self.beta = torch.nn.Parameter(torch.zeros(channels))
        self.register_buffer("moving_mean", torch.zeros(channels))
        self.register_buffer("moving_variance", torch.ones(channels))

    def call(self, x: torch.Tensor) -> torch.Tensor:
        channels_first = x.movedim(-1, 1)  # (N, ..., C) -> (N, C, ...): a view, channels_last for images
        if not (self.training and self._trainable):
            out = F.batch_norm(channels_first, self.moving_mean, self.moving_variance, self.gamma, self.beta,
                               False, 0.0, self.epsilon)
            return out.movedim(1, -1)
        dims = tuple(range(x.dim() - 1))
        if math.prod(x.shape[:-1]) == 0:  # an empty batch: nothing to normalise or learn from
            return x.clone()
        if math.prod(x.shape[:-1]) > 1:
            out = F.batch_norm(channels_first, None, None, self.gamma, self.beta, True, 0.0, self.epsilon).movedim(1, -1)
        else:  # one value per channel: F.batch_norm refuses it, Keras normalises it (to beta)
            variance, mean = torch.var_mean(x, dim=dims, unbiased=False)
            out = (x - mean) / torch.sqrt(variance + self.epsilon)
            out = out * (1 if self.gamma is None else self.gamma) + (0 if self.beta is None else self.beta)
        with torch.no_grad():
            variance, mean = torch.var_mean(x.detach().float(), dim=dims, unbiased=False)
            self.moving_mean.mul_(self.momentum).add_(mean, alpha=1 - self.momentum)
            self.moving_variance.mul_(self.momentum).add_(variance, alpha=1 - self.momentum)
        return out

    def _variables(self) -> list[tuple[str, torch.Tensor, str]]:
        if not self.built:
            return []
        variables = []
        if self.gamma is not None:
            variables.append(("gamma", self.gamma, "same"))
        if self.beta is not None:
            variables.append(("beta", self.beta, "same"))
        return variables + [("moving_mean", self.moving_mean, "same"), ("moving_variance", self.moving_variance, "same")]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": -1, "momentum": self.momentum, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale}


@register
class Lambda(Layer):
    """Wraps a function of an NHWC batch: `Lambda(lambda x: x / 255)`.

    A Lambda holds Python code, so a model containing one cannot be saved to a .convnet file (files
    never carry code); write a registered Layer subclass instead.
    """

    def __init__(self, function: Callable[[torch.Tensor], torch.Tensor],
                 output_shape: Sequence[int | None] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if not callable(function):
            raise TypeError(f"`function` must be callable. Received: function={describe(function)}")
        self.function = function
        self.output_shape_arg = None if output_shape is None else check_input_shape("output_shape", output_shape)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if self.output_shape_arg is not None:
            return self.output_shape_arg
        if any(d is None for d in input_shape):
            return input_shape
        with torch.no_grad():
            out = self.function(torch.zeros((1, *input_shape)))  # dry run on one dummy sample
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{self._label()}: the function must return a torch.Tensor. Received: {describe(out)}")
        return tuple(out.shape[1:])

    def geometry(self, input_shape: Shape) -> None:
        return None

    def get_config(self) -> dict[str, Any]:
        raise ValueError(f"{self._label()}: a Lambda layer holds Python code and cannot be saved "
                         f"(convnet files never carry code). Write a Layer subclass decorated with "
                         f"@convnet.layers.register instead.")


def deserialize(spec: Any) -> Layer:
    """A layer from {"class_name": ..., "config": {...}}; only registered classes are instantiated."""
    if not isinstance(spec, dict) or not isinstance(spec.get("class_name"), str) \
            or not isinstance(spec.get("config"), dict):
        raise ValueError(f"a layer entry must be {{'class_name': str, 'config': dict}}. Received: {describe(spec)}")
    cls = get_layer_class(spec["class_name"])
    try:
        return cls.from_config(dict(spec["config"]))
    except TypeError as error:
        raise ValueError(f"layer {spec['class_name']!r}: invalid configuration {spec['config']!r} ({error})") from None


def serialize(layer: Layer) -> dict[str, Any]:
    name = type(layer).__name__
    if _REGISTRY.get(name) is not type(layer):
        raise ValueError(f"{layer._label()}: its class is not registered, so a file could not name it; decorate "
                         f"the class with @convnet.layers.register")
    if hasattr(layer, "activation_name") and layer.activation_name is None:
        raise ValueError(f"{layer._label()}: a custom activation callable cannot be saved (files never carry "
                         f"code); use a named activation ({', '.join(activations.list_activations())})")
    return {"class_name": name, "config": layer.get_config()}
