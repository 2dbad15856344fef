"""The inspection commands of the `convnet` command line. `cli.build_parser` calls `add_commands` with its
sub-parsers.

    convnet featuremaps [IMAGE ...] [--sample NAME] [--model MODEL]   feature maps as PNG files
    convnet filters MODEL [--layer NAME]                              a Conv2D layer's kernels as a PNG
    convnet explain MODEL IMAGE [--method gradcam]                    why the model chose its class, as a PNG
    convnet report RUN                                                an HTML page about a finished run

A MODEL file may hold any saved convnet model: a Sequential stack or a functional graph (branches, merges,
nested models). `--layer` takes a layer's name, or "nested/layer" for a layer inside a nested model; file
names write the path with "-" (featuremaps of backbone/conv2d: IMAGE-backbone-conv2d.png).

Each command prints the paths it wrote, one per line, last. Figures are drawn with Matplotlib's object API
and saved with `convnet.inspection.figures.save_figure`: no window opens and no display is needed. The work is done by
`convnet.viz`, `convnet.explain` and `convnet.report`; this module parses, loads and saves. Registering the
commands imports nothing heavy (`convnet --help` answers at once): NumPy, PyTorch and Matplotlib load when a
command runs.
"""
from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from convnet.cli.common import (
    CommandImage,
    UsageError,
    command_images,
    load_model_file,
    model_input,
)
from convnet.cli.completion import complete_with

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

    from convnet.models.model import Model

__all__ = ["add_commands", "line_filters", "line_filter_maps", "plot_line_filter_demo", "EXPLAIN_METHODS"]

LINE_FILTER_SIZE = 7  # the seed's filters are 7x7, with the line through the middle row or column
DEMO_PANEL_INCHES = 4.0  # width of each of the demo's three panels
EXPLAIN_METHODS = {"gradcam": "grad_cam", "saliency": "gradient", "smoothgrad": "smoothgrad",
                   "occlusion": "occlusion"}  # CLI name -> convnet.explain method


def __getattr__(name: str) -> Any:
    if name == "FIGURE_DPI":  # the resolution figures are saved at, read where they are drawn (which imports torch)
        from convnet.inspection.figures import FIGURE_DPI
        return FIGURE_DPI
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def line_filters(channels: int) -> np.ndarray:
    """The seed's two 7x7 filters, (7, 7, channels, 2) float32 (HWIO): filter 0 is a vertical line of ones
    (`filters[:, 3, :, 0] = 1`), filter 1 a horizontal one (`filters[3, :, :, 1] = 1`), over every channel.

        >>> f = line_filters(3)
        >>> f.shape, int(f[:, 3, :, 0].sum()), int(f[3, :, :, 1].sum()), int(f.sum())
        ((7, 7, 3, 2), 21, 21, 42)
    """
    import numpy as np
    filters = np.zeros((LINE_FILTER_SIZE, LINE_FILTER_SIZE, channels, 2), np.float32)  # (7, 7, C, 2)
    middle = LINE_FILTER_SIZE // 2
    filters[:, middle, :, 0] = 1  # vertical line
    filters[middle, :, :, 1] = 1  # horizontal line
    return filters


def line_filter_maps(image: np.ndarray) -> np.ndarray:
    """The seed's demo on one image: `convnet.nn.conv2d` with `line_filters`, strides 1, "SAME" padding.

    Args:
        image: (H, W, C) float, scaled as the seed scales it (pixels / 255).

    Returns:
        float32 (H, W, 2): map 0 sums each pixel's vertical 7-pixel line over the channels, map 1 its
        horizontal line; pixels beyond the border count as 0.

        >>> import numpy as np
        >>> image = np.zeros((9, 9, 1), np.float32); image[:, 4, 0] = 1   # a vertical line
        >>> maps = line_filter_maps(image)
        >>> maps.shape, float(maps[4, 4, 0]), float(maps[4, 4, 1])
        ((9, 9, 2), 7.0, 1.0)
    """
    import numpy as np

    from convnet import nn
    array = np.asarray(image, np.float32)
    if array.ndim != 3:
        raise ValueError(f"line_filter_maps: expected one image (H, W, C). Received shape {array.shape}")
    maps = nn.conv2d(array[None], line_filters(array.shape[2]), strides=1, padding="SAME")  # (1, H, W, 2)
    return np.asarray(maps.cpu())[0]  # (H, W, 2)


