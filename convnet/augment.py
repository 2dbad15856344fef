"""Data augmentation layers, as Keras's preprocessing layers: random in training, identity at inference.

They run batched on the model's device (every sample of a batch gets its own random flip, shift, angle
or erased rectangle in one vectorised operation), so augmentation costs no host work and no transfer.
Put them at the front of a model:

    >>> from convnet import augment, layers, models
    >>> model = models.Sequential([layers.Input(shape=(28, 28, 1)),
    ...                            augment.RandomFlip("horizontal"),
    ...                            augment.RandomTranslation(0.1, 0.1, fill_mode="constant"),
    ...                            layers.Conv2D(8, 3), layers.Flatten(), layers.Dense(10, activation="softmax")])
    >>> [type(layer).__name__ for layer in model.layers][:2]
    ['RandomFlip', 'RandomTranslation']

They take NHWC image batches only; anything else is refused with the expected shape.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from convnet._internal.checks import (
    check_choice,
    check_float,
    check_int,
    describe,
    shape_str,
)
from convnet._internal.kernels import to_nchw, to_nhwc
from convnet.layers import Geometry, Layer, Shape, register

_FILL_MODES = ("constant", "reflect", "nearest")
_GRID_PADDING = {"constant": "zeros", "reflect": "reflection", "nearest": "border"}


def _factor_range(name: str, factor: Any) -> tuple[float, float]:
    """Keras's factor rule: a number f gives (-f, f); a pair gives (lower, upper)."""
    if isinstance(factor, (Sequence, tuple)) and not isinstance(factor, str):
        if len(factor) != 2:
            raise ValueError(f"`{name}` must be a number or a (lower, upper) pair. Received: {name}={factor!r}")
        lower, upper = (check_float(name, v, minimum=-1.0, maximum=1.0) for v in factor)
        if lower > upper:
            raise ValueError(f"`{name}` lower bound must be <= upper bound. Received: {name}={factor!r}")
        return lower, upper
    value = check_float(name, factor, minimum=0.0, maximum=1.0)
    return -value, value


class _Augmentation(Layer):
    """Base: identity unless the layer is training (inside `fit`)."""

    input_ndim = 4

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.infer(x)
        return self.augment(x)

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _affine(x: torch.Tensor, theta: torch.Tensor, fill_mode: str, fill_value: float, interpolation: str) -> torch.Tensor:
    """Apply per-sample affine maps `theta` (N, 2, 3), in normalised coordinates, to NHWC images."""
    images = to_nchw(x)  # (N, H, W, C) -> (N, C, H, W), a channels_last view
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)  # (N, H, W, 2)
    out = F.grid_sample(images, grid, mode=interpolation, padding_mode=_GRID_PADDING[fill_mode], align_corners=False)
    if fill_mode == "constant" and fill_value != 0.0:
        inside = F.grid_sample(torch.ones_like(images[:, :1]), grid, mode="nearest", padding_mode="zeros",
                               align_corners=False)  # (N, 1, H, W): 1 where a pixel came from the image
        out = out + (1 - inside) * fill_value
    return to_nhwc(out)  # (N, C, H, W) -> (N, H, W, C)


@register
class RandomFlip(_Augmentation):
    """Flips each image with probability 1/2 per enabled direction: "horizontal", "vertical" or
    "horizontal_and_vertical" (Keras's default)."""

    def __init__(self, mode: str = "horizontal_and_vertical", **kwargs: Any):
        super().__init__(**kwargs)
        self.mode = check_choice("mode", mode, ("horizontal", "vertical", "horizontal_and_vertical"))

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if self.mode in ("horizontal", "horizontal_and_vertical"):
            flip = torch.rand(n, 1, 1, 1, device=x.device) < 0.5
            x = torch.where(flip, x.flip(2), x)
        if self.mode in ("vertical", "horizontal_and_vertical"):
            flip = torch.rand(n, 1, 1, 1, device=x.device) < 0.5
            x = torch.where(flip, x.flip(1), x)
        return x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


