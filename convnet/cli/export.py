"""`convnet export`: a saved model as an ONNX file or a torch.export program, optionally checked number for
number against `predict` (`--check`). Registering the command imports nothing heavy."""
from __future__ import annotations

import argparse

from convnet.cli.completion import complete_with


def add_cli(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="write a model file as ONNX or a torch.export program",
                                 description="Export a .convnet model for use outside convnet: ONNX (opset >= 18, run "
                                             "by ONNX Runtime; needs pip install \"convnet[export]\") or a "
                                             "torch.export program (.pt2). Both take NHWC float32 images with any "
                                             "batch size and return what predict returns.")
    complete_with(export.add_argument("model", metavar="MODEL", help="a .convnet file"), "file")
    export.add_argument("--format", choices=["onnx", "torch"], help="default: from the --output extension")
    complete_with(export.add_argument("--output", required=True, metavar="PATH",
                                      help="the file to write (.onnx or .pt2)"), "file")
    export.add_argument("--opset", type=int, default=18, help="ONNX opset, 18 or later (default: 18)")
    export.add_argument("--check", action="store_true", help="run the written file on random and real images and "
                        "fail unless it agrees with predict within 1e-4")
    export.set_defaults(run=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from convnet.cli.common import load_model_file
    model = load_model_file(args.model, "cpu", compile=False)
    report = model.export(args.output, format=args.format, check=args.check, opset=args.opset)
    print(f"Wrote {report['path']} ({report['format']}, {model.count_params():,} parameters)")
    if report["max_difference"] is not None:
        print(f"Checked with {', '.join(report['checked'])}: largest difference from predict "
              f"{report['max_difference']:.2g} (tolerance 1e-4)")
    return 0
