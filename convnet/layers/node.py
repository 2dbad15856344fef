"""Symbolic tensors and nodes: how calling layers on `convnet.Input(...)` records a graph, as Keras's
KerasTensor and Node.

Calling a layer (or a model) on symbolic tensors computes nothing: the layer is built for the inputs'
shapes, and a `Node` records the call, its input tensors and its output tensors. Each output remembers
the node that made it, so a model can walk back from its outputs to its inputs.

    >>> from convnet import layers
    >>> x = layers.Input(shape=(8, 8, 3), name="image")
    >>> x
    <SymbolicTensor shape=(None, 8, 8, 3), from 'image'>
    >>> y = layers.Conv2D(4, 3)(x)
    >>> y.shape, y.node.operation.name
    ((None, 6, 6, 4), 'conv2d')

A layer called twice (weight sharing) has one node per call; `layer.output` is the first call's output,
as in Keras.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from convnet._internal.checks import describe, shape_str


class Operation(Protocol):
    """What a node needs of the layer or model it records: a name, a label for messages, and a way to
    build for input shapes (without the batch axis) that returns the output shape(s)."""

    name: str
    _inbound_nodes: list[Node]

    @property
    def label(self) -> str: ...

    def build_for(self, input_shape: Any) -> Any: ...


class SymbolicTensor:
    """A placeholder for a batch of data in a graph definition: a shape (batch axis None) and the node
    that produces it. Layers called on it record the call instead of computing."""

    def __init__(self, shape: tuple, node: Node, index: int = 0):
        self.shape = tuple(shape)
        self.dtype = "float32"
        self.node = node
        self.index = index  # which of the node's outputs this is

    @property
    def name(self) -> str:
        """The producing layer's name, with the output index for a layer with several outputs."""
        outputs = len(self.node.outputs)
        return self.node.operation.name if outputs <= 1 else f"{self.node.operation.name}:{self.index}"

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"<SymbolicTensor shape={shape_str(self.shape)}, from {self.name!r}>"

    def _refuse(self, *args: Any) -> Any:
        raise TypeError(f"{self!r}: arithmetic on symbolic tensors is not recorded in the graph; use a layer "
                        f"(layers.Add, Subtract, Multiply, Lambda) so that the model can run and save it")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __matmul__ = __neg__ = _refuse
    __getitem__ = _refuse

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{self!r} holds no data: it stands for a model input while the graph is defined; "
                        f"call the finished model on arrays (model(x) or model.predict(x))")

    def __bool__(self) -> bool:
        raise TypeError(f"{self!r} has no truth value while the graph is defined")

    __hash__ = object.__hash__


class Node:
    """One call of an operation in a graph: its input tensors (in the call's structure: one tensor, or a
    list) and its output tensors. An `InputLayer`'s node has no inputs."""

    def __init__(self, operation: Operation, inputs: list[SymbolicTensor], listed: bool):
        self.operation = operation
        self.inputs = inputs
        self.listed = listed  # the call took a list (a merge, a multi-input model), not one tensor
        self.outputs: list[SymbolicTensor] = []
        operation._inbound_nodes.append(self)

    @property
    def is_input(self) -> bool:
        return not self.inputs

    @property
    def parents(self) -> list[Node]:
        return [tensor.node for tensor in self.inputs]

    @property
    def index(self) -> int:
        """Which call of its operation this node is (0 for the first)."""
        return self.operation._inbound_nodes.index(self)

    def __repr__(self) -> str:
        return f"<Node {self.operation.name}[{self.index}]: {[t.name for t in self.inputs]} -> {len(self.outputs)}>"


def is_symbolic(value: Any) -> bool:
    """Whether `value` is a symbolic tensor, or a list/tuple holding one."""
    if isinstance(value, SymbolicTensor):
        return True
    return isinstance(value, (list, tuple)) and any(isinstance(item, SymbolicTensor) for item in value)


def symbolic_call(operation: Operation, inputs: Any) -> SymbolicTensor | list[SymbolicTensor]:
    """Record `operation(inputs)` in the graph: build the operation for the inputs' shapes and return its
    symbolic output (a list for an operation with several outputs).

    Raises:
        TypeError: an input that is not a symbolic tensor (an array or a tensor mixed into a graph).
        ValueError: shapes the operation cannot take; for several inputs, the message names the layer
            that produced each input and its shape.
    """
    listed = isinstance(inputs, (list, tuple))
    tensors = list(inputs) if listed else [inputs]
    for position, tensor in enumerate(tensors):
        if not isinstance(tensor, SymbolicTensor):
            where = f"input {position}" if listed else "the input"
            raise TypeError(f"{operation.label}: {where} is {describe(tensor)}, not a symbolic tensor. Inside a "
                            f"graph definition every input must be convnet.Input(...) or another layer's output; "
                            f"call the finished model on arrays instead")
    shapes = [tensor.shape[1:] for tensor in tensors]
    try:
        output_shape = operation.build_for(shapes if listed else shapes[0])
    except ValueError as error:
        if len(tensors) < 2:
            raise
        sources = "; ".join(f"input {i} comes from {t.node.operation.label} with shape {shape_str(t.shape)}"
                            for i, t in enumerate(tensors))
        raise ValueError(f"{error} ({sources})") from None
    node = Node(operation, tensors, listed)
    several = isinstance(output_shape, list)
    for index, shape in enumerate(output_shape if several else [output_shape]):
        node.outputs.append(SymbolicTensor((None, *shape), node, index))
    return list(node.outputs) if several else node.outputs[0]


def flatten_tensors(value: Any, what: str) -> list[SymbolicTensor]:
    """`value` (one symbolic tensor, or a list or tuple of them) as a list; TypeError naming `what` for
    anything else (an array, a torch.Tensor from calling a layer on data)."""
    items: Sequence[Any] = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError(f"`{what}` must hold at least one symbolic tensor. Received: {what}={describe(value)}")
    for position, item in enumerate(items):
        if not isinstance(item, SymbolicTensor):
            hint = (" (a layer was called on data, not on a symbolic tensor: build the graph from "
                    "convnet.Input(...))" if hasattr(item, "shape") else "")
            where = f"{what}[{position}]" if isinstance(value, (list, tuple)) else what
            raise TypeError(f"`{where}` must be a symbolic tensor from convnet.Input(...) or a layer's output. "
                            f"Received: {describe(item)}{hint}")
    return list(items)
