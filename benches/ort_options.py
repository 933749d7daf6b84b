"""ONNX Runtime session options for tracerd's networks, measured rather than guessed.

Times each shipped network (seg3d in fp32 and INT8 at 4 windows of the card's patch, loc2d INT8 at 4
coronal slices of a clinical body box, 2Be3-Net ws one study) on onnxruntime's CPU provider under
each combination of intra-op threads, execution mode, graph optimisation level and memory arena,
in one run, and prints the median milliseconds per call with the ratio to ORT's defaults. Then,
with the set tracerd uses, the batch sizes: seg3d windows and loc2d slices per call, 1 to 8, as
milliseconds per window or slice.

usage: .venv/bin/python benches/ort_options.py [repeats] [case,case...]   (cases: the keys of CASES; all by default)
"""
import itertools
import json
import os
import statistics
import sys
import time

import tomllib

import numpy as np
import onnxruntime as ort

ROOT = os.path.join(os.path.dirname(__file__), "..", "models")
with open(os.path.join(ROOT, "l2snet", "model.toml"), "rb") as f:
    PATCH = tuple(tomllib.load(f)["seg3d"]["patch_zyx"])
CASES = {
    "seg3d.fp32": ("l2snet/seg3d.fp32.onnx", (4, 2) + PATCH),
    "seg3d.int8": ("l2snet/seg3d.int8.onnx", (4, 2) + PATCH),
    "loc2d.int8": ("l2snet/loc2d.int8.onnx", (4, 1, 448, 160)),
    "ws.fp32": ("two_be_three/ws.fp32.onnx", None),
}


def shape_of(session, fixed):
    if fixed:
        return fixed
    dims = session.get_inputs()[0].shape
    return tuple(d if isinstance(d, int) else 1 for d in dims)


def timed(path, fixed, opts, repeats):
    session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).random(shape_of(session, fixed), dtype=np.float32)
    session.run(None, {name: x})  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(None, {name: x})
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def options(threads, parallel, level, arena):
    o = ort.SessionOptions()
    if threads:
        o.intra_op_num_threads = threads
    o.execution_mode = ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    o.graph_optimization_level = level
    o.enable_cpu_mem_arena = arena
    return o


def batch_sizes(repeats, cases):
    """Milliseconds per item of seg3d and loc2d at 1, 2, 4 and 8 items per call (tracerd's set)."""
    chosen = options(os.cpu_count(), False, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, True)
    per_item = {}
    for case in (c for c in cases if not c.startswith("ws")):
        rel, fixed = CASES[case]
        row = {}
        for n in (1, 2, 4, 8):
            row[n] = timed(os.path.join(ROOT, rel), (n,) + fixed[1:], chosen, repeats) / n
        print(f"{case} per item at batch 1 / 2 / 4 / 8: " + " / ".join(f"{ms:.1f}" for ms in row.values()) + " ms")
        per_item[case] = row
    return per_item


def main():
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    cases = sys.argv[2].split(",") if len(sys.argv) > 2 else list(CASES)
    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    grid = list(itertools.product([0, 1, 2], [False, True], levels, [True, False]))
    print(f"onnxruntime {ort.__version__}, {os.cpu_count()} CPUs, median of {repeats} calls (ms)")
    results = {}
    for case in cases:
        rel, fixed = CASES[case]
        path = os.path.join(ROOT, rel)
        default = timed(path, fixed, ort.SessionOptions(), repeats)
        print(f"\n{case}: ORT defaults {default:.1f} ms")
        print("threads  mode        level     arena   ms      / default")
        rows = []
        for threads, parallel, level, arena in grid:
            ms = timed(path, fixed, options(threads, parallel, levels[level], arena), repeats)
            rows.append((ms, threads, parallel, level, arena))
            mode = "parallel" if parallel else "sequential"
            print(f"{threads or 'all':>7}  {mode:<10}  {level:<8}  {str(arena):<6}  {ms:7.1f}  {ms / default:.2f}")
        best = min(rows)
        results[case] = {"default_ms": default, "best": best}
        print(f"best: {best}")
    print()
    results["per_item_ms_by_batch"] = batch_sizes(repeats, cases)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
