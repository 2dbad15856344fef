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

A Sequential is also a torch.nn.Module: `model(x)` takes an NHWC tensor (or a NumPy array) and returns
the output tensor, so it drops into a hand-written PyTorch loop. It starts in inference mode
(`model(x)` runs Dropout as identity, as Keras's `model(x)` does); `fit` trains and switches back.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from convnet import layers as layers_module
from convnet import losses as losses_module
from convnet import metrics as metrics_module
from convnet import optimizers as optimizers_module
from convnet._internal.checks import (
    check_choice,
    check_str,
    describe,
    shape_str,
    unknown_name,
)
from convnet._internal.table import binary_bytes, box_table, si
from convnet.layers import Input, Layer
from convnet.models.saving import load_weights, save_model, save_weights
from convnet.training import loop as training
from convnet.training.engine import JIT_MODES, Engine, resolve_precision
from convnet.utils import resolve_device

if TYPE_CHECKING:
    from convnet.callbacks import History


class Sequential(torch.nn.Module):
    """A linear stack of layers.

    Args:
        layers: layers to add in order; an `Input(shape=...)` first (or `input_shape=` on the first layer)
            builds the model at once, so `summary()` works before any data is seen.
        name: the model's name.

    Raises:
        TypeError: an element that is not a convnet layer.
        ValueError: duplicate layer names, or a layer that does not fit the previous one's output.
    """

    def __init__(self, layers: Sequence[Layer] | None = None, name: str | None = None):
        super().__init__()
        self.name = "sequential" if name is None else check_str("name", name)
        self._stack = torch.nn.ModuleList()  # the layers, registered as submodules; read them through `layers`
        self.input_shape: tuple | None = None
        self._device = torch.device("cpu")
        self.optimizer: optimizers_module.Optimizer | None = None
        self.optimizer_: torch.optim.Optimizer | None = None
        self.loss: losses_module.Loss | None = None
        self.metrics: list[metrics_module.Metric] = []
        self.stop_training = False
        self.history: History | None = None
        self.metadata: dict[str, Any] = {}  # free-form JSON saved with the model (class names, preprocessing)
        self.precision = "float32"  # engine settings, see compile()
        self.jit = "auto"
        self._engine: Engine | None = None
        if layers is not None:
            if isinstance(layers, Layer) or not isinstance(layers, (list, tuple)):
                raise TypeError(f"`layers` must be a list of layers. Received: layers={describe(layers)}")
            for layer in layers:
                self.add(layer)
        self.eval()

    # -- structure --------------------------------------------------------------------------------
    def add(self, layer: Layer) -> None:
        """Append a layer; it is built at once when the model's input shape is known."""
        if not isinstance(layer, Layer):
            hint = " (call the class: layers.Flatten(), not layers.Flatten)" if isinstance(layer, type) else ""
            raise TypeError(f"Sequential accepts convnet layers only{hint}. Received: {describe(layer)}")
        if isinstance(layer, Input):
            if len(self._stack) or self.input_shape is not None:
                raise ValueError("an Input layer must come first in a Sequential model")
            self.input_shape = layer.shape
            return
        names = {existing.name for existing in self.layers}
        if layer.name in names:
            if not layer.auto_named:
                raise ValueError(f"the model already has a layer named {layer.name!r}; layer names must be unique")
            base, index = layer.name, 1
            while f"{base}_{index}" in names:
                index += 1
            layer.name = f"{base}_{index}"
        if not self._stack and self.input_shape is None and layer.input_shape_arg is not None:
            self.input_shape = layer.input_shape_arg
        if self.input_shape is not None:
            layer.build_for(self.output_shape or self.input_shape)
            layer.to(self._device)
        self._stack.append(layer)
        self._rebuild_optimizer()

    def pop(self) -> Layer:
        """Remove and return the last layer."""
        if not self._stack:
            raise ValueError("the model has no layers to pop")
        layer = self.layers[-1]
        del self._stack[-1]
        self._rebuild_optimizer()
        return layer

    @property
    def layers(self) -> list[Layer]:
        return cast(list[Layer], list(self._stack))

    @property
    def built(self) -> bool:
        return self.input_shape is not None and all(layer.built for layer in self.layers)

    @property
    def output_shape(self) -> tuple | None:
        if self.input_shape is None:
            return None
        shape = self.input_shape
        for layer in self.layers:
            shape = layer.compute_output_shape(shape)
        return shape

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Build every layer for inputs of `input_shape` (without the batch axis)."""
        shape = layers_module.check_input_shape("input_shape", input_shape)
        if self.input_shape is not None and tuple(self.input_shape) != shape:
            raise ValueError(f"the model was built for inputs {shape_str((None, *self.input_shape))}; received "
                             f"input_shape {shape_str((None, *shape))}")
        self.input_shape = shape
        for layer in self.layers:
            shape = layer.build_for(shape)
        self.to(self._device)
        self._rebuild_optimizer()

    def get_layer(self, name: str | None = None, index: int | None = None) -> Layer:
        """A layer by name, or by position in `layers`."""
        if index is not None:
            if not isinstance(index, int) or not -len(self._stack) <= index < len(self._stack):
                raise ValueError(f"`index` must be an integer in [0, {len(self._stack) - 1}]. Received: index={index!r}")
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise unknown_name("layer", name, [layer.name for layer in self.layers], argument="name", sort=False)

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

    # -- device -----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, *args: Any, **kwargs: Any) -> Sequential:
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None:
            self._device = torch.device(device)
        super().to(*args, **kwargs)
        return self

    def cuda(self, device: Any = None) -> Sequential:
        return self.to("cuda" if device is None else torch.device("cuda", device) if isinstance(device, int) else device)

    def cpu(self) -> Sequential:
        return self.to("cpu")

    # -- training ---------------------------------------------------------------------------------
    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, metrics: Sequence[Any] | None = None,
                device: Any = "auto", precision: str = "float32", jit: str = "auto") -> None:
        """Configure training, as Keras.

        Args:
            optimizer: a name ("nadam", "adam", "sgd", "rmsprop", ...), a `convnet.optimizers` object, or a
                torch.optim optimizer already bound to `model.parameters()`.
            loss: a name ("sparse_categorical_crossentropy", "categorical_crossentropy", ...), a
                `convnet.losses` object or a function (y_true, y_pred).
            metrics: names such as ["accuracy"], or Metric objects.
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
        if metrics is None:
            metrics = []
        if isinstance(metrics, (str, metrics_module.Metric)) or not isinstance(metrics, (list, tuple)):
            raise TypeError(f"`metrics` must be a list, e.g. ['accuracy']. Received: metrics={describe(metrics)}")
        self.metrics = [metrics_module.get(m, self.loss) for m in metrics]
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

    def _rebuild_optimizer(self) -> None:
        """A new engine (loss fusion, precision, CUDA graph) and, from `self.optimizer`, a new torch optimizer."""
        if self._engine is not None:  # its CUDA graph gives the optimizer back its eager form
            self._engine.release()
        self._engine = None
        if self.optimizer is not None and self.built:
            self.optimizer_ = self.optimizer.build([p for p in self.parameters() if p.requires_grad])

    @property
    def engine(self) -> Engine:
        """How steps execute on this model's device (precision, channels_last, CUDA graphs): training/engine.py."""
        engine = self._engine
        if engine is None or engine.device != self.device:
            if engine is not None:
                engine.release()
            engine = self._engine = Engine(self, precision=self.precision, jit=self.jit)
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
        for group in self.optimizer_.param_groups:
            if isinstance(group["lr"], torch.Tensor):  # a captured CUDA graph reads this tensor
                group["lr"].fill_(float(value))
            else:
                group["lr"] = float(value)

    def fit(self, x: Any, y: Any = None, batch_size: int | None = None, epochs: int = 1,
            verbose: int | str = "auto", callbacks: Sequence[Any] | None = None, validation_split: float = 0.0,
            validation_data: tuple[Any, Any] | None = None, shuffle: bool = True, initial_epoch: int = 0,
            checkpoint_dir: str | os.PathLike | None = None, resume: bool = False,
            checkpoint_interval: float = 600.0):
        """Train for `epochs` epochs on in-memory arrays, as Keras; returns a History whose `.history` holds
        loss, metrics and their val_ versions per epoch. `validation_split` holds out the *last* fraction of
        the samples (before shuffling), as Keras.

        With `checkpoint_dir`, a checkpoint (weights, optimizer state, epoch and step, random generators,
        history) is written atomically at the end of every epoch and every `checkpoint_interval` seconds
        within an epoch, keeping `last.ckpt` and `best.ckpt`. `resume=True` continues from `last.ckpt`
        exactly where it stopped. Ctrl-C finishes the current step, saves a checkpoint and raises
        `convnet.training.TrainingInterrupted`.
        """
        return training.fit(self, x, y, batch_size=batch_size, epochs=epochs, verbose=verbose, callbacks=callbacks,
                            validation_split=validation_split, validation_data=validation_data, shuffle=shuffle,
                            initial_epoch=initial_epoch, checkpoint_dir=checkpoint_dir, resume=resume,
                            checkpoint_interval=checkpoint_interval)

    def evaluate(self, x: Any, y: Any = None, batch_size: int | None = None, verbose: int | str = "auto",
                 return_dict: bool = False, tta: Any = None):
        """Loss and metrics on (x, y): the loss alone, [loss, metric, ...], or a dict with return_dict=True.
        `tta` as in `predict`."""
        return training.evaluate(self, x, y, batch_size=batch_size, verbose=verbose, return_dict=return_dict,
                                 tta=tta)

    def predict(self, x: Any, batch_size: int | None = None, verbose: int | str = "auto",
                tta: Any = None) -> np.ndarray:
        """Outputs for `x` as a NumPy array (class probabilities for a softmax model). Batches of 256 by
        default (Keras uses 32; the outputs are the same, only faster). `tta="hflip"` or `"flips"` averages
        the predictions over flipped copies (test-time augmentation)."""
        return training.predict(self, x, batch_size=batch_size, verbose=verbose, tta=tta)

    # -- weights ----------------------------------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        """All weights in Keras's order and layouts (layer by layer)."""
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

    # -- inspection -------------------------------------------------------------------------------
    def layer_table(self) -> list[dict[str, Any]]:
        """Per layer: name, type, output shape, parameters, multiply-adds per sample, and the analytic
        receptive field (size, jump = effective stride, start = centre of the first unit's field, in input
        pixels) along height and width; None where spatial structure is gone (after Flatten)."""
        if self.input_shape is None:
            raise ValueError(f"{self.name}: the model is not built; give it an input shape "
                             f"(layers.Input(shape=...) first, or input_shape= on the first layer) or call it once")
        shape = self.input_shape
        field: list[tuple[float, float, float]] | None = [(1, 1, 0.0), (1, 1, 0.0)] if len(shape) == 3 else None
        rows = []
        for layer in self.layers:
            out_shape = layer.compute_output_shape(shape)
            geometry = layer.geometry(shape) if field is not None else None
            if geometry is None or field is None:
                field = None
            else:
                field = [(size + (k - 1) * jump, jump * s, start + ((k - 1) / 2 - pad) * jump)
                         for (size, jump, start), (k, s, pad) in zip(field, geometry)]
            rows.append({"name": layer.name, "type": type(layer).__name__, "output_shape": (None, *out_shape),
                         "params": layer.count_params(), "trainable_params": layer.count_trainable_params(),
                         "macs": _macs(layer, shape, out_shape),
                         "receptive_field": None if field is None else tuple(int(f[0]) for f in field),
                         "jump": None if field is None else tuple(int(f[1]) for f in field),
                         "start": None if field is None else tuple(f[2] for f in field)})
            shape = out_shape
        return rows

    def summary(self, print_fn: Callable[[str], Any] | None = None, receptive_fields: bool = True) -> None:
        """Print the layer table (as Keras's, plus multiply-adds and receptive fields) and the totals."""
        rows = self.layer_table()
        headers = ["Layer (type)", "Output Shape", "Param #"]
        right = [False, False, True]
        if receptive_fields:
            headers += ["MACs", "Receptive field", "Jump", "Start"]
            right += [True, True, True, True]
        body = []
        for row in rows:
            cells = [f"{row['name']} ({row['type']})", shape_str(row["output_shape"]), f"{row['params']:,}"]
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

    # -- configuration and files --------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "input_shape": None if self.input_shape is None else list(self.input_shape),
                "layers": [layers_module.serialize(layer) for layer in self.layers]}

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
            model.add(Input(shape=config["input_shape"]))
        for spec in config["layers"]:
            model.add(layers_module.deserialize(spec))
        return model

    def compile_config(self) -> dict[str, Any] | None:
        if self.loss is None or isinstance(self.loss, losses_module.LossFunction) or self.optimizer is None:
            return None
        return {"optimizer": optimizers_module.serialize(self.optimizer), "loss": losses_module.serialize(self.loss),
                "metrics": [metric.name for metric in self.metrics]}

    def save(self, filepath: str | os.PathLike) -> None:
        """Save architecture, weights and training configuration to one `.convnet` file (safetensors with a
        JSON header: no pickle, nothing executed on load). Written atomically."""
        save_model(self, filepath)

    def save_weights(self, filepath: str | os.PathLike) -> None:
        """Save the weights alone (safetensors, Keras layouts, keys "layer_name/weight_name")."""
        save_weights(self, filepath)

    def load_weights(self, filepath: str | os.PathLike) -> None:
        load_weights(self, filepath)

    def __repr__(self) -> str:
        inner = ",\n".join(f"  {layer!r}" for layer in self.layers)
        shape = "" if self.input_shape is None else f"input_shape={shape_str(self.input_shape)}, "
        return f"Sequential({shape}name={self.name!r}, layers=[\n{inner}\n])"


def _macs(layer: Layer, in_shape: tuple, out_shape: tuple) -> int:
    """Multiply-adds per sample for convolutions and dense layers (0 for the rest)."""
    if any(d is None for d in (*in_shape, *out_shape)):
        return 0
    if isinstance(layer, layers_module.Conv2D):
        kh, kw = layer.kernel_size
        return math.prod(out_shape) * kh * kw * (in_shape[-1] // layer.groups)
    if isinstance(layer, layers_module.Dense):
        return math.prod(out_shape) * in_shape[-1]
    return 0
