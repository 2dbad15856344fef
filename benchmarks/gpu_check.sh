#!/usr/bin/env bash
# The prepared GPU check for a session lent a device (see README, "Speed"): one call, well under 10 minutes.
# 1. the GPU-marked tests (`-m gpu`): the real CUDA-graph capture trains the seed CNN (dropout) as eager training
#    does, with a partial last batch, a checkpoint and a resume (tests/test_graphs.py); explain on CUDA equals CPU,
# 2. `convnet bench` on the GPU with the hand-written PyTorch peers (Keras only if its wheels travel),
# 3. the fast recipe's time to 92% test accuracy.
# Results land in $OUT (the device tool brings them back).
set -uo pipefail
OUT="${OUT:-out}"; mkdir -p "$OUT"
export CONVNET_DATA="${CONVNET_DATA:-shared/data}" PYTHONUNBUFFERED=1
python3 -m pip install -q -e . 2>&1 | tail -1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
timeout 150 python3 -m pytest -m gpu -q -rs -p no:cacheprovider 2>&1 | tee "$OUT/gpu-tests.txt"
timeout 240 python3 -m convnet bench --device cuda --batch-size 128,1024 --peers --repeats 3 \
    --out "$OUT/bench-gpu.json" 2>&1 | tee "$OUT/bench-gpu.txt"
timeout 150 python3 -m convnet train --model fast --device cuda --out "$OUT/fast-run" --verbose 2 \
    2>&1 | tee "$OUT/fast-run.txt"
# the engine says why once at verbose level when it cannot capture: no such line means the run was graphed
grep -h "CUDA graph capture is not possible" "$OUT/fast-run.txt" > "$OUT/graph-fallback.txt" \
    && echo "CUDA graphs fell back to eager: see $OUT/graph-fallback.txt" || echo "no CUDA graph fallback reported"
