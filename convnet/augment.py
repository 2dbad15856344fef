"""Data augmentation layers, as Keras 3's preprocessing layers: random in training, identity at inference
(RandomCrop takes the centre there).

They run batched on the model's device (every sample of a batch gets its own random flip, shift, angle
or erased rectangle in one vectorised operation; RandomCrop, as Keras's, crops a whole batch at one place),
so augmentation costs no host work and no transfer. Put them at the front of a model:

    >>> from convnet import augment, layers, models
    >>> model = models.Sequential([layers.Input(shape=(28, 28, 1)),
    ...                            augment.RandomFlip("horizontal"),
    ...                            augment.RandomTranslation(0.1, 0.1, fill_mode="constant"),
    ...                            layers.Conv2D(8, 3), layers.Flatten(), layers.Dense(10, activation="softmax")])
    >>> [type(layer).__name__ for layer in model.layers][:2]
    ['RandomFlip', 'RandomTranslation']

Each follows Keras 3's rule (keras/src/layers/preprocessing/image_preprocessing/): the same arguments and
distributions and, for a given shift or angle, the same pixels; `fill_mode` is "reflect", "wrap",
"constant" or "nearest", as Keras's affine transform. Keras's TensorFlow kernel departs from wrapping for
a shift of the image's size minus one or more (and does not interpolate across the seam); convnet wraps as
Keras documents it and as its JAX, PyTorch and NumPy backends compute it. `seed=` gives a layer its own
generator; without one, a layer draws from PyTorch's global generator, which `utils.set_random_seed` seeds.

They take NHWC image batches only; anything else is refused with the expected shape.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from convnet._internal.checks import (
    check_choice,
    check_float,
    check_int,
    describe,
)
from convnet._internal.kernels import to_nchw, to_nhwc
from convnet.layers import Geometry, Layer, Shape, register

_FILL_MODES = ("reflect", "wrap", "constant", "nearest")  # Keras 3's, in its order
_INTERPOLATIONS = ("bilinear", "nearest")
_GRID_PADDING = {"reflect": "reflection", "wrap": "border", "constant": "zeros", "nearest": "border"}


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


def _unit_range(name: str, value: Any) -> tuple[float, float]:
    """Keras's rule for RandomErasing's `factor` and `scale`: a number v in [0, 1] gives (0, v); a pair gives
    (min, max), both in [0, 1]."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise ValueError(f"`{name}` must be a number or a (min, max) pair. Received: {name}={value!r}")
        low, high = (check_float(name, v, minimum=0.0, maximum=1.0) for v in value)
        if low > high:
            raise ValueError(f"`{name}` must be (min, max) with min <= max. Received: {name}={value!r}")
        return low, high
    return 0.0, check_float(name, value, minimum=0.0, maximum=1.0)