@register
class RandomTranslation(_Augmentation):
    """Shifts each image by a random fraction of its height and width: `height_factor=0.1` shifts by up to
    10% up or down. Uncovered pixels are filled by `fill_mode`: "reflect" (Keras's default), "constant"
    (`fill_value`) or "nearest"."""

    def __init__(self, height_factor: Any, width_factor: Any, fill_mode: str = "reflect",
                 interpolation: str = "bilinear", fill_value: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.height_factor = _factor_range("height_factor", height_factor)
        self.width_factor = _factor_range("width_factor", width_factor)
        self.fill_mode = check_choice("fill_mode", fill_mode, _FILL_MODES)
        self.interpolation = check_choice("interpolation", interpolation, ("bilinear", "nearest"))
        self.fill_value = check_float("fill_value", fill_value)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        (h_lo, h_hi), (w_lo, w_hi) = self.height_factor, self.width_factor
        dy = torch.rand(n, device=x.device) * (h_hi - h_lo) + h_lo  # fraction of the height
        dx = torch.rand(n, device=x.device) * (w_hi - w_lo) + w_lo
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        theta[:, 0, 2] = -2 * dx  # the grid samples the source: shift content right by dx -> sample at x - dx
        theta[:, 1, 2] = -2 * dy
        return _affine(x, theta, self.fill_mode, self.fill_value, self.interpolation)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "height_factor": list(self.height_factor),
                "width_factor": list(self.width_factor), "fill_mode": self.fill_mode,
                "interpolation": self.interpolation, "fill_value": self.fill_value}


@register
class RandomRotation(_Augmentation):
    """Rotates each image by a random angle: `factor=0.1` is up to 10% of a full turn (36 degrees) either
    way, as Keras."""

    def __init__(self, factor: Any, fill_mode: str = "reflect", interpolation: str = "bilinear",
                 fill_value: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.factor = _factor_range("factor", factor)
        self.fill_mode = check_choice("fill_mode", fill_mode, _FILL_MODES)
        self.interpolation = check_choice("interpolation", interpolation, ("bilinear", "nearest"))
        self.fill_value = check_float("fill_value", fill_value)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w = x.shape[:3]
        lower, upper = self.factor
        angle = (torch.rand(n, device=x.device) * (upper - lower) + lower) * 2 * math.pi
        cos, sin = torch.cos(angle), torch.sin(angle)
        aspect = h / w  # normalised coordinates stretch non-square images: undo it around the rotation
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * aspect
        theta[:, 1, 0], theta[:, 1, 1] = sin / aspect, cos
        return _affine(x, theta, self.fill_mode, self.fill_value, self.interpolation)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": list(self.factor), "fill_mode": self.fill_mode,
                "interpolation": self.interpolation, "fill_value": self.fill_value}


@register
class RandomCrop(_Augmentation):
    """Crops a random (height, width) window from each image in training, the centre one at inference."""

    def __init__(self, height: int, width: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.height = check_int("height", height, minimum=1)
        self.width = check_int("width", width, minimum=1)

    def build(self, input_shape: Shape) -> None:
        h, w = input_shape[:2]
        if (h is not None and h < self.height) or (w is not None and w < self.width):
            raise ValueError(f"{self.label}: the crop ({self.height}x{self.width}) is larger than the input "
                             f"{shape_str((None, *input_shape))}")

    def _offsets(self, x: torch.Tensor) -> tuple[int, int]:
        if x.shape[1] < self.height or x.shape[2] < self.width:
            self.build(tuple(x.shape[1:]))  # raises the message
        return x.shape[1] - self.height, x.shape[2] - self.width

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        spare_h, spare_w = self._offsets(x)
        top, left = spare_h // 2, spare_w // 2
        return x[:, top:top + self.height, left:left + self.width]

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        spare_h, spare_w = self._offsets(x)
        n = x.shape[0]
        top = torch.randint(0, spare_h + 1, (n, 1), device=x.device)
        left = torch.randint(0, spare_w + 1, (n, 1), device=x.device)
        rows = (top + torch.arange(self.height, device=x.device))[:, :, None]  # (N, h, 1)
        cols = (left + torch.arange(self.width, device=x.device))[:, None, :]  # (N, 1, w)
        return x[torch.arange(n, device=x.device)[:, None, None], rows, cols]  # (N, h, w, C)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (self.height, self.width, input_shape[-1])

    def geometry(self, input_shape: Shape) -> Geometry:
        h, w = input_shape[:2]
        top = 0 if h is None else (h - self.height) // 2
        left = 0 if w is None else (w - self.width) // 2
        return ((1, 1, -top), (1, 1, -left))  # the centre crop: a negative padding

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "height": self.height, "width": self.width}