def plot_line_filter_demo(image: np.ndarray, maps: np.ndarray, title: str = "") -> Figure:
    """The seed's figure, in one row: the image, the vertical-line map and the horizontal-line map."""
    import numpy as np

    from convnet.inspection.figures import new_figure
    height, width = image.shape[:2]
    figure = new_figure(3 * DEMO_PANEL_INCHES, DEMO_PANEL_INCHES * height / width + 0.7)
    panels = [(image[:, :, 0] if image.shape[2] == 1 else np.clip(image, 0, 1), "input"),
              (maps[:, :, 0], "vertical-line filter: map 0"), (maps[:, :, 1], "horizontal-line filter: map 1")]
    for ax, (picture, text) in zip(figure.subplots(1, 3), panels):
        ax.imshow(picture, cmap="gray")  # each map scaled to its own min..max, as plt.imshow in the seed
        ax.set_title(text, fontsize=10)
        ax.axis("off")
    if title:
        figure.suptitle(title)
    return figure


def _save(figure: Figure, folder: str, name: str, written: set[str]) -> str:
    """Save as folder/name.png (name-2.png, ... when this command already wrote that name) and print the path;
    the "/" of a nested layer's path becomes "-"."""
    from convnet.inspection.figures import FIGURE_DPI, save_figure
    name = name.replace("/", "-")
    path, count = os.path.join(folder, f"{name}.png"), 1
    while path in written:
        count += 1
        path = os.path.join(folder, f"{name}-{count}.png")
    save_figure(figure, path, dpi=FIGURE_DPI)
    written.add(path)
    print(path, flush=True)
    return path


def _cmd_featuremaps(args: argparse.Namespace) -> int:
    import numpy as np

    from convnet.runs.job import prepare_folder
    if args.model is None and (args.layer is not None or args.max_maps is not None):
        raise UsageError("--layer and --max-maps need --model; without a model the command shows the seed's two "
                         "line filters")
    images = command_images(args.images, args.sample)
    written: set[str] = set()
    if args.model is None:
        loaded = [(image, image.pixels().astype(np.float32) / 255) for image in images]  # as the seed: pixels / 255
        out = prepare_folder(args.out)
        for image, pixels in loaded:
            figure = plot_line_filter_demo(pixels, line_filter_maps(pixels), f"{image.label}: the seed's line filters")
            _save(figure, out, f"{image.stem}-lines", written)
        return 0
    from convnet._internal.checks import check_int
    from convnet.inspection import viz
    from convnet.inspection.explain import check_model, conv_layers, layer_path, resolve_layer
    model = check_model(load_model_file(args.model, args.device))
    if args.layer is None:
        targets = [layer_path(model, item) for item in conv_layers(model, "featuremaps")]  # raises without any
    else:
        targets = [layer_path(model, resolve_layer(model, args.layer, op="featuremaps"))]
    max_maps = 64 if args.max_maps is None else check_int("--max-maps", args.max_maps, minimum=1, maximum=1024)
    prepared = [(image, *model_input(model, image)) for image in images]
    out = prepare_folder(args.out)
    for image, pixels, note in prepared:
        if note:
            print(note)
        for name in targets:
            figure = viz.plot_feature_maps(model, pixels, layer=name, max_maps=max_maps)
            _save(figure, out, f"{image.stem}-{name}", written)
    return 0


