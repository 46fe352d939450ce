#!/usr/bin/env bash
# The GPU path, measured: run on a machine with one CUDA GPU (about 5 minutes), from the
# repository root, after `make test-fast` has built .venv (or with PYTHON pointing at an
# environment that has calibtut and a CUDA build of PyTorch). Writes everything it prints to
# ${OUT:-gpu_check}/gpu_check.log; copy its tables into benchmarks/README.md.
#
#   1. the core on CUDA: binning, losses and metrics against float64 and MONAI on the GPU
#      (tests/test_device.py with CALIBTUT_TEST_DEVICE=cuda), AMP under autocast;
#   2. benchmarks/bench_train_gpu.py: step time and peak memory of Dice+CE, + hard, + soft at
#      the paper's ACDC and AMOS patch sizes and the full AMOS 192 x 192 x 64 (bf16 or fp16
#      AMP, cudnn.benchmark): the loss's share of the step and whether soft binning fits;
#   3. benchmarks/bench_losses.py --device cuda: loss forward+backward against the per-(image,
#      class) loop written like the reference code, and the metric against MONAI's, on the GPU;
#   4. calibtut demo on the GPU: the whole main job, its wall time and its table.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-gpu_check}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PYTHON" -c "import torch, monai; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'monai', monai.__version__); assert torch.cuda.is_available(), 'no CUDA device'"

echo "== 1. the core on CUDA"
CALIBTUT_TEST_DEVICE=cuda "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_device.py

echo "== 2. training step time and memory (bench_train_gpu.py)"
"$PYTHON" benchmarks/bench_train_gpu.py

echo "== 3. losses and metric on the GPU (bench_losses.py)"
"$PYTHON" benchmarks/bench_losses.py --device cuda

echo "== 4. calibtut demo on the GPU"
start=$(date +%s)
"$PYTHON" -m calibtut demo --device cuda --out "$OUT/demo" --overwrite
echo "demo wall time: $(( $(date +%s) - start )) s"
