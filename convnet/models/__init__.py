"""Model classes: `Model` (a graph of layers, the functional API) and `Sequential` (a stack), with Keras's
model API, and their files."""
from convnet.models.loading import load_model
from convnet.models.model import Model
from convnet.models.saving import load_weights, save_model, save_weights
from convnet.models.sequential import Sequential

__all__ = ["Model", "Sequential", "load_model", "save_model", "save_weights", "load_weights"]
