"""What the explorer looks at (a model, with its run folder when it has one) and every answer of its JSON API,
as plain dicts: `convnet.explorer.app` only parses requests and sends these back.

    >>> from convnet import zoo
    >>> explorer = Explorer(zoo.get("lenet5"), source="preset lenet5")
    >>> info = explorer.model_info()
    >>> info["input_shape"], [layer["name"] for layer in info["layers"]][:3]
    ([None, 28, 28, 1], ['input_layer', 'c1', 's2'])

An Explorer is not thread-safe (inspection runs the shared model with hooks): the app calls it from one worker
thread. Every method checks its arguments and raises ValueError or TypeError saying what is wrong, and
NotFound (a LookupError) for an unknown sample id or a missing run (the app answers 400 and 404).
"""
from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from convnet._internal.checks import check_int, describe, unknown_name
from convnet.explorer.inputs import (
    ArrayImage,
    Converted,
    UploadImage,
    convert,
    normalised_maps,
    pack_float32,
    pack_uint8,
)
from convnet.explorer.run import RunData

__all__ = ["Explorer", "load_explorer", "NotFound", "DEFAULT_MAX_PIXELS", "TOP_K", "MAX_MAPS", "MAX_OCCLUSION_WINDOWS",
           "MAX_SMOOTHGRAD_SAMPLES", "METHOD_OPTIONS"]

DEFAULT_MAX_PIXELS = 25_000_000  # uploads declaring more pixels are refused before decoding (a 24 MP photo passes)
TOP_K = 5  # classes in a prediction
MAX_MAPS = 256  # feature maps sent per layer, at most
MAX_OCCLUSION_WINDOWS = 4096  # occluded copies of the image one request may ask for
MAX_SMOOTHGRAD_SAMPLES = 100
MAX_TEST_LISTED = 500  # test images one GET /api/samples lists
METHOD_OPTIONS = {"grad_cam": ("layer",), "smoothgrad": ("samples",), "occlusion": ("patch", "stride")}
_CALL = re.compile(r"^(?P<name>.*)\[\d+\]\[\d+\]$")  # "conv2d[0][0]": layer_table's "connected_to" entries
_SAMPLE_ID = re.compile(r"^(?:photo-(?P<photo>[a-z]+)|test-(?P<test>\d{1,7}))$")


class NotFound(LookupError):
    """An unknown sample id, or a run the explorer does not have: the API answers 404."""


def _layer_inputs(connected: Sequence[str]) -> list[str]:
    """The names of the layers a layer reads, each once, from `layer_table`'s "name[node][tensor]" entries."""
    names: list[str] = []
    for entry in connected:
        match = _CALL.match(entry)
        name = match.group("name") if match else entry
        if name not in names:
            names.append(name)
    return names


def _shape(shape: Any) -> Any:
    """A shape, or a list of shapes, as JSON lists (the batch axis None)."""
    if isinstance(shape, list):
        return [_shape(item) for item in shape]
    return [None if size is None else int(size) for size in shape]


