# Sourced by the GPU scripts after device_wheels.sh: OUT (default benchmarks/results/gpu-<card>, the card as h100 or
# h200), the card's name, memory and driver in $OUT/gpu.txt, and full-size random weights in W (default /tmp/weights),
# written once per machine (about 30 s) and reused while it is kept.
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr '[:upper:]' '[:lower:]' | grep -o 'h[0-9]\{3\}' || echo gpu)
OUT=${OUT:-benchmarks/results/gpu-$card}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
W=${W:-/tmp/weights}
[ -f $W/complete ] || { python3 -m benchmarks.make_weights $W 2>&1 | grep -v "Loading weights\|Writing model" && touch $W/complete; }