class _Augmentation(Layer):
    """Base: identity unless the layer is training (inside `fit`). Random numbers come from the layer's own
    generator when it has a `seed`, else from PyTorch's global one (seeded by `utils.set_random_seed`)."""

    input_ndim = 4

    def __init__(self, seed: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.seed = None if seed is None else check_int("seed", seed, minimum=0, maximum=2**63 - 1)
        self._generators: dict[str, torch.Generator] = {}  # one per device, made on first use

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.infer(x)
        return self.augment(x)

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def generator(self, device: torch.device) -> torch.Generator | None:
        """The layer's generator on `device` (None without a seed: PyTorch's global generator is used)."""
        if self.seed is None:
            return None
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def uniform(self, shape: Sequence[int], device: torch.device, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        """Uniform float32 samples in [low, high), drawn on `device`."""
        u = torch.rand(tuple(shape), device=device, generator=self.generator(device))
        return u * (high - low) + low

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "seed": self.seed}


def _transform(x: torch.Tensor, matrix: torch.Tensor, fill_mode: str, fill_value: float,
               interpolation: str) -> torch.Tensor:
    """Keras's `affine_transform` for NHWC images: output pixel (row r, column c) of image i reads the input
    at column a0*c + a1*r + a2 and row b0*c + b1*r + b2, with matrix[i] = (a0, a1, a2, b0, b1, b2) in pixels,
    bilinear between the four pixels around that point (or the nearest one) on the image extended beyond its
    edges as `fill_mode` says: "reflect" mirrors it about the edge (d c b a | a b c d | d c b a), "wrap" tiles
    it (a b c d | a b c d), "nearest" repeats the edge pixel (a a a a | a b c d), "constant" is `fill_value`."""
    h, w = x.shape[1], x.shape[2]
    rows = torch.arange(h, device=x.device, dtype=torch.float32)[None, :, None]  # (1, H, 1)
    cols = torch.arange(w, device=x.device, dtype=torch.float32)[None, None, :]  # (1, 1, W)
    a0, a1, a2, b0, b1, b2 = (m[:, None, None] for m in matrix.float().unbind(1))  # each (N, 1, 1)
    source_cols = a0 * cols + a1 * rows + a2  # (N, H, W)
    source_rows = b0 * cols + b1 * rows + b2  # (N, H, W)
    images = to_nchw(x)  # (N, H, W, C) -> (N, C, H, W), a channels_last view
    if fill_mode == "wrap":  # one tile's coordinates, and the first row and column again after the last
        source_cols, source_rows = source_cols.remainder(w), source_rows.remainder(h)  # floor modulo
        images = torch.cat([images, images[:, :, :1]], dim=2)  # (N, C, H + 1, W)
        images = torch.cat([images, images[:, :, :, :1]], dim=3)  # (N, C, H + 1, W + 1)
    size_h, size_w = images.shape[2], images.shape[3]
    grid = torch.stack([(2 * source_cols + 1) / size_w - 1,
                        (2 * source_rows + 1) / size_h - 1], dim=-1).to(images.dtype)  # (N, H, W, 2), in [-1, 1]
    out = F.grid_sample(images, grid, mode=interpolation, padding_mode=_GRID_PADDING[fill_mode],
                        align_corners=False)  # (N, C, H, W)
    if fill_mode == "constant" and fill_value != 0.0:
        inside = F.grid_sample(torch.ones_like(images[:, :1]), grid, mode=interpolation, padding_mode="zeros",
                               align_corners=False)  # (N, 1, H, W): the weight the image's own pixels get
        out = out + (1 - inside) * fill_value
    return to_nhwc(out)  # (N, C, H, W) -> (N, H, W, C)


@register
class RandomFlip(_Augmentation):
    """Flips each image with probability 1/2, as Keras 3: `mode` "horizontal" (left-right), "vertical"
    (top-bottom) or "horizontal_and_vertical" (Keras's default). Keras draws once per image for both
    directions, so in that mode an image is either unchanged or turned 180 degrees, never flipped along one
    axis only.

        >>> import torch
        >>> x = torch.arange(4.0).reshape(1, 2, 2, 1)
        >>> out = RandomFlip(seed=0).train()(x)
        >>> torch.equal(out, x) or torch.equal(out, x.flip(1).flip(2))
        True
    """

    def __init__(self, mode: str = "horizontal_and_vertical", seed: int | None = None, **kwargs: Any):
        super().__init__(seed=seed, **kwargs)
        self.mode = check_choice("mode", mode, ("horizontal", "vertical", "horizontal_and_vertical"))

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        flip = self.uniform((x.shape[0], 1, 1, 1), x.device) <= 0.5  # (N, 1, 1, 1): Keras's one draw per image
        if self.mode != "vertical":
            x = torch.where(flip, x.flip(2), x)
        if self.mode != "horizontal":
            x = torch.where(flip, x.flip(1), x)
        return x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


@register
class RandomTranslation(_Augmentation):
    """Shifts each image by a random fraction of its height and width, as Keras 3: `height_factor=0.1`
    shifts by up to 10% of the height up or down (a pair gives (lower, upper)), in pixels
    `uniform(lower, upper) * H`, not rounded. Uncovered pixels are filled by `fill_mode`: "reflect" (Keras's
    default), "wrap", "constant" (`fill_value`) or "nearest"; `interpolation` is "bilinear" or "nearest"."""

    def __init__(self, height_factor: Any, width_factor: Any, fill_mode: str = "reflect",
                 interpolation: str = "bilinear", seed: int | None = None, fill_value: float = 0.0, **kwargs: Any):
        super().__init__(seed=seed, **kwargs)
        self.height_factor = _factor_range("height_factor", height_factor)
        self.width_factor = _factor_range("width_factor", width_factor)
        self.fill_mode = check_choice("fill_mode", fill_mode, _FILL_MODES)
        self.interpolation = check_choice("interpolation", interpolation, _INTERPOLATIONS)
        self.fill_value = check_float("fill_value", fill_value)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w = x.shape[:3]
        dy = self.uniform((n,), x.device, *self.height_factor) * h  # (N,) in pixels, down for dy > 0
        dx = self.uniform((n,), x.device, *self.width_factor) * w  # (N,) in pixels, right for dx > 0
        one, zero = torch.ones_like(dx), torch.zeros_like(dx)
        matrix = torch.stack([one, zero, -dx, zero, one, -dy], dim=1)  # (N, 6): pixel (r, c) reads (r - dy, c - dx)
        return _transform(x, matrix, self.fill_mode, self.fill_value, self.interpolation)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "height_factor": list(self.height_factor),
                "width_factor": list(self.width_factor), "fill_mode": self.fill_mode,
                "interpolation": self.interpolation, "fill_value": self.fill_value}


