"""Keras-style layers (being split into one module per concept)."""
from convnet.layers.base import *  # noqa: F401,F403
from convnet.layers.base import Geometry, Shape  # noqa: F401
