"""SpatialDropout2D: dropout of whole feature maps, as `keras.layers.SpatialDropout2D`.

Neighbouring pixels of a feature map are strongly correlated, so dropping single pixels (Dropout) hardly
regularises a convolution's output; dropping whole channels does (Tompson et al., 2015).

    >>> import torch
    >>> from convnet import layers
    >>> drop = layers.SpatialDropout2D(0.5)
    >>> x = torch.ones(1, 3, 3, 8)
    >>> bool((drop(x) == x).all())                          # identity at inference, as Keras
    True
    >>> _ = torch.manual_seed(0); out = drop.train(True)(x)
    >>> sorted({v for v in out[0].flatten().tolist()})     # kept channels are scaled by 1 / (1 - rate)
    [0.0, 2.0]
    >>> bool((out == out[:, :1, :1, :]).all())              # one decision per sample and channel
    True
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from convnet._internal.checks import check_float, check_int
from convnet._internal.kernels import to_nchw, to_nhwc
from convnet.layers.base import Layer, check_data_format, register


@register
class SpatialDropout2D(Layer):
    """In training, each channel of each sample is set to 0 with probability `rate` (over all its pixels),
    and the kept channels are scaled by 1 / (1 - rate); at inference the layer is the identity.

    `seed` is Keras's argument, kept in the configuration; the masks are drawn from PyTorch's global
    generator, which convnet seeds for a run (`seed` of `convnet train`), so a seeded run is repeatable as
    a whole rather than this layer on its own.
    """

    input_ndim = 4

    def __init__(self, rate: float, data_format: str | None = None, seed: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.rate = check_float("rate", rate, minimum=0.0, maximum=1.0, include_max=False)
        check_data_format(data_format)
        self.seed = None if seed is None else check_int("seed", seed, minimum=0)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        # F.dropout2d draws one Bernoulli per (sample, channel) of an NCHW tensor: a channels_last view
        return to_nhwc(F.dropout2d(to_nchw(x), self.rate, True))  # (N, H, W, C), whole channels zeroed

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
