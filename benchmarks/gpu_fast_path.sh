#!/usr/bin/env bash
# The fast-path benchmark in one device call (kind nvidia-h200): wheels, full-size random weights, then
# benchmarks.fast_path; results (json, md, log) under $OUT. Needs .whl/ (diffusers, msgspec, omegaconf, antlr4,
# trimesh, importlib_metadata) where the image lacks them; see docs/benchmarks.md.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu-h200}
source benchmarks/device_wheels.sh || exit 1
export TORCH_LOGS=recompiles,graph_breaks
source benchmarks/device_weights.sh  # keeps the OUT set above
if [ -z "${FAST_PATH_CACHE:-}" ]; then  # a known folder, to look into after the run; emptied, as a first start needs
  export FAST_PATH_CACHE=/tmp/fast_path_cache && rm -rf "$FAST_PATH_CACHE"
fi
timeout "${FAST_PATH_LIMIT:-520}" python3 -m benchmarks.fast_path --weights $W --steps "${STEPS:-75}" --out /tmp/fast_path 2>&1 \
  | grep -v "Loading weights\|kept in float32" | tee "$OUT/fast_path.log"
rc=${PIPESTATUS[0]}  # the benchmark's status (124 after a timeout), not that of the last command
cp /tmp/fast_path/fast_path.json /tmp/fast_path/fast_path.md /tmp/fast_path/profile_load.txt "$OUT/" 2>/dev/null
ls -la "$OUT"
exit $rc
