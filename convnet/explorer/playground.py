"""The seed's playground: one k x k kernel applied with `convnet.nn.conv2d` to an image (the seed's sample photo
by default), with a stride and "SAME" or "VALID" padding, and the output-size formula (TensorFlow's rule).

The kernel is applied to every channel of the image and the results summed, as the seed's line filters are
(`filters[:, 3, :, 0] = 1` fills the middle column of every input channel); the image is scaled by 1/255 first,
as the seed scales it.

    >>> import numpy as np
    >>> image = np.zeros((9, 9, 1), np.uint8); image[:, 4] = 255   # a vertical line
    >>> result = apply_kernel(image, preset_kernel("vertical"), stride=2, padding="VALID")
    >>> result.output.shape, result.formula["height"]
    ((2, 2), 'ceil((9 - 7 + 1) / 2) = 2')
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from convnet._internal.checks import check_choice, check_int, describe

__all__ = ["apply_kernel", "preset_kernel", "output_size", "PlaygroundResult", "KERNEL_SIZE", "PRESETS",
           "MAX_STRIDE"]

KERNEL_SIZE = 7  # the seed's filters are 7x7
MAX_STRIDE = KERNEL_SIZE  # a larger stride skips pixels no kernel position sees
PRESETS = ("vertical", "horizontal")  # the seed's two filters: a line of ones through the middle column or row


def preset_kernel(name: str) -> np.ndarray:
    """The seed's filter `name` ("vertical" or "horizontal") as a float32 (7, 7) kernel."""
    name = check_choice("preset", name, PRESETS, kind="kernel preset")
    kernel = np.zeros((KERNEL_SIZE, KERNEL_SIZE), np.float32)
    if name == "vertical":
        kernel[:, KERNEL_SIZE // 2] = 1  # the seed's filters[:, 3, :, 0] = 1
    else:
        kernel[KERNEL_SIZE // 2, :] = 1  # the seed's filters[3, :, :, 1] = 1
    return kernel


def output_size(size: int, kernel: int, stride: int, padding: str) -> tuple[int, str]:
    """(output size, the formula with the numbers) along one axis, TensorFlow's rule: "SAME" gives
    ceil(in / s), "VALID" ceil((in - k + 1) / s).

        >>> output_size(427, 7, 2, "SAME")
        (214, 'ceil(427 / 2) = 214')
    """
    size, kernel = check_int("size", size, minimum=1), check_int("kernel", kernel, minimum=1)
    stride = check_int("stride", stride, minimum=1)
    padding = check_choice("padding", padding, ("SAME", "VALID")).upper()
    if padding == "SAME":
        out = math.ceil(size / stride)
        return out, f"ceil({size} / {stride}) = {out}"
    out = max(math.ceil((size - kernel + 1) / stride), 0)
    return out, f"ceil(({size} - {kernel} + 1) / {stride}) = {out}"


@dataclasses.dataclass
class PlaygroundResult:
    output: np.ndarray  # float32 (H', W')
    formula: dict[str, str]  # {"height": "ceil(427 / 2) = 214", "width": ...}
    padding: str
    stride: int


def _kernel(kernel: Any) -> np.ndarray:
    """`kernel` as a float32 (7, 7) array of finite numbers."""
    try:
        array = np.asarray(kernel, dtype=np.float32)
    except (TypeError, ValueError):
        raise TypeError(f"`kernel` must be {KERNEL_SIZE}x{KERNEL_SIZE} numbers (a list of {KERNEL_SIZE} rows). "
                        f"Received: kernel={describe(kernel)}") from None
    if array.shape != (KERNEL_SIZE, KERNEL_SIZE):
        raise ValueError(f"`kernel` must be {KERNEL_SIZE}x{KERNEL_SIZE} numbers (a list of {KERNEL_SIZE} rows). "
                         f"Received shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("`kernel` must hold finite numbers. Received a NaN or an infinity")
    return array


def apply_kernel(image: np.ndarray, kernel: Any, stride: Any = 1, padding: Any = "SAME") -> PlaygroundResult:
    """`kernel` applied to every channel of `image` with `convnet.nn.conv2d`, summed over the channels.

    Args:
        image: uint8 (H, W, C), scaled by 1/255 before the convolution, as the seed does.
        kernel: (7, 7) numbers.
        stride: 1..7, the same along height and width.
        padding: "SAME" or "VALID" (any case).

    Returns:
        PlaygroundResult with the output (H', W'), H' = ceil(H / s) for SAME, ceil((H - 6) / s) for VALID, and
        the formulas with the numbers.

    Raises:
        ValueError: a kernel of another size or with non-finite values, a stride out of range, another padding,
            an image smaller than the kernel with VALID padding.
    """
    from convnet import nn
    weights = _kernel(kernel)
    stride = check_int("stride", stride, minimum=1, maximum=MAX_STRIDE)
    padding = check_choice("padding", padding, ("SAME", "VALID")).upper()
    height, width, channels = image.shape
    if padding == "VALID" and min(height, width) < KERNEL_SIZE:
        raise ValueError(f"VALID padding needs an image of at least {KERNEL_SIZE}x{KERNEL_SIZE} for a "
                         f"{KERNEL_SIZE}x{KERNEL_SIZE} kernel. Received an image of {height}x{width}")
    filters = np.repeat(weights[:, :, None, None], channels, axis=2)  # (7, 7) -> (7, 7, C, 1), HWIO
    x = (image.astype(np.float32) / 255)[None]  # (1, H, W, C), as the seed: pixels / 255
    output = np.asarray(nn.conv2d(x, filters, strides=stride, padding=padding).cpu())[0, :, :, 0]  # (H', W')
    (out_h, formula_h), (out_w, formula_w) = (output_size(size, KERNEL_SIZE, stride, padding) for size in (height, width))
    assert output.shape == (out_h, out_w), f"nn.conv2d gave {output.shape}, the formula {(out_h, out_w)}"
    return PlaygroundResult(output=output, formula={"height": formula_h, "width": formula_w}, padding=padding,
                            stride=stride)
