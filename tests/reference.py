"""A plain NumPy reference for convnet.nn, written from TensorFlow's docs and not from nn.py.

Explicit loops over output positions and kernel taps, float64 accumulation. Slow on purpose: the
tests feed it tiny inputs, and every line should be checkable by eye. Each function raises
ValueError for arguments that TensorFlow refuses, so property tests can compare refusals too.
"""
from __future__ import annotations

import math

import numpy as np


def spatial(name, value):
    """(height, width) from an int or a list of 1, 2 or 4 ints (tf.nn.conv2d's `strides` rule)."""
    values = [value] if isinstance(value, int) else list(value)
    if len(values) == 4:
        if values[0] != 1 or values[3] != 1:
            raise ValueError(f"{name}: batch and depth entries must be 1")
        values = values[1:3]
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or any(v < 1 for v in values):
        raise ValueError(f"{name}: bad value {value!r}")
    return tuple(values)


def same_pads(size, k, s, d=1):
    """TF SAME along one axis: out = ceil(size / s), total = max((out - 1) s + (k - 1) d + 1 - size, 0),
    before = total // 2, the extra pixel after."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def pads_and_out(padding, size, kernel, strides, dilations=(1, 1)):
    """((top, bottom, left, right), (out_h, out_w)) for SAME / VALID / explicit NHWC pairs."""
    if isinstance(padding, str):
        if padding.upper() == "SAME":
            (t, b), (l, r) = (same_pads(size[a], kernel[a], strides[a], dilations[a]) for a in (0, 1))
            return (t, b, l, r), (math.ceil(size[0] / strides[0]), math.ceil(size[1] / strides[1]))
        if padding.upper() != "VALID":
            raise ValueError(f"unknown padding {padding!r}")
        t = b = l = r = 0
    else:
        pairs = [list(p) for p in padding]
        if len(pairs) != 4 or any(len(p) != 2 for p in pairs) or pairs[0] != [0, 0] or pairs[3] != [0, 0]:
            raise ValueError(f"bad explicit padding {padding!r}")
        (t, b), (l, r) = pairs[1], pairs[2]
        if min(t, b, l, r) < 0:
            raise ValueError(f"negative padding {padding!r}")
    out = []
    for extent, k, s, d in zip((size[0] + t + b, size[1] + l + r), kernel, strides, dilations):
        span = (k - 1) * d + 1
        if extent < span:
            raise ValueError("kernel does not fit the padded input")
        out.append((extent - span) // s + 1)
    return (t, b, l, r), tuple(out)


def conv2d_ref(x, w, strides, padding, dilations=1):
    """tf.nn.conv2d: NHWC input, HWIO filters; C_in a multiple of the filters' in-depth is a grouped conv."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n, h, wd, c = x.shape
    kh, kw, ci, co = w.shape
    if c % ci or co % (c // ci):
        raise ValueError("channels do not split into groups")
    per_group = co // (c // ci)  # output channels per group
    sh, sw = spatial("strides", strides)
    dh, dw = spatial("dilations", dilations)
    (t, b, l, r), (oh, ow) = pads_and_out(padding, (h, wd), (kh, kw), (sh, sw), (dh, dw))
    padded = np.zeros((n, h + t + b, wd + l + r, c))
    padded[:, t:t + h, l:l + wd, :] = x
    out = np.zeros((n, oh, ow, co))
    for i in range(oh):
        for j in range(ow):
            for o in range(co):
                g = o // per_group
                for a in range(kh):
                    for bb in range(kw):
                        pixel = padded[:, i * sh + a * dh, j * sw + bb * dw, g * ci:(g + 1) * ci]  # (n, ci)
                        out[:, i, j, o] += pixel @ w[a, bb, :, o]
    return out


def _pool_ref(x, ksize, strides, padding, reduce):
    """Spatial pooling over the real pixels of each window (padding contributes nothing)."""
    x = np.asarray(x, dtype=np.float64)
    n, h, wd, c = x.shape
    kh, kw = spatial("ksize", ksize)
    sh, sw = spatial("strides", strides)
    (t, b, l, r), (oh, ow) = pads_and_out(padding, (h, wd), (kh, kw), (sh, sw))
    if max(t, b) >= kh or max(l, r) >= kw:  # never true for SAME; else a window could hold padding only
        raise ValueError("explicit padding must be smaller than the window")
    out = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            rows = [i * sh - t + a for a in range(kh) if 0 <= i * sh - t + a < h]
            cols = [j * sw - l + bb for bb in range(kw) if 0 <= j * sw - l + bb < wd]
            window = x[:, rows][:, :, cols]  # (n, real rows, real cols, c)
            out[:, i, j] = reduce(window.reshape(n, -1, c))
    return out


def max_pool_ref(x, ksize, strides, padding):
    """tf.nn.max_pool, spatial only: the max over the real pixels (padding is -inf, so it never wins)."""
    return _pool_ref(x, ksize, strides, padding, lambda v: v.max(axis=1))


def avg_pool_ref(x, ksize, strides, padding):
    """tf.nn.avg_pool: the mean over the real pixels of each window (SAME divides by their count)."""
    if not isinstance(padding, str):
        raise ValueError("avg_pool takes SAME or VALID only")
    return _pool_ref(x, ksize, strides, padding, lambda v: v.sum(axis=1) / v.shape[1])


def depth_max_pool_ref(x, k):
    """tf.nn.max_pool with ksize = strides = (1, 1, 1, k): the max over each run of k channels."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[3] % k:
        raise ValueError("k must divide the depth")
    out = np.zeros((*x.shape[:3], x.shape[3] // k))
    for g in range(x.shape[3] // k):
        out[..., g] = x[..., g * k:(g + 1) * k].max(axis=3)
    return out
