"""Why did the CNN decide that? Gradient saliency, SmoothGrad, Grad-CAM, occlusion, and the dataset patches
that excite a filter most.

    >>> import numpy as np
    >>> from convnet import explain, layers, models, utils
    >>> utils.set_random_seed(0)
    >>> model = models.Sequential([layers.Input(shape=(8, 8, 1)), layers.Conv2D(2, 3, activation="relu"),
    ...                            layers.GlobalMaxPooling2D(), layers.Dense(2, activation="softmax")])
    >>> image = np.random.default_rng(0).random((8, 8, 1), dtype=np.float32)
    >>> explain.grad_cam(model, image).shape, explain.saliency(model, image).dtype
    ((8, 8), dtype('float32'))
    >>> explain.list_methods()
    ['grad_cam', 'gradient', 'occlusion', 'smoothgrad']

Any built one-input model works: a `Sequential`, or a functional `Model` with branches, merges, shared
layers and nested models. A layer is named as in `model.layers` (or by its index there, or the object);
a layer inside a nested model by its path, "backbone/conv2d" (`layer_path`, `spatial_layers`). For a
layer called more than once, the maps are those of the call `layer.output` names, as Keras's feature
extraction `Model(model.input, layer.output)` gives (its first call in the model); a layer inside a nested
model must run once per forward pass (a nested model called twice is inspected by its own output).

    >>> from convnet import Model
    >>> inputs = layers.Input(shape=(8, 8, 1))
    >>> x = layers.Conv2D(2, 3, padding="same", name="stem")(inputs)
    >>> y = layers.Conv2D(2, 3, padding="same", name="branch")(x)
    >>> x = layers.Activation("relu", name="merged")(layers.Add()([x, y]))
    >>> graph = Model(inputs, layers.Dense(2, activation="softmax")(layers.GlobalMaxPooling2D()(x)))
    >>> explain.spatial_layers(graph)
    ['stem', 'branch', 'add', 'merged']
    >>> explain.grad_cam(graph, image, layer="add").shape
    (8, 8)

Images are taken as the model takes them: (H, W, C) or (1, H, W, C), already preprocessed (a model trained
on pixels / 255 wants pixels / 255; a uint8 image is used as given, with a warning when
`model.metadata["preprocessing"]["scale"]` says otherwise). An image with 3 channels for a 1-channel model
is converted to luma, a 1-channel image for a 3-channel model is repeated, and an image of another size is
resized (bilinear); each conversion warns. Maps come back at the model's input size, (H, W).

Every function runs the model in inference mode and restores each module's mode afterwards, removes its
hooks even when it fails, leaves the parameters' `.grad` alone, and computes on `model.device`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import numpy as np
import torch
import torch.nn.functional as F

from convnet import layers as layers_module
from convnet._internal.checks import (
    check_choice,
    check_float,
    check_int,
    describe,
    int_tuple,
    is_int,
    shape_str,
    unknown_name,
)
from convnet._internal.registry import Registry
from convnet.inspection import figures
from convnet.layers import InputLayer
from convnet.layers.node import Node, SymbolicTensor
from convnet.models.model import Model, sample_shape
from convnet.training.inputs import as_inputs, to_tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["saliency", "grad_cam", "occlusion", "top_activations", "TopActivations", "explain", "Explanation",
           "list_methods", "feature_maps", "prepare_image", "receptive_field_box", "resolve_layer", "default_cam_layer",
           "conv_layers", "spatial_layers", "layer_path", "layer_rows", "check_model", "check_classifier"]

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2 weights, as Pillow's "L" mode and datasets.load_image
_CHUNK = 32  # noisy copies per forward pass in SmoothGrad
_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep

Field = tuple[tuple[int, int], tuple[int, int], tuple[float, float]]  # receptive field, jump, start (height, width)


def check_model(model: Any, one_input: bool = True) -> Model:
    """`model`, checked to be a built convnet model (a Sequential or a functional Model) with layers and, unless
    `one_input` is False, one input (an image): TypeError or ValueError saying what is wrong."""
    if not isinstance(model, Model):
        raise TypeError(f"`model` must be a convnet model (a Sequential or a functional Model). "
                        f"Received: model={describe(model)}")
    if not model.built or not any(not isinstance(layer, InputLayer) for layer in model.layers):
        raise ValueError(f"{model.name}: the model is not built or has no layers; give it an input shape "
                         f"(layers.Input(shape=...) first) before explaining it")
    if one_input and len(model.inputs) != 1:
        names = ", ".join(repr(tensor.name) for tensor in model.inputs)
        raise ValueError(f"{model.label} takes {len(model.inputs)} inputs ({names}); explanations and feature maps "
                         f"look at one image, so they take models with one input")
    return model


def check_classifier(model: Model, op: str) -> int:
    """The number of classes of a model with one (N, classes) output; ValueError naming `op` otherwise."""
    if len(model.outputs) != 1:
        raise ValueError(f"{op} needs a classifier with one output (N, classes); {model.label} has "
                         f"{len(model.outputs)} outputs")
    shape = model.outputs[0].shape
    if len(shape) != 2:
        raise ValueError(f"{op} needs a classifier whose output is (N, classes); {model.name} outputs shape "
                         f"{shape_str(shape)}")
    return int(shape[1])


def _warn(message: str) -> None:
    """A UserWarning attributed to the first caller outside convnet (the user's line)."""
    frame, level = inspect.currentframe(), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def _warn_scale(model: Model, dtype: Any, argument: str) -> None:
    """Integer pixels for a model trained on scaled inputs are almost always a mistake: say so."""
    scale = (model.metadata.get("preprocessing") or {}).get("scale")
    if scale is not None and float(scale) != 1.0 and not torch.empty(0, dtype=dtype).is_floating_point():
        _warn(f"`{argument}` holds integers ({dtype}) but {model.name} was trained on inputs scaled by {scale:g} "
              f"(model.metadata['preprocessing']); they are used as given: pass {argument} * {scale:g}")


def prepare_image(model: Model, image: Any, argument: str = "image") -> torch.Tensor:
    """One image as `model` takes it: a float32 (1, H, W, C) tensor on the model's device.

    Args:
        model: a built one-input model.
        image: (H, W), (H, W, C) or (1, H, W, C), a NumPy array or a tensor, already preprocessed as the
            model expects (see the module docstring); integers are cast to float32 unchanged.
        argument: the name used in messages.

    Converts 3 channels to 1 (luma) or 1 to 3 (repeated) and resizes to the model's (H, W) (bilinear,
    antialiased), each with a UserWarning. Raises TypeError for non-numeric input, ValueError for a batch of
    several images or channels that cannot be converted.
    """
    tensor = to_tensor(image, argument).cpu()
    _warn_scale(model, tensor.dtype, argument)
    received = tuple(tensor.shape)
    if tensor.dim() == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]  # (1, H, W, C) -> (H, W, C)
    elif tensor.dim() == 2:
        tensor = tensor[:, :, None]  # (H, W) -> (H, W, 1)
    if tensor.dim() != 3 or min(tensor.shape) == 0:
        hint = f"; pick one with {argument}[i]" if tensor.dim() == 4 else ""
        raise ValueError(f"`{argument}` must be one image (H, W, C) or (1, H, W, C). Received shape "
                         f"{shape_str(received)}{hint}")
    tensor = tensor.float()
    shape = sample_shape(model) or ()
    height, width, channels = shape if len(shape) == 3 else (None, None, None)
    if channels is not None and tensor.shape[2] != channels:
        if tensor.shape[2] == 3 and channels == 1:
            tensor = (tensor * torch.tensor(LUMA)).sum(-1, keepdim=True)  # (H, W, 3) -> (H, W, 1)
            _warn(f"`{argument}` has 3 channels but {model.name} takes 1: converted to grayscale (ITU-R 601-2 luma)")
        elif tensor.shape[2] == 1 and channels == 3:
            tensor = tensor.expand(-1, -1, 3)  # (H, W, 1) -> (H, W, 3)
            _warn(f"`{argument}` has 1 channel but {model.name} takes 3: the channel was repeated")
        else:
            expected = f"({height or 'H'}, {width or 'W'}, {channels})"
            raise ValueError(f"`{argument}` has {tensor.shape[2]} channels, which cannot be converted to the "
                             f"{channels} {model.name} takes: expected an image of shape {expected}. "
                             f"Received shape {shape_str(received)}")
    size = (height or tensor.shape[0], width or tensor.shape[1])
    if tuple(tensor.shape[:2]) != size:
        nchw = tensor.permute(2, 0, 1)[None]  # (H, W, C) -> (1, C, H, W)
        resized = F.interpolate(nchw, size=size, mode="bilinear", align_corners=False, antialias=True)
        _warn(f"`{argument}` was resized from {tensor.shape[0]}x{tensor.shape[1]} to {size[0]}x{size[1]} "
              f"(height x width) to fit {model.name}; maps are at the model's size")
        tensor = resized[0].permute(1, 2, 0)  # (1, C, H', W') -> (H', W', C)
    return tensor[None].contiguous().to(model.device)  # (1, H, W, C)


