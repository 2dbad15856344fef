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
from typing import TYPE_CHECKING, Any, NamedTuple

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
from convnet.models.sequential import Sequential
from convnet.training.inputs import as_inputs, to_tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["saliency", "grad_cam", "occlusion", "top_activations", "TopActivations", "explain", "Explanation",
           "list_methods", "feature_maps", "prepare_image", "receptive_field_box", "resolve_layer", "default_cam_layer",
           "conv_layers", "layer_rows", "check_model"]

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2 weights, as Pillow's "L" mode and datasets.load_image
_CHUNK = 32  # noisy copies per forward pass in SmoothGrad
_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def check_model(model: Any) -> Sequential:
    """`model`, checked to be a built convnet Sequential (TypeError or ValueError saying what is wrong)."""
    if not isinstance(model, Sequential):
        raise TypeError(f"`model` must be a convnet Sequential model. Received: model={describe(model)}")
    if model.input_shape is None or not model.layers:
        raise ValueError(f"{model.name}: the model is not built or has no layers; give it an input shape "
                         f"(layers.Input(shape=...) first) before explaining it")
    return model


def _warn(message: str) -> None:
    """A UserWarning attributed to the first caller outside convnet (the user's line)."""
    frame, level = inspect.currentframe(), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def _warn_scale(model: Sequential, dtype: Any, argument: str) -> None:
    """Integer pixels for a model trained on scaled inputs are almost always a mistake: say so."""
    scale = (model.metadata.get("preprocessing") or {}).get("scale")
    if scale is not None and float(scale) != 1.0 and not torch.empty(0, dtype=dtype).is_floating_point():
        _warn(f"`{argument}` holds integers ({dtype}) but {model.name} was trained on inputs scaled by {scale:g} "
              f"(model.metadata['preprocessing']); they are used as given: pass {argument} * {scale:g}")


def prepare_image(model: Sequential, image: Any, argument: str = "image") -> torch.Tensor:
    """One image as `model` takes it: a float32 (1, H, W, C) tensor on the model's device.

    Args:
        model: a built Sequential.
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
    shape = model.input_shape or ()
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


def layer_rows(model: Sequential) -> dict[str, dict[str, Any]]:
    """`model.layer_table()` by layer name: output shape, parameters, receptive field, jump, start."""
    return {row["name"]: row for row in model.layer_table()}


def resolve_layer(model: Sequential, layer: Any, *, need: str = "spatial", op: str = "explain") -> layers_module.Layer:
    """A layer of `model` by name, position or object, checked to be what `op` needs.

    `need` is "spatial" (an (H, W, C) output: convolutions, pooling, activations on feature maps) or "conv"
    (a Conv2D). The errors list the layers that do qualify.
    """
    names = [item.name for item in model.layers]
    if isinstance(layer, str):
        if layer not in names:
            raise unknown_name("layer", layer, names, argument="layer")
        found = model.layers[names.index(layer)]
    elif is_int(layer):
        if not -len(names) <= layer < len(names):
            raise ValueError(f"`layer` must be a layer name or an index in [0, {len(names) - 1}]. "
                             f"Received: layer={layer}")
        found = model.layers[layer]
    elif isinstance(layer, layers_module.Layer):
        if not any(item is layer for item in model.layers):
            raise ValueError(f"`layer` {layer.label} is not a layer of {model.name}; its layers are "
                             f"{', '.join(names)}")
        found = layer
    else:
        raise TypeError(f"`layer` must be a layer name, an index or a layer. Received: layer={describe(layer)}")
    rows = layer_rows(model)
    if need == "conv":
        qualify = [item.name for item in model.layers if isinstance(item, layers_module.Conv2D)]
        what = "is not a Conv2D layer"
    else:
        qualify = [name for name, row in rows.items() if len(row["output_shape"]) == 4]
        what = f"has no spatial output (it outputs {shape_str(rows[found.name]['output_shape'])})"
    if found.name not in qualify:
        raise ValueError(f"{op}: layer {found.name!r} ({type(found).__name__}) {what}; layers that qualify: "
                         f"{', '.join(qualify) or 'none'}")
    return found


def conv_layers(model: Sequential, op: str) -> list[layers_module.Layer]:
    """The Conv2D layers of `model`, in order; ValueError naming `op` and the model's layers when it has none."""
    convs: list[layers_module.Layer] = [item for item in model.layers if isinstance(item, layers_module.Conv2D)]
    if not convs:
        raise ValueError(f"{op}: {model.name} has no Conv2D layer; pass `layer`, one of: "
                         f"{', '.join(item.name for item in model.layers)}")
    return convs


