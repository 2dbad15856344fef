"""Figures from arrays: the building blocks every inspection plot uses, and the plots that need nothing but
arrays (an explanation map over its image, a grid of patches). `viz` builds its model-level plots on these;
`explain`'s results plot themselves with them. This module imports neither, so imports point one way:
figures <- explain <- viz.

Figures are made with Matplotlib's object API (no pyplot state, no window): `save_figure` writes one as a
PNG. Matplotlib is imported on first use, so importing this module stays light.

    >>> import numpy as np
    >>> figure = plot_saliency(np.zeros((8, 8, 1), np.float32), np.eye(8), title="a diagonal")
    >>> [ax.get_title() for ax in figure.axes[:2]], figure.get_suptitle()
    (['image', 'explanation'], 'a diagonal')
"""
from __future__ import annotations

import io
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from convnet._internal.checks import check_float, check_str, describe, shape_str, unknown_name
from convnet._internal.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["save_figure", "new_figure", "panels", "grid_shape", "suptitle", "show", "montage", "as_array",
           "displayable", "check_cmap", "plot_saliency", "plot_patches", "PANEL_INCHES", "FIGURE_DPI"]

PANEL_INCHES = 1.5  # side of one image panel in a grid
FIGURE_DPI = 100  # pixels per inch of the PNG files, unless a caller asks for another
CONSTRAINED_MAX_PANELS = 100  # larger grids get fixed spacing instead of constrained layout


def save_figure(figure: Figure, path: str, dpi: float = FIGURE_DPI) -> str:
    """Write `figure` to `path` as a PNG of `dpi` pixels per inch, atomically (a crash leaves no half file),
    and close it; returns `path`.

    Closing matters for figures that pyplot manages (`plt.figure()`, `plt.subplots()`), which pyplot keeps
    alive until closed; the figures convnet makes with the object API are freed once nothing refers to them.
    """
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    atomic_write(path, buffer.getvalue())
    pyplot = sys.modules.get("matplotlib.pyplot")  # only loaded if the caller uses pyplot: never import it here
    if pyplot is not None:
        pyplot.close(figure)  # a no-op for figures pyplot does not know
    return path


def new_figure(width: float, height: float, panels: int = 1) -> Figure:
    """A `width` x `height` inch figure: constrained layout, or fixed spacing for grids of more than
    CONSTRAINED_MAX_PANELS panels (constrained layout takes seconds on big grids)."""
    from matplotlib.figure import Figure
    if panels <= CONSTRAINED_MAX_PANELS:
        return Figure(figsize=(width, height), layout="constrained")
    figure = Figure(figsize=(width, height))
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.01, top=1 - 0.9 / height, wspace=0.1, hspace=0.35)
    return figure


def suptitle(figure: Figure, text: str) -> None:
    """A figure title; pinned near the top edge where fixed spacing leaves room for it (see new_figure)."""
    if figure.get_layout_engine() is None:
        figure.suptitle(text, y=1 - 0.1 / figure.get_figheight(), va="top")
    else:
        figure.suptitle(text)


def grid_shape(count: int, columns: int | None = None) -> tuple[int, int]:
    """(rows, columns) for `count` panels: ceil(sqrt(count)) columns unless given."""
    columns = columns or max(1, math.ceil(math.sqrt(count)))
    return math.ceil(count / columns), columns