@dataclasses.dataclass(frozen=True)
class _Site:
    """A layer as inspection names and runs it: at the top of the model, or inside nested models."""

    name: str  # "conv2d", or "backbone/conv2d" for the layer conv2d of the nested model backbone
    layer: Any  # the layer (or a nested model)
    owners: tuple[Any, ...]  # the nested models holding it, outermost first; () for a layer of the model itself
    outputs: tuple[SymbolicTensor, ...]  # the outputs of the call reported, in its owner's graph
    anchor: SymbolicTensor  # the model's tensor whose computation runs the layer (its own output at the top)

    @property
    def shape(self) -> Any:
        """The output shape, with the batch axis None (a list of shapes for a layer with several outputs)."""
        return self.outputs[0].shape if len(self.outputs) == 1 else [tensor.shape for tensor in self.outputs]

    @property
    def spatial(self) -> bool:
        return len(self.outputs) == 1 and len(self.shape) == 4 and not isinstance(self.layer, InputLayer)


def _reported_calls(model: Model) -> dict[int, Node]:
    """Each operation's call that inspection reports, by id(operation): among the calls in `model`'s graph, the
    one with the lowest call index, which is the call `layer.output` names (when the layer's first call was
    made in this model, as usual). Walks the graph from the outputs through public node attributes."""
    stop = {id(tensor) for tensor in model.inputs}
    seen: set[int] = set()
    chosen: dict[int, Node] = {}
    stack = list(model.outputs)
    while stack:
        tensor = stack.pop()
        node = tensor.node
        if id(node) in seen:
            continue
        seen.add(id(node))
        key = id(node.operation)
        if key not in chosen or node.index < chosen[key].index:
            chosen[key] = node
        if id(tensor) not in stop:
            stack.extend(node.inputs)
    return chosen


