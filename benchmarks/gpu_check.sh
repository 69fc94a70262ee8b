#!/usr/bin/env bash
# GPU check: train the two-tower `seed` and `default` presets on MovieLens 100k and the
# `default` preset on 4M synthetic rows, on CUDA and on the CPU, and compare the metrics.
#
#   RECFUNNEL_DATA_DIR=/path/to/data bash benchmarks/gpu_check.sh [OUT_DIR]
#
# Exit 0 when every GPU run's Recall@10 is within TOL (default 0.01) of its CPU run, 1 when
# one is not, 2 when there is no CUDA GPU. SKIP_CPU_4M=1 skips the (slow) 4M CPU run and
# only reports the GPU's figures. With 2+ GPUs it also trains `seed` with --nproc 2 (NCCL).
#
# Status: first run 2026-11-29 on one H200 (docs/scale.md, "GPU"): all within TOL; the NCCL
# step (2+ GPUs) has not run yet.
set -euo pipefail

PY=${PY:-python}
OUT=${1:-gpu_check_out}
TOL=${TOL:-0.01}
mkdir -p "$OUT"

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "error: no CUDA GPU visible to torch; nothing to compare" >&2
  exit 2
fi
"$PY" -c 'import torch; print("GPU:", torch.cuda.get_device_name(0), "torch", torch.__version__)'

train() {  # name device extra-args...
  local name=$1 device=$2; shift 2
  local started=$SECONDS
  "$PY" -m recfunnel train --model two-tower --device "$device" --json --quiet "$@" \
    > "$OUT/$name-$device.json"
  echo "$name on $device: $((SECONDS - started)) s" >&2
}

for preset in seed default; do
  for device in cuda cpu; do
    train "ml100k-$preset" "$device" --dataset movielens-100k --preset "$preset"
  done
done

if [ ! -f "$OUT/s4m.parquet" ]; then
  "$PY" -m recfunnel synth --users 200000 --items 40000 --interactions 4000000 \
    --out "$OUT/s4m.parquet"
fi
train synthetic-4m cuda --train "$OUT/s4m.parquet" --preset default
if [ "${SKIP_CPU_4M:-0}" != 1 ]; then
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} train synthetic-4m cpu --train "$OUT/s4m.parquet" \
    --preset default
fi

if [ "$("$PY" -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  "$PY" -m recfunnel train --model two-tower --dataset movielens-100k --preset seed \
    --batch-size 4096 --nproc 2 --device cuda --json --quiet > "$OUT/ml100k-seed-nccl2-cuda.json"
fi

"$PY" - "$OUT" "$TOL" <<'PYEOF'
import json, sys
from pathlib import Path

out, tol = Path(sys.argv[1]), float(sys.argv[2])
bad = 0
print(f"| run | Recall@10 GPU | Recall@10 CPU | diff | fit s GPU | fit s CPU |")
print("|---|---|---|---|---|---|")
for gpu in sorted(out.glob("*-cuda.json")):
    name = gpu.name.removesuffix("-cuda.json")
    g = json.loads(gpu.read_text())
    cpu = out / f"{name}-cpu.json"
    c = json.loads(cpu.read_text()) if cpu.exists() else None
    if name.endswith("-nccl2"):
        c = json.loads((out / "ml100k-seed-cpu.json").read_text())
    diff = None if c is None else g["recall@10"] - c["recall@10"]
    if diff is not None and abs(diff) > tol:
        bad += 1
    cells = [name, f"{g['recall@10']:.4f}", "-" if c is None else f"{c['recall@10']:.4f}",
             "-" if diff is None else f"{diff:+.4f}", f"{g['fit_seconds']:.1f}",
             "-" if c is None else f"{c['fit_seconds']:.1f}"]
    print("| " + " | ".join(cells) + " |")
print(f"\n{bad} run(s) differ by more than {tol}" if bad else f"\nall within {tol}")
sys.exit(1 if bad else 0)
PYEOF
