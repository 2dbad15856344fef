"""`Model`: Keras's model API (compile, fit, evaluate, predict, weights, summary, files) over a graph of
layers, built with the functional API:

    >>> from convnet import layers, Model
    >>> inputs = layers.Input(shape=(8, 8, 1))
    >>> x = layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    >>> y = layers.Conv2D(4, 3, padding="same")(x)
    >>> x = layers.Activation("relu")(layers.Add()([x, y]))             # a residual connection
    >>> outputs = layers.Dense(3, activation="softmax")(layers.GlobalAveragePooling2D()(x))
    >>> model = Model(inputs, outputs, name="tiny_resnet")
    >>> [layer.name for layer in model.layers]
    ['input_layer', 'conv2d', 'conv2d_1', 'add', 'activation', 'global_average_pooling2d', 'dense']
    >>> model.count_params(), model.input_shape, model.output_shape
    (223, (None, 8, 8, 1), (None, 3))

`Sequential` (sequential.py) is the special case of a stack: it shares everything here and keeps a graph
of its layers too, so `layer.output` works on its layers (feature extraction).

The order of `model.layers` (and so of `get_weights()`) is Keras's: operations by decreasing depth from
the outputs, ties broken by the order a depth-first walk from the outputs first meets them
(keras/src/ops/function.py, `map_graph`).
"""
from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from convnet import layers as layers_module
from convnet import losses as losses_module
from convnet import metrics as metrics_module
from convnet import optimizers as optimizers_module
from convnet._internal.checks import check_choice, check_str, describe, shape_str, unknown_name
from convnet._internal.registry import Registry
from convnet._internal.table import binary_bytes, box_table, si
from convnet.export.api import export as export_model
from convnet.layers import InputLayer
from convnet.layers.node import Node, SymbolicTensor, flatten_tensors, is_symbolic, symbolic_call
from convnet.models.saving import load_weights, save_model, save_weights
from convnet.training import loop as training
from convnet.training.engine import JIT_MODES, Engine, resolve_precision
from convnet.training.inputs import to_tensor
from convnet.utils import resolve_device

if TYPE_CHECKING:
    from convnet.callbacks import History

# Model classes a saved graph may nest by name (Sequential registers itself in sequential.py).
MODEL_CLASSES: Registry[type[Model]] = Registry("model class", normalise=str)

Field = list[tuple[float, float, float]]  # per spatial axis: receptive-field size, jump, start