@register
class RandomRotation(_Augmentation):
    """Rotates each image about its centre by a random angle, as Keras 3: `factor=0.1` is up to 10% of a
    full turn (36 degrees) either way (a pair gives (lower, upper)). `fill_mode`, `fill_value` and
    `interpolation` as RandomTranslation's."""

    def __init__(self, factor: Any, fill_mode: str = "reflect", interpolation: str = "bilinear",
                 seed: int | None = None, fill_value: float = 0.0, **kwargs: Any):
        super().__init__(seed=seed, **kwargs)
        self.factor = _factor_range("factor", factor)
        self.fill_mode = check_choice("fill_mode", fill_mode, _FILL_MODES)
        self.interpolation = check_choice("interpolation", interpolation, _INTERPOLATIONS)
        self.fill_value = check_float("fill_value", fill_value)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w = x.shape[:3]
        angle = self.uniform((n,), x.device, *self.factor) * 2 * math.pi  # (N,) radians
        cos, sin = torch.cos(angle), torch.sin(angle)
        cx, cy = (w - 1) / 2, (h - 1) / 2  # the centre, in pixels, fixed by the map below
        matrix = torch.stack([cos, -sin, cx - cx * cos + cy * sin,
                              sin, cos, cy - cx * sin - cy * cos], dim=1)  # (N, 6), Keras's rotation matrix
        return _transform(x, matrix, self.fill_mode, self.fill_value, self.interpolation)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": list(self.factor), "fill_mode": self.fill_mode,
                "interpolation": self.interpolation, "fill_value": self.fill_value}


