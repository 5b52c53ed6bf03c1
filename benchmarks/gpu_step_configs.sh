#!/usr/bin/env bash
# One device call (kind nvidia-h200 or nvidia-h100-x1, carrying .whl/): full-size random weights, a first start's
# first mesh on empty caches with its parts (benchmarks.first_run --part first, stopped after the first mesh), then
# benchmarks.step_configs (the step's packages under each Inductor setting in STEP_CONFIGS, default first; the other
# networks' packages from STEP_CONFIGS_REUSE, a cache root, when given, else from the default's).
# Results under $OUT (default benchmarks/results/gpu-<card>/). /tmp/step_configs is kept: a call cut short by the
# device's limit resumes there in the next call on the same machine (the first mesh is then not measured again).
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_wheels.sh || exit 1
source benchmarks/device_weights.sh
if [ ! -d /tmp/step_configs ]; then
  rm -rf /tmp/torchinductor_$(id -un) 2>/dev/null
  FIRST_RUN_CACHE=/tmp/first_mesh_cache timeout 120 python3 -m benchmarks.first_run --weights $W --out "$OUT/first_mesh" \
    --deadline 1 --part first 2>&1 | grep -v "Loading weights\|kept in float32" | tee "$OUT/first_mesh.log"
fi
timeout $(( ${STEP_CONFIGS_DEADLINE:-585} - SECONDS )) python3 -m benchmarks.step_configs --weights $W \
  --out "$OUT/step_configs" --configs "${STEP_CONFIGS:-default,autotune_gemm}" \
  ${STEP_CONFIGS_REUSE:+--reuse "$STEP_CONFIGS_REUSE"} 2>&1 | tee "$OUT/step_configs.log"
exit "${PIPESTATUS[0]}"
