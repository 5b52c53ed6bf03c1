#!/usr/bin/env bash
# The worker-pool benchmarks on GPUs, each part one device call (weights stay in build/ while the machine is warm):
#   bash benchmarks/scale_suite.sh pool    # one H200: 1 worker vs 2 workers on the GPU vs split mode
#                                          #   -> benchmarks/results/gpu-h200/pool.{json,md}
#   bash benchmarks/scale_suite.sh scale   # every GPU of the machine: pool on 1, 2 (, 4) GPUs, split on 2, Ray
#                                          #   -> benchmarks/results/gpu-h200-xN/scale.{json,md}
# CONFIGS overrides the part's configurations (results merge into the same JSON, so a part can be re-run in
# pieces, e.g. CONFIGS=ray-1,ray-2); OBJECTS (default 8) is objects per GPU; OUT overrides the folder.
set -euo pipefail
cd "$(dirname "$0")/.."
PART=${1:-}
source benchmarks/device_wheels.sh || exit 1
GPUS=$(nvidia-smi -L | grep -c '^GPU ')
case "$PART" in
  pool) CONFIGS=${CONFIGS:-1gpu,2w-1gpu,split-1gpu}; OUT=${OUT:-benchmarks/results/gpu-h200}; NAME=pool ;;
  scale)
    if [ "$GPUS" -lt 2 ]; then echo "scale needs 2 or more GPUs; this machine has $GPUS" >&2; exit 2; fi
    DEFAULT=1gpu,2gpu,split-2gpu,ray-1,ray-2
    if [ "$GPUS" -ge 4 ]; then DEFAULT=1gpu,2gpu,4gpu,split-2gpu,ray-1,ray-2,ray-4; fi
    CONFIGS=${CONFIGS:-$DEFAULT}; OUT=${OUT:-benchmarks/results/gpu-h200-x$GPUS}; NAME=scale
    python3 -c "import ray" 2>/dev/null || python3 -m pip install -q "ray>=2.9" ;;
  *) echo "usage: $0 pool|scale" >&2; exit 2 ;;
esac
W=build/weights
if [ ! -f $W/complete ]; then
  python3 -m benchmarks.make_weights $W 2>&1 | grep -v "Loading weights\|Writing model" && touch $W/complete
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -m benchmarks.scale --weights $W --steps 75 --objects "${OBJECTS:-8}" --configs "$CONFIGS" --out "$OUT" --name $NAME
