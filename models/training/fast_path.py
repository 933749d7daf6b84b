"""tracerd's fast path against the fp32 whole-volume path, on held-out clinical studies.

The speed issue's accuracy point, measured as it is stated: L2SNet as tracerd's ort-cpu default runs
it (precision `auto`: loc2d and seg3d INT8; seg3d only on the cued windows) against the path without
either shortcut (loc2d and seg3d fp32, seg3d on every body window), both with the shipped
post-processing on the native grid (data.SPLITS["test"]). Per study: each mask against the ground
truth (the autoPET metrics), the two masks against each other, their lesion counts. 2Be3-Net's
INT8 scores against fp32 are the two_be_three card's (evaluate.py).

Rows to runs/l2snet_fast_path.jsonl (resumable), the summary to runs/l2snet_fast_path.json.

usage: fast_path.py [--n 100] [--start 0]
"""
from __future__ import annotations

import argparse
import json
import time

import data
import evaluate
import export
import pipeline

L2 = data.MODELS_OUT / "l2snet"
ROWS = data.RUNS / "l2snet_fast_path.jsonl"
SUMMARY = data.RUNS / "l2snet_fast_path.json"
FILES = [f"{role}.{p}.onnx" for role in ("loc2d", "seg3d") for p in ("fp32", "int8")]
PATHS = {"whole_fp32": ("fp32", False), "fast": ("int8", True)}   # (precision of both files, cued)


def study_row(seed, sessions):
    m, gt, voxel_ml, _ = evaluate.native(seed)
    row = {"seed": seed}
    masks = {}
    for name, (prec, cued) in PATHS.items():
        t = time.perf_counter()
        loc, seg = sessions[prec]
        cue_m, prob_m = pipeline.segment_model_grid(loc, seg, m.pet, m.ct, cued=cued)
        masks[name] = pipeline.l2snet_mask(m.to_native(prob_m), m.to_native(cue_m))
        row[name] = evaluate.path_row(gt, masks[name], voxel_ml, time.perf_counter() - t)
    return {**row, **evaluate.overlap(masks["whole_fp32"], masks["fast"])}


def summarise(rows):
    out = {"studies": len(rows), "seeds": [rows[0]["seed"], rows[-1]["seed"]],
           "paths": {"whole_fp32": "loc2d.fp32 + seg3d.fp32 on every body window",
                     "fast": "loc2d.int8 + seg3d.int8 on the cued windows (tracerd ort-cpu default)"}}
    for name in PATHS:
        out[name] = evaluate.summarise([r[name] for r in rows])
    out["fast_vs_whole_fp32"] = evaluate.agreement(rows, "whole_fp32", "fast")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--start", type=int, default=0)
    args = ap.parse_args()
    seeds = data.split("test")[args.start:args.start + args.n]
    data.ensure(seeds, keep_native=True)
    sessions = {p: (pipeline.session(L2 / f"loc2d.{p}.onnx"), pipeline.session(L2 / f"seg3d.{p}.onnx"))
                for p in ("fp32", "int8")}
    rows = evaluate.resumable_rows(ROWS, seeds, lambda seed: study_row(seed, sessions),
                                   lambda r: f"lesions {r['whole_fp32']['lesions']} / {r['fast']['lesions']}")
    out = summarise(rows)
    out["files"] = {f: export.sha256(L2 / f) for f in FILES}
    SUMMARY.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