def _cmd_filters(args: argparse.Namespace) -> int:
    from convnet._internal.checks import check_int
    from convnet.inspection import viz
    from convnet.inspection.explain import check_model, conv_layers, layer_path, resolve_layer
    from convnet.runs.job import prepare_folder
    if args.max_filters is not None:
        check_int("--max-filters", args.max_filters, minimum=1, maximum=1024)
    model = check_model(load_model_file(args.model, args.device), one_input=False)
    if args.layer is None:
        convs = [layer_path(model, item) for item in conv_layers(model, "filters")]  # raises when the model has none
        layer = convs[0]
        if len(convs) > 1:
            print(f"Showing {layer}, the first Conv2D layer; the others: {', '.join(convs[1:])} (pick with --layer)")
    else:
        layer = layer_path(model, resolve_layer(model, args.layer, need="conv", op="filters"))
    figure = viz.plot_filters(model, layer, max_filters=args.max_filters)
    stem = os.path.splitext(os.path.basename(args.model))[0]
    _save(figure, prepare_folder(args.out), f"{stem}-{layer}-filters", set())
    return 0


def _class_name(model: Model, index: int) -> str:
    names = model.metadata.get("class_names")
    return str(names[index]) if isinstance(names, (list, tuple)) and index < len(names) else f"class {index}"