def panels(count: int, columns: int | None = None, extra_height: float = 0.4) -> tuple[Figure, list[Axes]]:
    """A figure holding exactly `count` axes on a grid of ceil(sqrt(count)) columns, filled row by row,
    PANEL_INCHES per panel plus `extra_height` inches for the titles."""
    rows, columns = grid_shape(count, columns)
    figure = new_figure(columns * PANEL_INCHES, rows * PANEL_INCHES + extra_height, count)
    grid = figure.add_gridspec(rows, columns)
    return figure, [figure.add_subplot(grid[i // columns, i % columns]) for i in range(count)]


def show(ax: Axes, image: np.ndarray, cmap: Any = "gray", **kwargs: Any) -> None:
    """`image` on `ax` without ticks; `cmap` applies to one-channel (H, W) images only."""
    ax.imshow(image, cmap=cmap if image.ndim == 2 else None, **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])


def montage(ax: Axes, images: np.ndarray, row_labels: Sequence[str] | None = None,
            column_labels: Sequence[str] | None = None, title: str | None = None) -> None:
    """A grid of gray images (rows, columns, h, w) drawn as one picture with 1-pixel gaps, labelled on the
    axes: one imshow instead of one axes per image, much faster to lay out."""
    rows, columns, h, w = images.shape
    low, high = float(images.min()), float(images.max())
    canvas = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1), high)  # gaps take the lightest value
    for r in range(rows):
        for c in range(columns):
            canvas[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = images[r, c]
    ax.imshow(canvas, cmap="gray", vmin=low, vmax=high)
    ax.set_yticks([r * (h + 1) + h / 2 for r in range(rows)] if row_labels else [], row_labels or [], fontsize=7)
    ax.set_xticks([c * (w + 1) + w / 2 for c in range(columns)] if column_labels else [], column_labels or [],
                  fontsize=7)
    ax.tick_params(length=0)
    if title:
        ax.set_title(title, fontsize=8)


def as_array(name: str, value: Any) -> np.ndarray:
    """`value` (a NumPy array, a list or a tensor on any device) as a NumPy array of real numbers; tensors of
    a floating dtype become float32. TypeError naming `name` otherwise."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.is_complex():
            raise TypeError(f"`{name}` must hold real numbers. Received: {name}={describe(value)}")
        return value.float().numpy() if value.is_floating_point() else value.numpy()
    if isinstance(value, (np.ndarray, list, tuple)):
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"`{name}` must hold numbers. Received: {name}={describe(array)}")
        return array
    raise TypeError(f"`{name}` must be a NumPy array or a torch.Tensor. Received: {name}={describe(value)}")


def displayable(name: str, image: Any) -> np.ndarray:
    """An image for imshow: (H, W) for one channel, (H, W, 3) in [0, 1] for colour. Accepts (H, W),
    (H, W, 1|3) and (1, H, W, 1|3); uint8 is divided by 255, colour floats outside [0, 1] are min-max scaled
    (imshow scales one channel itself)."""
    array = as_array(name, image)
    received = array.shape
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]  # (1, H, W, C) -> (H, W, C)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]  # (H, W, 1) -> (H, W)
    if array.ndim == 2 and min(array.shape) > 0:
        return array.astype(np.float32) / (255 if array.dtype == np.uint8 else 1)
    if array.ndim != 3 or array.shape[2] != 3 or min(array.shape) == 0:
        raise ValueError(f"`{name}` must be an image (H, W), (H, W, 1) or (H, W, 3). Received shape "
                         f"{shape_str(received)}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255
    array = array.astype(np.float32)
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 1:
        array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return array


def check_cmap(cmap: Any) -> Any:
    """A Matplotlib colormap object, or the name of a registered one (ValueError with close matches)."""
    from matplotlib import colormaps
    from matplotlib.colors import Colormap
    if isinstance(cmap, Colormap):
        return cmap
    check_str("cmap", cmap)
    if cmap not in colormaps:
        raise unknown_name("colormap", cmap, list(colormaps), argument="cmap")
    return cmap


def plot_saliency(image: Any, saliency_map: Any, alpha: float = 0.5, cmap: Any = "jet",
                  title: str | None = None) -> Figure:
    """An explanation map next to, and over, the image it explains (what `Explanation.plot()` shows).

    Args:
        image: (H, W), (H, W, 1|3) or (1, H, W, 1|3).
        saliency_map: (H, W), e.g. from `convnet.explain`; scaled to its own min..max for display.
        alpha: opacity of the map over the image, in [0, 1].
        cmap: the map's colormap.
        title: a title over both panels.

    Returns:
        A Figure with two axes: the image, and the image with the map overlaid (and a colour bar).
    """
    alpha = check_float("alpha", alpha, minimum=0.0, maximum=1.0)
    cmap = check_cmap(cmap)
    picture = displayable("image", image)
    heat = as_array("saliency_map", saliency_map).astype(np.float32)
    if heat.ndim == 3 and heat.shape[0] == 1:
        heat = heat[0]  # (1, H, W) -> (H, W)
    if heat.shape != picture.shape[:2]:
        raise ValueError(f"`saliency_map` must be (H, W) = {shape_str(picture.shape[:2])}, the image's size. "
                         f"Received shape {shape_str(np.shape(saliency_map))}")
    low, high = float(heat.min()), float(heat.max())
    scaled = (heat - low) / (high - low) if high > low else np.zeros_like(heat)
    figure = new_figure(7, 3.6)
    left, right = figure.subplots(1, 2)
    show(left, picture)
    left.set_title("image")
    show(right, picture)
    overlay = right.imshow(scaled, cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    right.set_title("explanation")
    figure.colorbar(overlay, ax=right, fraction=0.046)
    if title is not None:
        figure.suptitle(check_str("title", title))
    return figure


def plot_patches(patches: Any, titles: Sequence[str], title: str, cmap: Any = "gray") -> Figure:
    """Image patches (k, h, w, C) on a grid of ceil(sqrt(k)) columns, in order, each with its title
    (what `TopActivations.plot()` shows)."""
    cmap = check_cmap(cmap)
    array = as_array("patches", patches)
    if array.ndim != 4 or array.shape[0] == 0 or array.shape[0] != len(titles):
        raise ValueError(f"`patches` must be (k, h, w, C) with one title each (k = {len(titles)}). Received shape "
                         f"{shape_str(array.shape)}")
    figure, axes = panels(array.shape[0], extra_height=0.6)
    for ax, patch, text in zip(axes, array, titles):
        show(ax, displayable("patches", patch), cmap=cmap)
        ax.set_title(text, fontsize=7)
    suptitle(figure, title)
    return figure
