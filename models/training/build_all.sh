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
# 1. data (tracerd synth --size clinical: adults on scanner grids, cached on the model grid): train
#    0..199, val 700..759, held-out test 100000..100099 (its native NIfTI files kept for evaluation)
mkdir -p runs
$PY data.py --splits train --n 200
$PY data.py --splits val --n 60
$PY data.py --splits test --n 100
# 2. training: the two models side by side, one thread each (2-core machine)
#    L2SNet, sized to about 2 h at one thread from per-iteration costs measured on this machine
#    (2026-12-01, AVX2, no BF16; README "Clinical recipe"): phase 1 1.6 s/iteration (8 crops of
#    96x96) -> 1000 iterations 27 min; cues 16 s per study -> 60 studies 16 min; phase 2 1.6
#    s/iteration (4 patches of 32^3) -> 2800 iterations 75 min. Best checkpoint by validation
#    (seeds 700..711) with the card's inference on the model grid (runs/l2snet/train.log)
$PY train_l2snet.py --n-train1 200 --iters1 1000 --batch1 8 --lr1 1e-3 --val-every1 500 \
  --n-train2 60 --iters2 2800 --batch2 4 --lr2 2e-3 --fg-fraction 0.6 --hot-fraction 0.15 --val-every2 1400 \
  --n-val 12 --threads 1 > runs/l2snet_stdout.log 2>&1 &
p1=$!
( $PY train_two_be_three.py --n-train 200 --n-val 60 --pre-iters 200 --epochs 6 --threads 1 \
  && $PY train_two_be_three.py --reuse --continue-heads --n-train 200 --n-val 60 --heads 2be3:ws --epochs 5 \
     --lr 1e-3 --threads 1 \
  && $PY train_two_be_three.py --reuse --robust --n-train 200 --n-val 60 --heads 2be3:ws,2be3:hn --epochs 4 \
     --lr 1e-4 --lam 500 --threads 1 \
  ) > runs/two_be_three_stdout.log 2>&1 &
p2=$!
wait $p1 $p2
# 3. ONNX export, INT8 QDQ quantisation, goldens, speed
$PY export.py --threads 1
# 4. held-out metrics on the exported files (L2SNet on each study's native grid)
$PY evaluate.py --n-test 100 --threads 1
# 5. model cards
$PY make_cards.py
echo "build_all: $(( $(date +%s) - start )) s"
