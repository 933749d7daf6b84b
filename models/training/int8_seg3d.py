"""The 3D U-Net in INT8: quantise the shipped fp32 file and measure what it costs where tracerd runs it.

`quantise`: models/l2snet/seg3d.int8.onnx from the committed seg3d.fp32.onnx (export.quantise_seg3d:
QDQ per channel, the input convolution in float, calibrated on cued windows of validation studies
export.CALIB_SEEDS[:8]) and its golden on the fp32 golden's input. export.py does the same step
after training; this applies it to the shipped weights without a checkpoint.

`measure`: held-out clinical studies (data.SPLITS["test"], native grids), each through L2SNet as
tracerd's ort-cpu default runs it (loc2d INT8 cue, seg3d on the cued windows, the shipped
post-processing, back on the native grid) once with seg3d fp32 and once with seg3d INT8: the two
masks against each other (Dice, lesion count), each against the ground truth (the autoPET
metrics), and one window's time on each. Rows to runs/l2snet_int8_seg3d.jsonl (resumable), the
summary to runs/l2snet_int8_seg3d.json, which make_cards.py --update-int8-seg3d reads.

usage: int8_seg3d.py quantise | measure [--n 100] [--start 0]
"""
from __future__ import annotations

import argparse
import json
import time

import onnxruntime as ort

import numpy as np
from scipy import ndimage

import data
import evaluate
import export
import pipeline

L2 = data.MODELS_OUT / "l2snet"
ROWS = data.RUNS / "l2snet_int8_seg3d.jsonl"
SUMMARY = data.RUNS / "l2snet_int8_seg3d.json"
PRECISIONS = ("fp32", "int8")


def quantise():
    cal = export.seg3d_calibration(data.load_many(export.CALIB_SEEDS[:8]), pipeline.session(L2 / "loc2d.int8.onnx"))
    ops = export.quantise_seg3d(L2 / "seg3d.fp32.onnx", L2 / "seg3d.int8.onnx", cal)
    g = json.loads((L2 / "seg3d.fp32.golden.json").read_text())
    inp = g["inputs"][0]
    x = np.fromfile(L2 / inp["file"], "<f4").reshape(inp["shape"])
    export.golden(L2 / "seg3d.int8.onnx", "petct_patch", "prob", x, 2e-2, g["note"])
    print(json.dumps({"calibration_windows": len(cal), "ops": ops,
                      "kept_float": export.input_convs(L2 / "seg3d.fp32.onnx")}))


def study_row(seed, loc, segs):
    m, gt, voxel_ml, _ = evaluate.native(seed)
    cue_m = pipeline.location_cue(loc, m.pet)
    cue = m.to_native(cue_m)
    x = pipeline.petct_input(m.pet, m.ct)
    row = {"seed": seed, "gt_lesions": int(ndimage.label(gt, evaluate.CONN18)[1])}
    masks = {}
    for prec, seg in segs.items():
        t = time.perf_counter()
        prob = pipeline.sliding_window(seg, x, inside=pipeline.body(m.pet), cued=pipeline.cued_region(cue_m))
        masks[prec] = pipeline.l2snet_mask(m.to_native(prob), cue)
        row[prec] = evaluate.path_row(gt, masks[prec], voxel_ml, time.perf_counter() - t)
    return {**row, **evaluate.overlap(masks["fp32"], masks["int8"])}


def summarise(rows):
    """Per precision the autoPET summary; INT8 against fp32 (evaluate.agreement)."""
    out = {"studies": len(rows), "seeds": [rows[0]["seed"], rows[-1]["seed"]],
           "path": "tracerd ort-cpu default: loc2d INT8 cue, seg3d on the cued windows, shipped post-processing, native grid"}
    for prec in PRECISIONS:
        out[prec] = evaluate.summarise([r[prec] for r in rows])
        out[prec]["seconds_seg3d_mean"] = float(np.mean([r[prec]["seconds"] for r in rows]))
    out["int8_vs_fp32"] = evaluate.agreement(rows, "fp32", "int8")
    return out


def window_ms(segs, threads=2):
    """One 48^3 window of a held-out study's body centre, ms per run on each file (export.bench)."""
    s = data.load(data.split("test")[0])
    x = pipeline.petct_input(s.pet, s.ct)
    pz, py, px = data.L2SNET["patch_zyx"]
    cz, cy, cx = (n // 2 for n in x.shape[1:])
    xw = np.ascontiguousarray(x[None, :, cz - pz // 2:cz + pz // 2, cy - py // 2:cy + py // 2, cx - px // 2:cx + px // 2])
    ms = {f"{p}_ms": export.bench(pipeline.session(L2 / f"seg3d.{p}.onnx", threads), "petct_patch", xw, n=10)
          for p in PRECISIONS}
    return {"input_shape": list(xw.shape), "threads": threads, **ms, "speedup": ms["fp32_ms"] / ms["int8_ms"]}


def cpu_name() -> str:
    """The CPU the window was timed on (/proc/cpuinfo's model name, Linux)."""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def measure(n, start):
    seeds = data.split("test")[start:start + n]
    data.ensure(seeds, keep_native=True)
    loc = pipeline.session(L2 / "loc2d.int8.onnx")
    segs = {p: pipeline.session(L2 / f"seg3d.{p}.onnx") for p in PRECISIONS}
    rows = evaluate.resumable_rows(ROWS, seeds, lambda seed: study_row(seed, loc, segs),
                                   lambda r: f"lesions {r['fp32']['lesions']} / {r['int8']['lesions']}")
    out = summarise(rows)
    out["window"] = {**window_ms(segs), "cpu": cpu_name(), "onnxruntime": ort.__version__}
    out["files"] = {p: export.sha256(L2 / f"seg3d.{p}.onnx") for p in PRECISIONS}
    SUMMARY.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("step", choices=["quantise", "measure"])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--start", type=int, default=0)
    args = ap.parse_args()
    quantise() if args.step == "quantise" else measure(args.n, args.start)


if __name__ == "__main__":
    main()
