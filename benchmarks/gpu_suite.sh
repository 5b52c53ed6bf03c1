#!/usr/bin/env bash
# The GPU benchmark run, in parts that each fit one device call (weights are kept in build/ while the
# machine stays warm):  bash benchmarks/gpu_suite.sh sessions-warm | sessions-subprocess | protocol
# Writes under $OUT (or benchmarks/results/gpu). Needs the wheels in .whl/ where diffusers etc. are missing.
# OBJECTS (default 10) sets the session length; sessions-subprocess saves after every object, so a run cut by
# a time limit keeps the objects it finished.
set -euo pipefail
cd "$(dirname "$0")/.."
PART=${1:-}
case "$PART" in
  sessions-warm|sessions-subprocess|protocol) ;;
  *) echo "usage: $0 sessions-warm|sessions-subprocess|protocol" >&2; exit 2 ;;
esac
OUT=${OUT:-benchmarks/results/gpu}
source benchmarks/device_wheels.sh || exit 1
W=build/weights
if [ ! -f $W/complete ]; then
  python3 -m benchmarks.make_weights $W 2>&1 | grep -v "Loading weights\|Writing model" && touch $W/complete
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
case "$PART" in
  sessions-warm) python3 -m benchmarks.sessions --weights $W --objects "${OBJECTS:-10}" --steps 75 --modes cb --out "$OUT/sessions-warm" ;;
  sessions-subprocess) python3 -m benchmarks.sessions --weights $W --objects "${OBJECTS:-10}" --steps 75 --modes a --out "$OUT/sessions-subprocess" ;;
  protocol) python3 -m benchmarks.protocol --worker-python python3 --out "$OUT/protocol" ;;
esac
