"""Threshold sweep for L2SNet's post-processing on validation studies (seeds 700..), on the model
grid with the exported ONNX files (the shipped inference up to the threshold): mean and pooled
Dice, false-positive / false-negative volume and the predicted-to-true volume ratio per setting.
Chooses the card's thresholds on validation, never on the held-out set.

  python threshold_sweep.py --n-val 40        # writes runs/l2snet/threshold_sweep.json
"""
from __future__ import annotations

import argparse
import json

import numpy as np

import data
import pipeline
from evaluate import autopet, summarise

THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.8)
LOWERED = (0.1, 0.3, 0.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n-val", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    d = data.MODELS_OUT / "l2snet"
    seg = pipeline.session(d / "seg3d.fp32.onnx", args.threads)
    loc = pipeline.session(d / "loc2d.fp32.onnx", args.threads)
    cue_t = data.L2SNET["cue_threshold"]
    rows: dict[str, list] = {}
    for s in data.load_many(data.split("val", args.n_val)):
        prob = pipeline.sliding_window(seg, pipeline.petct_input(s.pet, s.ct))
        cue = pipeline.location_cue(loc, s.pet) > cue_t
        for t in THRESHOLDS:
            for lo in LOWERED:
                if lo > t:
                    continue
                r = autopet(s.mask, prob > np.where(cue, lo, t), s.voxel_ml)
                rows.setdefault(f"{t}/{lo}", []).append(r)
        print(f"seed {s.seed} done", flush=True)
    out = {}
    for k, rs in rows.items():
        m = summarise(rs)
        m["volume_ratio"] = sum(r["pred"] for r in rs) / max(1, sum(r["gt"] for r in rs))
        out[k] = m
        print(f"threshold/lowered {k}: mean Dice {m['mean_dice_lesion_studies']:.4f} pooled "
              f"{m['pooled_dice']:.4f} FPV {m['mean_fpv_ml']:.3f} FNV {m['mean_fnv_ml']:.3f} "
              f"volume ratio {m['volume_ratio']:.3f}", flush=True)
    (data.RUNS / "l2snet" / "threshold_sweep.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