def _cmd_explain(args: argparse.Namespace) -> int:
    from convnet._internal.checks import unknown_name
    from convnet.inspection.explain import check_classifier, check_model, default_cam_layer, explain, layer_path
    from convnet.runs.job import prepare_folder
    if args.method not in EXPLAIN_METHODS:
        raise unknown_name("explanation method", args.method, EXPLAIN_METHODS, argument="--method")
    method = EXPLAIN_METHODS[args.method]
    if args.layer is not None and method != "grad_cam":
        raise UsageError(f"--layer applies to --method gradcam only. Received: --method {args.method}")
    model = check_model(load_model_file(args.model, args.device))
    classes = check_classifier(model, "explain")
    if args.class_index is not None and not 0 <= args.class_index < classes:
        raise ValueError(f"--class-index must be in [0, {classes - 1}] ({model.name} has {classes} classes). "
                         f"Received: {args.class_index}")
    image = CommandImage(path=args.image)
    pixels, note = model_input(model, image)
    options = {"layer": args.layer or layer_path(model, default_cam_layer(model))} if method == "grad_cam" else {}
    result = explain(model, pixels, method=method, class_index=args.class_index, **options)
    probabilities = model.predict(pixels[None], verbose=0)[0]  # (classes,)
    top = int(probabilities.argmax())
    out = prepare_folder(args.out)
    if note:
        print(note)
    print(f"Predicted: {_class_name(model, top)} ({probabilities[top]:.2%})")
    where = f" at layer {options['layer']}" if options else ""
    print(f"Explained: {_class_name(model, result.class_index)} ({result.probability:.2%}) with {args.method}{where}")
    _save(result.plot(), out, f"{image.stem}-{args.method}", set())
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    import json

    from convnet.inspection.report import build_report
    result = build_report(args.run_dir, out_dir=args.out, limit=args.limit, data_dir=args.data_dir, device=args.device)
    with open(os.path.join(args.run_dir, "metrics.json"), encoding="utf-8") as stream:
        saved = json.load(stream)
    print(f"Test accuracy recomputed on {result.test_images} images: {result.accuracy:.4f} (metrics.json: "
          f"{saved.get('test_accuracy', float('nan')):.4f} on {saved.get('test_images', '?')} images)")
    for path in result.paths:
        print(path)
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register the inspection sub-commands on the `convnet` parser."""
    maps = commands.add_parser(
        "featuremaps", help="feature maps of images as PNG files",
        description="Without --model: the seed's demo, two 7x7 line filters (vertical, horizontal) convolved "
                    "with each image (pixels / 255, strides 1, SAME padding); one PNG per image with the input "
                    "and both maps. With --model: each Conv2D layer's maps (or --layer's) for each image, "
                    "converted to the model's input size and channels (with a note) and scaled as it was trained.")
    maps.add_argument("images", metavar="IMAGE", nargs="*", help="image files (default: both sample photos)")
    complete_with(maps.add_argument("--sample", action="append", metavar="NAME",
                                    help="a sample photo, china.jpg or flower.jpg; repeat for both"), "sample")
    complete_with(maps.add_argument("--model", help="a .convnet file whose layers' maps to show"), "file")
    maps.add_argument("--layer", help="with --model: one layer, nested/layer inside a nested model (default: every "
                      "Conv2D layer)")
    maps.add_argument("--max-maps", type=int, metavar="N", help="with --model: maps shown per layer (default: 64)")
    complete_with(maps.add_argument("--out", default="featuremaps", metavar="DIR",
                                    help="output folder (default: ./featuremaps)"), "dir")
    complete_with(maps.add_argument("--device", default="auto"), "device")
    maps.set_defaults(run=_cmd_featuremaps)

    filters = commands.add_parser("filters", help="a Conv2D layer's kernels as a PNG")
    filters.add_argument("model", metavar="MODEL", help="a .convnet file (a Sequential or a functional model)")
    filters.add_argument("--layer", help="a Conv2D layer, nested/layer inside a nested model (default: the first)")
    filters.add_argument("--max-filters", type=int, metavar="N", help="filters shown (default: 64, or 16 rows "
                         "of per-channel slices for a layer reading several channels)")
    complete_with(filters.add_argument("--out", default="filters", metavar="DIR",
                                       help="output folder (default: ./filters)"), "dir")
    complete_with(filters.add_argument("--device", default="auto"), "device")
    filters.set_defaults(run=_cmd_filters)

    explain = commands.add_parser(
        "explain", help="why the model chose its class, as an overlay PNG",
        description="Print the predicted class and its probability and save a map of the pixels that drove "
                    "the decision, over the image.")
    explain.add_argument("model", metavar="MODEL", help="a .convnet file (a Sequential or a functional model)")
    explain.add_argument("image", metavar="IMAGE", help="a PNG, JPEG or other image file")
    complete_with(explain.add_argument("--method", default="gradcam",
                                       help=f"{', '.join(EXPLAIN_METHODS)} (default: gradcam)"), list(EXPLAIN_METHODS))
    explain.add_argument("--class-index", type=int, metavar="K",
                         help="the class to explain (default: the predicted one)")
    explain.add_argument("--layer", help="with gradcam: the layer, nested/layer inside a nested model (default: the "
                         "last Conv2D with maps over 1x1)")
    complete_with(explain.add_argument("--out", default="explanations", metavar="DIR",
                                       help="output folder (default: ./explanations)"), "dir")
    complete_with(explain.add_argument("--device", default="auto"), "device")
    explain.set_defaults(run=_cmd_explain)

    report = commands.add_parser(
        "report", help="an HTML page about a finished run",
        description="Write PNG figures (training curves, confusion matrix, misclassified test images) and one "
                    "self-contained report.html: layer table, curves, test metrics, per-class accuracy (recomputed "
                    "on the run's test images), confusion matrix and mistakes.")
    complete_with(report.add_argument("run_dir", metavar="RUN", help="a run folder written by convnet train"), "dir")
    complete_with(report.add_argument("--out", metavar="DIR", help="output folder (default: RUN/report)"), "dir")
    complete_with(report.add_argument("--data-dir", help="folder holding the dataset files (default: where the run "
                                      "found them)"), "dir")
    report.add_argument("--limit", type=int, metavar="N", help="the first N test images only (default: the run's "
                        "own test images)")
    complete_with(report.add_argument("--device", default="auto"), "device")
    report.set_defaults(run=_cmd_report)
