"""Which seg3d windows can be skipped? The location cue as a gate, measured on held-out clinical
studies (seeds data.SPLITS["test"], native grids, as tracerd runs them).

Every body window of a study runs once (seg3d fp32, loc2d INT8 as tracerd's ort-cpu default runs
it); each candidate gate is then replayed by blending only the windows it keeps. A gate keeps a
window when the cue exceeds the threshold somewhere in it ("window") or in its central half, out
to the volume's faces where the window touches them ("core": each voxel lies in the core of
about one window instead of in up to eight windows). Against the whole-volume path (every body
window): the shipped mask's Dice, lesion count, and the autoPET metrics against the ground truth.

usage: cue_gate.py [--n 40] [--start 0]   (rows to runs/l2snet_cue_gate.jsonl, resumable; the
summary of every gate to runs/l2snet_cue_gate.json, which make_cards.py --update-gate reads)
"""
from __future__ import annotations

import argparse
import json

import numpy as np
from scipy import ndimage

import data
import evaluate
import pipeline

RUNS = data.RUNS
ROWS = RUNS / "l2snet_cue_gate.jsonl"
GATES = [(rule, t) for rule in ("window", "core") for t in (0.5, 0.1, 0.05)]


def window_outputs(seg, m):
    """Every body window of the model grid through seg3d: (padded shape, window slices, outputs)."""
    p = data.L2SNET["patch_zyx"]
    x = pipeline.petct_input(m.pet, m.ct)
    shape = x.shape[1:]
    padded = [max(n, q) for n, q in zip(shape, p)]
    xp = np.zeros((2, *padded), np.float32)
    xp[:, :shape[0], :shape[1], :shape[2]] = x
    body = np.zeros(padded, bool)
    body[:shape[0], :shape[1], :shape[2]] = pipeline.body(m.pet)
    sls = [(slice(z, z + p[0]), slice(y, y + p[1]), slice(w, w + p[2]))
           for z in data.window_starts(padded[0], p[0], data.L2SNET["overlap"])
           for y in data.window_starts(padded[1], p[1], data.L2SNET["overlap"])
           for w in data.window_starts(padded[2], p[2], data.L2SNET["overlap"])]
    sls = [s for s in sls if body[s].any()]
    name = seg.get_inputs()[0].name
    outs = []
    for i in range(0, len(sls), 4):
        batch = np.stack([xp[(slice(None),) + s] for s in sls[i:i + 4]])
        outs += list(seg.run(None, {name: batch})[0][:, 0])
    return padded, sls, outs


def core(sl, padded, patch):
    """A window's core: its central half (a quarter of the patch in from each side), out to the
    (zero-padded) volume's faces on the sides where the window reaches them. The cores of windows
    at overlap 0.5 tile the volume: each voxel lies in the core of about one window."""
    return tuple(slice(0 if a.start == 0 else a.start + p // 4, n if a.stop >= n else a.stop - p // 4)
                 for a, p, n in zip(sl, patch, padded))


def study_row(seed, loc, seg):
    m, gt, voxel_ml, _ = evaluate.native(seed)
    cue_m = pipeline.location_cue(loc, m.pet)
    padded, sls, outs = window_outputs(seg, m)
    cp = np.zeros(padded, np.float32)
    cp[:cue_m.shape[0], :cue_m.shape[1], :cue_m.shape[2]] = cue_m
    peak = {"window": np.array([cp[s].max() for s in sls]),
            "core": np.array([cp[core(s, padded, data.L2SNET["patch_zyx"])].max() for s in sls])}
    wg = pipeline.gaussian_weights(data.L2SNET["patch_zyx"])
    cue = m.to_native(cue_m)

    def mask(keep):
        acc, wsum = np.zeros(padded, np.float32), np.zeros(padded, np.float32)
        for s, o, k in zip(sls, outs, keep):
            if k:
                acc[s] += wg * o
                wsum[s] += wg
        prob = np.divide(acc, wsum, out=np.zeros_like(acc), where=wsum > 0)
        prob = prob[:cue_m.shape[0], :cue_m.shape[1], :cue_m.shape[2]]
        return pipeline.l2snet_mask(m.to_native(prob), cue)

    def metrics(mk):
        inter, g, p = int((gt & mk).sum()), int(gt.sum()), int(mk.sum())
        return {"lesions": int(ndimage.label(mk, evaluate.CONN18)[1]), "inter": inter, "gt": g, "pred": p,
                "dice": 2 * inter / (g + p) if g else None, "voxel_ml": voxel_ml}

    full = mask(np.ones(len(sls), bool))
    row = {"seed": seed, "windows": len(sls), "gt_lesions": int(ndimage.label(gt, evaluate.CONN18)[1]),
           "body": metrics(full)}
    for rule, t in GATES:
        keep = peak[rule] > t
        mk = mask(keep)
        both, den = int((mk & full).sum()), int(mk.sum() + full.sum())
        row[f"{rule}_{t:g}"] = {**metrics(mk), "run": int(keep.sum()), "and_body": both,
                                "dice_vs_body": 2 * both / den if den else 1.0}
    return row


def summarise(rows):
    """Per gate: windows run as a share of the body windows, the mask against the whole-volume
    path (pooled and worst Dice, studies with the same lesion count), mean Dice against the truth."""
    def mean_dice(key):
        d = [r[key]["dice"] for r in rows if r[key]["dice"] is not None]
        return float(np.mean(d))
    out = {"studies": len(rows), "seeds": [rows[0]["seed"], rows[-1]["seed"]],
           "body_windows": sum(r["windows"] for r in rows),
           "mean_dice_body": mean_dice("body"), "gates": {}}
    for rule, t in GATES:
        k = f"{rule}_{t:g}"
        both = sum(r[k]["and_body"] for r in rows)
        voxels = sum(r[k]["pred"] + r["body"]["pred"] for r in rows)
        out["gates"][k] = {
            "rule": rule, "cue_gate": t,
            "windows_run": sum(r[k]["run"] for r in rows),
            "share_of_body_windows": sum(r[k]["run"] for r in rows) / out["body_windows"],
            "mask_dice_vs_body_pooled": 2 * both / voxels if voxels else 1.0,
            "mask_dice_vs_body_min": min(r[k]["dice_vs_body"] for r in rows),
            "mask_dice_vs_body_mean": float(np.mean([r[k]["dice_vs_body"] for r in rows])),
            "same_lesion_count": sum(r[k]["lesions"] == r["body"]["lesions"] for r in rows),
            "mean_dice": mean_dice(k),
            "mean_dice_change": mean_dice(k) - out["mean_dice_body"],
        }
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--start", type=int, default=0)
    args = ap.parse_args()
    seeds = data.split("test")[args.start:args.start + args.n]
    data.ensure(seeds, keep_native=True)
    m = data.MODELS_OUT / "l2snet"
    loc = pipeline.session(m / "loc2d.int8.onnx")
    seg = pipeline.session(m / "seg3d.fp32.onnx")
    rows = evaluate.resumable_rows(ROWS, seeds, lambda seed: study_row(seed, loc, seg),
                                   lambda r: f"{r['windows']} windows")
    (RUNS / "l2snet_cue_gate.json").write_text(json.dumps(summarise(rows), indent=1))
    print(json.dumps(summarise(rows)["gates"], indent=1))


if __name__ == "__main__":
    main()
