"""`Sequential`: a stack of layers with Keras's model API (compile, fit, evaluate, predict, summary, save).

    >>> from convnet import layers, models
    >>> model = models.Sequential([
    ...     layers.Input(shape=(28, 28, 1)),
    ...     layers.Conv2D(8, 3, padding="same", activation="relu"),
    ...     layers.MaxPooling2D(2),
    ...     layers.Flatten(),
    ...     layers.Dense(10, activation="softmax"),
    ... ])
    >>> model.count_params()
    15770
    >>> [layer.name for layer in model.layers]
    ['conv2d', 'max_pooling2d', 'flatten', 'dense']

A stack is a graph: once the input shape is known the model holds a graph of its layers, so `model.input`
and `layer.output` work as in Keras (feature extraction: `Model(model.input, [l.output for l in
model.layers])`). A Sequential is also a torch.nn.Module: `model(x)` takes an NHWC tensor (or a NumPy array) and returns
the output tensor, so it drops into a hand-written PyTorch loop. It starts in inference mode
(`model(x)` runs Dropout as identity, as Keras's `model(x)` does); `fit` trains and switches back.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch

from convnet import layers as layers_module
from convnet._internal.checks import check_str, describe, shape_str
from convnet.layers import InputLayer, Layer
from convnet.layers.node import Node, SymbolicTensor
from convnet.models.model import MODEL_CLASSES, Model
from convnet.training import loop as training


class Sequential(Model):
    """A linear stack of layers.

    Args:
        layers: layers to add in order; an `Input(shape=...)` first (or `input_shape=` on the first layer)
            builds the model at once, so `summary()` works before any data is seen.
        name: the model's name.

    Raises:
        TypeError: an element that is not a convnet layer.
        ValueError: duplicate layer names, or a layer that does not fit the previous one's output.
    """

    def __init__(self, layers: Sequence[Any] | None = None, name: str | None = None):
        super().__init__()
        self.name = "sequential" if name is None else check_str("name", name)
        self._stack = torch.nn.ModuleList()  # the layers, registered as submodules; read them through `layers`
        self._input_shape: tuple | None = None
        self._input_layer: InputLayer | None = None
        if layers is not None:
            if isinstance(layers, (Layer, Model)) or not isinstance(layers, (list, tuple)):
                raise TypeError(f"`layers` must be a list of layers. Received: layers={describe(layers)}")
            for layer in layers:
                self.add(layer)
        self.eval()

    # -- structure --------------------------------------------------------------------------------
    def add(self, layer: Any) -> None:
        """Append a layer (or a model); it is built at once when the model's input shape is known. An
        `Input(...)` (or an InputLayer) first declares the input shape."""
        if isinstance(layer, SymbolicTensor):
            if not layer.node.is_input:
                raise TypeError(f"Sequential takes layers; {layer!r} is a layer's output (a graph is built with "
                                f"convnet.Model(inputs, outputs))")
            layer = cast(InputLayer, layer.node.operation)
        if not isinstance(layer, (Layer, Model)):
            hint = " (call the class: layers.Flatten(), not layers.Flatten)" if isinstance(layer, type) else ""
            raise TypeError(f"Sequential accepts convnet layers only{hint}. Received: {describe(layer)}")
        if isinstance(layer, InputLayer):
            if len(self._stack) or self._input_shape is not None:
                raise ValueError("an Input layer must come first in a Sequential model")
            self._input_shape, self._input_layer = layer.shape, layer
            return
        names = {existing.name for existing in self.layers}
        if layer.name in names:
            if not getattr(layer, "auto_named", False):
                raise ValueError(f"the model already has a layer named {layer.name!r}; layer names must be unique")
            base, index = layer.name, 1
            while f"{base}_{index}" in names:
                index += 1
            layer.name = f"{base}_{index}"
        if not self._stack and self._input_shape is None and getattr(layer, "input_shape_arg", None) is not None:
            self._input_shape = cast(Layer, layer).input_shape_arg
        if self._input_shape is not None:
            layer.build_for(cast(list, self.sample_shapes("output"))[0])
            layer.to(self._device)
        self._stack.append(layer)
        self._rebuild_graph()
        self._rebuild_optimizer()

    def pop(self) -> Any:
        """Remove and return the last layer."""
        if not self._stack:
            raise ValueError("the model has no layers to pop")
        layer = self.layers[-1]
        del self._stack[-1]
        self._rebuild_graph()
        self._rebuild_optimizer()
        return layer

    def _rebuild_graph(self) -> None:
        """The stack as a graph (InputLayer -> each layer), so that `model.input` and `layer.output` exist;
        the nodes of the previous graph are removed from the layers first."""
        for node in self._nodes:
            if not node.is_input and node in node.operation._inbound_nodes:
                node.operation._inbound_nodes.remove(node)
        self._inputs, self._outputs, self._nodes = [], [], []
        if not self.built:
            return
        if self._input_layer is None:
            self._input_layer = InputLayer(shape=cast(tuple, self._input_shape))
        x = cast(SymbolicTensor, self._input_layer.output)
        nodes: list[Node] = [x.node]
        for layer in self.layers:
            x = layer(x)
            nodes.append(x.node)
        self._inputs, self._outputs, self._nodes = [nodes[0].outputs[0]], [x], nodes

    @property
    def layers(self) -> list[Any]:
        """The stacked layers (the InputLayer is not one of them, as in Keras)."""
        return list(self._stack)

    @property
    def built(self) -> bool:
        return self._input_shape is not None and all(layer.built for layer in self.layers)

    def sample_shapes(self, which: str = "input") -> list[tuple] | None:
        """[the shape of one input sample] (no batch axis), or of one output with which="output"; None until
        the input shape is known. The output's follows the stack even before it is built."""
        if self._input_shape is None:
            return None
        shape = self._input_shape
        if which == "output":
            for layer in self.layers:
                shape = layer.compute_output_shape(shape)
        return [tuple(shape)]

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Build every layer for inputs of `input_shape` (without the batch axis)."""
        shape = layers_module.check_input_shape("input_shape", input_shape)
        if self._input_shape is not None and tuple(self._input_shape) != shape:
            raise ValueError(f"the model was built for inputs {shape_str((None, *self._input_shape))}; received "
                             f"input_shape {shape_str((None, *shape))}")
        self._input_shape = shape
        for layer in self.layers:
            shape = layer.build_for(shape)
        self.to(self._device)
        self._rebuild_graph()
        self._rebuild_optimizer()

    def build_for(self, input_shape: Any) -> Any:
        """Build for `input_shape` (no batch axis) if needed, and return the output shape: how a graph
        calls this model as a layer."""
        if not self.built:
            self.build(input_shape)
        return super().build_for(input_shape)

    # -- computing --------------------------------------------------------------------------------
    def forward(self, x: Any) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = training.as_inputs(self, x, "inputs")
        if x.device != self.device:
            x = x.to(self.device)
        if not self.built:
            self._check_batch(x)
            self.build(tuple(x.shape[1:]))
        for layer in self.layers:
            x = layer(x)
        return x

    def _check_batch(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"{self.name}: expected a batch (N, ...), received shape {shape_str(x.shape)}")

    # -- the interface the training engine and the explanations use ------------------------------
    @property
    def output_activation(self) -> str | None:
        """The name of the final layer's activation when it is one a loss can take in log space ("softmax" or
        "sigmoid"), else None."""
        last = self.layers[-1] if self.layers else None
        name = getattr(last, "activation_name", None)
        return name if name in ("softmax", "sigmoid") and hasattr(last, "pre_activation") else None

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The forward pass without the final softmax/sigmoid (see `output_activation`); the plain forward
        pass for a model without one. Losses and gradients computed from logits are exact in log space."""
        if self.output_activation is None:
            return self.forward(x)
        *body, last = self.layers
        for layer in body:
            x = layer(x)
        return cast(Any, last).pre_activation(x)  # output_activation says the last layer has one

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """The final activation applied to `logits` (what `logits` left out)."""
        return cast(Any, self.layers[-1]).activation(logits) if self.output_activation is not None else logits

    # -- inspection -------------------------------------------------------------------------------
    def layer_table(self) -> list[dict[str, Any]]:
        if self._input_shape is None:
            raise ValueError(f"{self.name}: the model is not built; give it an input shape "
                             f"(layers.Input(shape=...) first, or input_shape= on the first layer) or call it once")
        return super().layer_table()

    def _shows_connections(self) -> bool:
        return False  # a stack: each layer reads the one above, as Keras's Sequential summary shows

    # -- configuration ------------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "class_name": "Sequential",
                "input_shape": None if self._input_shape is None else list(self._input_shape),
                "layers": [_serialize(layer) for layer in self.layers]}

    @classmethod
    def from_config(cls, config: Any, device: Any = None) -> Sequential:
        """The model a `get_config()` describes, its weights freshly initialised on `device` (default: CPU;
        "meta" builds shapes only, allocating nothing)."""
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ValueError(f"a Sequential config must be a dict with a 'layers' list. Received: {describe(config)}")
        model = cls(name=config.get("name") or "sequential")
        if device is not None:
            model._device = torch.device(device)
        if config.get("input_shape") is not None:
            model.add(InputLayer(shape=config["input_shape"]))
        for spec in config["layers"]:
            if isinstance(spec, dict) and spec.get("class_name") in MODEL_CLASSES.names():
                model.add(MODEL_CLASSES.get(spec["class_name"]).from_config(spec.get("config"), device=device))
            else:
                model.add(layers_module.deserialize(spec))
        return model

    def __repr__(self) -> str:
        inner = ",\n".join(f"  {layer!r}" for layer in self.layers)
        shape = "" if self._input_shape is None else f"input_shape={shape_str(self._input_shape)}, "
        return f"Sequential({shape}name={self.name!r}, layers=[\n{inner}\n])"


MODEL_CLASSES.register("Sequential", Sequential)


def _serialize(layer: Any) -> dict[str, Any]:
    if isinstance(layer, Model):
        return {"class_name": type(layer).__name__ if isinstance(layer, Sequential) else "Functional",
                "config": layer.get_config()}
    return layers_module.serialize(layer)
