#!/usr/bin/env bash
# The prepared GPU check (smoothcert issue 10, item 5): on a CUDA machine, in under 8 minutes, it measures
#   - throughput: certify against the pure forward pass (the ceiling), fp32 and bf16, ResNet-20 and ResNet-110,
#     n = 100 and 10,000 (benchmarks/throughput.py);
#   - one certify call on one input against the forward pass of its samples (benchmarks/per_call.py);
#   - the 40 ms latency budget table (`smoothcert bench-latency --budget-ms 40`: digits CNN and ResNet-20);
#   - a short certify run through the command line (a digits CNN trained for a few epochs, --batch auto);
# and prints ONE markdown table with the date, the card (nvidia-smi) and torch's version.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine, from anywhere
#   CPU=1 bash benchmarks/gpu_check.sh      # the same steps on a CPU with tiny sizes (a test runs this)
#
# Python: $PYTHON if set; else python3 when it already has torch and smoothcert's dependencies (a GPU image,
# which may have no network: the repository is then used through PYTHONPATH, nothing is installed); else the
# venv that `make setup` makes. Intermediate files go to $GPU_CHECK_OUT (default: a new temporary folder).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CPU=${CPU:-0}
OUT=${GPU_CHECK_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
START=$(date +%s)

if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif python3 -c "import torch, numpy, scipy, sklearn, matplotlib, tqdm, PIL" 2>/dev/null; then
    PY=python3
else
    make setup >&2
    PY=$ROOT/.venv/bin/python
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
SMOOTHCERT="$PY -m smoothcert.cli"

if [ "$CPU" = 1 ]; then
    DEVICE=cpu; MODELS="digits-cnn"; NS="100"; SECONDS_EACH=0.3; ROUNDS=1; PER_CALL=digits-cnn
    CERT_N=100; CERT_MAX=5; EPOCHS=1; LAT_REPEATS=2; CARD="CPU (dry run: tiny sizes, not figures to report)"
else
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'CUDA is not available to $PY (CPU=1 runs the dry run)')"
    DEVICE=cuda; MODELS="cifar-resnet20 cifar-resnet110"; NS="100 10000"; SECONDS_EACH=1; ROUNDS=2
    PER_CALL=cifar-resnet20
    CERT_N=10000; CERT_MAX=200; EPOCHS=5; LAT_REPEATS=15
    CARD=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 || echo "unknown card")
fi
step() { echo "[gpu_check $(( $(date +%s) - START )) s] $*" >&2; }

step "throughput: $MODELS, fp32 and bf16, n = $NS"
# shellcheck disable=SC2086
"$PY" benchmarks/throughput.py --devices $DEVICE --models $MODELS --amp fp32 bf16 --ns $NS \
    --seconds $SECONDS_EACH --rounds $ROUNDS --json "$OUT/throughput.json" >&2

step "one certify call on one input (n0 = 100, n = 100 and 1,000)"
"$PY" benchmarks/per_call.py --device $DEVICE --models $PER_CALL --rounds $((ROUNDS + 1)) \
    --seconds $SECONDS_EACH --json "$OUT/per_call.json" >&2

step "short certify run: digits CNN ($EPOCHS epochs), n = $CERT_N, $CERT_MAX inputs, --batch auto"
$SMOOTHCERT train --arch digits-cnn --data digits --sigma 0.25 --epochs $EPOCHS --device $DEVICE \
    --out "$OUT/digits.pt2" >&2
T0=$("$PY" -c "import time; print(time.time())")
$SMOOTHCERT certify --model "$OUT/digits.pt2" --data digits --sigma 0.25 --n0 100 --n $CERT_N --alpha 0.001 \
    --batch auto --device $DEVICE --max $CERT_MAX --seed 0 --no-progress --out "$OUT/certify.tsv" >&2
T1=$("$PY" -c "import time; print(time.time())")

step "latency budget: the most samples one input can use within 40 ms (digits CNN, ResNet-20)"
"$PY" - "$OUT" <<'EOF2'
import sys, numpy as np, torch
from smoothcert.models import build
out = sys.argv[1]
torch.manual_seed(0)
torch.save(build("cifar-resnet20").state_dict(), f"{out}/resnet20.pt")
np.savez(f"{out}/cifar_like.npz", x=np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32), y=np.zeros(4, int))
EOF2
LATENCY="$OUT/latency.md"
{
    echo "### 40 ms latency budget (\`smoothcert bench-latency --budget-ms 40\`, n0 = 100 included)"
    echo '```'
    $SMOOTHCERT bench-latency --model "$OUT/digits.pt2" --data digits --sigma 0.25 --budget-ms 40 --device $DEVICE \
        --repeats $LAT_REPEATS --results "$OUT/certify.tsv" || echo "bench-latency (digits) failed"
    $SMOOTHCERT bench-latency --model cifar-resnet20 --weights "$OUT/resnet20.pt" --data "npz:$OUT/cifar_like.npz" \
        --sigma 0.25 --budget-ms 40 --device $DEVICE --repeats $LAT_REPEATS || echo "bench-latency (ResNet-20) failed"
    echo '```'
} > "$LATENCY" 2>&1

"$PY" - "$OUT" "$CARD" "$T0" "$T1" "$CERT_N" "$CERT_MAX" "$DEVICE" <<'EOF'
import csv, datetime, json, os, sys

import torch

out, card, t0, t1, n, count, device = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), \
    int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
print(f"\n## GPU check, {datetime.date.today().isoformat()}: {card}; torch {torch.__version__}, device {device}\n")
print("| what | model | precision | n | batch | ceiling (samples/s) | smoothcert (samples/s) | ratio |")
print("|---|---|---|---|---|---|---|---|")
for r in json.load(open(os.path.join(out, "throughput.json"))):
    print(f"| certify_many vs forward | {r['model']} | {r['amp']} | {r['n']:,} | {r['batch']} | "
          f"{r['ceiling']:,.0f} | {r['certify']:,.0f} | {100 * r['ratio']:.0f} % |")
for r in json.load(open(os.path.join(out, "per_call.json"))):
    per_s = lambda ms: (r['n0'] + r['n']) / ms * 1e3
    print(f"| one certify call vs one forward pass | {r['model']} | fp32 | {r['n']:,} | {r['batch']} | "
          f"{per_s(r['ceiling_ms']):,.0f} ({r['ceiling_ms']:.1f} ms) | {per_s(r['certify_ms']):,.0f} "
          f"({r['certify_ms']:.1f} ms) | {100 * r['ratio']:.0f} % |")
rows = list(csv.DictReader(open(os.path.join(out, "certify.tsv")), delimiter="\t"))
accuracy = sum(int(r["correct"]) for r in rows) / max(1, len(rows))
print(f"| certify run (CLI, --batch auto) | digits-cnn | fp32 | {n:,} | auto | - | "
      f"{len(rows) * (100 + n) / (t1 - t0):,.0f} ({len(rows)} inputs in {t1 - t0:.1f} s, start-up included; "
      f"certified accuracy at r=0: {accuracy:.2f}) | - |")
print()
print(open(os.path.join(out, "latency.md")).read().strip())
EOF
step "done"
