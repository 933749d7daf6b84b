#!/usr/bin/env bash
# Rebuild every model under models/ from nothing: venv, synthetic data, training, export (fp32 +
# INT8 QDQ + goldens), held-out evaluation, model cards. CPU only; see README.md for wall times.
set -euo pipefail
cd "$(dirname "$0")"
start=$(date +%s)
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install -r requirements.txt
fi
PY=.venv/bin/python
# 1. data: train 0..699, val 700..799, held-out test 100000..100399 (tracerd's own generator)
mkdir -p runs
$PY data.py
# 2. training: the two models side by side, one thread each (2-core machine)
#    L2SNet: bf16 autocast, phase 1 on all 700 training studies, phase 2 on the first 400, best
#    checkpoint by validation (seeds 700..739) with the card's inference (runs/l2snet/train.log)
$PY train_l2snet.py --n-train1 700 --iters1 3000 --batch1 8 --lr1 1e-3 --val-every1 500 \
  --n-train2 400 --iters2 12000 --batch2 4 --lr2 2e-3 --fg-fraction 0.67 --val-every2 1500 --n-val 40 \
  --bf16 --threads 1 > runs/l2snet_stdout.log 2>&1 &
p1=$!
( $PY train_two_be_three.py --n-train 300 --n-val 100 --pre-iters 200 --epochs 6 --threads 1 \
  && $PY train_two_be_three.py --reuse --continue-heads --n-train 300 --heads 2be3:ws --epochs 5 --lr 1e-3 --threads 1 \
  && $PY train_two_be_three.py --reuse --robust --n-train 300 --heads 2be3:ws,2be3:hn --epochs 4 --lr 1e-4 --lam 500 \
     --threads 1 \
  ) > runs/two_be_three_stdout.log 2>&1 &
p2=$!
wait $p1 $p2
# 3. ONNX export, INT8 QDQ quantisation, goldens, speed
$PY export.py --threads 1
# 4. held-out metrics on the exported files
$PY evaluate.py --threads 1
# 5. model cards
$PY make_cards.py
echo "build_all: $(( $(date +%s) - start )) s"
