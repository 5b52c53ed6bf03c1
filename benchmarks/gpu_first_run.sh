#!/usr/bin/env bash
# The first-run benchmark in one device call (kind nvidia-h200 or nvidia-h100-x1): wheels, full-size random
# weights, then benchmarks.first_run from empty caches; results (first_run.json, the log) under $OUT (default
# benchmarks/results/gpu-<card>/). Needs .whl/ where the image lacks packages (see gpu_fast_path.sh).
#   FIRST_RUN_DEADLINE  seconds after which no new measure starts (default 520: weights and start come first)
#   FIRST_RUN_PART      both (default), first or second: a fresh machine's first part (its first start and the build
#                       for one object) fills one call; the second (the rest of the build, the cached start, the
#                       batch) runs as the next call on the same warm machine, adding to first_run.json
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_wheels.sh || exit 1
source benchmarks/device_weights.sh
export FIRST_RUN_CACHE=/tmp/first_run_cache  # emptied by the benchmark: a first run on this machine
part=${FIRST_RUN_PART:-both}
[ "$part" = second ] || rm -rf /tmp/torchinductor_$(id -un) 2>/dev/null  # torch's own compiler caches too
deadline=$(( ${FIRST_RUN_DEADLINE:-520} - SECONDS ))
# Straight into $OUT, each measure as it is made: a call cut short by the device's limit keeps what it measured.
timeout 590 python3 -m benchmarks.first_run --weights $W --out "$OUT" --deadline "$deadline" --part "$part" 2>&1 \
  | grep -v "Loading weights\|kept in float32" | tee "$OUT/first_run.log"
exit "${PIPESTATUS[0]}"