def _sites(model: Model, prefix: str = "", owners: tuple[Any, ...] = (),
           anchor: SymbolicTensor | None = None) -> list[_Site]:
    """The layers of `model` in `model.layers` order, each nested model followed by its own layers (named
    "nested/layer"); InputLayers only at the top (a nested model's input is its caller's tensor). `anchor` is
    the output of the top-level nested model's call that runs them."""
    calls = _reported_calls(model)
    sites = []
    for layer in model.layers:
        node = calls.get(id(layer))
        if node is None or (owners and isinstance(layer, InputLayer)):
            continue
        runs = node.outputs[0] if anchor is None else anchor
        sites.append(_Site(prefix + layer.name, layer, owners, tuple(node.outputs), runs))
        if isinstance(layer, Model):
            sites += _sites(layer, f"{prefix}{layer.name}/", (*owners, layer), runs)
    return sites


def _compose(outer: Field | None, row: dict[str, Any]) -> Field | None:
    """The receptive field of a nested model's layer in the outer model's input pixels: `outer` is the field
    of the nested model's input, `row` the layer's row in the nested model's table. A unit seeing s inputs
    (jump j, centre st) of a map whose units see S pixels (jump J, centre St) sees S + (s - 1) J pixels, with
    jump J j and centre St + st J."""
    if outer is None or row["receptive_field"] is None:
        return None
    axes = [(outer[0][axis], outer[1][axis], outer[2][axis], row["receptive_field"][axis], row["jump"][axis],
             row["start"][axis]) for axis in (0, 1)]
    (size_h, jump_h, start_h), (size_w, jump_w, start_w) = [
        (big + (size - 1) * jump, jump * step, start + centre * jump) for big, jump, start, size, step, centre in axes]
    return (size_h, size_w), (jump_h, jump_w), (start_h, start_w)


def _input_field(model: Model, nested: Model, rows: dict[str, dict[str, Any]]) -> Field | None:
    """The receptive field of the tensor `nested` reads in `model` (its reported call): the identity at the
    model's input, else its producer's row; None for a nested model with several inputs."""
    node = _reported_calls(model).get(id(nested))
    if node is None or node.listed or len(node.inputs) != 1 or len(node.inputs[0].shape) != 4:
        return None
    producer = node.inputs[0].node.operation
    if isinstance(producer, InputLayer):
        return (1, 1), (1, 1), (0.0, 0.0)
    row = rows.get(producer.name)
    if row is None or row["receptive_field"] is None:
        return None
    return row["receptive_field"], row["jump"], row["start"]


def layer_rows(model: Model) -> dict[str, dict[str, Any]]:
    """`model.layer_table()` by layer name, each nested model's rows following its own under "nested/layer"
    names: output shape, parameters, multiply-adds, connections, receptive field, jump, start (a nested
    layer's field composed into the model's input pixels). Each row's "nested_in" is the path of the nested
    model holding it, None at the top.

    Through merges the field is the largest over the paths (`layer_table`'s rule).
    """
    rows: dict[str, dict[str, Any]] = {}
    layers = {layer.name: layer for layer in model.layers}
    for row in model.layer_table():
        rows[row["name"]] = {**row, "nested_in": None}
        nested = layers.get(row["name"])
        if not isinstance(nested, Model):
            continue
        field = _input_field(model, nested, rows)
        last = nested.outputs[0].node.operation.name if len(nested.outputs) == 1 else None
        for name, inner in layer_rows(nested).items():
            if inner["type"] == "InputLayer":
                continue
            composed = _compose(field, inner)
            rows[f"{nested.name}/{name}"] = {
                **inner, "name": f"{nested.name}/{name}",
                "nested_in": nested.name if inner["nested_in"] is None else f"{nested.name}/{inner['nested_in']}",
                "connected_to": [f"{nested.name}/{source}" for source in inner["connected_to"]],
                "receptive_field": None if composed is None else tuple(int(v) for v in composed[0]),
                "jump": None if composed is None else tuple(int(v) for v in composed[1]),
                "start": None if composed is None else tuple(float(v) for v in composed[2])}
            if name == last and rows[nested.name]["receptive_field"] is None:  # the nested model's own field
                rows[nested.name].update({key: rows[f"{nested.name}/{name}"][key]
                                          for key in ("receptive_field", "jump", "start")})
    return rows


def _find_site(model: Model, layer: Any) -> _Site:
    """The site of `layer` (a name or path, an index into `model.layers`, or the layer object)."""
    sites = _sites(model)
    names = [site.name for site in sites]
    if isinstance(layer, str):
        if layer not in names:
            raise unknown_name("layer", layer, names, argument="layer")
        return sites[names.index(layer)]
    if is_int(layer):
        count = len(model.layers)
        if not -count <= layer < count:
            raise ValueError(f"`layer` must be a layer name or an index in [0, {count - 1}]. Received: layer={layer}")
        layer = model.layers[layer]
    elif not isinstance(layer, (layers_module.Layer, Model)):
        raise TypeError(f"`layer` must be a layer name, an index or a layer. Received: layer={describe(layer)}")
    for site in sites:
        if site.layer is layer:
            return site
    raise ValueError(f"`layer` {layer.label} is not a layer of {model.name}; its layers are {', '.join(names)}")


