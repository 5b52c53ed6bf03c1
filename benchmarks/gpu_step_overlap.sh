#!/usr/bin/env bash
# The reference pass of the next step beside the main pass of this one (benchmarks.step_overlap) in one device call
# (kind nvidia-h200): wheels, full-size random weights, eager and Inductor kernels; results (json, md, log) under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu-h200}
mkdir -p "$OUT"
source benchmarks/device_wheels.sh || exit 1
W=/tmp/weights
[ -f $W/complete ] || { python3 -m benchmarks.make_weights $W 2>&1 | grep -v "Loading weights\|Writing model" && touch $W/complete; }
timeout "${STEP_OVERLAP_LIMIT:-500}" python3 -m benchmarks.step_overlap --weights $W --steps "${STEPS:-75}" ${STEP_OVERLAP_ARGS:---compile} --out /tmp/step_overlap 2>&1 \
  | grep -v "Loading weights\|kept in float32" | tee "$OUT/step_overlap.log"
rc=${PIPESTATUS[0]}
cp /tmp/step_overlap/step_overlap.json /tmp/step_overlap/step_overlap.md "$OUT/" 2>/dev/null
exit $rc
