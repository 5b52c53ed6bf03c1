#!/usr/bin/env bash
# The compiled-step variants in one device call (kind nvidia-h200): wheels, full-size random weights, then
# benchmarks.step_variants; results (json, md, log) under $OUT. VARIANTS picks them (default: all, greedy);
# PROFILE=1 adds the profile of the first variant (kernels by kind, the loop's fixed part, SDPA kernels).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu-h200}
mkdir -p "$OUT"
source benchmarks/device_wheels.sh || exit 1
export TORCH_LOGS=recompiles
W=/tmp/weights
[ -f $W/complete ] || { python3 -m benchmarks.make_weights $W 2>&1 | grep -v "Loading weights\|Writing model" && touch $W/complete; }
timeout "${STEP_VARIANTS_LIMIT:-540}" python3 -m benchmarks.step_variants --weights $W --steps "${STEPS:-75}" \
  --variants "${VARIANTS:-default,cudnn,flags,autotune}" ${PROFILE:+--profile} --out /tmp/step_variants 2>&1 \
  | grep -v "Loading weights\|kept in float32" | tee "$OUT/step_variants.log"
rc=${PIPESTATUS[0]}  # the benchmark's status (124 after a timeout), not that of the last command
cp /tmp/step_variants/step_variants.json /tmp/step_variants/step_variants.md "$OUT/" 2>/dev/null
ls -la "$OUT"
exit $rc
