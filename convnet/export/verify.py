"""Checking an exported file against the model it came from: the largest difference from `model.predict`
on random images and on real photographs (the two sample photos, resized to the model's input), at batch
sizes 1 and 7, through ONNX Runtime with its graph optimisations off and fully on (or through
`torch.export.load`). An export counts only when its numbers agree: exporters have written graphs that load
and compute something else (a zero Pad folded into MaxPool, an AveragePool fusion bug, a wrong bias shape).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from convnet._internal.checks import check_float
from convnet.export.formats import ExportError
from convnet.export.runtime import ExportedModel


def check_images(model: Any, count: int = 7, seed: int = 0) -> list[list[np.ndarray]]:
    """Test inputs for each of the model's inputs: `count` random images, then the sample photos resized
    and converted to the input's size and channels (where the input is an image), scaled as the model's
    preprocessing says."""
    rng = np.random.default_rng(seed)
    scale = float((model.metadata.get("preprocessing") or {}).get("scale", 1.0))
    batches: list[list[np.ndarray]] = [[], []]
    for tensor in model.inputs:
        shape = tuple(tensor.shape[1:])
        batches[0].append(rng.random((count, *shape), dtype=np.float32) * (255 * scale if scale != 1.0 else 1.0))
        batches[1].append(_photos(shape, count, scale) if len(shape) == 3 and shape[-1] in (1, 3) else
                          rng.standard_normal((count, *shape)).astype(np.float32))
    return batches


def _photos(shape: tuple, count: int, scale: float) -> np.ndarray:
    from PIL import Image

    from convnet.datasets import list_sample_images, load_sample_image
    height, width, channels = shape
    images = []
    for index in range(count):
        photo = Image.fromarray(load_sample_image(list_sample_images()[index % 2]))
        photo = photo.convert("L" if channels == 1 else "RGB").resize((width, height), Image.Resampling.BILINEAR)
        pixels = np.asarray(photo, np.float32).reshape(height, width, channels)
        images.append(pixels * scale if scale != 1.0 else pixels / 255)
    return np.stack(images)


def verify(model: Any, path: str, tolerance: float = 1e-4) -> dict[str, Any]:
    """The largest absolute difference between the exported file at `path` and `model.predict`, over random
    and real images at batch sizes 1 and 7 (ONNX: with ONNX Runtime's optimisations off and fully on).

    Raises:
        ExportError: the difference exceeds `tolerance` (naming the case), or the file does not run.
    """
    tolerance = check_float("tolerance", tolerance, minimum=0.0)
    is_onnx = path.lower().endswith(".onnx")
    runners = ([("optimisations off", ExportedModel(path, optimize=False)),
                ("optimisations on", ExportedModel(path, optimize=True))] if is_onnx
               else [("torch.export", ExportedModel(path))])
    worst, where = 0.0, ""
    for kind, inputs in zip(("random", "photos"), check_images(model)):
        for batch in (1, 7):
            feed = [array[:batch] for array in inputs]
            expected = model.predict(feed if len(feed) > 1 else feed[0], verbose=0)
            expected = expected if isinstance(expected, list) else [expected]
            for label, runner in runners:
                got = runner.predict(feed if len(feed) > 1 else feed[0])
                got = got if isinstance(got, list) else [got]
                for index, (mine, theirs) in enumerate(zip(expected, got)):
                    if mine.shape != theirs.shape:
                        raise ExportError(f"the export of {model.label} returns shape {theirs.shape} for output "
                                          f"{index} where predict returns {mine.shape} ({label}, batch {batch})")
                    difference = float(np.max(np.abs(mine - theirs))) if mine.size else 0.0
                    if not difference <= worst:  # also catches NaN
                        worst, where = difference, f"{kind} images, batch {batch}, {label}, output {index}"
    if not worst <= tolerance:
        raise ExportError(f"the export of {model.label} disagrees with predict: largest difference {worst:.3g} "
                          f"(tolerance {tolerance:g}) on {where}")
    return {"max_difference": worst, "checked": [label for label, _ in runners], "worst_case": where}
