"""What the command groups share: exit codes, usage errors, and images named on the command line
converted for a model (as `predict` does). Imports nothing heavy: NumPy and the rest load when a command runs."""
from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from convnet.models.model import Model

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A bad argument or input, reported as one line and exit code 2."""


class CommandImage:
    """An image named on the command line: a file, or one of the sample photos."""

    def __init__(self, path: str | None = None, sample: str | None = None):
        name = path if path is not None else sample
        if name is None or (path is not None and sample is not None):
            raise ValueError("CommandImage takes a file `path` or a `sample` name, exactly one of them")
        self.path, self.sample, self.name = path, sample, name
        self.label = path if path is not None else f"sample {sample}"
        self.stem = os.path.splitext(os.path.basename(name))[0]

    def pixels(self, size: tuple[int, int] | None = None, channels: int | None = None) -> np.ndarray:
        """uint8 (H, W, C), converted by `datasets.load_image` when size or channels are given."""
        from convnet.datasets import load_image, load_sample_image
        if self.sample is None:
            return load_image(self.name, size=size, channels=channels)
        pixels = load_sample_image(self.name)
        if size is None and channels is None:
            return pixels
        from PIL import Image
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")  # lossless, so load_image converts it as a file
        return load_image(buffer.getvalue(), size=size, channels=channels)


def command_images(paths: Sequence[str], samples: Sequence[str] | None) -> list[CommandImage]:
    """The images to process: the files, then the samples; both sample photos when neither is given."""
    from convnet._internal.checks import unknown_name
    from convnet.datasets import list_sample_images
    for name in samples or []:
        if name not in list_sample_images():
            raise unknown_name("sample image", name, list_sample_images(), argument="--sample")
    if not paths and not samples:
        samples = list_sample_images()
    return [CommandImage(path=path) for path in paths] + [CommandImage(sample=name) for name in samples or []]


def model_input(model: Model, image: CommandImage) -> tuple[np.ndarray, str | None]:
    """(float32 (H, W, C) as the model takes it, a note saying what was converted or None), like `predict`:
    resized and converted to the model's input size and channels, times its preprocessing scale."""
    from convnet.models.model import sample_shape
    scale = float((model.metadata.get("preprocessing") or {}).get("scale", 1.0))
    return image_input(sample_shape(model), scale, model.name, image)


def image_input(shape: tuple | None, scale: float, name: str, image: CommandImage) -> tuple[np.ndarray, str | None]:
    """`image` converted for a model (`name`, for messages) taking one-sample `shape`, times `scale`."""
    if shape is None:
        raise UsageError(f"the model {name!r} has no input shape, so images cannot be converted for it")
    if len(shape) != 3:
        raise UsageError(f"the model {name!r} takes inputs of shape {tuple(shape)}, not images (H, W, C)")
    height, width, channels = shape
    original = image.pixels()
    changes = []
    if original.shape[:2] != (height, width):
        changes.append(f"resized from {original.shape[1]}x{original.shape[0]} to {width}x{height}")
    if original.shape[2] != channels:
        changes.append(f"converted from {original.shape[2]} to {channels} channel(s)")
    pixels = image.pixels(size=(height, width), channels=channels) if changes else original
    import numpy as np
    note = f"{image.label}  (note: {', '.join(changes)} to fit the model)" if changes else None
    return pixels.astype(np.float32) * scale, note


def load_model_file(path: str, device: str = "auto", compile: bool = False) -> Model:
    """The model in `path` on `device`."""
    from convnet.models import load_model
    return load_model(path, device=device, compile=compile)