def default_cam_layer(model: Sequential) -> layers_module.Layer:
    """Grad-CAM's default layer: the last Conv2D with maps larger than 1x1, else the last Conv2D."""
    shapes = {row["name"]: row["output_shape"] for row in model.layer_table()}
    spatial = [item for item in model.layers if isinstance(item, layers_module.Conv2D)
               and (shapes[item.name][1] or 2) * (shapes[item.name][2] or 2) > 1]
    return spatial[-1] if spatial else conv_layers(model, "grad_cam")[-1]


@contextlib.contextmanager
def _inference(model: Sequential) -> Iterator[None]:
    """Inference mode (Dropout off, BatchNormalization on moving statistics); each module's mode restored."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


@contextlib.contextmanager
def _capture(targets: Sequence[layers_module.Layer]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks that store each target layer's latest output by layer name; removed on exit."""
    outputs: dict[str, torch.Tensor] = {}
    handles = []

    def hook_for(name: str) -> Callable:
        def hook(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
            outputs[name] = output
        return hook

    try:
        for target in targets:
            handles.append(target.register_forward_hook(hook_for(target.name)))
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def _class_scores(model: Sequential, x: torch.Tensor, op: str) -> torch.Tensor:
    """(N, classes) scores before the final softmax/sigmoid (Selvaraju et al. 2017 use the pre-softmax score)."""
    scores = model.logits(x)
    if scores.dim() != 2:
        raise ValueError(f"{op} needs a classifier whose output is (N, classes); {model.name} outputs shape "
                         f"{shape_str((None, *scores.shape[1:]))}")
    return scores


def _probabilities(model: Sequential, outputs: torch.Tensor) -> torch.Tensor:
    """The model's outputs if it ends in softmax/sigmoid, else their softmax."""
    return outputs if model.output_activation else torch.softmax(outputs, dim=-1)


def _class_index(class_index: Any, scores: torch.Tensor) -> int:
    """The requested class, checked against the number of outputs; the top-scoring one when None."""
    if class_index is None:
        return int(scores[0].argmax())
    return check_int("class_index", class_index, minimum=0, maximum=scores.shape[-1] - 1)


def _input_gradients(model: Sequential, x: torch.Tensor, class_index: int | None, op: str) -> tuple[torch.Tensor, int]:
    """d score[class] / d x for each image of the batch x (N, H, W, C); the class is the first image's top one
    when `class_index` is None."""
    x = x.detach().requires_grad_(True)
    scores = _class_scores(model, x, op)
    class_index = _class_index(class_index, scores.detach())
    (gradients,) = torch.autograd.grad(scores[:, class_index].sum(), x)  # images are independent in eval mode
    return gradients, class_index


def saliency(model: Sequential, image: Any, method: str = "gradient", class_index: int | None = None,
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
    x = prepare_image(model, image)  # (1, H, W, C)
    with _inference(model), torch.enable_grad():
        if method == "gradient":
            gradients, _ = _input_gradients(model, x, class_index, "saliency")
            magnitude = gradients.abs()  # (1, H, W, C)
        else:
            with torch.no_grad():
                class_index = _class_index(class_index, _class_scores(model, x, "saliency"))
            sigma = noise * float(x.max() - x.min())
            generator = torch.Generator().manual_seed(seed)
            squares = torch.zeros_like(x)
            for start in range(0, samples, _CHUNK):
                count = min(_CHUNK, samples - start)
                jitter = torch.randn((count, *x.shape[1:]), generator=generator).to(x.device) * sigma
                gradients, _ = _input_gradients(model, x + jitter, class_index, "saliency")  # (count, H, W, C)
                squares += (gradients.float() ** 2).sum(0, keepdim=True)
            magnitude = (squares / samples).sqrt()  # (1, H, W, C)
    return magnitude[0].amax(-1).float().cpu().numpy()  # (H, W)


def grad_cam(model: Sequential, image: Any, layer: Any = None, class_index: int | None = None) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017): where in a layer's feature maps the evidence for a class lies.

    The layer's maps A (h, w, K) are weighted by the spatial mean of d score / d A per channel, summed
    over channels, passed through ReLU, upsampled (bilinear) to the input size and divided by their max.

    Args:
        model: a built classifier; the score is taken before its final softmax.
        image: (H, W, C) or (1, H, W, C), as the model takes it.
        layer: a layer with (h, w, K) outputs, by name, index or object; default: the last Conv2D whose maps
            are larger than 1x1 (a 1x1 map cannot say where: LeNet-5's c5), else the last Conv2D.
        class_index: the class to explain; default: the predicted one.

    Returns:
        float32 (H, W) map in [0, 1] (all zeros when no position supports the class).
    """
    model = check_model(model)
    target = default_cam_layer(model) if layer is None else resolve_layer(model, layer, op="grad_cam")
    x = prepare_image(model, image).requires_grad_(True)  # (1, H, W, C); the maps need a graph even when frozen
    with _inference(model), torch.enable_grad(), _capture([target]) as captured:
        scores = _class_scores(model, x, "grad_cam")
        class_index = _class_index(class_index, scores.detach())
        maps = captured[target.name]  # (1, h, w, K)
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


def occlusion(model: Sequential, image: Any, patch: int | Sequence[int] = 4, stride: int | Sequence[int] = 2,
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
        outputs = model(x)
        if outputs.dim() != 2:
            _class_scores(model, x, "occlusion")  # raises the "needs a classifier" message
        probabilities = _probabilities(model, outputs)
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


def feature_maps(model: Sequential, image: Any, layers: Any = None) -> dict[str, np.ndarray]:
    """The outputs of some layers for one image, captured with forward hooks in inference mode.

    Args:
        model: a built Sequential.
        image: (H, W, C) or (1, H, W, C), as the model takes it.
        layers: a layer (name, index or object) or a list of them, each with (h, w, K) outputs; default:
            every Conv2D layer.

    Returns:
        {layer name: float32 (h, w, K) array}, in the model's order.
    """
    model = check_model(model)
    if layers is None:
        targets = conv_layers(model, "feature_maps")
    else:
        requested = layers if isinstance(layers, (list, tuple)) else [layers]
        targets = [resolve_layer(model, item, op="feature_maps") for item in requested]
    x = prepare_image(model, image)
    with _inference(model), torch.no_grad(), _capture(targets) as captured:
        model(x)
    return {target.name: captured[target.name][0].float().cpu().numpy() for target in model.layers
            if target.name in captured}


def _receptive_row(model: Sequential, layer: Any, op: str) -> tuple[layers_module.Layer, dict[str, Any]]:
    """The layer and its `layer_table()` row, for an op that needs the layer's receptive field."""
    target = resolve_layer(model, layer, op=op)
    row = layer_rows(model)[target.name]
    if row["receptive_field"] is None:
        raise ValueError(f"{op}: layer {target.name!r} has no receptive field (a layer before it mixes all "
                         f"positions)")
    return target, row


def receptive_field_box(model: Sequential, layer: Any, position: Sequence[int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the input pixels a unit of `layer` at (row, col) sees, bottom and right
    exclusive, from `model.layer_table()`'s receptive field, jump and start (the field's centre is
    start + position * jump). The box may extend past the image: those pixels are padding."""
    model = check_model(model)
    target, row = _receptive_row(model, layer, "receptive_field_box")
    out_h, out_w = row["output_shape"][1:3]
    if (not isinstance(position, (list, tuple, np.ndarray)) or len(position) != 2
            or not all(is_int(p) for p in position)):
        raise TypeError(f"`position` must be (row, col) integers. Received: position={describe(position)}")
    if not (0 <= position[0] < out_h and 0 <= position[1] < out_w):
        raise ValueError(f"`position` must lie in the {out_h}x{out_w} output of {target.name!r}. "
                         f"Received: position={tuple(int(p) for p in position)}")
    box = []
    for p, size, jump, start in zip(position, row["receptive_field"], row["jump"], row["start"]):
        first = math.floor(start + int(p) * jump - (size - 1) / 2 + 0.5)  # centre minus half the field
        box.append((first, first + size))
    (top, bottom), (left, right) = box
    return top, left, bottom, right


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


def top_activations(model: Sequential, layer: Any, filter_index: int, images: Any, k: int = 16,
                    batch_size: int = 256) -> TopActivations:
    """The `k` images whose patches excite one filter of a layer most, each cropped to the unit's receptive
    field (the unit being the filter's strongest position in that image; one patch per image).

    Args:
        model: a built Sequential.
        layer: a layer with (h, w, K) outputs and a receptive field (name, index or object).
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
    target, row = _receptive_row(model, layer, "top_activations")
    channels = row["output_shape"][-1]
    filter_index = check_int("filter_index", filter_index, minimum=0, maximum=channels - 1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    x_all = as_inputs(model, images, "images")  # (N, H, W, C), uint8 kept; a tensor keeps its device
    if x_all.dim() != 4:
        raise ValueError(f"`images` must be a batch (N, H, W, C). Received shape {shape_str(x_all.shape)}")
    k = check_int("k", k, minimum=1, maximum=x_all.shape[0])
    _warn_scale(model, x_all.dtype, "images")
    best = torch.empty(x_all.shape[0])
    where = torch.empty(x_all.shape[0], dtype=torch.long)
    with _inference(model), torch.no_grad(), _capture([target]) as captured:
        for start in range(0, x_all.shape[0], batch_size):
            model(x_all[start:start + batch_size].to(model.device).float())
            response = captured[target.name][..., filter_index]  # (n, h, w)
            values, flat = response.reshape(response.shape[0], -1).max(dim=1)  # (n,), (n,): first max wins ties
            best[start:start + batch_size] = values.float().cpu()
            where[start:start + batch_size] = flat.cpu()
    out_w = row["output_shape"][2]
    order = np.argsort(-best.numpy(), kind="stable")[:k]
    positions = np.stack([where.numpy()[order] // out_w, where.numpy()[order] % out_w], axis=1)  # (k, 2)
    boxes = np.array([receptive_field_box(model, target, tuple(int(p) for p in pos)) for pos in positions])
    rf_h, rf_w = row["receptive_field"]
    height, width = x_all.shape[1:3]
    patches = np.zeros((k, rf_h, rf_w, x_all.shape[3]), np.float32)
    for i, (index, (top, left, bottom, right)) in enumerate(zip(order, boxes)):
        clip_top, clip_left = max(top, 0), max(left, 0)
        clip_bottom, clip_right = min(bottom, height), min(right, width)
        crop = x_all[index, clip_top:clip_bottom, clip_left:clip_right].float().cpu().numpy()  # (h', w', C)
        patches[i, clip_top - top:clip_bottom - top, clip_left - left:clip_right - left] = crop
    return TopActivations(layer=target.name, filter_index=filter_index, patches=patches,
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


def _smoothgrad(model: Sequential, image: Any, class_index: int | None = None, **options: Any) -> np.ndarray:
    return saliency(model, image, method="smoothgrad", class_index=class_index, **options)


def _gradient(model: Sequential, image: Any, class_index: int | None = None) -> np.ndarray:
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


def explain(model: Sequential, image: Any, method: str = "grad_cam", class_index: int | None = None,
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
    x = prepare_image(model, image)
    with _inference(model), torch.no_grad():
        probabilities = _probabilities(model, model(x))
    if probabilities.dim() != 2:
        _class_scores(model, x, "explain")  # raises the "needs a classifier" message
    class_index = _class_index(class_index, probabilities)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # prepare_image already warned about this image once
        heat = chosen.compute(model, x, class_index=class_index, **options)
    names = model.metadata.get("class_names")
    name = str(names[class_index]) if isinstance(names, (list, tuple)) and class_index < len(names) else None
    return Explanation(method=method, map=heat, image=x[0].cpu().numpy(), class_index=class_index,
                       probability=float(probabilities[0, class_index]), class_name=name)

