"""Temporary: the old module path while other modules move to `convnet.datasets`."""
from convnet.datasets import *  # noqa: F403
from convnet.datasets import __all__  # noqa: F401