class Model(torch.nn.Module):
    """A graph of layers from `inputs` to `outputs`, with Keras's model API.

    Args:
        inputs: a symbolic tensor from `convnet.Input(...)`, or a list of them.
        outputs: a symbolic tensor computed from the inputs by calling layers, or a list of them.
        name: the model's name.

    Raises:
        TypeError: an input or output that is not a symbolic tensor (an array, a torch.Tensor).
        ValueError: an output that cannot be computed from the inputs (the graph is disconnected), an
            input no output uses, or two layers with the same name.
    """

    def __init__(self, inputs: Any = None, outputs: Any = None, name: str | None = None):
        super().__init__()
        self.name = "functional" if name is None else check_str("name", name)
        self._device = torch.device("cpu")
        self.optimizer: optimizers_module.Optimizer | None = None
        self.optimizer_: torch.optim.Optimizer | None = None
        self.loss: losses_module.Loss | None = None
        self.metrics: list[metrics_module.Metric] = []
        self.weighted_metrics: list[metrics_module.Metric] = []
        self._metric_specs: tuple[list[Any], list[Any]] = ([], [])  # compile's arguments, for resolve_metrics
        self.stop_training = False
        self.history: History | None = None
        self.metadata: dict[str, Any] = {}  # free-form JSON saved with the model (class names, preprocessing)
        self.precision = "float32"  # engine settings, see compile()
        self.jit = "auto"
        self._engine: Engine | None = None
        self._inbound_nodes: list[Node] = []  # calls of this model as a layer of another graph
        self._operations = torch.nn.ModuleList()  # the graph's layers in Keras's order; read them through `layers`
        self._inputs: list[SymbolicTensor] = []
        self._outputs: list[SymbolicTensor] = []
        self._nodes: list[Node] = []  # in execution order
        self._single_input = self._single_output = True
        self._outputs_listed = False
        self._unwrap = False  # set while fit/evaluate/predict run a list-of-one model
        if type(self) is Model or inputs is not None or outputs is not None:
            if inputs is None or outputs is None:
                raise TypeError("Model(inputs, outputs) builds a graph from symbolic tensors (the functional API): "
                                "inputs = convnet.Input(shape=...), outputs = layers called on them; for a stack of "
                                "layers use convnet.Sequential([...])")
            self._set_graph(flatten_tensors(inputs, "inputs"), flatten_tensors(outputs, "outputs"))
            # a list of one counts as one, as Keras: predict returns an array, fit takes an array
            self._single_input = len(self._inputs) == 1
            self._single_output = len(self._outputs) == 1
            # model(x) returns the outputs' structure as given (a list of one stays a list, as Keras's call);
            # fit, evaluate and predict treat a list of one as one
            self._outputs_listed = isinstance(outputs, (list, tuple))
        self.eval()

    # -- the graph --------------------------------------------------------------------------------
    def _set_graph(self, inputs: list[SymbolicTensor], outputs: list[SymbolicTensor]) -> None:
        nodes, operations = map_graph(inputs, outputs)
        _make_names_unique(operations)
        self._inputs, self._outputs, self._nodes = inputs, outputs, nodes
        self._operations = torch.nn.ModuleList(operations)  # made on the CPU (or under load_model's "meta")
        self._rebuild_optimizer()

    @property
    def layers(self) -> list[Any]:
        """The graph's layers (InputLayers and nested models included), in Keras's order."""
        return list(self._operations)

    @property
    def built(self) -> bool:
        return bool(self._outputs)

    @property
    def inputs(self) -> list[SymbolicTensor]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[SymbolicTensor]:
        return list(self._outputs)

    @property
    def input(self) -> SymbolicTensor | list[SymbolicTensor]:
        """The symbolic input (a list for several), as Keras's `model.input`."""
        self._require_graph("input")
        return self._inputs[0] if self._single_input else list(self._inputs)

    @property
    def output(self) -> SymbolicTensor | list[SymbolicTensor]:
        self._require_graph("output")
        return self._outputs[0] if self._single_output else list(self._outputs)

    def _require_graph(self, what: str) -> None:
        if not self._outputs:
            raise ValueError(f"{self.name}: the model is not built, so it has no {what}; give it an input shape "
                             f"(layers.Input(shape=...) first) or call it on data once")

    def sample_shapes(self, which: str = "input") -> list[tuple] | None:
        """The shape of one sample (no batch axis) of each input, or of each output with which="output";
        None while the model is not built. What a graph checks calls against."""
        tensors = self._inputs if which == "input" else self._outputs
        return [tuple(tensor.shape[1:]) for tensor in tensors] if tensors else None

    @property
    def input_shape(self) -> Any:
        """The input shape with the batch axis as None, as Keras: (None, 28, 28, 1); a list for several inputs."""
        return self._batched_shapes("input", self._single_input)

    @property
    def output_shape(self) -> Any:
        """The output shape with the batch axis as None, as Keras: (None, 10); a list for several outputs."""
        return self._batched_shapes("output", self._single_output)

    def _batched_shapes(self, which: str, single: bool) -> Any:
        shapes = self.sample_shapes(which)
        if shapes is None:
            return None
        batched = [(None, *shape) for shape in shapes]
        return batched[0] if single else batched

    def get_layer(self, name: str | None = None, index: int | None = None) -> Any:
        """A layer by name, or by position in `layers`."""
        layers = self.layers
        if index is not None:
            if not isinstance(index, int) or not -len(layers) <= index < len(layers):
                raise ValueError(f"`index` must be an integer in [0, {len(layers) - 1}]. Received: index={index!r}")
            return layers[index]
        for layer in layers:
            if layer.name == name:
                return layer
        raise unknown_name("layer", name, [layer.name for layer in layers], argument="name", sort=False)

    # -- computing --------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """On data: the forward pass. On symbolic tensors: this model used as a layer of another graph."""
        if args and is_symbolic(args[0]):
            if len(args) > 1 or kwargs:
                raise TypeError(f"{self.label}: a call in a graph definition takes the input tensor(s) only")
            return symbolic_call(self, args[0])
        return super().__call__(*args, **kwargs)

    @property
    def label(self) -> str:
        return f"{type(self).__name__} '{self.name}'"

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.build_for(input_shape)

    def build_for(self, input_shape: Any) -> Any:
        """The output shape(s) for inputs of `input_shape` (no batch axis): how a graph calls this model."""
        self._require_graph("input shape")
        expected = cast(list, self.sample_shapes("input"))
        given = [tuple(s) for s in input_shape] if not self._single_input else [tuple(input_shape)]
        if not self._single_input and (not isinstance(input_shape, list) or len(given) != len(expected)):
            raise ValueError(f"{self.label} takes {len(expected)} inputs {expected}. Received: {input_shape!r}")
        for want, got in zip(expected, given):
            if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want, got)):
                raise ValueError(f"{self.label} takes inputs of shape {shape_str((None, *want))}. Received: "
                                 f"{shape_str((None, *got))}")
        outputs = cast(list, self.sample_shapes("output"))
        return outputs[0] if self._single_output else outputs

    def forward(self, *args: Any) -> Any:
        values = self._run(self._feed(args))
        outputs = [values[id(tensor)] for tensor in self._outputs]
        if self._outputs_listed and not self._unwrap:
            return outputs
        return outputs[0] if self._single_output else outputs

    @contextlib.contextmanager
    def _as_single(self) -> Iterator[None]:
        """model(x) returns one tensor for a list of one output while the training loops run."""
        previous, self._unwrap = self._unwrap, True
        try:
            yield
        finally:
            self._unwrap = previous

    def _feed(self, args: tuple) -> dict[int, torch.Tensor]:
        """The model's input tensors by symbolic-tensor id, from `model(x)` or `model([x1, x2])`."""
        data = args[0] if len(args) == 1 else list(args)
        if self._single_input:
            items = [data]
        elif isinstance(data, (list, tuple)) and len(data) == len(self._inputs):
            items = list(data)
        else:
            raise ValueError(f"{self.label} takes {len(self._inputs)} inputs (a list in the order of "
                             f"model.inputs). Received: {describe(data)}")
        feed = {}
        for tensor, item in zip(self._inputs, items):
            if not isinstance(item, torch.Tensor) and self._single_input:
                item = training.as_inputs(cast(Any, self), item, "inputs")
            elif not isinstance(item, torch.Tensor):
                item = to_tensor(item, "inputs").float()
            feed[id(tensor)] = item.to(self.device) if item.device != self.device else item
        return feed

    def _run(self, values: dict[int, torch.Tensor], logits: bool = False) -> dict[int, torch.Tensor]:
        """Run the graph's nodes in order; `logits` runs the single output's layer without its final
        softmax/sigmoid (see `output_activation`)."""
        last = self._outputs[0].node if logits else None
        for node in self._nodes:
            if node.is_input:
                continue
            if node.listed:
                result = [values[id(t)] for t in node.inputs]
                inputs: Any = result
            else:
                inputs = values[id(node.inputs[0])]
            operation = cast(Any, node.operation)
            if node is last:
                output: Any = operation.pre_activation(inputs)
            else:
                output = operation(inputs)
            outputs = output if isinstance(output, (list, tuple)) else [output]
            for tensor, value in zip(node.outputs, outputs):
                values[id(tensor)] = value
        return values

    # -- the interface the training engine and the explanations use ------------------------------
    @property
    def output_activation(self) -> str | None:
        """The final activation's name when a loss can take it in log space ("softmax" or "sigmoid"): the one
        output is made by a layer with that activation (and `pre_activation`), called once. Else None."""
        if len(self._outputs) != 1:
            return None
        operation = self._outputs[0].node.operation
        name = getattr(operation, "activation_name", None)
        if name in ("softmax", "sigmoid") and hasattr(operation, "pre_activation") \
                and len(operation._inbound_nodes) == 1:
            return name
        return None

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The forward pass without the final softmax/sigmoid (see `output_activation`)."""
        if self.output_activation is None:
            return cast(torch.Tensor, self.forward(x))
        return self._run(self._feed((x,)), logits=True)[id(self._outputs[0])]

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """The final activation applied to `logits` (what `logits` left out)."""
        if self.output_activation is None:
            return logits
        return cast(Any, self._outputs[0].node.operation).activation(logits)

    # -- device -----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, *args: Any, **kwargs: Any) -> Any:
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None:
            self._device = torch.device(device)
        super().to(*args, **kwargs)
        return self

    def cuda(self, device: Any = None) -> Any:
        return self.to("cuda" if device is None else torch.device("cuda", device) if isinstance(device, int) else device)

    def cpu(self) -> Any:
        return self.to("cpu")

    # -- training ---------------------------------------------------------------------------------
    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, metrics: Sequence[Any] | None = None,
                weighted_metrics: Sequence[Any] | None = None, device: Any = "auto", precision: str = "float32",
                jit: str = "auto") -> None:
        """Configure training, as Keras.

        Args:
            optimizer: a name ("nadam", "adam", "sgd", "rmsprop", ...), a `convnet.optimizers` object, or a
                torch.optim optimizer already bound to `model.parameters()`.
            loss: a name ("sparse_categorical_crossentropy", "categorical_crossentropy", ...), a
                `convnet.losses` object or a function (y_true, y_pred).
            metrics: names such as ["accuracy"], or Metric objects (not weighted by sample weights, as Keras).
            weighted_metrics: metrics weighted by `fit`'s and `evaluate`'s sample or class weights.
            device: "auto" (CUDA if present, else CPU), "cpu", "cuda" or a torch.device; the model moves there.
            precision: "float32" (the default, as Keras and the seed compute), "bfloat16" (autocast; refused
                where bf16 would be an emulated slow path) or "auto" (bfloat16 where the device computes it
                natively, else float32).
            jit: "auto" (the whole training step in a CUDA graph on a GPU, with a fallback to eager execution
                where capture is impossible; eager on a CPU), "eager" or "graphs" (capture or fail).
        """
        if loss is None:
            raise ValueError("compile: `loss` is required, e.g. loss='sparse_categorical_crossentropy'")
        self.loss = losses_module.get(loss)
        reduction = getattr(self.loss, "reduction", "sum_over_batch_size")
        if reduction in ("none", None):
            raise ValueError(f"compile: a loss with reduction={reduction!r} gives one value per sample; training needs "
                             f"one per batch: use 'sum_over_batch_size' (the default), 'sum' or 'mean'")
        self._metric_specs = (_metric_list("metrics", metrics), _metric_list("weighted_metrics", weighted_metrics))
        self.metrics = [metrics_module.get(m, self.loss) for m in self._metric_specs[0]]
        self.weighted_metrics = [metrics_module.get(m, self.loss) for m in self._metric_specs[1]]
        self.to(resolve_device(device))
        resolve_precision(precision, self.device)  # refuse an unsupported precision now
        self.precision = precision
        self.jit = check_choice("jit", jit, JIT_MODES)
        if self.jit == "graphs" and self.device.type != "cuda":
            raise ValueError(f"jit='graphs' needs a CUDA device; the model is on {self.device}")
        if isinstance(optimizer, torch.optim.Optimizer):
            self.optimizer, self.optimizer_ = None, optimizer
        else:
            self.optimizer = optimizers_module.get(optimizer)
            self.optimizer_ = None
        self._rebuild_optimizer()  # a new loss, precision or jit needs a new engine too, even with the same optimizer

    def resolve_metrics(self, y_shape: Sequence[int]) -> None:
        """Resolve "accuracy" as Keras 3 does once the data is seen: from the shapes of the labels (`y_shape`,
        with the batch axis) and of the output (binary for one unit, sparse for labels with one axis fewer,
        else categorical); `fit` and `evaluate` call it. Compile resolved it from the loss until then."""
        outputs = self.sample_shapes("output")
        if outputs is None or len(outputs) != 1:
            return
        pred_shape = (y_shape[0], *outputs[0])
        for attribute, specs in zip(("metrics", "weighted_metrics"), self._metric_specs):
            if len(specs) != len(getattr(self, attribute)):  # changed by hand since compile: leave them
                continue
            resolved = [metrics_module.get(m, self.loss, y_true_shape=tuple(y_shape), y_pred_shape=pred_shape)
                        if isinstance(m, str) and m.lower() in metrics_module.ACCURACY_NAMES else current
                        for m, current in zip(specs, getattr(self, attribute))]
            if [type(m) for m in resolved] != [type(m) for m in getattr(self, attribute)]:
                setattr(self, attribute, resolved)
                if self._engine is not None:  # a new engine (a captured step holds the old metrics); same optimizer
                    self._engine.release()
                    self._engine = None

    def _rebuild_optimizer(self) -> None:
        """A new engine (loss fusion, precision, CUDA graph) and, from `self.optimizer`, a new torch optimizer."""
        if self._engine is not None:  # its CUDA graph gives the optimizer back its eager form
            self._engine.release()
        self._engine = None
        if self.optimizer is not None and self.built:
            params = [p for p in self.parameters() if p.requires_grad]
            names = {id(t): n for layer in self.layers for n, t in zip(layer.weight_names(), layer.weights)}
            # Keras's short weight names ("kernel", "bias"), for exclude_from_weight_decay(var_names=...)
            self.optimizer_ = self.optimizer.build(params, names=[names.get(id(p), "").split("/")[-1] for p in params])

    @property
    def engine(self) -> Engine:
        """How steps execute on this model's device (precision, channels_last, CUDA graphs): training/engine.py."""
        engine = self._engine
        if engine is None or engine.device != self.device:
            if engine is not None:
                engine.release()
            engine = self._engine = Engine(cast(Any, self), precision=self.precision, jit=self.jit)
        return engine

    @property
    def compiled(self) -> bool:
        return self.loss is not None

    @property
    def metrics_names(self) -> list[str]:
        return ["loss", *(metric.name for metric in self.metrics)]

    @property
    def learning_rate(self) -> float:
        if self.optimizer_ is not None:
            return float(self.optimizer_.param_groups[0]["lr"])
        if self.optimizer is not None:
            return self.optimizer.initial_rate
        raise ValueError("the model has no optimizer; call compile() first")

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        if self.optimizer_ is None:
            raise ValueError("the model has no optimizer yet; call compile() and build the model first")
        if self.optimizer is not None and self.optimizer.schedule is not None:
            raise TypeError(f"the optimizer's learning rate follows the schedule "
                            f"{type(self.optimizer.schedule).__name__}, so it cannot be set (as in Keras); compile "
                            f"with a float learning rate to set it by hand or from a callback")
        optimizers_module.set_rate(self.optimizer_, value)

    def _require_one_input_output(self, what: str) -> None:
        if len(self._inputs) > 1 or len(self._outputs) > 1:
            raise ValueError(f"{what}: training and evaluation take models with one input and one output; "
                             f"{self.label} has {len(self._inputs)} inputs and {len(self._outputs)} outputs "
                             f"(predict and feature extraction take any number)")

    def fit(self, x: Any, y: Any = None, batch_size: int | None = None, epochs: int = 1,
            verbose: int | str = "auto", callbacks: Sequence[Any] | None = None, validation_split: float = 0.0,
            validation_data: tuple[Any, ...] | None = None, shuffle: bool = True, class_weight: Any = None,
            sample_weight: Any = None, initial_epoch: int = 0, validation_freq: Any = 1,
            checkpoint_dir: str | os.PathLike | None = None, resume: bool = False,
            checkpoint_interval: float = 600.0, steps_per_epoch: int | None = None,
            validation_steps: int | None = None):
        """Train for `epochs` epochs on in-memory arrays, as Keras; returns a History whose `.history` holds
        loss, metrics and their val_ versions per epoch (keys sorted, as Keras 3). `validation_split` holds
        out the *last* fraction of the samples (before shuffling), as Keras. `sample_weight` (one per sample)
        or `class_weight` ({class: weight}) weigh the loss and the `weighted_metrics`; `validation_freq`
        (an int, or the epochs to validate after) as Keras. Learning-rate schedules continue across calls.

        With `checkpoint_dir`, a checkpoint (weights, optimizer state, epoch and step, random generators,
        history) is written atomically at the end of every epoch and every `checkpoint_interval` seconds
        within an epoch, keeping `last.ckpt` and `best.ckpt`. `resume=True` continues from `last.ckpt`
        exactly where it stopped. Ctrl-C finishes the current step, saves a checkpoint and raises
        `convnet.training.TrainingInterrupted`.

        `x` may also be a FolderDataset (`image_dataset_from_directory`) or any iterable of (x, y) batches (a
        generator, a DataLoader), with `y` and `batch_size` None, as Keras 3; `validation_data` too. A dataset is
        read in its own epoch order (`shuffle` is for arrays) and resumes mid-epoch without decoding the skipped
        batches; an iterable resumes only from the end of an epoch. `steps_per_epoch` / `validation_steps`: batches
        per epoch / per validation, as Keras 3 (an iterable that runs out warns and ends training after that epoch).
        Data-parallel fits take arrays only.
        """
        self._require_one_input_output("fit")
        with self._as_single():
            return training.fit(cast(Any, self), x, y, batch_size=batch_size, epochs=epochs, verbose=verbose,
                                callbacks=callbacks, validation_split=validation_split, validation_data=validation_data,
                                shuffle=shuffle, class_weight=class_weight, sample_weight=sample_weight,
                                initial_epoch=initial_epoch, validation_freq=validation_freq,
                                checkpoint_dir=checkpoint_dir, resume=resume, checkpoint_interval=checkpoint_interval,
                                steps_per_epoch=steps_per_epoch, validation_steps=validation_steps)

    def evaluate(self, x: Any, y: Any = None, batch_size: int | None = None, verbose: int | str = "auto",
                 sample_weight: Any = None, return_dict: bool = False, tta: Any = None, steps: int | None = None):
        """Loss and metrics on (x, y): the loss alone, [loss, metric, ...] in compile's order, or a dict with
        sorted keys with return_dict=True, as Keras 3. `sample_weight` as in `fit`; `tta` as in `predict`.
        `x` may be a FolderDataset or an iterable of (x, y) batches (`y`, `batch_size` None); `steps`: only its
        first batches, as Keras 3."""
        self._require_one_input_output("evaluate")
        with self._as_single():
            return training.evaluate(cast(Any, self), x, y, batch_size=batch_size, verbose=verbose,
                                     return_dict=return_dict, tta=tta, sample_weight=sample_weight, steps=steps)

    def predict(self, x: Any, batch_size: int | None = None, verbose: int | str = "auto",
                tta: Any = None, steps: int | None = None) -> Any:
        """Outputs for `x` as a NumPy array (a list of arrays for a model with several outputs; `x` a list
        of arrays for several inputs). Batches of 256 by default (Keras uses 32; the outputs are the same,
        only faster). `tta="hflip"` or `"flips"` averages the predictions over flipped copies (test-time
        augmentation; one-input, one-output models). `x` may be a FolderDataset or an iterable of batches (x,
        or (x, y)) with `batch_size` None; `steps`: only its first batches, as Keras 3."""
        if len(self._inputs) <= 1 and len(self._outputs) <= 1:
            with self._as_single():
                return training.predict(cast(Any, self), x, batch_size=batch_size, verbose=verbose, tta=tta,
                                        steps=steps)
        if tta is not None:
            raise ValueError(f"predict: `tta` takes models with one input and one output; {self.label} has "
                             f"{len(self._inputs)} inputs and {len(self._outputs)} outputs")
        return predict_graph(self, x, batch_size)

    # -- weights ----------------------------------------------------------------------------------
    def weight_names(self) -> list[str]:
        """"layer/weight" for each weight in Keras's order (how files name them)."""
        return [f"{layer.name}/{name}" for layer in self.layers for name in layer.weight_names()]

    def keras_weight_shapes(self) -> list[tuple[int, ...]]:
        return [shape for layer in self.layers for shape in layer.keras_weight_shapes()]

    @property
    def weights(self) -> list[torch.Tensor]:
        return [tensor for layer in self.layers for tensor in layer.weights]

    def get_weights(self) -> list[np.ndarray]:
        """All weights in Keras's order and layouts (layer by layer), as `keras.Model.get_weights()`."""
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Load weights in Keras's order and layouts, e.g. from `keras_model.get_weights()`."""
        if not self.built:
            raise ValueError("set_weights: the model is not built; give it an input shape first")
        if not isinstance(weights, (list, tuple)):
            raise TypeError(f"set_weights expects a list of arrays. Received: {describe(weights)}")
        expected = sum(len(layer.weights) for layer in self.layers)
        if len(weights) != expected:
            raise ValueError(f"set_weights: the model has {expected} weight arrays, received {len(weights)}")
        position = 0
        for layer in self.layers:
            count = len(layer.weights)
            layer.set_weights(list(weights[position:position + count]))
            position += count

    def count_params(self) -> int:
        return sum(layer.count_params() for layer in self.layers)

    def count_trainable_params(self) -> int:
        return sum(layer.count_trainable_params() for layer in self.layers)

    # -- inspection -------------------------------------------------------------------------------
    def layer_table(self) -> list[dict[str, Any]]:
        """Per layer: name, type, output shape, parameters, multiply-adds per sample, the layers it is
        connected to, and the analytic receptive field (size, jump = effective stride, start = centre of the
        first unit's field, in input pixels) along height and width; None where spatial structure is gone
        (after Flatten). Through merges the receptive field is the largest over the paths."""
        self._require_graph("layer table")
        fields: dict[int, Field | None] = {}
        for tensor in self._inputs:
            fields[id(tensor)] = [(1, 1, 0.0), (1, 1, 0.0)] if len(tensor.shape) == 4 else None
        rows: dict[Any, dict[str, Any]] = {}
        for node in self._nodes:
            operation = cast(Any, node.operation)
            if not node.is_input:
                in_shapes = [t.shape[1:] for t in node.inputs]
                field = _merge_fields([fields.get(id(t)) for t in node.inputs])
                geometry = None
                if field is not None and hasattr(operation, "geometry"):  # a merge takes the list of shapes
                    geometry = operation.geometry(in_shapes if node.listed else in_shapes[0])
                out_field = None if geometry is None or field is None else [
                    (size + (k - 1) * jump, jump * s, start + ((k - 1) / 2 - pad) * jump)
                    for (size, jump, start), (k, s, pad) in zip(field, geometry)]
                for tensor in node.outputs:
                    fields[id(tensor)] = out_field if len(tensor.shape) == 4 else None
            row = rows.get(operation)
            out_shape = node.outputs[0].shape if len(node.outputs) == 1 else [t.shape for t in node.outputs]
            macs = 0 if node.is_input else _macs(operation, node.inputs[0].shape[1:], node.outputs[0].shape[1:])
            if row is None:
                out_field = fields.get(id(node.outputs[0]))
                rows[operation] = row = {
                    "name": operation.name, "type": type(operation).__name__, "output_shape": out_shape,
                    "params": operation.count_params(), "trainable_params": operation.count_trainable_params(),
                    "macs": 0, "connected_to": [],
                    "receptive_field": None if out_field is None else tuple(int(f[0]) for f in out_field),
                    "jump": None if out_field is None else tuple(int(f[1]) for f in out_field),
                    "start": None if out_field is None else tuple(f[2] for f in out_field)}
            row["macs"] += macs
            row["connected_to"] += [f"{t.node.operation.name}[{t.node.index}][{t.index}]" for t in node.inputs]
        return [rows[operation] for operation in self.layers if operation in rows]

    def summary(self, print_fn: Callable[[str], Any] | None = None, receptive_fields: bool = True) -> None:
        """Print the layer table (as Keras's, with its "Connected to" column for a graph, plus multiply-adds
        and receptive fields) and the totals."""
        rows = self.layer_table()
        connected = self._shows_connections()
        headers = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if connected else [])
        right = [False, False, True] + ([False] if connected else [])
        if receptive_fields:
            headers += ["MACs", "Receptive field", "Jump", "Start"]
            right += [True, True, True, True]
        body = []
        for row in rows:
            shape = row["output_shape"]
            shown = ", ".join(shape_str(s) for s in shape) if isinstance(shape, list) else shape_str(shape)
            cells = [f"{row['name']} ({row['type']})", shown, f"{row['params']:,}"]
            if connected:
                cells.append(", ".join(row.get("connected_to", [])) or "-")
            if receptive_fields:
                rf = row["receptive_field"]
                cells += [si(row["macs"]), "-" if rf is None else f"{rf[0]}x{rf[1]}",
                          "-" if rf is None else f"{row['jump'][0]}x{row['jump'][1]}",
                          "-" if rf is None else ", ".join(f"{v:g}" for v in row["start"])]
            body.append(cells)
        total = self.count_params()
        trainable = sum(row["trainable_params"] for row in rows)
        text = [f'Model: "{self.name}"', box_table(headers, body, right),
                f" Total params: {total:,} ({binary_bytes(total * 4)})",
                f" Trainable params: {trainable:,} ({binary_bytes(trainable * 4)})",
                f" Non-trainable params: {total - trainable:,} ({binary_bytes((total - trainable) * 4)})"]
        if receptive_fields:
            text.append(f" Multiply-adds per sample: {si(sum(row['macs'] for row in rows))}")
        (print_fn or print)("\n".join(text))

    def _shows_connections(self) -> bool:
        return True

    def geometry(self, input_shape: Any) -> Any:
        """The whole model as one window, for receptive fields through a model used as a layer: per spatial
        axis (field size, jump, padding before) such that its output's field is the model's own."""
        if len(self._inputs) != 1 or len(self._outputs) != 1 or len(self._inputs[0].shape) != 4:
            return None
        operation = self._outputs[0].node.operation
        row = next((row for row in self.layer_table() if row["name"] == operation.name), None)
        if row is None or row["receptive_field"] is None:
            return None
        return tuple((size, jump, (size - 1) / 2 - start)
                     for size, jump, start in zip(row["receptive_field"], row["jump"], row["start"]))

    # -- configuration and files --------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The graph as data: the layers (class and configuration), then each call in execution order as
        [layer, [[source layer, call index, output index], ...], takes a list], and the inputs and outputs as
        [layer, call index, output index]. No code: loading only instantiates registered classes."""
        self._require_graph("configuration")
        entries = []
        for operation in self.layers:
            if isinstance(operation, Model):
                nested = operation.get_config()
                entries.append({"class_name": nested["class_name"], "config": nested})
            else:
                entries.append(layers_module.serialize(operation))
        local: dict[int, int] = {}  # a node's index among its layer's calls in this model (files count from 0)
        counts: dict[int, int] = {}
        for node in self._nodes:
            local[id(node)] = counts.get(id(node.operation), 0)
            counts[id(node.operation)] = local[id(node)] + 1

        def ref(tensor: SymbolicTensor) -> list[Any]:
            return [tensor.node.operation.name, local[id(tensor.node)], tensor.index]

        calls = [[node.operation.name, [ref(t) for t in node.inputs], node.listed]
                 for node in self._nodes if not node.is_input]
        return {"name": self.name, "class_name": "Functional", "layers": entries, "calls": calls,
                "inputs": [ref(t) for t in self._inputs], "outputs": [ref(t) for t in self._outputs],
                "single_input": self._single_input, "single_output": self._single_output}

    @classmethod
    def from_config(cls, config: Any, device: Any = None) -> Model:
        """The model a `get_config()` describes, its weights freshly initialised on `device` (default: CPU;
        "meta" builds shapes only, allocating nothing).

        Raises:
            ValueError: a malformed configuration, an unknown class or layer name, or a call that refers to
                a call not made before it (a cycle, or an entry out of order).
        """
        return graph_from_config(config, device)

    def compile_config(self) -> dict[str, Any] | None:
        if self.loss is None or isinstance(self.loss, losses_module.LossFunction) or self.optimizer is None:
            return None
        return {"optimizer": optimizers_module.serialize(self.optimizer), "loss": losses_module.serialize(self.loss),
                "metrics": [metric.name for metric in self.metrics],
                "weighted_metrics": [metric.name for metric in self.weighted_metrics]}

    def save(self, filepath: str | os.PathLike) -> None:
        """Save architecture, weights and training configuration to one `.convnet` file (safetensors with a
        JSON header: no pickle, nothing executed on load). Written atomically."""
        save_model(cast(Any, self), filepath)

    def save_weights(self, filepath: str | os.PathLike) -> None:
        """Save the weights alone (safetensors, Keras layouts, keys "layer_name/weight_name")."""
        save_weights(cast(Any, self), filepath)

    def load_weights(self, filepath: str | os.PathLike) -> None:
        load_weights(cast(Any, self), filepath)

    def export(self, filepath: str | os.PathLike, format: str | None = None, check: bool = False,
               opset: int = 18, tolerance: float = 1e-4) -> dict[str, Any]:
        """Write the model for use outside convnet, as Keras's `model.export`: ONNX (`.onnx`, opset >= 18,
        run by ONNX Runtime; needs `pip install "convnet[export]"`) or a torch.export program (`.pt2`).
        The file takes what `predict` takes (NHWC float32 with a dynamic batch axis) and returns what it
        returns; class names, input shape and scaling travel in its metadata. `check=True` runs the file on
        random and real images and raises unless it agrees with `predict` within `tolerance` (nothing is
        left behind then). Returns {"path", "format", "max_difference", ...}."""
        return export_model(self, filepath, format=format, opset=opset, check=check, tolerance=tolerance)

    def __repr__(self) -> str:
        inner = ",\n".join(f"  {layer!r}" for layer in self.layers)
        return f"{type(self).__name__}(name={self.name!r}, layers=[\n{inner}\n])"


MODEL_CLASSES.register("Functional", Model)


def _metric_list(argument: str, metrics: Any) -> list[Any]:
    if metrics is None:
        return []
    if isinstance(metrics, (str, metrics_module.Metric)) or not isinstance(metrics, (list, tuple)):
        raise TypeError(f"`{argument}` must be a list, e.g. ['accuracy']. Received: {argument}={describe(metrics)}")
    return list(metrics)


def sample_shape(model: Any) -> tuple | None:
    """The shape of one input sample (no batch axis) of a one-input model, None while unknown."""
    shapes = model.sample_shapes("input")
    if shapes is None:
        return None
    if len(shapes) != 1:
        raise ValueError(f"{model.label} has {len(shapes)} inputs; this takes models with one input")
    return tuple(shapes[0])


def map_graph(inputs: list[SymbolicTensor], outputs: list[SymbolicTensor]) -> tuple[list[Node], list[Any]]:
    """The nodes between `inputs` and `outputs` in an order that computes each before its use, and the
    operations in Keras's order (by decreasing depth from the outputs, then by first meeting in a walk
    from the outputs).

    Raises:
        ValueError: an output needs a tensor the inputs cannot give (naming the layers), an input no output
            uses, or a cycle.
    """
    input_ids = {id(tensor) for tensor in inputs}
    finished: set[int] = set()
    in_progress: set[int] = set()
    ordered: list[Node] = []  # post-order: every node after the nodes it reads
    first_seen: dict[int, int] = {}

    def visit(tensor: SymbolicTensor, consumer: str) -> None:
        node = tensor.node
        if id(node) in finished:
            return
        if id(tensor) in input_ids and not node.is_input:
            finished.add(id(node))  # an intermediate tensor given as a model input: the walk stops here
            return
        if node.is_input and id(tensor) not in input_ids:
            raise ValueError(f"Graph disconnected: {consumer} needs {tensor.name!r} ({node.operation.label}), which "
                             f"is not among the model's inputs {[t.name for t in inputs]}")
        if id(node) in in_progress:
            raise ValueError(f"{node.operation.label} is part of a cycle")
        first_seen.setdefault(id(node.operation), len(first_seen))
        in_progress.add(id(node))
        for parent in node.inputs:
            visit(parent, node.operation.label)
        in_progress.discard(id(node))
        finished.add(id(node))
        ordered.append(node)

    for position, tensor in enumerate(outputs):
        visit(tensor, f"output {position}")
    for tensor in inputs:
        if id(tensor.node) not in finished:
            raise ValueError(f"input {tensor.name!r} is not connected to any output: no output of the model "
                             f"depends on it (remove it from `inputs`, or use it)")
    depth: dict[int, int] = {}
    operation_depth: dict[int, int] = {}
    operations: dict[int, Any] = {}
    for node in reversed(ordered):
        level = max(depth.setdefault(id(node), 0), operation_depth.get(id(node.operation), 0))
        depth[id(node)] = operation_depth[id(node.operation)] = level
        operations[id(node.operation)] = node.operation
        for parent in node.parents:
            if id(parent) in finished:
                depth[id(parent)] = max(depth.get(id(parent), 0), level + 1)
    order = sorted(operations, key=lambda key: (-operation_depth[key], first_seen[key]))
    return ordered, [operations[key] for key in order]


def _make_names_unique(operations: list[Any]) -> None:
    """Rename layers that convnet named (conv2d -> conv2d_1) so that names are unique, as Keras's automatic
    names are; two layers the user gave the same name are an error."""
    seen: dict[str, Any] = {}
    for operation in operations:
        if operation.name in seen:
            if not getattr(operation, "auto_named", False):
                other = seen[operation.name]
                raise ValueError(f"two layers of the model are named {operation.name!r} ({other.label} and "
                                 f"{operation.label}); layer names must be unique")
            base, index = operation.name, 1
            while f"{base}_{index}" in seen:
                index += 1
            operation.name = f"{base}_{index}"
        seen[operation.name] = operation


def _merge_fields(fields: list[Field | None]) -> Field | None:
    """The receptive field where paths meet: per axis the largest; None when any path has none."""
    if not fields or any(field is None for field in fields):
        return None
    present = cast(list[Field], fields)
    return [max((field[axis] for field in present), key=lambda f: f[0]) for axis in range(len(present[0]))]


def _macs(layer: Any, in_shape: tuple, out_shape: tuple) -> int:
    """Multiply-adds per sample for convolutions and dense layers (nested models: their own sum; 0 for the
    rest)."""
    if isinstance(layer, Model):
        return sum(row["macs"] for row in layer.layer_table())
    if any(d is None for d in (*in_shape, *out_shape)):
        return 0
    if hasattr(layer, "macs"):  # layers that know their own count (depthwise, separable, transposed)
        return int(layer.macs(in_shape, out_shape))
    if isinstance(layer, layers_module.Conv2D):
        kh, kw = layer.kernel_size
        return math.prod(out_shape) * kh * kw * (in_shape[-1] // layer.groups)
    if isinstance(layer, layers_module.Dense):
        return math.prod(out_shape) * in_shape[-1]
    return 0


@torch.no_grad()
def predict_graph(model: Model, x: Any, batch_size: int | None) -> Any:
    """`predict` for a graph with several inputs or outputs: NumPy arrays in, NumPy arrays out."""
    batch = 256 if batch_size is None else batch_size
    items = x if isinstance(x, (list, tuple)) else [x]
    if len(items) != len(model.inputs):
        raise ValueError(f"predict: {model.label} takes {len(model.inputs)} inputs (a list of arrays in the order "
                         f"of model.inputs). Received: {describe(x)}")
    arrays = [to_tensor(item, f"x[{i}]").float() for i, item in enumerate(items)]
    count = arrays[0].shape[0]
    if any(a.shape[0] != count for a in arrays):
        raise ValueError(f"predict: the inputs have different numbers of samples: {[a.shape[0] for a in arrays]}")
    model.eval()
    chunks: list[list[torch.Tensor]] = []
    for start in range(0, count, batch):
        chunk = [a[start:start + batch] for a in arrays]
        result = model(chunk if len(arrays) > 1 else chunk[0])
        outputs = result if isinstance(result, list) else [result]
        chunks.append([o.float().cpu() for o in outputs])
    joined = [torch.cat([chunk[i] for chunk in chunks]).numpy() for i in range(len(chunks[0]))] if chunks else []
    return joined if len(model.outputs) > 1 else joined[0]


def graph_from_config(config: Any, device: Any = None) -> Model:
    """A functional `Model` from `Model.get_config()` output (see `Model.from_config`)."""
    if not isinstance(config, dict) or not all(isinstance(config.get(key), list)
                                               for key in ("layers", "calls", "inputs", "outputs")):
        raise ValueError(f"a Functional config must be a dict with 'layers', 'calls', 'inputs' and 'outputs' lists. "
                         f"Received: {describe(config)}")
    operations: dict[str, Any] = {}
    tensors: dict[tuple[str, int, int], SymbolicTensor] = {}
    for spec in config["layers"]:
        if isinstance(spec, dict) and spec.get("class_name") in MODEL_CLASSES.names():
            operation: Any = MODEL_CLASSES.get(spec["class_name"]).from_config(spec.get("config"), device=device)
        else:
            operation = layers_module.deserialize(spec)
        if operation.name in operations:
            raise ValueError(f"two layers of the model are named {operation.name!r}")
        operations[operation.name] = operation
        if isinstance(operation, InputLayer):
            tensors[(operation.name, 0, 0)] = cast(SymbolicTensor, operation.output)
    calls: dict[str, int] = {}

    def find(ref: Any, where: str) -> SymbolicTensor:
        if not (isinstance(ref, list) and len(ref) == 3 and isinstance(ref[0], str)):
            raise ValueError(f"{where}: a tensor reference is [layer name, call index, output index]. "
                             f"Received: {ref!r}")
        key = (ref[0], ref[1], ref[2])
        if key not in tensors:
            raise ValueError(f"{where} reads {ref!r}, which no earlier call made (an unknown layer, a cycle, or "
                             f"calls out of order)")
        return tensors[key]

    for call in config["calls"]:
        if not (isinstance(call, list) and len(call) == 3 and isinstance(call[1], list)):
            raise ValueError(f"a call is [layer name, [inputs...], takes a list]. Received: {call!r}")
        name, refs, listed = call
        if name not in operations:
            raise ValueError(f"a call names layer {name!r}, which the configuration does not define")
        if not refs:
            raise ValueError(f"the call of {name!r} has no inputs")
        inputs = [find(ref, f"the call of {name!r}") for ref in refs]
        output = operations[name](inputs if listed else inputs[0])
        index = calls.get(name, 0)
        calls[name] = index + 1
        for position, tensor in enumerate(output if isinstance(output, list) else [output]):
            tensors[(name, index, position)] = tensor
    inputs = [find(ref, "the model's inputs") for ref in config["inputs"]]
    outputs = [find(ref, "the model's outputs") for ref in config["outputs"]]
    single_in, single_out = config.get("single_input", True), config.get("single_output", True)
    model = Model(inputs[0] if single_in and len(inputs) == 1 else inputs,
                  outputs[0] if single_out and len(outputs) == 1 else outputs, name=config.get("name"))
    if device is not None:
        model._device = torch.device(device)
    return model