class Explorer:
    """A built one-input image model, its run (if any), the sample photos, and the API's answers.

    Args:
        model: a built convnet model taking one image (H, W, C).
        source: how it was loaded, shown on the page ("run runs/lenet5", "file model.convnet", "preset seed").
        run: the run folder's data (`convnet.explorer.run.load_run`), or None.
        untrained: the weights are a preset's random initialisation.
        max_pixels: uploads declaring more pixels are refused before decoding.
    """

    def __init__(self, model: Any, source: str = "", run: RunData | None = None, untrained: bool = False,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        from convnet.inspection.explain import check_model, spatial_layers
        from convnet.models.model import sample_shape
        self.model = check_model(model)
        shape = sample_shape(self.model)
        if shape is None or len(shape) != 3 or None in shape:
            raise ValueError(f"the explorer takes models of images (H, W, C) of a fixed size; {self.model.name} "
                             f"takes inputs of shape {shape}")
        self.shape: tuple[int, int, int] = (int(shape[0]), int(shape[1]), int(shape[2]))
        self.model.eval()  # once: inspection restores each module's mode, which must be inference too
        self.source, self.run, self.untrained = source, run, untrained
        self.max_pixels = check_int("max_pixels", max_pixels, minimum=1)
        self.scale = float((self.model.metadata.get("preprocessing") or {}).get("scale", 1.0))
        names = self.model.metadata.get("class_names")
        self.class_names: list[str] | None = [str(name) for name in names] if isinstance(names, (list, tuple)) else None
        self._spatial_layers = spatial_layers(self.model)  # the layers with (h, w, K) maps, in order
        self._photos: dict[str, ArrayImage] = {}
        self._png: dict[str, bytes] = {}
        self._info: dict[str, Any] | None = None

    # -- images ----------------------------------------------------------------------------------------------
    def photos(self) -> dict[str, ArrayImage]:
        """The sample photos by id ("photo-china"), loaded on first use; none when scikit-learn is missing."""
        if not self._photos:
            from convnet.datasets import list_sample_images, load_sample_image
            for name in list_sample_images():
                try:
                    self._photos[f"photo-{name.split('.')[0]}"] = ArrayImage(load_sample_image(name), name)
                except (ImportError, FileNotFoundError):
                    break
        return self._photos

    def sample(self, sample_id: Any) -> ArrayImage:
        """The image with this id: "photo-china", "photo-flower" or "test-<i>" (the i-th test image of the run).

        Raises:
            NotFound: no such sample (ids are never paths: anything else is unknown).
        """
        match = _SAMPLE_ID.match(sample_id) if isinstance(sample_id, str) else None
        if match is None:
            raise NotFound(f"no sample {describe(sample_id)}: ids are photo-<name> or test-<index>")
        if match.group("photo") is not None:
            photo = self.photos().get(sample_id)
            if photo is None:
                raise NotFound(f"no sample photo {sample_id!r}; the photos: {', '.join(self.photos()) or 'none'}")
            return photo
        index = int(match.group("test"))
        images = None if self.run is None else self.run.images
        if images is None or index >= len(images):
            count = 0 if images is None else len(images)
            raise NotFound(f"no test image {sample_id!r}: the explorer holds {count} test images")
        return ArrayImage(images[index], sample_id)

    def sample_png(self, sample_id: str) -> bytes:
        """The sample's pixels as a PNG file (cached)."""
        if sample_id not in self._png:
            from PIL import Image
            array = self.sample(sample_id).array  # (H, W, C) uint8
            buffer = io.BytesIO()
            Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(buffer, format="PNG")
            if len(self._png) > 4096:
                self._png.clear()
            self._png[sample_id] = buffer.getvalue()
        return self._png[sample_id]

    def upload(self, data: bytes, filename: str) -> UploadImage:
        """An uploaded file's bytes as an image, decoded (later) with this explorer's pixel limit."""
        if not isinstance(data, bytes) or not data:
            raise ValueError("the uploaded image is empty (0 bytes)")
        return UploadImage(data, os.path.basename(filename or "upload") or "upload", self.max_pixels)

    def convert(self, image: UploadImage | ArrayImage) -> Converted:
        """The image as the model takes it, as `convnet predict` converts a file."""
        return convert(image, self.shape, self.scale, self.model.name)

    def class_name(self, index: int) -> str:
        """The class's name, or its index as text (as `convnet predict` prints it)."""
        names = self.class_names
        return names[index] if names is not None and index < len(names) else str(index)

    # -- the API's answers -----------------------------------------------------------------------------------
    def model_info(self) -> dict[str, Any]:
        """GET /api/model: the layer graph with shapes, parameters, multiply-adds and receptive fields."""
        if self._info is None:
            from convnet.inspection.explain import conv_layers, default_cam_layer, layer_path, layer_rows, list_methods
            from convnet.layers import Conv2D
            from convnet.models.sequential import Sequential
            model = self.model
            spatial = set(self._spatial())
            layers = []
            for row in layer_rows(model).values():
                layers.append({"name": row["name"], "class_name": row["type"], "output_shape": _shape(row["output_shape"]),
                               "params": int(row["params"]), "macs": int(row["macs"]),
                               "inputs": _layer_inputs(row["connected_to"]), "nested_in": row["nested_in"],
                               "receptive_field": None if row["receptive_field"] is None else list(row["receptive_field"]),
                               "jump": None if row["jump"] is None else list(row["jump"]),
                               "start": None if row["start"] is None else list(row["start"]),
                               "spatial": row["name"] in spatial, "conv": row["type"] == Conv2D.__name__})
            names = {layer["name"] for layer in layers}
            for tensor in reversed(model.inputs):  # a Sequential's table has no row for its input
                operation = tensor.node.operation
                if operation.name not in names:
                    layers.insert(0, {"name": operation.name, "class_name": type(operation).__name__,
                                      "output_shape": _shape(tensor.shape), "params": 0, "macs": 0, "inputs": [],
                                      "nested_in": None, "receptive_field": [1, 1], "jump": [1, 1], "start": [0.0, 0.0],
                                      "spatial": False, "conv": False})
            try:
                convs = [layer_path(model, layer) for layer in conv_layers(model, "explorer")]
                cam = layer_path(model, default_cam_layer(model))
            except ValueError:  # a model without Conv2D layers: no filters, Grad-CAM on a chosen layer only
                convs, cam = [], None
            self._info = {
                "name": model.name, "source": self.source, "untrained": self.untrained,
                "input_shape": _shape(model.input_shape), "scale": self.scale, "class_names": self.class_names,
                "num_classes": self._classes(), "params": model.count_params(),
                "macs": sum(layer["macs"] for layer in layers if layer["nested_in"] is None),
                "graph": not isinstance(model, Sequential), "layers": layers, "spatial_layers": self._spatial(),
                "conv_layers": convs, "default_cam_layer": cam, "explain_methods": list_methods(),
                "run": self.run is not None, "test_images": 0 if self.run is None or self.run.images is None
                else len(self.run.images)}
        return self._info

    def _spatial(self) -> list[str]:
        return list(self._spatial_layers)

    def _classes(self) -> int | None:
        shape = self.model.outputs[0].shape if len(self.model.outputs) == 1 else ()
        return int(shape[1]) if len(shape) == 2 and shape[1] is not None else None

    def predict(self, image: UploadImage | ArrayImage, top: int = TOP_K) -> dict[str, Any]:
        """POST /api/predict: the `top` most probable classes, most probable first, as `convnet predict` gives
        them (`model.predict` on the converted image), with the conversion note."""
        top = check_int("top", top, minimum=1, maximum=1000)
        converted = self.convert(image)
        probabilities = np.asarray(self.model.predict(converted.pixels[None], verbose=0)[0], np.float64)  # (K,)
        order = np.argsort(-probabilities, kind="stable")[:top]
        return {"predictions": [{"class_name": self.class_name(int(i)), "index": int(i),
                                 "probability": float(probabilities[i])} for i in order],
                "note": converted.note, "input": converted.describe()}

    def feature_maps(self, image: UploadImage | ArrayImage, layers: Sequence[str] | None = None,
                     max_maps: int = MAX_MAPS) -> dict[str, Any]:
        """POST /api/featuremaps: every spatial layer's maps (or `layers`'), each map scaled to 0..255 from its own
        min..max (sent with the map), the first `max_maps` of each layer."""
        from convnet.inspection.explain import feature_maps
        max_maps = check_int("max_maps", max_maps, minimum=1, maximum=MAX_MAPS)
        chosen = self._spatial() if not layers else self._check_layers(layers)
        converted = self.convert(image)
        maps = feature_maps(self.model, converted.pixels, chosen)  # {name: (h, w, K)}
        answer = []
        for name, array in maps.items():
            planes, low, high = normalised_maps(array[:, :, :max_maps])  # (n, h, w)
            answer.append({"name": name, "shape": list(array.shape), "shown": planes.shape[0], "min": low, "max": high,
                           "maps": pack_uint8(planes)})
        return {"layers": answer, "input": converted.describe()}

    def _check_layers(self, layers: Sequence[str]) -> list[str]:
        spatial = self._spatial()
        for name in layers:
            if name not in spatial:
                raise unknown_name("layer with feature maps", name, spatial, argument="layers", sort=False)
        return list(layers)

    def explain(self, image: UploadImage | ArrayImage, method: str = "grad_cam", class_index: int | None = None,
                layer: str | None = None, samples: int | None = None, patch: int | None = None,
                stride: int | None = None) -> dict[str, Any]:
        """POST /api/explain: an explanation map (H, W) at the model's input size, to overlay on the input.

        `layer` applies to grad_cam (default: the last Conv2D with maps larger than 1x1), `samples` to smoothgrad
        (at most MAX_SMOOTHGRAD_SAMPLES), `patch` and `stride` to occlusion (at most MAX_OCCLUSION_WINDOWS
        occluded copies)."""
        from convnet.inspection import explain as explain_module
        methods = explain_module.list_methods()
        if not isinstance(method, str) or method not in methods:
            raise unknown_name("explanation method", method, methods, argument="method")
        options: dict[str, Any] = {}
        given = {"layer": layer, "samples": samples, "patch": patch, "stride": stride}
        allowed = METHOD_OPTIONS.get(method, ())
        for key, value in given.items():
            if value is not None and key not in allowed:
                raise ValueError(f"`{key}` does not apply to method {method!r}; its options: "
                                 f"{', '.join(allowed) or 'none'}. Received: {key}={value!r}")
        if method == "grad_cam":
            options["layer"] = layer if layer is not None else self.model_info()["default_cam_layer"]
            if options["layer"] is None:
                raise ValueError(f"{self.model.name} has no Conv2D layer: pass `layer`, one of "
                                 f"{', '.join(self._spatial())}")
        if method == "smoothgrad":
            options["samples"] = check_int("samples", 25 if samples is None else samples, minimum=1,
                                           maximum=MAX_SMOOTHGRAD_SAMPLES)
        if method == "occlusion":
            options["patch"] = check_int("patch", 4 if patch is None else patch, minimum=1,
                                         maximum=min(self.shape[:2]))
            options["stride"] = check_int("stride", max(options["patch"] // 2, 1) if stride is None else stride,
                                          minimum=1, maximum=options["patch"])
            windows = math.prod(math.ceil((size - options["patch"]) / options["stride"]) + 1 for size in self.shape[:2])
            if windows > MAX_OCCLUSION_WINDOWS:
                raise ValueError(f"occlusion with patch={options['patch']} and stride={options['stride']} would run "
                                 f"the model on {windows} copies of the image, more than {MAX_OCCLUSION_WINDOWS}; "
                                 f"take a larger stride")
        classes = self._classes()
        if class_index is not None and classes is not None:
            class_index = check_int("class_index", class_index, minimum=0, maximum=classes - 1)
        converted = self.convert(image)
        result = explain_module.explain(self.model, converted.pixels, method=method, class_index=class_index,
                                        **options)
        heat = result.map.astype(np.float32)  # (H, W)
        return {"method": method, "class_index": result.class_index, "class_name": self.class_name(result.class_index),
                "probability": result.probability, "layer": options.get("layer"), "map": pack_float32(heat),
                "min": float(heat.min()), "max": float(heat.max()), "input": converted.describe()}

    def filters(self, layer: str, max_filters: int = 64, max_channels: int = 16) -> dict[str, Any]:
        """GET /api/filters/{layer}: a Conv2D layer's kernel (kh, kw, C_in / groups, C_out), the first
        `max_filters` filters and `max_channels` input channels, in Keras's layout."""
        from convnet.inspection.explain import resolve_layer
        max_filters = check_int("max_filters", max_filters, minimum=1, maximum=1024)
        max_channels = check_int("max_channels", max_channels, minimum=1, maximum=256)
        target = resolve_layer(self.model, layer, need="conv", op="filters")
        kernel = target.get_weights()[0]  # (kh, kw, C_in / groups, C_out)
        shown = kernel[:, :, :max_channels, :max_filters]  # (kh, kw, c, f)
        convs = self.model_info()["conv_layers"]
        rgb = kernel.shape[2] == 3 and self.shape[2] == 3 and bool(convs) and convs[0] == layer  # viz's rule
        return {"layer": layer, "shape": list(kernel.shape), "kernel": pack_float32(shown), "rgb": rgb,
                "min": float(shown.min()), "max": float(shown.max())}

    def receptive_field(self, layer: str, row: int, col: int) -> dict[str, Any]:
        """GET /api/receptive-field/{layer}: the input pixels (top, left, bottom, right; bottom and right
        exclusive) the unit at (row, col) of the layer's maps sees; the box may extend past the image (padding)."""
        from convnet.inspection.explain import receptive_field_box
        if layer not in self._spatial():
            raise unknown_name("layer with feature maps", layer, self._spatial(), argument="layer", sort=False)
        top, left, bottom, right = receptive_field_box(self.model, layer, (row, col))
        return {"layer": layer, "position": [row, col], "box": [top, left, bottom, right],
                "size": [bottom - top, right - left]}

    def samples(self, offset: int = 0, limit: int = 48) -> dict[str, Any]:
        """GET /api/samples: the sample photos and `limit` test images of the run from `offset`, by id."""
        offset = check_int("offset", offset, minimum=0)
        limit = check_int("limit", limit, minimum=0, maximum=MAX_TEST_LISTED)
        items: list[dict[str, Any]] = [{"id": key, "kind": "photo", "label": photo.label, "class_index": None,
                                        "class_name": None} for key, photo in self.photos().items()]
        run = self.run
        total = 0
        if run is not None and run.images is not None and run.labels is not None:
            total = len(run.images)
            for index in range(offset, min(offset + limit, total)):
                label = int(run.labels[index])
                items.append({"id": f"test-{index}", "kind": "test", "label": f"test image {index}",
                              "class_index": label, "class_name": self.class_name(label)})
        reason = None if self.run is None else self.run.dataset_error
        return {"samples": items, "test_total": total, "offset": offset,
                "test_reason": reason if total == 0 else None}

    def run_summary(self) -> dict[str, Any]:
        """GET /api/run; NotFound when the explorer was not started on a run folder."""
        if self.run is None:
            raise NotFound("no run: the explorer was started on a model file or a preset, not a run folder")
        return self.run.summary(self.class_names or [str(i) for i in range(self._classes() or 0)])

    def playground(self, sample_id: str = "photo-china", kernel: Any = None, stride: Any = 1,
                   padding: Any = "SAME") -> dict[str, Any]:
        """POST /api/playground: the seed's 7x7 kernel editor (`convnet.explorer.playground.apply_kernel`) on a
        sample image; the output scaled to 0..255 from its min..max (sent along)."""
        from convnet.explorer.playground import apply_kernel, preset_kernel
        image = self.sample(sample_id).array  # (H, W, C) uint8
        result = apply_kernel(image, preset_kernel("vertical") if kernel is None else kernel, stride, padding)
        planes, low, high = normalised_maps(result.output[:, :, None])  # (1, H', W')
        return {"sample": sample_id, "input": {"height": image.shape[0], "width": image.shape[1],
                                               "channels": image.shape[2]},
                "output": {"height": result.output.shape[0], "width": result.output.shape[1], "min": low[0],
                           "max": high[0], "pixels": pack_uint8(planes[0])},
                "stride": result.stride, "padding": result.padding, "formula": result.formula}


def load_explorer(target: str | os.PathLike | None = None, preset: str | None = None, device: str = "cpu",
                  test_limit: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Explorer:
    """An Explorer for a run folder, a .convnet file or a model preset (exactly one of `target` and `preset`).

    A run folder's test images are loaded and classified now (`convnet.explorer.run.load_run`, at most
    `test_limit`). A preset is built with its random initial weights (the page says so).

    Raises:
        ValueError: neither or both given, a folder without model.convnet, a damaged file, a model that does not
            take one image; FileNotFoundError: no such file or folder.
    """
    from convnet.explorer.run import load_run
    from convnet.models import load_model
    if (target is None) == (preset is None):
        raise ValueError("explore takes a RUN_DIR, a MODEL.convnet file or --model PRESET (one of them)")
    if preset is not None:
        from convnet import zoo
        if not isinstance(preset, str) or preset not in zoo.list_models():
            raise unknown_name("model preset", preset, zoo.list_models(), argument="--model")
        model = zoo.get(preset)
        model.to(device)
        return Explorer(model, source=f"preset {preset} (untrained: random initial weights)", untrained=True,
                        max_pixels=max_pixels)
    path = os.fspath(target)  # type: ignore[arg-type]  # target is not None here
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such run folder or model file")
    if os.path.isdir(path):
        model_file = os.path.join(path, "model.convnet")
        if not os.path.isfile(model_file):
            raise ValueError(f"{path}: not a run folder: it holds no model.convnet (a run folder written by convnet "
                             f"train holds model.convnet, history.json, metrics.json and config.json)")
        model = load_model(model_file, device=device, compile=False)
        run = load_run(path, model, test_limit=test_limit)
        return Explorer(model, source=f"run {path}", run=run, max_pixels=max_pixels)
    model = load_model(path, device=device, compile=False)
    return Explorer(model, source=f"file {path}", max_pixels=max_pixels)
