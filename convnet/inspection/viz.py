"""Plots for seeing inside a CNN: feature maps, filters, training curves, confusion matrices, mistakes,
explanation overlays, receptive fields and the patches a filter likes best.

Every function returns a `matplotlib.figure.Figure` built with the object API (no pyplot state, nothing
shown): save it with `fig.savefig("maps.png")` (or `figures.save_figure(fig, "maps.png")`), or let Jupyter
display it. Matplotlib is imported on first use. The plots that need only arrays (`plot_saliency`, the patch
grid) and the shared building blocks live in `convnet.inspection.figures`; this module adds the plots that
look at a model, and re-exports `plot_saliency`. `convnet.viz` is a shortcut for this module.

    >>> import numpy as np
    >>> from convnet import nn, viz
    >>> image = np.zeros((1, 16, 16, 1), np.float32); image[0, :, 8, 0] = 1   # a vertical line
    >>> filters = np.zeros((7, 7, 1, 2), np.float32)
    >>> filters[:, 3, :, 0] = 1   # vertical-line detector, as in the seed
    >>> filters[3, :, :, 1] = 1   # horizontal-line detector
    >>> fig = viz.plot_feature_maps(nn.conv2d(image, filters, strides=1, padding="SAME"))
    >>> [ax.get_title() for ax in fig.axes]
    ['output / map 0', 'output / map 1']

Images for a model are taken as the model takes them (already scaled, e.g. pixels / 255 for a model
trained so); see `convnet.explain` for the conversions (channels, size) made with a warning. A model is any
built convnet model, a `Sequential` or a functional `Model`; layers are named as `convnet.explain` names them,
a layer inside a nested model by its path ("backbone/conv2d"), which the titles show.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from convnet._internal.checks import check_bool, check_int, check_str, describe, shape_str
from convnet.inspection import explain as explain_module
from convnet.inspection.figures import (
    PANEL_INCHES,
    as_array,
    check_cmap,
    displayable,
    grid_shape,
    new_figure,
    panels,
    plot_saliency,
    show,
    suptitle,
)
from convnet.models.model import sample_shape

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from convnet.inspection.explain import TopActivations
    from convnet.models.model import Model

__all__ = ["plot_feature_maps", "plot_filters", "plot_history", "plot_confusion_matrix", "plot_misclassified",
           "plot_saliency", "plot_receptive_field", "plot_top_activations", "confusion_matrix"]

def plot_feature_maps(model_or_maps: Any, image: Any = None, layer: Any = None, max_maps: int = 64,
                      cmap: Any = "gray") -> Figure:
    """The feature maps of one layer, or of every Conv2D layer, for one image.

    Args:
        model_or_maps: a built one-input model (Sequential or functional), or maps computed already: the
            output of `convnet.nn.conv2d` (or of a layer) for one image, (1, H, W, C) or (H, W, C), a tensor or
            an array.
        image: with a model, one image (H, W, C) or (1, H, W, C), uint8 or float, *as the model takes it*
            (already scaled if the model was trained on scaled pixels); channels and size are converted
            with a warning when they differ. None with maps.
        layer: with a model, a layer (name or path, index or object; its output must be (h, w, K)) or a list
            of them; default: every Conv2D layer, nested models' included. Each layer starts a new row. With
            maps, the name shown in the titles.
        max_maps: show the first `max_maps` maps of each layer, 1..1024.
        cmap: a Matplotlib colormap name or object.

    Returns:
        A Figure with one panel per map, titled "layer / map i", on ceil(sqrt(n)) columns (n being the
        largest number of maps shown for one layer).

    Raises:
        ValueError: an unknown layer (with the model's layer names), a layer without (h, w, K) output (with
            those that qualify), maps of another shape, `max_maps` out of range.
        TypeError: arguments of the wrong type.
    """
    from convnet.models.model import Model

    max_maps = check_int("max_maps", max_maps, minimum=1, maximum=1024)
    cmap = check_cmap(cmap)
    if isinstance(model_or_maps, Model):
        if image is None:
            raise ValueError("plot_feature_maps: `image` is required with a model: one image (H, W, C) as the "
                             "model takes it")
        maps = explain_module.feature_maps(model_or_maps, image, layer)
        title = f"Feature maps of {model_or_maps.name}"
    else:
        if image is not None:
            raise ValueError("plot_feature_maps: pass `image` only with a model; `model_or_maps` holds maps "
                             "already. Received: image=" + describe(image))
        array = as_array("model_or_maps", model_or_maps).astype(np.float32)
        if array.ndim == 4 and array.shape[0] == 1:
            array = array[0]  # (1, H, W, C) -> (H, W, C)
        if array.ndim != 3 or min(array.shape) == 0:
            hint = "; pick one image with maps[i:i + 1]" if array.ndim == 4 else (
                "; add a channel axis with maps[:, :, None]" if array.ndim == 2 else "")
            raise ValueError(f"`model_or_maps` must be a convnet model or the maps of one image, (1, H, W, C) "
                             f"or (H, W, C). Received shape {shape_str(np.shape(model_or_maps))}{hint}")
        name = "output" if layer is None else check_str("layer", layer)
        maps = {name: array}
        title = "Feature maps"
    shown = {name: min(array.shape[-1], max_maps) for name, array in maps.items()}
    columns = grid_shape(max(shown.values()))[1]
    rows = sum(math.ceil(count / columns) for count in shown.values())
    figure = new_figure(columns * PANEL_INCHES, rows * PANEL_INCHES + 0.4, sum(shown.values()))
    grid = figure.add_gridspec(rows, columns)
    row = 0
    for name, array in maps.items():
        for i in range(shown[name]):
            ax = figure.add_subplot(grid[row + i // columns, i % columns])
            show(ax, array[:, :, i], cmap=cmap)
            ax.set_title(f"{name} / map {i}", fontsize=7)
        row += math.ceil(shown[name] / columns)
    cut = [f"{name}: {shown[name]} of {array.shape[-1]}" for name, array in maps.items()
           if shown[name] < array.shape[-1]]
    suptitle(figure, title + (f"\n(first maps only; {', '.join(cut)})" if cut else ""))
    return figure


def plot_filters(model: Model, layer: Any = None, max_filters: int | None = None,
                 max_channels: int = 16) -> Figure:
    """The kernels of a Conv2D layer.

    A layer reading 1 channel, or the first Conv2D of a model taking 3-channel images, shows each filter
    as one image (gray, or RGB), normalised to its own min..max; up to `max_filters` (default 64) panels
    titled "filter i". Other layers show a grid of 2-D kernel slices: one row per filter (up to
    `max_filters`, default 16), one column per input channel (up to `max_channels`), each row normalised
    jointly; the title gives the limits.

    Args:
        model: a built model (Sequential or functional; several inputs are fine, the kernels need none).
        layer: a Conv2D layer (name or path, index or object); default: the first Conv2D.
        max_filters: 1..1024, or None for the defaults above.
        max_channels: 1..256.

    Raises:
        ValueError: an unknown layer, or one that is not a Conv2D (the message lists the Conv2D layers).
    """
    model = explain_module.check_model(model, one_input=False)
    if max_filters is not None:
        max_filters = check_int("max_filters", max_filters, minimum=1, maximum=1024)
    max_channels = check_int("max_channels", max_channels, minimum=1, maximum=256)
    if layer is None:
        target = explain_module.conv_layers(model, "plot_filters")[0]  # raises when the model has none
    else:
        target = explain_module.resolve_layer(model, layer, need="conv", op="plot_filters")
    kernel = target.get_weights()[0]  # (kh, kw, C_in / groups, C_out), Keras layout
    kh, kw, c_in, c_out = kernel.shape
    low = kernel.min(axis=(0, 1, 2), keepdims=True)  # per filter: (1, 1, 1, C_out)
    span = kernel.max(axis=(0, 1, 2), keepdims=True) - low
    normalised = np.where(span > 0, (kernel - low) / np.where(span > 0, span, 1), 0.5)  # each filter in [0, 1]
    first = explain_module.conv_layers(model, "plot_filters")[0]
    rgb = c_in == 3 and target is first and len(model.inputs) == 1 and (sample_shape(model) or ())[-1:] == (3,)
    name = explain_module.layer_path(model, target)
    if c_in == 1 or rgb:
        count = min(c_out, max_filters or 64)
        figure, axes = panels(count)
        for i, ax in enumerate(axes):
            image = normalised[:, :, :, i] if rgb else normalised[:, :, 0, i]  # (kh, kw, 3) or (kh, kw)
            show(ax, image, vmin=0, vmax=1)
            ax.set_title(f"filter {i}", fontsize=7)
        suptitle(figure, f"{name}: {count} of {c_out} filters ({kh}x{kw}x{c_in})")
        return figure
    rows, columns = min(c_out, max_filters or 16), min(c_in, max_channels)
    figure, axes = panels(rows * columns, columns=columns, extra_height=0.6)
    for index, ax in enumerate(axes):
        i, j = divmod(index, columns)
        show(ax, normalised[:, :, j, i], vmin=0, vmax=1)
        if i == 0:
            ax.set_title(f"in {j}", fontsize=7)
        if j == 0:
            ax.set_ylabel(f"filter {i}", fontsize=7)
    suptitle(figure, f"{name}: filters 0-{rows - 1} of {c_out} (rows) x input channels 0-{columns - 1} "
                    f"of {c_in} (columns), {kh}x{kw}; each filter normalised")
    return figure


def _history_dict(history: Any) -> dict[str, list[float]]:
    data = getattr(history, "history", history)
    if not isinstance(data, Mapping):
        raise TypeError(f"`history` must be a History (what fit returns) or its .history dict. "
                        f"Received: history={describe(history)}")
    if not data:
        raise ValueError("`history` is empty: nothing was recorded (did fit run for at least one epoch?)")
    curves: dict[str, list[float]] = {}
    for key, values in data.items():
        if not isinstance(key, str):
            raise TypeError(f"`history` keys must be metric names. Received key {key!r}")
        array = np.asarray(values, dtype=object)
        if array.ndim != 1 or len(array) == 0 or not all(isinstance(v, (int, float, np.number)) for v in array):
            raise ValueError(f"`history[{key!r}]` must be a non-empty list of numbers, one per epoch. "
                             f"Received: {describe(values)}")
        curves[key] = [float(v) for v in array]
    lengths = {len(values) for values in curves.values()}
    if len(lengths) > 1:
        raise ValueError(f"`history` lists must all have one value per epoch. Received lengths "
                         f"{ {key: len(values) for key, values in curves.items()} }")
    return curves


def plot_history(history: Any) -> Figure:
    """Learning curves: loss (training and validation) on the left axes, accuracy (or the first other metric)
    on the right one, against the epoch (1-based).

    Args:
        history: what `model.fit` returns, or its `.history` dict {"loss": [...], "val_loss": [...], ...}.

    Raises:
        TypeError: not a History or a dict.
        ValueError: empty lists, lists of different lengths, or neither a loss nor a metric to plot.
    """
    from matplotlib.ticker import MaxNLocator

    curves = _history_dict(history)
    bases = [key for key in curves if not key.startswith("val_") and key not in ("lr", "learning_rate")]
    metrics = ["loss"] if "loss" in bases else []
    others = ["accuracy"] if "accuracy" in bases else [key for key in bases if key != "loss"][:1]
    metrics += others
    if not metrics:
        raise ValueError(f"`history` has no loss or metric to plot. Received keys: {', '.join(curves)}")
    figure = new_figure(5 * len(metrics), 3.6)
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    epochs = np.arange(1, len(next(iter(curves.values()))) + 1)
    marker = "o" if len(epochs) <= 30 else None
    for ax, metric in zip(axes, metrics):
        ax.plot(epochs, curves[metric], marker=marker, label="training")
        if f"val_{metric}" in curves:
            ax.plot(epochs, curves[f"val_{metric}"], marker=marker, label="validation")
        ax.set_title(metric.replace("_", " ").capitalize())
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
        ax.legend()
    return figure


def _labels(name: str, values: Any) -> np.ndarray:
    """Class indices (N,) from indices, (N, 1) or scores/one-hot rows (N, K) (their argmax)."""
    array = as_array(name, values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    elif array.ndim == 2:
        array = array.argmax(axis=1)
    if array.ndim != 1 or array.shape[0] == 0:
        raise ValueError(f"`{name}` must hold class indices (N,) or class scores (N, K) for N >= 1 samples. "
                         f"Received shape {shape_str(np.shape(values))}")
    if array.dtype.kind == "f" and not np.all(array == np.round(array)):
        raise ValueError(f"`{name}` must hold integer class indices. Received non-integer values such as "
                         f"{array[array != np.round(array)][0]}")
    array = array.astype(np.int64)
    if array.min() < 0:
        raise ValueError(f"`{name}` holds a negative class index ({array.min()})")
    return array


def _class_names(class_names: Any, count: int | None) -> list[str] | None:
    if class_names is None:
        return None
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise TypeError(f"`class_names` must be a list of strings. Received: class_names={describe(class_names)}")
    names = [str(name) for name in class_names]
    if count is not None and count > len(names):
        raise ValueError(f"`class_names` has {len(names)} names but the labels go up to {count - 1}")
    return names


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int | None = None) -> np.ndarray:
    """Counts (K, K): entry [i, j] is the number of samples of true class i predicted as j.

        >>> confusion_matrix([0, 1, 1, 2], [0, 2, 1, 2]).tolist()
        [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    """
    truth, predicted = _labels("y_true", y_true), _labels("y_pred", y_pred)
    if truth.shape[0] != predicted.shape[0]:
        raise ValueError(f"`y_true` and `y_pred` must have the same number of samples: y_true has "
                         f"{truth.shape[0]}, y_pred has {predicted.shape[0]}")
    needed = int(max(truth.max(), predicted.max())) + 1
    classes = needed if num_classes is None else check_int("num_classes", num_classes, minimum=1)
    if classes < needed:
        raise ValueError(f"the labels go up to {needed - 1} but `num_classes` is {classes}")
    counts = np.zeros((classes, classes), np.int64)
    np.add.at(counts, (truth, predicted), 1)
    return counts


def plot_confusion_matrix(y_true: Any, y_pred: Any, class_names: Sequence[str] | None = None,
                          normalize: bool = True) -> Figure:
    """The confusion matrix as an image, rows = true class, columns = predicted class, with a colour bar.

    Args:
        y_true: class indices (N,), or one-hot rows (N, K).
        y_pred: class indices (N,), or probabilities (N, K) (their argmax is the prediction).
        class_names: names for the K classes (K = len(class_names); otherwise the largest label + 1).
        normalize: divide each row by its count, so the diagonal is the recall of each class.

    Returns:
        A Figure with the matrix's axes (cells annotated when K <= 20) and a colour-bar axes.
    """
    normalize = check_bool("normalize", normalize)
    truth, predicted = _labels("y_true", y_true), _labels("y_pred", y_pred)
    needed = int(max(truth.max(), predicted.max())) + 1
    names = _class_names(class_names, needed)
    counts = confusion_matrix(truth, predicted, len(names) if names else None)
    classes = counts.shape[0]
    if normalize:
        totals = counts.sum(axis=1, keepdims=True)
        matrix = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)  # rows with no samples: 0
    else:
        matrix = counts.astype(np.float64)
    side = max(4.0, 0.45 * classes + 2)
    figure = new_figure(side + 1, side)
    ax = figure.add_subplot()
    picture = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    figure.colorbar(picture, ax=ax, fraction=0.046)
    labels = names or [str(i) for i in range(classes)]
    ax.set_xticks(range(classes), labels, rotation=45 if names else 0, ha="right" if names else "center")
    ax.set_yticks(range(classes), labels)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    if classes <= 20:
        threshold = matrix.max() / 2
        for i in range(classes):
            for j in range(classes):
                text = f"{matrix[i, j]:.2f}" if normalize else f"{counts[i, j]:d}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if matrix[i, j] > threshold else "black")
    accuracy = np.trace(counts) / counts.sum()
    ax.set_title(f"Confusion matrix{' (each row normalised)' if normalize else ''}; accuracy {accuracy:.2%}")
    return figure


def plot_misclassified(images: Any, y_true: Any, y_pred: Any, class_names: Sequence[str] | None = None,
                       max_images: int = 25, probabilities: Any = None) -> Figure:
    """The misclassified images, titled "pred: X (p%)" and "true: Y".

    Args:
        images: (N, H, W), (N, H, W, 1) or (N, H, W, 3), uint8 or float.
        y_true: class indices (N,) (or one-hot rows).
        y_pred: class indices (N,), or probabilities (N, K), which then also serve as `probabilities`.
        class_names: names for the classes.
        max_images: show at most this many, 1..1024.
        probabilities: (N, K) class probabilities; when known, the most confident mistakes come first and
            titles give the confidence. Otherwise mistakes come in dataset order.

    Returns:
        A Figure with one panel per mistake shown (ceil(sqrt) columns), or one empty panel saying that
        there is none.
    """
    max_images = check_int("max_images", max_images, minimum=1, maximum=1024)
    pixels = as_array("images", images)
    if pixels.ndim == 3:
        pixels = pixels[..., None]  # (N, H, W) -> (N, H, W, 1)
    if pixels.ndim != 4 or pixels.shape[-1] not in (1, 3) or min(pixels.shape) == 0:
        raise ValueError(f"`images` must be (N, H, W), (N, H, W, 1) or (N, H, W, 3). Received shape "
                         f"{shape_str(np.shape(images))}")
    truth, predicted = _labels("y_true", y_true), _labels("y_pred", y_pred)
    if probabilities is None and np.ndim(y_pred) == 2 and np.shape(y_pred)[1] > 1:
        probabilities = y_pred
    for name, labels in (("y_true", truth), ("y_pred", predicted)):
        if labels.shape[0] != pixels.shape[0]:
            raise ValueError(f"`images` and `{name}` must have the same number of samples: images has "
                             f"{pixels.shape[0]}, {name} has {labels.shape[0]}")
    confidence = None
    if probabilities is not None:
        scores = as_array("probabilities", probabilities).astype(np.float64)
        if scores.ndim != 2 or scores.shape[0] != pixels.shape[0] or scores.shape[1] <= predicted.max():
            raise ValueError(f"`probabilities` must be (N, K) with N = {pixels.shape[0]} and K > {predicted.max()}. "
                             f"Received shape {shape_str(scores.shape)}")
        confidence = scores[np.arange(len(predicted)), predicted]  # (N,) probability of the predicted class
    names = _class_names(class_names, int(max(truth.max(), predicted.max())) + 1)
    wrong = np.flatnonzero(truth != predicted)
    if confidence is not None:
        wrong = wrong[np.argsort(-confidence[wrong], kind="stable")]  # most confident mistakes first
    shown = wrong[:max_images]
    if len(shown) == 0:
        figure, (ax,) = panels(1)
        ax.axis("off")
        ax.text(0.5, 0.5, f"No misclassified images\n({len(truth)} of {len(truth)} correct)", ha="center",
                va="center", transform=ax.transAxes)
        return figure
    figure, axes = panels(len(shown), extra_height=0.3 + 0.25 * grid_shape(len(shown))[0])
    label = (lambda i: names[i]) if names else str
    for ax, index in zip(axes, shown):
        show(ax, displayable("images", pixels[index]))
        p = "" if confidence is None else f" ({confidence[index]:.0%})"
        ax.set_title(f"pred: {label(predicted[index])}{p}\ntrue: {label(truth[index])}", fontsize=7)
    suptitle(figure, f"{len(wrong)} of {len(truth)} misclassified; showing {len(shown)}")
    return figure


def plot_receptive_field(model: Model, layer: Any, position: Sequence[int] | None = None,
                         image: Any = None) -> Figure:
    """The input pixels one unit of `layer` sees, drawn as a rectangle on the image (or on a blank input).

    Args:
        model: a built one-input model (Sequential or functional).
        layer: a layer with (h, w, K) outputs (name or path, index or object).
        position: (row, col) of the unit in the layer's output; default: the centre.
        image: drawn underneath, (H, W, C) of the model's input size; default: a blank input.

    Returns:
        A Figure with one axes; the rectangle is the field, clipped to the image when it reaches the padding.
    """
    model = explain_module.check_model(model)
    target = explain_module.resolve_layer(model, layer, op="plot_receptive_field")
    name = explain_module.layer_path(model, target)
    out_h, out_w = explain_module.layer_rows(model)[name]["output_shape"][1:3]
    position = (out_h // 2, out_w // 2) if position is None else position
    top, left, bottom, right = explain_module.receptive_field_box(model, target, position)
    height, width = (sample_shape(model) or (0, 0))[:2]  # check_model: the model is built, so never (0, 0)
    picture = np.zeros((height, width), np.float32) if image is None else displayable("image", image)
    if picture.shape[:2] != (height, width):
        raise ValueError(f"`image` must have the model's input size {height}x{width}. Received shape "
                         f"{shape_str(np.shape(image))}")
    from matplotlib.patches import Rectangle
    figure = new_figure(4, 4.4)
    ax = figure.add_subplot()
    show(ax, picture, vmin=0 if image is None else None, vmax=1 if image is None else None)
    clip_top, clip_left = max(top, 0), max(left, 0)
    clip_bottom, clip_right = min(bottom, height), min(right, width)
    ax.add_patch(Rectangle((clip_left - 0.5, clip_top - 0.5), clip_right - clip_left, clip_bottom - clip_top,
                           fill=False, edgecolor="red", linewidth=2))
    ax.set_title(f"{name} unit {tuple(int(p) for p in position)}: {bottom - top}x{right - left} field\n"
                 f"rows {top}..{bottom - 1}, columns {left}..{right - 1}", fontsize=9)
    return figure


def plot_top_activations(result: TopActivations, cmap: Any = "gray") -> Figure:
    """The patches of `convnet.explain.top_activations`, best first, titled with rank, image index and score
    (the same figure as `result.plot()`)."""
    if not isinstance(result, explain_module.TopActivations):
        raise TypeError(f"`result` must be what explain.top_activations returns. Received: result={describe(result)}")
    return result.plot(cmap=cmap)