def _resolve_site(model: Model, layer: Any, need: str, op: str) -> _Site:
    site = _find_site(model, layer)
    sites = _sites(model)
    if need == "conv":
        qualify = [item.name for item in sites if isinstance(item.layer, layers_module.Conv2D)]
        what = "is not a Conv2D layer"
    elif isinstance(site.layer, InputLayer):
        qualify = [item.name for item in sites if item.spatial]
        what = "is the model's input (the image itself), not a layer that computes"
    else:
        qualify = [item.name for item in sites if item.spatial]
        what = f"has no spatial output (it outputs {_shape_text(site.shape)})"
    if site.name not in qualify:
        raise ValueError(f"{op}: layer {site.name!r} ({type(site.layer).__name__}) {what}; layers that qualify: "
                         f"{', '.join(qualify) or 'none'}")
    return site


def _shape_text(shape: Any) -> str:
    """A shape, or the shapes of a layer with several outputs, as `summary` writes them."""
    return ", ".join(shape_str(item) for item in shape) if isinstance(shape, list) else shape_str(shape)


def resolve_layer(model: Model, layer: Any, *, need: str = "spatial", op: str = "explain") -> Any:
    """A layer of `model` by name (a path "nested/layer" inside a nested model), index in `model.layers` or
    object, checked to be what `op` needs.

    `need` is "spatial" (an (H, W, C) output: convolutions, pooling, merges and activations on feature maps,
    nested models) or "conv" (a Conv2D). The errors list the layers that do qualify.
    """
    return _resolve_site(model, layer, need, op).layer


def layer_path(model: Model, layer: Any) -> str:
    """How inspection names `layer` (an object, a name or an index) in `model`: its name, or "nested/name"
    inside a nested model (the keys of `feature_maps` and `layer_rows`)."""
    return _find_site(model, layer).name


def spatial_layers(model: Model) -> list[str]:
    """The names (paths inside nested models) of the layers with an (h, w, K) output, in order: the layers
    Grad-CAM, `feature_maps` and `top_activations` take."""
    return [site.name for site in _sites(check_model(model, one_input=False)) if site.spatial]


def conv_layers(model: Model, op: str) -> list[layers_module.Layer]:
    """The Conv2D layers of `model` (nested models' included), in order; ValueError naming `op` and the model's
    layers when it has none."""
    sites = _sites(model)
    convs: list[layers_module.Layer] = []
    for site in sites:
        if isinstance(site.layer, layers_module.Conv2D) and not any(site.layer is conv for conv in convs):
            convs.append(site.layer)
    if not convs:
        names = [site.name for site in sites if not isinstance(site.layer, InputLayer)]
        raise ValueError(f"{op}: {model.name} has no Conv2D layer; pass `layer`, one of: {', '.join(names)}")
    return convs


def default_cam_layer(model: Model) -> layers_module.Layer:
    """Grad-CAM's default layer: the last Conv2D with maps larger than 1x1, else the last Conv2D."""
    convs = conv_layers(model, "grad_cam")
    shapes = {id(site.layer): site.shape for site in _sites(model)}
    spatial = [conv for conv in convs if (shapes[id(conv)][1] or 2) * (shapes[id(conv)][2] or 2) > 1]
    return spatial[-1] if spatial else convs[-1]


