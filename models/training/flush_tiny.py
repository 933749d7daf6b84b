"""Set a model file's weights of magnitude below 1e-30 to exactly zero, and show that nothing else
changed but the speed.

Why: L2SNet 0.5.0's 3D U-Net trained its deepest level (both convolutions of enc.3, their
instance-norm scales and shifts, and the up-sampling up.2) to weights of about 1e-38, the float32
subnormal range and its edge. The level is dead: its output is zero to float32 precision and up.2
passes on only its bias. But a product of such a weight and an activation is subnormal, and the
CPU takes a slow microcode path for every one of them: onnxruntime spent about 30 ms of a 48³
window's 145 ms in enc.3's first convolution (64 -> 128 channels at 6³, 96 MFLOP; 0.5 ms with
ordinary weights of the same shape). No float32 result can depend on a weight that small, so
zero is the same network without the slow path.

usage: flush_tiny.py FILE.onnx [--below 1e-30]
Rewrites FILE in place when it holds such weights. Before writing it checks, on onnxruntime, that
the old and the new file give the same output on the file's golden input and on windows of
held-out clinical studies (cache/clinical, seeds 100000..; the card's patch), and times both in the
same run; the record goes to runs/flush_<stem>.json for make_cards.py --update-flush.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

import data
import pipeline

BELOW = 1e-30
THREADS = 2                            # onnxruntime intra-op threads for the comparison and timing
WINDOW_SEEDS = range(100000, 100008)   # held-out clinical studies; two windows each


def flush_tiny(model: onnx.ModelProto, below: float = BELOW) -> dict[str, int]:
    """Zeroes every float32 initializer value with 0 < |w| < `below`, in place; how many per tensor."""
    flushed = {}
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype != np.float32:
            continue
        tiny = (a != 0) & (np.abs(a) < below)
        if tiny.any():
            t.CopyFrom(numpy_helper.from_array(np.where(tiny, np.float32(0), a), t.name))
            flushed[t.name] = int(tiny.sum())
    return flushed


def golden_input(path: Path) -> tuple[str, np.ndarray]:
    meta = json.loads(path.with_name(path.name[:-len(".onnx")] + ".golden.json").read_text())
    inp = meta["inputs"][0]
    x = np.fromfile(path.parent / inp["file"], "<f4").reshape(inp["shape"])
    return inp["name"], x


def held_out_windows() -> list[np.ndarray]:
    """Two card-sized windows (body centre and a third of the way down) of each held-out study."""
    pz, py, px = data.L2SNET["patch_zyx"]
    out = []
    for seed in WINDOW_SEEDS:
        s = data.load(seed)
        full = pipeline.petct_input(s.pet, s.ct)
        nz, ny, nx = full.shape[1:]
        y0, x0 = max(0, (ny - py) // 2), max(0, (nx - px) // 2)
        for z in (nz // 3, nz // 2):
            w = np.zeros((1, 2, pz, py, px), np.float32)
            crop = full[:, z:z + pz, y0:y0 + py, x0:x0 + px]
            w[0, :, :crop.shape[1], :crop.shape[2], :crop.shape[3]] = crop
            out.append(w)
    return out


def median_ms(sess: ort.InferenceSession, name: str, x: np.ndarray, n: int = 7) -> float:
    sess.run(None, {name: x})
    times = []
    for _ in range(n):
        t = time.perf_counter()
        sess.run(None, {name: x})
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def compare(old: bytes, new: bytes, name: str, golden: np.ndarray, windows: list[np.ndarray]) -> dict:
    a, b = (pipeline.session(m, THREADS) for m in (old, new))
    diff = lambda x: float(np.abs(a.run(None, {name: x})[0] - b.run(None, {name: x})[0]).max())
    return {"golden_max_abs_diff": diff(golden),
            "windows": len(windows),
            "windows_max_abs_diff": max(diff(w) for w in windows) if windows else None,
            "window_ms_before": median_ms(a, name, windows[0]) if windows else None,
            "window_ms_after": median_ms(b, name, windows[0]) if windows else None,
            "threads": THREADS, "onnxruntime": ort.__version__}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file", type=Path)
    ap.add_argument("--below", type=float, default=BELOW)
    args = ap.parse_args()
    old = args.file.read_bytes()
    model = onnx.load_from_string(old)
    flushed = flush_tiny(model, args.below)
    if not flushed:
        print(f"{args.file}: no weights below {args.below:g}, unchanged")
        return
    new = model.SerializeToString()
    name, x = golden_input(args.file)
    windows = held_out_windows() if x.ndim == 5 else []
    record = {"file": args.file.name, "below": args.below, "flushed": flushed,
              "flushed_total": sum(flushed.values()),
              "weights": sum(int(np.prod(t.dims)) for t in model.graph.initializer),
              "sha256_before": hashlib.sha256(old).hexdigest(), "sha256_after": hashlib.sha256(new).hexdigest(),
              "bytes": len(new)} | compare(old, new, name, x, windows)
    if record["golden_max_abs_diff"] != 0 or (record["windows_max_abs_diff"] or 0) != 0:
        raise SystemExit(f"outputs changed, file left as it was: {json.dumps(record)}")
    args.file.write_bytes(new)
    out = data.RUNS / f"flush_{args.file.name[:-len('.onnx')]}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "flushed"}, indent=2))


if __name__ == "__main__":
    main()
