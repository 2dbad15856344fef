#!/usr/bin/env bash
# Regenerates the site's figures (docs/assets/*.png) with convnet's own commands, the ones the guides
# show, then stores each as a 256-colour PNG so that every figure stays under 200 KB (tests/test_docs.py
# checks the size). Run from anywhere, with Fashion-MNIST reachable:
#
#   CONVNET_DATA=../shared/data bash docs/assets/make_figures.sh
#
# It trains the LeNet-5 run of the "Inspecting a model" guide (seeded) and runs three of the seed's
# experiments in full (params, pooling, depthpool); a few minutes on a 2-core CPU. Last, it draws the speed
# charts (docs/assets/charts/) from the measured numbers in docs/assets/speed.json (make_charts.py, which also
# runs alone: `python docs/assets/make_charts.py`).
set -euo pipefail
cd "$(dirname "$0")/../.."
assets="$PWD/docs/assets"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export MPLBACKEND=Agg
cd "$work"

# The seed's demo: two 7x7 line filters over the sample photos (guides/seed.md).
convnet featuremaps --out featuremaps

# The inspection guide's run and image: LeNet-5 on 6,000 images, and the first test image (an ankle boot).
convnet train --model lenet5 --limit 6000 --epochs 3 --test-limit 1000 --out runs/lenet5 --verbose 0
python3 -c "
from PIL import Image
from convnet.datasets import fashion_mnist
(_, _), (x_test, _) = fashion_mnist.load_data()
Image.fromarray(x_test[0]).save('boot.png')"
convnet featuremaps boot.png --model runs/lenet5/model.convnet --layer c1 --out maps
convnet filters runs/lenet5/model.convnet --out filters
convnet explain runs/lenet5/model.convnet boot.png --out explanations
convnet explain runs/lenet5/model.convnet boot.png --method occlusion --class-index 9 --out explanations
convnet report runs/lenet5

# The seed's claims as experiments (guides/experiments.md), in full.
for name in params pooling depthpool; do
    convnet experiment "$name" --out "experiments/$name"
done

store() {  # store SOURCE NAME: a 256-colour copy of SOURCE as docs/assets/NAME
    python3 -c "
import sys
from PIL import Image
Image.open(sys.argv[1]).convert('RGB').quantize(256, dither=Image.Dither.NONE).save(sys.argv[2], optimize=True)
" "$1" "$assets/$2"
    echo "$assets/$2"
}
store featuremaps/china-lines.png featuremaps-china-lines.png
store featuremaps/flower-lines.png featuremaps-flower-lines.png
store maps/boot-c1.png lenet5-boot-c1.png
store filters/model-c1-filters.png lenet5-c1-filters.png
store explanations/boot-gradcam.png lenet5-boot-gradcam.png
store explanations/boot-occlusion.png lenet5-boot-occlusion.png
store runs/lenet5/report/history.png lenet5-history.png
store runs/lenet5/report/confusion_matrix.png lenet5-confusion-matrix.png
store runs/lenet5/report/misclassified.png lenet5-misclassified.png
store experiments/params/params.png experiment-params.png
store experiments/pooling/pooling.png experiment-pooling.png
store experiments/depthpool/depthpool.png experiment-depthpool.png

# The speed tables as charts (guides/speed.md, distributed.md, explorer.md), from docs/assets/speed.json.
python3 "$assets/make_charts.py"
