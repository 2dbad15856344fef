"""Keras-style layers: Keras's names, arguments, defaults and weight layouts, computed by PyTorch.

Layers take and return NHWC tensors, as in Keras. Inside, a convolution or pooling views its input as
NCHW through a permute, which is PyTorch's channels_last memory format: no copies are made.
Weights are stored in PyTorch's layouts (a Conv2D kernel as (out, in, kh, kw), a Dense kernel as
(out, in)) and converted at the boundary: `get_weights()` / `set_weights()` speak Keras's layouts,
(kh, kw, in, out) and (in, out), so weights copied from a Keras model give the same outputs.

    >>> import torch
    >>> from convnet import layers
    >>> conv = layers.Conv2D(8, 3, padding="same", activation="relu")
    >>> tuple(conv(torch.zeros(2, 28, 28, 1)).shape)
    (2, 28, 28, 8)
    >>> [w.shape for w in conv.get_weights()]
    [(3, 3, 1, 8), (8,)]
    >>> layers.list_layers("*Pooling2D")
    ['AveragePooling2D', 'GlobalAveragePooling2D', 'GlobalMaxPooling2D', 'MaxPooling2D']

One module per family, as Keras's `layers/` tree: `base` (Layer, the registry of layer classes, serialize
and deserialize, weight layouts), `input_layer`, `core`, `convolutional`, `separable` (DepthwiseConv2D,
SeparableConv2D), `transposed` (Conv2DTranspose), `pooling`, `normalization` (BatchNormalization,
LayerNormalization), `regularization` (SpatialDropout2D), `activation` (ReLU, LeakyReLU, Softmax),
`reshaping` (ZeroPadding2D, Cropping2D, UpSampling2D, Reshape) and `merging` (Add, Subtract, Multiply,
Average, Maximum, Minimum, Concatenate: they take a list of tensors). A new family gets a new module whose
classes are decorated with `@register`, and its names are added here.
"""
from convnet.layers.activation import LeakyReLU, ReLU, Softmax
from convnet.layers.base import (
    Geometry,
    Layer,
    Shape,
    check_input_shape,
    deserialize,
    get_layer_class,
    list_layers,
    register,
    serialize,
)
from convnet.layers.convolutional import Conv2D
from convnet.layers.core import Activation, Dense, Dropout, Flatten, Lambda, Rescaling
from convnet.layers.input_layer import Input, InputLayer
from convnet.layers.merging import Add, Average, Concatenate, Maximum, Merge, Minimum, Multiply, Subtract
from convnet.layers.normalization import BatchNormalization, LayerNormalization
from convnet.layers.pooling import (
    AveragePooling2D,
    AvgPool2D,
    DepthMaxPool,
    GlobalAveragePooling2D,
    GlobalMaxPooling2D,
    MaxPool2D,
    MaxPooling2D,
)
from convnet.layers.regularization import SpatialDropout2D
from convnet.layers.reshaping import Cropping2D, Reshape, UpSampling2D, ZeroPadding2D
from convnet.layers.separable import DepthwiseConv2D, SeparableConv2D
from convnet.layers.transposed import Conv2DTranspose

__all__ = [
    "Layer", "register", "get_layer_class", "list_layers", "serialize", "deserialize", "check_input_shape",
    "Shape", "Geometry",
    "Input", "InputLayer", "Dense", "Flatten", "Dropout", "Activation", "Rescaling", "Lambda",
    "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose",
    "MaxPooling2D", "AveragePooling2D", "MaxPool2D", "AvgPool2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D",
    "DepthMaxPool",
    "BatchNormalization", "LayerNormalization",
    "SpatialDropout2D",
    "ReLU", "LeakyReLU", "Softmax",
    "ZeroPadding2D", "Cropping2D", "UpSampling2D", "Reshape",
    "Merge", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
]