@register
class RandomErasing(_Augmentation):
    """Erases a random rectangle of each image with probability `probability` (Zhong et al., 2017, as
    torchvision's RandomErasing): its area is a `scale` fraction of the image, its aspect ratio in `ratio`
    (sampled log-uniformly), its pixels set to `value`."""

    def __init__(self, probability: float = 0.5, scale: Sequence[float] = (0.02, 0.33),
                 ratio: Sequence[float] = (0.3, 3.3), value: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.probability = check_float("probability", probability, minimum=0.0, maximum=1.0)
        self.scale = self._pair("scale", scale, 0.0, 1.0)
        self.ratio = self._pair("ratio", ratio, 0.0, None)
        self.value = check_float("value", value)

    @staticmethod
    def _pair(name: str, value: Any, low: float, high: float | None) -> tuple[float, float]:
        if not isinstance(value, (Sequence, tuple)) or isinstance(value, str) or len(value) != 2:
            raise ValueError(f"`{name}` must be a (min, max) pair. Received: {name}={value!r}")
        a, b = (check_float(name, v, minimum=low, maximum=high, include_min=False) for v in value)
        if a > b:
            raise ValueError(f"`{name}` must be (min, max) with min <= max. Received: {name}={value!r}")
        return a, b

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w = x.shape[:3]
        device = x.device
        area = (torch.rand(n, device=device) * (self.scale[1] - self.scale[0]) + self.scale[0]) * h * w
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(torch.rand(n, device=device) * (log_hi - log_lo) + log_lo)
        eh = torch.sqrt(area * aspect).round().clamp(1, h)
        ew = torch.sqrt(area / aspect).round().clamp(1, w)
        top = (torch.rand(n, device=device) * (h - eh + 1)).floor()
        left = (torch.rand(n, device=device) * (w - ew + 1)).floor()
        rows = torch.arange(h, device=device)[None, :]
        cols = torch.arange(w, device=device)[None, :]
        in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])  # (N, H)
        in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])  # (N, W)
        chosen = (torch.rand(n, device=device) < self.probability)[:, None, None]
        mask = (in_rows[:, :, None] & in_cols[:, None, :] & chosen)[..., None]  # (N, H, W, 1)
        return torch.where(mask, torch.as_tensor(self.value, dtype=x.dtype, device=device), x)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "probability": self.probability, "scale": list(self.scale),
                "ratio": list(self.ratio), "value": self.value}


def tta_variants(tta: Any) -> list[str]:
    """Test-time augmentation: None, "hflip" (identity and horizontal flip) or "flips" (also the vertical
    and the double flip). Predictions are averaged over the variants."""
    if tta is None:
        return ["identity"]
    if tta == "hflip":
        return ["identity", "hflip"]
    if tta == "flips":
        return ["identity", "hflip", "vflip", "hvflip"]
    raise ValueError(f"`tta` must be None, 'hflip' or 'flips'. Received: tta={describe(tta)}")


def apply_variant(x: torch.Tensor, variant: str) -> torch.Tensor:
    """One deterministic TTA variant of an NHWC batch."""
    if variant == "hflip":
        return x.flip(2)
    if variant == "vflip":
        return x.flip(1)
    if variant == "hvflip":
        return x.flip(1).flip(2)
    return x


