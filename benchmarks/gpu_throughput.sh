#!/usr/bin/env bash
# The throughput benchmark in one device call (kind nvidia-h200): wheels, full-size random weights, then
# benchmarks.throughput for BATCHES (default 1,2,4,8; split across calls, results merge into one JSON) with
# OBJECTS objects each (default 16). Results (json, md, log) under OUT (default benchmarks/results/gpu-h200).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu-h200}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  # The worker runs isolated (no PYTHONPATH from its parent), so the wheels join its interpreter's path.
  SITE=$(python3 -c "import site; print(site.getsitepackages()[0])")
  echo /tmp/site > "$SITE/zz-instantmesh-rpc-wheels.pth" || exit 1
fi
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 INSTANTMESH_RPC_PYTHON=python3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
W=/tmp/weights
[ -f $W/complete ] || { python3 -m benchmarks.make_weights $W 2>&1 | grep -v "Loading weights\|Writing model" && touch $W/complete; }
timeout "${THROUGHPUT_LIMIT:-540}" python3 -m benchmarks.throughput --weights $W --steps "${STEPS:-75}" --batches "${BATCHES:-1,2,4,8}" \
  --objects "${OBJECTS:-16}" --format "${FORMAT:-obj}" --out "$OUT" 2>&1 | tee -a "$OUT/throughput.log"
ls -la "$OUT"