@contextlib.contextmanager
def _inference(model: Model) -> Iterator[None]:
    """Inference mode (Dropout off, BatchNormalization on moving statistics); each module's mode restored."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


@contextlib.contextmanager
def _capture(sites: Sequence[_Site]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Forward hooks that append each site's outputs to a list under the site's name; removed on exit."""
    outputs: dict[str, list[torch.Tensor]] = {}
    handles = []

    def hook_for(name: str) -> Callable:
        def hook(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
            outputs.setdefault(name, []).append(output)
        return hook

    try:
        for site in sites:
            handles.append(site.layer.register_forward_hook(hook_for(site.name)))
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


Probe = Callable[[torch.Tensor], tuple[list[torch.Tensor], "torch.Tensor | None"]]


@contextlib.contextmanager
def _probe(model: Model, sites: Sequence[_Site], scores: bool = False) -> Iterator[Probe]:
    """A function of a batch x (N, H, W, C) that returns the sites' outputs (N, h, w, K) and, with `scores`,
    the class scores before the final softmax/sigmoid (N, classes), all from one forward pass, so that
    gradients flow between them. Use inside `_inference`.

    The model's own layers are read from a feature-extraction graph `Model(model.input, [outputs...])`
    (Keras's recipe, so a shared layer gives the call `layer.output` names); layers inside nested models
    are captured with forward hooks while their nested model runs.
    """
    wanted: list[SymbolicTensor] = []

    def slot(tensor: SymbolicTensor) -> int:
        for index, known in enumerate(wanted):
            if known is tensor:
                return index
        wanted.append(tensor)
        return len(wanted) - 1

    head = model.outputs[0].node if scores else None
    nested = [site for site in sites if site.owners]
    slots = [None if site.owners else slot(site.anchor) for site in sites]
    for site in nested:
        if head is None or site.owners[0] is not head.operation:  # the head's own call runs it otherwise
            slot(site.anchor)
    head_slots = [slot(tensor) for tensor in head.inputs] if head is not None else []
    extractor = Model(model.input, wanted).to(model.device)
    with _capture(nested) as captured:
        def run(x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
            captured.clear()
            values = extractor(x)
            score = None if head is None else _head_scores(model, head, [values[i] for i in head_slots])
            maps = []
            for site, index in zip(sites, slots):
                if index is not None:
                    maps.append(values[index])
                    continue
                calls = captured.get(site.name, [])
                if len(calls) != 1:
                    raise ValueError(f"layer {site.name!r} runs {len(calls)} times in one forward pass of "
                                     f"{model.name} (a nested model or a layer called more than once), so its "
                                     f"maps are ambiguous; inspect the nested model's output "
                                     f"({site.owners[0].name!r}) instead")
                maps.append(calls[0])
            return maps, score
        yield run


def _head_scores(model: Model, head: Node, inputs: list[torch.Tensor]) -> torch.Tensor:
    """The class scores from the inputs of the model's last call: before its softmax/sigmoid (Selvaraju et al.
    2017 use the pre-softmax score), through a nested model's `logits` when one ends the graph."""
    operation: Any = head.operation
    value: Any = inputs if head.listed else inputs[0]
    if isinstance(operation, Model):
        return operation.logits(value)
    if model.output_activation is not None:
        return operation.pre_activation(value)
    return operation(value)


def _final_activation(model: Model) -> str | None:
    """The softmax/sigmoid the model's output ends with, seen through a nested model that ends the graph."""
    operation = model.outputs[0].node.operation
    return _final_activation(operation) if isinstance(operation, Model) else model.output_activation


def _probabilities(model: Model, outputs: torch.Tensor) -> torch.Tensor:
    """The model's outputs if it ends in softmax/sigmoid, else their softmax."""
    return outputs if _final_activation(model) else torch.softmax(outputs, dim=-1)


def _class_index(class_index: Any, scores: torch.Tensor) -> int:
    """The requested class, checked against the number of outputs; the top-scoring one when None."""
    if class_index is None:
        return int(scores[0].argmax())
    return check_int("class_index", class_index, minimum=0, maximum=scores.shape[-1] - 1)


def _scores(run: Probe, x: torch.Tensor) -> torch.Tensor:
    """The class scores (N, classes) a `_probe` made with scores=True gives for x."""
    scores = run(x)[1]
    assert scores is not None, "a probe made without scores"
    return scores


def _input_gradients(run: Probe, x: torch.Tensor, class_index: int | None) -> tuple[torch.Tensor, int]:
    """d score[class] / d x for each image of the batch x (N, H, W, C), the scores from `run` (a `_probe` with
    scores); the class is the first image's top one when `class_index` is None."""
    x = x.detach().requires_grad_(True)
    scores = _scores(run, x)
    class_index = _class_index(class_index, scores.detach())
    (gradients,) = torch.autograd.grad(scores[:, class_index].sum(), x)  # images are independent in eval mode
    return gradients, class_index


def saliency(model: Model, image: Any, method: str = "gradient", class_index: int | None = None,
             samples: int = 25, noise: float = 0.15, seed: int = 0) -> np.ndarray:
    """Which input pixels change the class score most: |d score / d pixel|, the largest over channels.

    "gradient" is Simonyan et al. 2014's saliency map. "smoothgrad" (Smilkov et al. 2017) averages over
    `samples` noisy copies of the image, the noise's standard deviation being `noise` times the image's
    value range; it returns the root mean square of the gradients (the library's `magnitude=True`), which
    is sharper and steadier than one gradient.

    Args:
        model: a built classifier; the score is taken before its final softmax.
        image: (H, W, C) or (1, H, W, C), as the model takes it.
        method: "gradient" or "smoothgrad".
        class_index: the class to explain; default: the predicted one.
        samples: noisy copies for SmoothGrad, >= 1.
        noise: noise level for SmoothGrad, as a fraction of (max - min) of the image, >= 0.
        seed: seeds SmoothGrad's noise (drawn on the CPU, so every device sees the same noise).

    Returns:
        float32 (H, W) map >= 0, at the model's input size.
    """
    method = check_choice("method", method, ("gradient", "smoothgrad"))
    samples = check_int("samples", samples, minimum=1, maximum=10_000)
    noise = check_float("noise", noise, minimum=0.0)
    seed = check_int("seed", seed, minimum=0, maximum=2**63 - 1)
    model = check_model(model)
    check_classifier(model, "saliency")
    x = prepare_image(model, image)  # (1, H, W, C)
    with _inference(model), torch.enable_grad(), _probe(model, [], scores=True) as run:
        if method == "gradient":
            gradients, _ = _input_gradients(run, x, class_index)
            magnitude = gradients.abs()  # (1, H, W, C)
        else:
            with torch.no_grad():
                class_index = _class_index(class_index, _scores(run, x))
            sigma = noise * float(x.max() - x.min())
            generator = torch.Generator().manual_seed(seed)
            squares = torch.zeros_like(x)
            for start in range(0, samples, _CHUNK):
                count = min(_CHUNK, samples - start)
                jitter = torch.randn((count, *x.shape[1:]), generator=generator).to(x.device) * sigma
                gradients, _ = _input_gradients(run, x + jitter, class_index)  # (count, H, W, C)
                squares += (gradients.float() ** 2).sum(0, keepdim=True)
            magnitude = (squares / samples).sqrt()  # (1, H, W, C)
    return magnitude[0].amax(-1).float().cpu().numpy()  # (H, W)


def grad_cam(model: Model, image: Any, layer: Any = None, class_index: int | None = None) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017): where in a layer's feature maps the evidence for a class lies.

    The layer's maps A (h, w, K) are weighted by the spatial mean of d score / d A per channel, summed
    over channels, passed through ReLU, upsampled (bilinear) to the input size and divided by their max.
    Any layer with (h, w, K) outputs works, in a graph too: a convolution inside a residual block, the
    merge after it, a nested model's layer ("backbone/conv2d"); the gradient flows back along every path
    from the class score to the layer.

    Args:
        model: a built one-input classifier; the score is taken before its final softmax.
        image: (H, W, C) or (1, H, W, C), as the model takes it.
        layer: a layer with (h, w, K) outputs, by name (or path), index or object; default: the last Conv2D
            whose maps are larger than 1x1 (a 1x1 map cannot say where: LeNet-5's c5), else the last Conv2D.
        class_index: the class to explain; default: the predicted one.

    Returns:
        float32 (H, W) map in [0, 1] (all zeros when no position supports the class).
    """
    model = check_model(model)
    target = _resolve_site(model, default_cam_layer(model) if layer is None else layer, "spatial", "grad_cam")
    check_classifier(model, "grad_cam")
    x = prepare_image(model, image).requires_grad_(True)  # (1, H, W, C); the maps need a graph even when frozen
    with _inference(model), torch.enable_grad(), _probe(model, [target], scores=True) as run:
        (maps,), scores = run(x)  # (1, h, w, K), (1, classes)
        assert scores is not None  # a probe made with scores=True
        class_index = _class_index(class_index, scores.detach())
        (gradients,) = torch.autograd.grad(scores[0, class_index], maps)
    weights = gradients.mean(dim=(1, 2), keepdim=True)  # (1, 1, 1, K): alpha_k, eq. 1 of the paper
    cam = F.relu((weights * maps.detach()).sum(-1)).float()  # (1, h, w)
    cam = F.interpolate(cam[:, None], size=tuple(x.shape[1:3]), mode="bilinear", align_corners=False)[0, 0]  # (H, W)
    cam = cam.clamp_min(0)  # bilinear interpolation of values >= 0 stays >= 0; guards rounding
    peak = float(cam.max())
    return (cam / peak if peak > 0 else cam).cpu().numpy()


def _window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window positions along one axis, the last one flush with the edge so that every pixel is covered."""
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] + window < size:
        starts.append(size - window)
    return starts


def occlusion(model: Model, image: Any, patch: int | Sequence[int] = 4, stride: int | Sequence[int] = 2,
              class_index: int | None = None, baseline: float = 0.0, batch_size: int = 256) -> np.ndarray:
    """How much the class probability drops when a patch of the image is hidden (Zeiler & Fergus 2014).

    A `patch` is set to `baseline` at every position (steps of `stride`, the last one flush with the edge);
    each pixel gets the mean drop, p(class | image) - p(class | occluded), over the patches covering it.
    Negative values mean that hiding the region made the class more likely.

    Args:
        model: a built classifier (its outputs pass through softmax if it does not end in one).
        image: (H, W, C) or (1, H, W, C), as the model takes it.
        patch: (height, width) of the occluding patch, or one int; at most the image size.
        stride: step between patches, an int or (height, width), at most `patch` on each axis.
        class_index: the class to explain; default: the predicted one.
        baseline: the value hidden pixels take (0 is black for inputs in [0, 1]).
        batch_size: occluded images per forward pass.

    Returns:
        float32 (H, W) map of probability drops, in [-1, 1].
    """
    patch_h, patch_w = int_tuple("patch", patch, 2)
    stride_h, stride_w = int_tuple("stride", stride, 2)
    baseline = check_float("baseline", baseline)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    model = check_model(model)
    check_classifier(model, "occlusion")
    x = prepare_image(model, image)  # (1, H, W, C)
    height, width = x.shape[1], x.shape[2]
    if patch_h > height or patch_w > width:
        raise ValueError(f"`patch` ({patch_h}x{patch_w}) must fit in the image ({height}x{width}). "
                         f"Received: patch={patch!r}")
    if stride_h > patch_h or stride_w > patch_w:
        raise ValueError(f"`stride` ({stride_h}x{stride_w}) must not exceed `patch` ({patch_h}x{patch_w}) on either "
                         f"axis, or pixels between patches would never be hidden. Received: stride={stride!r}")
    windows = [(top, left) for top in _window_starts(height, patch_h, stride_h)
               for left in _window_starts(width, patch_w, stride_w)]
    drops = torch.zeros(height, width, dtype=torch.float64)
    counts = torch.zeros(height, width, dtype=torch.float64)
    with _inference(model), torch.no_grad():
        probabilities = _probabilities(model, model(x))
        class_index = _class_index(class_index, probabilities)
        reference = float(probabilities[0, class_index])
        for start in range(0, len(windows), batch_size):
            chunk = windows[start:start + batch_size]
            batch = x.repeat(len(chunk), 1, 1, 1)  # (n, H, W, C)
            for i, (top, left) in enumerate(chunk):
                batch[i, top:top + patch_h, left:left + patch_w, :] = baseline
            occluded = _probabilities(model, model(batch))[:, class_index].double().cpu()  # (n,)
            for (top, left), probability in zip(chunk, occluded):
                drops[top:top + patch_h, left:left + patch_w] += reference - probability
                counts[top:top + patch_h, left:left + patch_w] += 1
    return (drops / counts).float().numpy()


def feature_maps(model: Model, image: Any, layers: Any = None) -> dict[str, np.ndarray]:
    """The outputs of some layers for one image, in inference mode.

    For a layer called more than once in the graph, the output of the call `layer.output` names (as
    Keras's `Model(model.input, layer.output)` gives it); a layer inside a nested model is named by its
    path, "backbone/conv2d" (see the module docstring).

    Args:
        model: a built one-input model.
        image: (H, W, C) or (1, H, W, C), as the model takes it.
        layers: a layer (name or path, index or object) or a list of them, each with (h, w, K) outputs
            (`spatial_layers(model)` lists them all); default: every Conv2D layer.

    Returns:
        {layer name or path: float32 (h, w, K) array}, in the model's order.
    """
    model = check_model(model)
    if layers is None:
        requested: Sequence[Any] = conv_layers(model, "feature_maps")
    else:
        requested = layers if isinstance(layers, (list, tuple)) else [layers]
    chosen = {site.name for site in (_resolve_site(model, item, "spatial", "feature_maps") for item in requested)}
    targets = [site for site in _sites(model) if site.name in chosen]  # the model's order, each once
    x = prepare_image(model, image)
    with _inference(model), torch.no_grad(), _probe(model, targets) as run:
        maps, _ = run(x)
    return {site.name: value[0].float().cpu().numpy() for site, value in zip(targets, maps)}


def _receptive_row(model: Model, layer: Any, op: str) -> tuple[_Site, dict[str, Any]]:
    """The layer's site and its `layer_rows()` row, for an op that needs the layer's receptive field."""
    site = _resolve_site(model, layer, "spatial", op)
    row = layer_rows(model)[site.name]
    if row["receptive_field"] is None:
        raise ValueError(f"{op}: layer {site.name!r} has no receptive field (a layer before it mixes all "
                         f"positions)")
    return site, row


def _field_box(row: dict[str, Any], position: Sequence[int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the field of the unit at `position`, from a `layer_rows()` row."""
    box = []
    for p, size, jump, start in zip(position, row["receptive_field"], row["jump"], row["start"]):
        first = math.floor(start + int(p) * jump - (size - 1) / 2 + 0.5)  # centre minus half the field
        box.append((first, first + size))
    (top, bottom), (left, right) = box
    return top, left, bottom, right


def receptive_field_box(model: Model, layer: Any, position: Sequence[int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the input pixels a unit of `layer` at (row, col) sees, bottom and right
    exclusive, from `layer_rows(model)`'s receptive field, jump and start (the field's centre is
    start + position * jump; through a graph, the largest field over the paths). The box may extend past the
    image: those pixels are padding."""
    model = check_model(model)
    site, row = _receptive_row(model, layer, "receptive_field_box")
    out_h, out_w = site.shape[1:3]
    if (not isinstance(position, (list, tuple, np.ndarray)) or len(position) != 2
            or not all(is_int(p) for p in position)):
        raise TypeError(f"`position` must be (row, col) integers. Received: position={describe(position)}")
    if not (0 <= position[0] < out_h and 0 <= position[1] < out_w):
        raise ValueError(f"`position` must lie in the {out_h}x{out_w} output of {site.name!r}. "
                         f"Received: position={tuple(int(p) for p in position)}")
    return _field_box(row, position)


@dataclasses.dataclass
class TopActivations:
    """The result of `top_activations`, best first; `plot()` shows the patches."""

    layer: str
    filter_index: int
    patches: np.ndarray  # (k, rf_h, rf_w, C) float32 input pixels in each unit's receptive field, 0 outside the image
    scores: np.ndarray  # (k,) float32 activation of the unit (the filter's max over positions in that image)
    indices: np.ndarray  # (k,) int64 index of each patch's image in `images`
    positions: np.ndarray  # (k, 2) int64 (row, col) of the unit in the layer's feature map
    boxes: np.ndarray  # (k, 4) int64 (top, left, bottom, right) of the field in input pixels, exclusive ends

    @property
    def receptive_field(self) -> tuple[int, int]:
        return int(self.patches.shape[1]), int(self.patches.shape[2])

    def plot(self, cmap: Any = "gray") -> Figure:
        """The patches, best first, titled with rank, image index and score (a Matplotlib Figure)."""
        rf_h, rf_w = self.receptive_field
        titles = [f"#{rank + 1} img {index}\n{score:.3g}" for rank, (index, score) in
                  enumerate(zip(self.indices, self.scores))]
        return figures.plot_patches(self.patches, titles, cmap=cmap,
                                    title=f"Top {len(titles)} patches for {self.layer} filter {self.filter_index} "
                                          f"(receptive field {rf_h}x{rf_w})")


def top_activations(model: Model, layer: Any, filter_index: int, images: Any, k: int = 16,
                    batch_size: int = 256) -> TopActivations:
    """The `k` images whose patches excite one filter of a layer most, each cropped to the unit's receptive
    field (the unit being the filter's strongest position in that image; one patch per image).

    Args:
        model: a built one-input model.
        layer: a layer with (h, w, K) outputs and a receptive field (name or path, index or object).
        filter_index: the channel of that layer, in [0, K).
        images: (N, H, W, C), or (N, H, W) for a 1-channel model, as the model takes them (uint8 kept until
            each batch is on the device).
        k: how many patches, in [1, N].
        batch_size: images per forward pass.

    Returns:
        TopActivations with patches (k, rf_h, rf_w, C) that all have the receptive field's size: parts of
        the field outside the image (the layer's padding) are 0.
    """
    model = check_model(model)
    site, row = _receptive_row(model, layer, "top_activations")
    out_w, channels = site.shape[2:4]
    filter_index = check_int("filter_index", filter_index, minimum=0, maximum=channels - 1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    x_all = as_inputs(cast(Any, model), images, "images")  # (N, H, W, C), uint8 kept; a tensor keeps its device
    if x_all.dim() != 4:
        raise ValueError(f"`images` must be a batch (N, H, W, C). Received shape {shape_str(x_all.shape)}")
    k = check_int("k", k, minimum=1, maximum=x_all.shape[0])
    _warn_scale(model, x_all.dtype, "images")
    best = torch.empty(x_all.shape[0])
    where = torch.empty(x_all.shape[0], dtype=torch.long)
    with _inference(model), torch.no_grad(), _probe(model, [site]) as run:
        for start in range(0, x_all.shape[0], batch_size):
            (maps,), _ = run(x_all[start:start + batch_size].to(model.device).float())  # (n, h, w, K)
            response = maps[..., filter_index]  # (n, h, w)
            values, flat = response.reshape(response.shape[0], -1).max(dim=1)  # (n,), (n,): first max wins ties
            best[start:start + batch_size] = values.float().cpu()
            where[start:start + batch_size] = flat.cpu()
    order = np.argsort(-best.numpy(), kind="stable")[:k]
    positions = np.stack([where.numpy()[order] // out_w, where.numpy()[order] % out_w], axis=1)  # (k, 2)
    boxes = np.array([_field_box(row, pos) for pos in positions])  # (k, 4)
    rf_h, rf_w = row["receptive_field"]
    height, width = x_all.shape[1:3]
    patches = np.zeros((k, rf_h, rf_w, x_all.shape[3]), np.float32)
    for i, (index, (top, left, bottom, right)) in enumerate(zip(order, boxes)):
        clip_top, clip_left = max(top, 0), max(left, 0)
        clip_bottom, clip_right = min(bottom, height), min(right, width)
        crop = x_all[index, clip_top:clip_bottom, clip_left:clip_right].float().cpu().numpy()  # (h', w', C)
        patches[i, clip_top - top:clip_bottom - top, clip_left - left:clip_right - left] = crop
    return TopActivations(layer=site.name, filter_index=filter_index, patches=patches,
                          scores=best.numpy()[order].astype(np.float32), indices=order.astype(np.int64),
                          positions=positions.astype(np.int64), boxes=boxes.astype(np.int64))


@dataclasses.dataclass
class Explanation:
    """A map explaining one prediction; `plot()` overlays it on the image."""

    method: str
    map: np.ndarray  # (H, W) float32, at the model's input size
    image: np.ndarray  # (H, W, C) float32, the image as the model saw it
    class_index: int
    probability: float  # the model's probability for `class_index`
    class_name: str | None = None

    def plot(self, alpha: float = 0.5) -> Figure:
        """The map next to, and over, the image (a Matplotlib Figure), titled with method, class and probability."""
        label = self.class_name or f"class {self.class_index}"
        return figures.plot_saliency(self.image, self.map, alpha=alpha,
                             title=f"{self.method}: {label} ({self.probability:.1%})")


def _smoothgrad(model: Model, image: Any, class_index: int | None = None, **options: Any) -> np.ndarray:
    return saliency(model, image, method="smoothgrad", class_index=class_index, **options)


def _gradient(model: Model, image: Any, class_index: int | None = None) -> np.ndarray:
    return saliency(model, image, method="gradient", class_index=class_index)


class Method(NamedTuple):
    """An explanation method: the function computing its (H, W) map, and the options it takes."""

    compute: Callable[..., np.ndarray]
    options: tuple[str, ...]


METHODS: Registry[Method] = Registry("explanation method", normalise=str)
METHODS.register("gradient", Method(_gradient, ()))
METHODS.register("smoothgrad", Method(_smoothgrad, ("samples", "noise", "seed")))
METHODS.register("grad_cam", Method(grad_cam, ("layer",)))
METHODS.register("occlusion", Method(occlusion, ("patch", "stride", "baseline", "batch_size")))


def list_methods() -> list[str]:
    """Names accepted by `explain(method=...)`."""
    return METHODS.names()


def explain(model: Model, image: Any, method: str = "grad_cam", class_index: int | None = None,
            **options: Any) -> Explanation:
    """Explain the model's decision on one image with a method from `list_methods()`.

    `options` go to the method: smoothgrad takes samples, noise, seed; grad_cam takes layer; occlusion takes
    patch, stride, baseline, batch_size. The class name comes from `model.metadata["class_names"]`.

        >>> from convnet import layers, models
        >>> import numpy as np
        >>> model = models.Sequential([layers.Input(shape=(6, 6, 1)), layers.Conv2D(2, 3),
        ...                            layers.Flatten(), layers.Dense(3, activation="softmax")])
        >>> result = explain(model, np.ones((6, 6, 1), np.float32), method="occlusion", patch=2)
        >>> result.map.shape, result.method
        ((6, 6), 'occlusion')
    """
    chosen = METHODS.get(method, argument="method") if isinstance(method, str) else None
    if chosen is None:
        raise unknown_name("explanation method", method, METHODS, argument="method")
    unexpected = [key for key in options if key not in chosen.options]
    if unexpected:
        accepted = ", ".join(chosen.options) or "none"
        raise TypeError(f"explain: method {method!r} takes no option {unexpected[0]!r}; its options: {accepted}")
    model = check_model(model)
    check_classifier(model, "explain")
    x = prepare_image(model, image)
    with _inference(model), torch.no_grad():
        probabilities = _probabilities(model, model(x))
    class_index = _class_index(class_index, probabilities)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # prepare_image already warned about this image once
        heat = chosen.compute(model, x, class_index=class_index, **options)
    names = model.metadata.get("class_names")
    name = str(names[class_index]) if isinstance(names, (list, tuple)) and class_index < len(names) else None
    return Explanation(method=method, map=heat, image=x[0].cpu().numpy(), class_index=class_index,
                       probability=float(probabilities[0, class_index]), class_name=name)

