#!/usr/bin/env bash
# The GPU tests (tests/gpu) in one device call (kind nvidia-h200, carrying .whl/): wheels, full-size random weights,
# then pytest; under $OUT the GPU's name (gpu.txt), the log (gpu_tests.log) and a junit XML (gpu_tests.xml). Exits
# with pytest's status, 124 when the deadline stopped it (the results so far are in the log and the XML).
#   GPU_TESTS_K        a pytest -k expression, e.g. "not batch" (the batch test builds a second batch size: minutes)
#   GPU_TESTS_DEADLINE seconds from the start of this script by which pytest must be over (default 580: a device
#                      command may run 600 s)
#   INSTANTMESH_GPU_WEIGHTS  the weights folder (default /tmp/weights, written by benchmarks.make_weights if missing)
#   INSTANTMESH_GPU_CACHE  the worker's cache folder (default /tmp/gpu_tests_cache, kept: a later call on a machine
#                      still warm starts from its packages)
# Needs pytest in the device image's python3 (it has it); see docs/benchmarks.md, 'GPU tests'.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_tests_out}
source benchmarks/device_wheels.sh || exit 1
if ! python3 -c "import pytest" 2>/dev/null; then
  echo "gpu_tests.sh: python3 here has no pytest: put its wheels (pytest, pluggy, iniconfig, packaging) in .whl/" >&2
  exit 2
fi
W=${INSTANTMESH_GPU_WEIGHTS:-/tmp/weights}
source benchmarks/device_weights.sh  # keeps the OUT set above
[ -f $W/complete ] || { echo "gpu_tests.sh: the weights could not be written to $W" >&2; exit 2; }
export INSTANTMESH_GPU_WEIGHTS=$W INSTANTMESH_GPU_CACHE=${INSTANTMESH_GPU_CACHE:-/tmp/gpu_tests_cache}
limit=$(( ${GPU_TESTS_DEADLINE:-580} - SECONDS ))
if [ "$limit" -lt 60 ]; then
  echo "gpu_tests.sh: only ${limit} s left before the deadline after the weights: no tests run" >&2
  exit 124
fi
select=()
[ -n "${GPU_TESTS_K:-}" ] && select=(-k "$GPU_TESTS_K")
cached=$( [ -d "$INSTANTMESH_GPU_CACHE" ] && du -sh "$INSTANTMESH_GPU_CACHE" | cut -f1 || echo "none yet")
echo "gpu_tests.sh: pytest gets ${limit} s; cache $INSTANTMESH_GPU_CACHE: $cached"
# SIGINT at the deadline: pytest stops as after Ctrl-C and still writes its summary and the XML.
timeout -s INT -k 20 "$limit" python3 -m pytest -q tests/gpu -p no:cacheprovider -ra --durations=0 \
  -o log_cli=true --log-cli-level=INFO -o junit_family=xunit1 --junitxml="$OUT/gpu_tests.xml" "${select[@]}" 2>&1 \
  | grep --line-buffered -v "Loading weights\|kept in float32" | tee "$OUT/gpu_tests.log"
rc=${PIPESTATUS[0]}  # pytest's status (124 after the deadline), not tee's
echo "gpu_tests.sh: pytest exited $rc after $SECONDS s in all"
exit $rc
