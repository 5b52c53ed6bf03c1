#!/usr/bin/env bash
# Probes of the second start, in the device call right after benchmarks/gpu_fast_path.sh on the same (still warm)
# machine, from its cache folder: the staged read by lanes and chunk size on the files a second start reads,
# cuDNN's first calls across threads, the torch import with and without bytecode, and more second starts,
# alternating with and without the worker's bytecode cache. Results under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu-h200}
CACHE=${FAST_PATH_CACHE:-/tmp/fast_path_cache}
mkdir -p "$OUT"
source benchmarks/device_wheels.sh || exit 1
[ -d "$CACHE" ] && [ -d /tmp/weights ] || { echo "no $CACHE or /tmp/weights: run benchmarks/gpu_fast_path.sh first, on this machine"; exit 2; }
BUNDLE=$(find "$CACHE" -name "views-bundle.safetensors")
timeout 120 python3 -m benchmarks.read_lanes $(find "$CACHE" -name "*.safetensors" -size +100M) --lanes "${LANES:-1,4,8,16}" \
  --chunks-mib "${CHUNKS:-8,16}" --out "$OUT" 2>&1 | grep "^|"
mkdir -p "$OUT/fresh" && timeout 120 python3 -m benchmarks.read_lanes "$BUNDLE" --lanes 8,16 --chunks-mib 4,8,16 --staging pinned,pageable \
  --fresh-pinned --repeats 2 --out "$OUT/fresh" 2>&1 | grep "^|"
timeout 60 python3 -m benchmarks.cudnn_first_calls --out "$OUT" 2>&1 | grep "^|"
# the torch import: are its bytecode caches there, and does a writable cache folder change it?
python3 -c "import sys, torch, pathlib; p = pathlib.Path(torch.__file__).parent; print(torch.__file__, 'pyc files:', len(list(p.glob('__pycache__/*.pyc'))), 'writable:', __import__('os').access(p, __import__('os').W_OK))"
for prefix in "" /tmp/pyc /tmp/pyc; do
  PYTHONPYCACHEPREFIX=$prefix python3 -c "import time; t = time.perf_counter(); import torch; print('import torch, PYTHONPYCACHEPREFIX=$prefix: %.2f s' % (time.perf_counter() - t))"
done
for round in 1 2; do  # second starts, alternating with and without the worker's bytecode cache
  for pycache in default off; do
    [ $pycache = off ] && setting=off || setting=
    INSTANTMESH_RPC_CACHE=$CACHE INSTANTMESH_RPC_PYCACHE=$setting FAST_PATH_SPAWNED_AT=$(date +%s.%N) timeout 120 \
      python3 -m benchmarks.fast_path --child --weights /tmp/weights --steps 75 --out /tmp/probes > /dev/null 2>&1
    cp /tmp/probes/child.json "$OUT/start-probe-pycache-$pycache-round$round.json"
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); p=d['phases']; print(sys.argv[1], 'ready %.2f' % d['ready_s'], {k: round(v, 3) for k, v in p.items() if v > 0.02})" \
      "$OUT/start-probe-pycache-$pycache-round$round.json"
  done
done
ls "$OUT"
