"""Compares L2SNet 3D U-Net weights on the same studies, study by study, with the card's inference
(pipeline.py: model grid, Gaussian sliding window, adaptive threshold with the location cue of
runs/l2snet/loc2d.tmp.onnx, the phase-1 network the rounds share, or of --loc2d-onnx), and the
geometric-mean ensemble of the given weights (--ensemble).

A phase-2 round replaces the last only when it is better here (README "Clinical recipe"); the
in-training validation cannot say so, since rounds may validate on different numbers of studies.

  python compare_seg3d.py runs/l2snet/seg3d_r2.pt runs/l2snet/seg3d_r3.pt --n 20
  python compare_seg3d.py ../l2snet/seg3d.fp32.onnx runs/l2snet/seg3d.pt:48,48,48 \\
      --loc2d-onnx ../l2snet/loc2d.int8.onnx --n 24 --ensemble

A weights file is a state dict (.pt) or a seg3d ONNX file (train_l2snet.load_seg3d), optionally
followed by :Z,Y,X, the patch it runs at (default: the card's patch_zyx). Metrics are on the model
grid (the cached arrays), as the in-training validation; --split test reads the held-out seeds
(cache them first with data.py --splits test).

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

CARD_PATCH = tuple(data.L2SNET["patch_zyx"])
ENSEMBLE = "geometric mean"


def load(spec):
    weights, _, patch = spec.partition(":")
    model = UNet3D()
    load_seg3d(model, weights)
    model.eval()
    return model, [int(p) for p in patch.split(",")] if patch else list(CARD_PATCH)


def probability(model_patch, s):
    model, patch = model_patch
    data.L2SNET["patch_zyx"] = patch
    with torch.no_grad():
        return sliding_window_torch(model, pipeline.petct_input(s.pet, s.ct),
                                    types.SimpleNamespace(bf16=False), inside=pipeline.body(s.pet))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("weights", nargs="+", help="seg3d state dicts (.pt) or ONNX files, each optionally :Z,Y,X")
    ap.add_argument("--loc2d-onnx", default=str(data.RUNS / "l2snet" / "loc2d.tmp.onnx"))
    ap.add_argument("--split", default="val", choices=["val", "test"])
    ap.add_argument("--n", "--n-val", type=int, default=20, help="studies: the first n seeds of the split")
    ap.add_argument("--skip", type=int, default=0, help="leave out the first seeds of those n")
    ap.add_argument("--ensemble", action="store_true",
                    help="also the voxel-wise geometric mean of the weights' probabilities")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = data.split(args.split, args.n)[args.skip:]
    sess = pipeline.session(args.loc2d_onnx, args.threads)
    models = {w: load(w) for w in args.weights}
    names = list(models) + ([ENSEMBLE] if args.ensemble else [])
    rows = {n: [] for n in names}
    for seed in seeds:
        s = data.load_many([seed])[0]
        cue = pipeline.location_cue(sess, s.pet)
        probs = {w: probability(m, s) for w, m in models.items()}
        if args.ensemble:
            probs[ENSEMBLE] = np.prod(list(probs.values()), axis=0) ** (1.0 / len(models))
        for n in names:
            r = autopet(s.mask, pipeline.adaptive_threshold(probs[n], cue), s.voxel_ml)
            rows[n].append(r)
            print(f"{n} seed {seed}: dice {r['dice']:.3f} fpv {r['fpv_ml']:.2f} ml "
                  f"fnv {r['fnv_ml']:.2f} ml", flush=True)
    out = {"split": args.split, "seeds": list(seeds)}
    for n in names:
        m = summarise(rows[n])
        out[n] = {"per_study": rows[n], "summary": m}
        print(f"{n}: mean Dice {m['mean_dice_lesion_studies']:.4f} ({m['n_lesion_studies']} studies "
              f"with lesions) pooled {m['pooled_dice']:.4f} FPV {m['mean_fpv_ml']:.3f} ml "
              f"FNV {m['mean_fnv_ml']:.3f} ml", flush=True)
    (data.RUNS / "l2snet" / "compare.json").write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
