"""Compares L2SNet 3D U-Net weights on the same validation studies (seeds 700..), study by study,
with the card's inference (pipeline.py: model grid, Gaussian sliding window, adaptive threshold
with the location cue of runs/l2snet/loc2d.tmp.onnx, the phase-1 network the rounds share, or of
--loc2d-onnx).

A phase-2 round replaces the last only when it is better here (README "Clinical recipe"); the
in-training validation cannot say so, since rounds may validate on different numbers of studies.

  python compare_seg3d.py runs/l2snet/seg3d_r2.pt runs/l2snet/seg3d_r3.pt --n-val 20
  python compare_seg3d.py ../l2snet/seg3d.fp32.onnx runs/l2snet/seg3d.pt:48,48,48 \
      --loc2d-onnx ../l2snet/loc2d.int8.onnx --n-val 24

A weights file is a state dict (.pt) or a seg3d ONNX file (train_l2snet.load_seg3d), optionally
followed by :Z,Y,X, the patch it runs at (default: the card's patch_zyx).

Prints per-study Dice and false-positive/negative volumes and the autoPET summary per weights
file; writes runs/l2snet/compare.json.
"""
from __future__ import annotations

import argparse
import json
import types

import numpy as np
import torch

import data
import pipeline
from evaluate import autopet, summarise
from l2snet import UNet3D
from train_l2snet import load_seg3d, sliding_window_torch


def rows_for(spec, val, cues):
    weights, _, patch = spec.partition(":")
    data.L2SNET["patch_zyx"] = [int(p) for p in patch.split(",")] if patch else list(CARD_PATCH)
    model = UNet3D()
    load_seg3d(model, weights)
    model.eval()
    args = types.SimpleNamespace(bf16=False)
    rows = []
    with torch.no_grad():
        for s, cue in zip(val, cues):
            prob = sliding_window_torch(model, pipeline.petct_input(s.pet, s.ct), args,
                                        inside=pipeline.body(s.pet))
            rows.append(autopet(s.mask, pipeline.adaptive_threshold(prob, cue), s.voxel_ml))
    return rows


CARD_PATCH = tuple(data.L2SNET["patch_zyx"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("weights", nargs="+", help="seg3d state dicts (.pt) or ONNX files, each optionally :Z,Y,X")
    ap.add_argument("--loc2d-onnx", default=str(data.RUNS / "l2snet" / "loc2d.tmp.onnx"))
    ap.add_argument("--n-val", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    val = data.load_many(data.split("val", args.n_val))
    sess = pipeline.session(args.loc2d_onnx, args.threads)
    cues = [pipeline.location_cue(sess, s.pet) for s in val]
    out = {"seeds": [s.seed for s in val]}
    for w in args.weights:
        rows = rows_for(w, val, cues)
        out[w] = {"per_study": rows, "summary": summarise(rows)}
        for s, r in zip(val, rows):
            print(f"{w} seed {s.seed}: dice {r['dice']:.3f} fpv {r['fpv_ml']:.2f} ml "
                  f"fnv {r['fnv_ml']:.2f} ml", flush=True)
        m = out[w]["summary"]
        print(f"{w}: mean Dice {m['mean_dice_lesion_studies']:.4f} ({m['n_lesion_studies']} studies "
              f"with lesions) pooled {m['pooled_dice']:.4f} FPV {m['mean_fpv_ml']:.3f} ml "
              f"FNV {m['mean_fnv_ml']:.3f} ml", flush=True)
    (data.RUNS / "l2snet" / "compare.json").write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