@register
class RandomCrop(_Augmentation):
    """Crops images to (height, width) as Keras 3's RandomCrop does in training, and to the centre at
    inference.

    Training, an input of H x W:
      - H > height and W > width: one random window, the same for the whole batch (as Keras's);
      - otherwise (a side equal to or smaller than the target), Keras's fallback, which draws nothing: the
        window of the target's size that starts where the centred window of the target's aspect ratio
        starts (top = (H - min(H, W * height // width)) // 2, likewise left), cut at the image's edges and
        resized (bilinear, as `tf.image.resize`) to height x width when it falls short. For an input at least
        as large as the target this is the centre crop.

    Inference: Keras 3 returns the input uncropped (its known bug: the output then contradicts the layer's
    output shape). convnet chooses the centre crop instead, top = (H - height) // 2 and left =
    (W - width) // 2 (keras.layers.CenterCrop's window), when both sides are at least the target, and the
    training fallback above when a side is smaller, so a small input gives the same output in both modes.
    Output shape: (N, height, width, C).

        >>> import torch
        >>> x = torch.arange(16.0).reshape(1, 4, 4, 1)
        >>> RandomCrop(2, 2)(x)[0, ..., 0]
        tensor([[ 5.,  6.],
                [ 9., 10.]])
    """

    def __init__(self, height: int, width: int, seed: int | None = None, **kwargs: Any):
        super().__init__(seed=seed, **kwargs)
        self.height = check_int("height", height, minimum=1)
        self.width = check_int("width", width, minimum=1)

    def _resized(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:3]) == (self.height, self.width):
            return x
        out = F.interpolate(to_nchw(x), size=(self.height, self.width), mode="bilinear", align_corners=False,
                            antialias=False)  # (N, C, height, width), tf.image.resize's half-pixel bilinear
        return to_nhwc(out)  # (N, C, h, w) -> (N, h, w, C)

    def _fallback(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1], x.shape[2]
        aspect_h = max(min(h, w * self.height // self.width), 1)  # the centred window of the target's aspect
        aspect_w = max(min(w, h * self.width // self.height), 1)
        top, left = (h - aspect_h) // 2, (w - aspect_w) // 2
        return self._resized(x[:, top:top + self.height, left:left + self.width])  # Keras cuts the target's size

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1], x.shape[2]
        if h < self.height or w < self.width:
            return self._fallback(x)
        top, left = (h - self.height) // 2, (w - self.width) // 2
        return x[:, top:top + self.height, left:left + self.width]

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1], x.shape[2]
        if h <= self.height or w <= self.width:
            return self._fallback(x)
        cpu = torch.device("cpu")  # drawn on the host: slicing takes ints, and a host draw needs no device sync
        top = int(torch.randint(h - self.height + 1, (), generator=self.generator(cpu)))
        left = int(torch.randint(w - self.width + 1, (), generator=self.generator(cpu)))
        return x[:, top:top + self.height, left:left + self.width]

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (self.height, self.width, input_shape[-1])

    def geometry(self, input_shape: Shape) -> Geometry | None:
        h, w = input_shape[:2]
        if (h is not None and h < self.height) or (w is not None and w < self.width):
            return None  # a resize: no whole-pixel receptive field
        top = 0 if h is None else (h - self.height) // 2
        left = 0 if w is None else (w - self.width) // 2
        return ((1, 1, -top), (1, 1, -left))  # the centre crop: a negative padding

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "height": self.height, "width": self.width}


@register
class RandomErasing(_Augmentation):
    """Erases a random rectangle of some images (Zhong et al., 2017), with Keras 3's arguments and rule.

    Args:
        factor: each image's erasing probability is drawn uniformly from `factor`: a pair (min, max), or a
            number f for (0, f). So, as Keras's code (its docstring says otherwise), `factor=1.0` erases half
            the images on average and `factor=(1.0, 1.0)` erases every image; `factor=0` none.
        scale: the rectangle's width and height are W * sqrt(u1) and H * sqrt(u2), with u1 and u2 drawn
            independently from `scale` (a pair, or a number s for (0, s)), so its area fraction sqrt(u1 * u2)
            lies within `scale`; its corner is uniform where it fits, and it covers the pixels whose
            indices fall in [corner, corner + size).
        fill_value: None for random values, Gaussian noise times `value_range[1]`, per pixel and channel;
            or a number, or one number per channel. Clipped to `value_range` either way.
        value_range: (low, high), the range of the input's pixel values; (0, 255) as Keras, (0, 1) for
            images scaled to [0, 1].
        seed: seeds the layer's own generator.
        probability: convnet's older spelling, kept: `probability=p` is `factor=(p, p)` (an exact
            probability).
        value: convnet's older spelling, kept: `value=v` is `fill_value=v`.

        >>> import torch
        >>> out = RandomErasing(factor=(1.0, 1.0), fill_value=0.0, seed=0).train()(torch.ones(2, 8, 8, 1))
        >>> bool((out == 0).any(dim=(1, 2, 3)).all())
        True
    """

    def __init__(self, factor: Any = 1.0, scale: Any = (0.02, 0.33), fill_value: Any = None,
                 value_range: Sequence[float] = (0, 255), seed: int | None = None, *,
                 probability: float | None = None, value: float | None = None, **kwargs: Any):
        super().__init__(seed=seed, **kwargs)
        if probability is not None:
            if not (isinstance(factor, (int, float)) and factor == 1.0):  # `factor` given too
                raise ValueError(f"`probability` is the older spelling of `factor`=(p, p); give one of them. "
                                 f"Received: factor={factor!r}, probability={probability!r}")
            probability = check_float("probability", probability, minimum=0.0, maximum=1.0)
            factor = (probability, probability)
        if value is not None:
            if fill_value is not None:
                raise ValueError(f"`value` is the older spelling of `fill_value`; give one of them. "
                                 f"Received: fill_value={fill_value!r}, value={value!r}")
            fill_value = value
        self.factor = _unit_range("factor", factor)
        self.scale = _unit_range("scale", scale)
        self.fill_value = self._check_fill_value(fill_value)
        self.value_range = self._check_value_range(value_range)

    @staticmethod
    def _check_fill_value(fill_value: Any) -> float | tuple[float, ...] | None:
        if fill_value is None:
            return None
        if isinstance(fill_value, Sequence) and not isinstance(fill_value, str):
            if len(fill_value) == 0:
                raise ValueError(f"`fill_value` must be None, a number or one number per channel. "
                                 f"Received: fill_value={fill_value!r}")
            return tuple(check_float("fill_value", v) for v in fill_value)
        if not isinstance(fill_value, numbers.Real) or isinstance(fill_value, bool):
            raise TypeError(f"`fill_value` must be None, a number or one number per channel. "
                            f"Received: fill_value={describe(fill_value)}")
        return check_float("fill_value", fill_value)

    @staticmethod
    def _check_value_range(value_range: Any) -> tuple[float, float]:
        if not isinstance(value_range, Sequence) or isinstance(value_range, str) or len(value_range) != 2:
            raise ValueError(f"`value_range` must be a (low, high) pair. Received: value_range={describe(value_range)}")
        low, high = (check_float("value_range", v) for v in value_range)
        if low >= high:
            raise ValueError(f"`value_range` must be (low, high) with low < high. Received: value_range={value_range!r}")
        return low, high

    def _check_channels(self, channels: int | None) -> None:
        if isinstance(self.fill_value, tuple) and channels is not None and len(self.fill_value) != channels:
            raise ValueError(f"{self.label}: `fill_value` gives {len(self.fill_value)} values, one per channel, but "
                             f"the images have {channels} channels. Received: fill_value={list(self.fill_value)}")

    def build(self, input_shape: Shape) -> None:
        self._check_channels(input_shape[-1])

    def _fill(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.value_range
        if self.fill_value is None:
            noise = torch.randn(tuple(x.shape), device=x.device, generator=self.generator(x.device))
            fill = noise * high  # Keras's rule: standard normal noise scaled by the range's top
        else:
            self._check_channels(x.shape[-1])
            fill = torch.as_tensor(self.fill_value, dtype=torch.float32, device=x.device)  # () or (C,)
        return fill.clamp(low, high).to(x.dtype)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w = x.shape[:3]
        device = x.device
        sides = torch.sqrt(self.uniform((n, 2), device, *self.scale))  # (N, 2): fractions of the width, height
        box_w, box_h = sides[:, 0] * w, sides[:, 1] * h  # (N,) in pixels, not rounded
        left = self.uniform((n,), device) * (w - box_w)  # (N,)
        top = self.uniform((n,), device) * (h - box_h)
        cols = torch.arange(w, device=device)[None, :]  # (1, W)
        rows = torch.arange(h, device=device)[None, :]  # (1, H)
        in_cols = (cols >= left[:, None]) & (cols < (left + box_w)[:, None])  # (N, W)
        in_rows = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])  # (N, H)
        chosen = self.uniform((n,), device) < self.uniform((n,), device, *self.factor)  # (N,): u < p, p in factor
        mask = (in_rows[:, :, None] & in_cols[:, None, :] & chosen[:, None, None])[..., None]  # (N, H, W, 1)
        return torch.where(mask, self._fill(x), x)

    def get_config(self) -> dict[str, Any]:
        fill = list(self.fill_value) if isinstance(self.fill_value, tuple) else self.fill_value
        return {**super().get_config(), "factor": list(self.factor), "scale": list(self.scale),
                "fill_value": fill, "value_range": list(self.value_range)}


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


