#!/usr/bin/env bash
# The throughput benchmark in one device call (kind nvidia-h200): wheels, full-size random weights, then
# benchmarks.throughput for BATCHES (default 1,2,4,8; split across calls, results merge into one JSON) and LANES
# (the worker's --mesh-lane: default on; LANES=on,off measures both) with OBJECTS objects each (default 16). Results (json, md, log) under OUT (default benchmarks/results/gpu-h200).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu-h200}
source benchmarks/device_wheels.sh || exit 1
source benchmarks/device_weights.sh  # keeps the OUT set above
timeout "${THROUGHPUT_LIMIT:-540}" python3 -m benchmarks.throughput --weights $W --steps "${STEPS:-75}" --batches "${BATCHES:-1,2,4,8}" \
  --mesh-lanes "${LANES:-on}" \
  --objects "${OBJECTS:-16}" --format "${FORMAT:-obj}" --out "$OUT" 2>&1 | tee -a "$OUT/throughput.log"
ls -la "$OUT"
