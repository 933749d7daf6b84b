"""Export the trained models to ONNX (fp32, legacy exporter, opset 17, dynamic batch axis, weights
inside the file), quantise INT8 QDQ (static, per-channel, calibrated on synthetic validation
studies), verify every file against torch / fp32 on onnxruntime and write golden input/output
pairs (raw little-endian float32 .bin + .golden.json) next to each model file. Weights that
training left below 1e-30 are set to zero in every exported file (flush_tiny.py: the subnormal
range, where CPUs take a slow path, and nothing a float32 output can depend on).

Writes models/l2snet/{loc2d,seg3d}.{fp32,int8}.onnx and models/two_be_three/{ws,hn}.{fp32,int8}.onnx
plus runs/export.json (sizes, checks) used by make_cards.py.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnx.utils
import torch
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

import data
import pipeline
from flush_tiny import flush_tiny
from l2snet import Loc2D, UNet3D
from two_be_three import CNN3D, ResNetConv2d, TwoBeThreeNet

MODELS = data.MODELS_OUT
RUNS = data.RUNS
CALIB_SEEDS = list(range(700, 716))   # validation studies; never the held-out test range
# Activation calibration per 2Be3-Net variant (calibration studies CALIB_SEEDS either way; the head stays
# in float, float_head). [WS] uses Percentile (onnxruntime default, 99.999th percentile): worst-case
# INT8-vs-fp32 score difference on validation seeds 700..799 0.026, against MinMax / Entropy 0.075 and
# Percentile 99.99 / 99.9999 0.045 / 0.052 (runs/qat_ws/calib_fh.py). [H&N] uses MinMax.
TWO_BE_THREE_CALIB = {"ws": "Percentile", "hn": "MinMax"}


def float_head(fp32: Path) -> list[str]:
    """The 2Be3 head's nodes (every node from the first Conv3d block on: 3 Conv3d blocks, the per-slab
    FC, the maximum over the slabs, the last FC, Sigmoid), left in float; only the extractor, where
    most of the arithmetic is, runs in INT8.

    Fully quantised, the head's activations were clipped on studies whose activations exceed the
    calibration range (the head's last activations reach twice the 16 calibration studies' maximum on
    some high-burden studies), and the logits were clipped below about -2.1. Validation seeds 700..799,
    worst-case |INT8 - fp32| score: [WS] 0.034 -> 0.026, [H&N] 0.042 -> 0.022 with the head in float;
    speed-up on onnxruntime CPU about 2x instead of 3.7x. The rest, the extractor's activation
    quantisation, is absorbed by the head itself (train_two_be_three.robust_head; README "INT8 for
    2Be3-Net")."""
    nodes = list(onnx.load(str(fp32)).graph.node)
    first = next(i for i, n in enumerate(nodes) if n.name.startswith("/blocks/"))
    return [n.name for n in nodes[first:]]


def quantise_two_be_three(fp32: Path, int8: Path, variant: str, calib_studies) -> tuple[list[str], list[str]]:
    """The shipped 2Be3 INT8 recipe: extractor INT8 (calibrator per variant, TWO_BE_THREE_CALIB), head
    float (float_head). Training uses it too (train_two_be_three.int8_codes): the head is fine-tuned on
    the features this recipe's extractor produces. Returns (op types, float nodes)."""
    calx = [data.two_be_three_input(s, variant)[None] for s in calib_studies]
    head = float_head(fp32)
    return quantise(fp32, int8, "pet_slices", calx, TWO_BE_THREE_CALIB[variant], exclude=head), head


def extractor_codes(fp32: Path, int8: Path, dst: Path) -> tuple[float, int]:
    """Cut `int8` (made by quantise_two_be_three from `fp32`) down to the extractor: input pet_slices,
    output the uint8 codes of the extractor's last activation, the head's input. Writes `dst`; returns
    that activation's (scale, zero point), so features = (codes - zero point) * scale."""
    fg = onnx.load(str(fp32)).graph
    reshape = {n.output[0]: n for n in fg.node if n.op_type == "Reshape"}
    transpose = next(n for n in fg.node if n.op_type == "Transpose")
    feats = reshape[transpose.input[0]].input[0]        # extractor output -> Reshape -> Transpose -> head
    g = onnx.load(str(int8)).graph
    q = next(n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] == feats)
    init = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    onnx.utils.extract_model(str(int8), str(dst), ["pet_slices"], [q.output[0]])
    return float(init[q.input[1]]), int(init[q.input[2]])


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def export(model, x, path: Path, in_name, out_name, dyn_in, dyn_out):
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (torch.from_numpy(x),), str(path), dynamo=False, opset_version=17,
                      input_names=[in_name], output_names=[out_name], do_constant_folding=True,
                      dynamic_axes={in_name: dyn_in, out_name: dyn_out}, external_data=False)
    m = onnx.load(str(path))
    if flush_tiny(m):   # weights that decayed into the subnormal range (flush_tiny.py)
        onnx.save(m, str(path))
    onnx.checker.check_model(m)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = pipeline.session(path).run(None, {in_name: x})[0]
    return float(np.abs(ref - got).max())


class Reader(CalibrationDataReader):
    def __init__(self, name, arrays):
        self.it = iter([{name: a} for a in arrays])

    def get_next(self):
        return next(self.it, None)


def quantise(fp32: Path, int8: Path, in_name, calib, method: str = "MinMax", exclude=()):
    pre = fp32.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(int8), Reader(in_name, calib), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, method), nodes_to_exclude=list(exclude))
    pre.unlink()
    m = onnx.load(str(int8))
    ops = sorted({n.op_type for n in m.graph.node})
    assert not any(o.startswith("QLinear") for o in ops), ops
    return ops


def golden(model_path: Path, in_name, out_name, x: np.ndarray, tol_abs: float, note: str):
    y = pipeline.session(model_path).run(None, {in_name: x})[0]
    stem = model_path.name[:-len(".onnx")]
    d = model_path.parent
    xin = f"{stem}.golden.input.bin"
    if "int8" in stem:   # share the fp32 sibling's input file when identical
        sib = d / xin.replace("int8", "fp32")
        if sib.exists() and np.array_equal(np.fromfile(sib, "<f4"), x.ravel()):
            xin = sib.name
    if xin == f"{stem}.golden.input.bin":
        x.astype("<f4").tofile(d / xin)
    y.astype("<f4").tofile(d / f"{stem}.golden.output.bin")
    meta = {"model": model_path.name, "engine": "onnxruntime CPUExecutionProvider",
            "inputs": [{"name": in_name, "shape": list(x.shape), "dtype": "float32", "layout": "C-order little-endian",
                        "file": xin}],
            "outputs": [{"name": out_name, "shape": list(y.shape), "dtype": "float32", "layout": "C-order little-endian",
                         "file": f"{stem}.golden.output.bin"}],
            "tolerance_abs": tol_abs, "note": note}
    (d / f"{stem}.golden.json").write_text(json.dumps(meta, indent=2) + "\n")


def bench(sess, name, x, n=5):
    sess.run(None, {name: x})
    t = time.perf_counter()
    for _ in range(n):
        sess.run(None, {name: x})
    return (time.perf_counter() - t) / n * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="l2snet,two_be_three",
                    help="comma-separated: l2snet (= loc2d,seg3d), loc2d, seg3d, two_be_three")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rp = RUNS / "export.json"
    report = json.loads(rp.read_text()) if rp.exists() else {}
    report.pop("speed_ort_cpu_2threads", None)     # older records (always 2 threads)
    report.setdefault("speed_ort_cpu", {})
    calib = data.load_many(CALIB_SEEDS)
    test0 = data.load(data.split("test")[0])

    out = MODELS / "l2snet"
    out2 = MODELS / "two_be_three"
    if "l2snet" in args.only or "loc2d" in args.only:
        export_loc2d(report, calib, test0, out, args)
    if "l2snet" in args.only or "seg3d" in args.only:
        export_seg3d(report, calib, test0, out, args)
    if "two_be_three" in args.only:
        export_two_be_three(report, calib, test0, out2, args)
    files = {}
    for d in (out, out2):
        for f in sorted(d.glob("*.onnx")):
            files[str(f.relative_to(MODELS))] = {"bytes": f.stat().st_size, "sha256": sha256(f)}
    report["files"] = files
    report["total_model_bytes"] = sum(v["bytes"] for v in files.values())
    rp.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def export_loc2d(report, calib, test0, out, args):
    """The 2D U-Net: fp32, INT8 QDQ, goldens, speed."""
    loc = Loc2D()
    loc.load_state_dict(torch.load(RUNS / "l2snet" / "loc2d.pt"))
    loc.eval()
    sl = data.coronal_slices(test0.pet)                          # [ny, 1, Zp, Xp] on the model grid
    jc = sl.shape[0] // 2                                        # a coronal slice through the body
    x = np.ascontiguousarray(sl[jc:jc + 1])
    err = export(loc, x, out / "loc2d.fp32.onnx", "pet_coronal", "cue",
                 {0: "batch", 2: "height", 3: "width"}, {0: "batch", 2: "height", 3: "width"})
    cal = []
    for s in calib[:8]:
        c = data.coronal_slices(s.pet)
        cal += [c[j:j + 8] for j in range(max(0, len(c) // 2 - 16), len(c) // 2 + 9, 8)]
    ops = quantise(out / "loc2d.fp32.onnx", out / "loc2d.int8.onnx", "pet_coronal", cal)
    report["loc2d"] = {"torch_vs_ort_max_abs": err, "int8_ops": ops}
    for prec, tol in (("fp32", 1e-4), ("int8", 2e-2)):
        golden(out / f"loc2d.{prec}.onnx", "pet_coronal", "cue", x, tol,
               f"coronal slice j={jc} (model grid) of test study seed {test0.seed}, normalised as in the card")
    speed_ort_cpu(report, out, "loc2d", "pet_coronal", np.ascontiguousarray(sl[jc - 2:jc + 2]), args)


def export_seg3d(report, calib, test0, out, args):
    """The 3D U-Net (runs/l2snet/seg3d.pt): fp32, INT8 QDQ (quantise_seg3d, calibrated on cued windows
    of the calibration studies with loc2d.int8's cue, so after export_loc2d), goldens, speed."""
    seg = UNet3D()
    seg.load_state_dict(torch.load(RUNS / "l2snet" / "seg3d.pt"))
    seg.eval()
    full = pipeline.petct_input(test0.pet, test0.ct)              # [2, z, y, x] on the model grid
    pz, py, px = data.L2SNET["patch_zyx"]
    cz, cy, cx = (n // 2 for n in full.shape[1:])                 # the body's centre
    x3 = np.ascontiguousarray(full[None, :, cz:cz + pz, cy - py // 2:cy + py // 2, cx - px // 2:cx + px // 2])
    err = export(seg, x3, out / "seg3d.fp32.onnx", "petct_patch", "prob",
                 {0: "batch", 2: "depth", 3: "height", 4: "width"}, {0: "batch", 2: "depth", 3: "height", 4: "width"})
    cal3 = seg3d_calibration(calib[:8], pipeline.session(out / "loc2d.int8.onnx"))
    ops = quantise_seg3d(out / "seg3d.fp32.onnx", out / "seg3d.int8.onnx", cal3)
    report["seg3d"] = {"torch_vs_ort_max_abs": err, "int8_ops": ops, "patch_zyx": [pz, py, px]}
    # golden: a small 16x32x32 crop of a real patch
    xg3 = np.ascontiguousarray(full[None, :, cz - 8:cz + 8, cy - 16:cy + 16, cx - 16:cx + 16])
    for prec, tol in (("fp32", 1e-4), ("int8", 2e-2)):
        golden(out / f"seg3d.{prec}.onnx", "petct_patch", "prob", xg3, tol,
               f"PET+CT crop [z {cz - 8}:{cz + 8}, y {cy - 16}:{cy + 16}, x {cx - 16}:{cx + 16}] (model grid) "
               f"of test study seed {test0.seed}")
    speed_ort_cpu(report, out, "seg3d", "petct_patch", x3, args)


SEG3D_CALIB_WINDOWS = 4   # per calibration study


def seg3d_calibration(studies, loc) -> list[np.ndarray]:
    """INT8 calibration input for the 3D U-Net: windows of the kind tracerd runs it on, those the
    location cue selects (pipeline.window_slices with the cued region), SEG3D_CALIB_WINDOWS spread
    evenly over each study's (the first, last and between)."""
    out = []
    for s in studies:
        x = pipeline.petct_input(s.pet, s.ct)
        cue = pipeline.location_cue(loc, s.pet)
        sls = pipeline.window_slices(x.shape[1:], inside=pipeline.body(s.pet), cued=pipeline.cued_region(cue))
        xp = pipeline.pad_to_patch(x)
        for i in np.unique(np.linspace(0, len(sls) - 1, SEG3D_CALIB_WINDOWS).round().astype(int)):
            out.append(np.ascontiguousarray(xp[(None, slice(None)) + sls[i]]))
    return out


def input_convs(fp32: Path) -> list[str]:
    """The Conv nodes that read the graph input directly."""
    g = onnx.load(str(fp32)).graph
    return [n.name for n in g.node if n.op_type == "Conv" and n.input[0] == g.input[0].name]


def quantise_seg3d(fp32: Path, int8: Path, calib) -> list[str]:
    """INT8 QDQ for the 3D U-Net with its input convolution (2 -> 16 channels, 54 products per output)
    kept in float: quantised, onnxruntime ran it 10x slower than in fp32 (22 against 2 ms of a 48^3
    window, 2 threads), and it is the one layer that sees PET and CT at their input scales."""
    return quantise(fp32, int8, "petct_patch", calib, exclude=input_convs(fp32))


def speed_ort_cpu(report, out, mname, iname, xb, args):
    """fp32 against INT8 on onnxruntime CPU for one input."""
    t32 = bench(pipeline.session(out / f"{mname}.fp32.onnx", args.threads), iname, xb)
    t8 = bench(pipeline.session(out / f"{mname}.int8.onnx", args.threads), iname, xb)
    report["speed_ort_cpu"][mname] = {"input_shape": list(xb.shape), "threads": args.threads, "fp32_ms": t32,
                                      "int8_ms": t8, "speedup": t32 / t8}


def export_two_be_three(report, calib, test0, out2, args):
    # ---------------- 2Be3-Net ----------------
    rep2 = {}
    for variant in ("ws", "hn"):
        if not (RUNS / "two_be_three" / f"{variant}.pt").exists():
            continue
        m = TwoBeThreeNet()
        m.load_state_dict(torch.load(RUNS / "two_be_three" / f"{variant}.pt"))
        m.eval()
        xi = data.two_be_three_input(test0, variant)[None]
        err = export(m, xi, out2 / f"{variant}.fp32.onnx", "pet_slices", "risk", {0: "batch"}, {0: "batch"})
        ops, head = quantise_two_be_three(out2 / f"{variant}.fp32.onnx", out2 / f"{variant}.int8.onnx", variant,
                                          calib)
        rep2[variant] = {"torch_vs_ort_max_abs": err, "int8_ops": ops, "calibration": TWO_BE_THREE_CALIB[variant],
                         "float_nodes": head}
        for prec, tol in (("fp32", 1e-4), ("int8", 2e-2)):
            golden(out2 / f"{variant}.{prec}.onnx", "pet_slices", "risk", xi, tol,
                   f"[{variant.upper()}] input of test study seed {test0.seed}")
    report["two_be_three"] = rep2

    # baselines (not shipped): ONNX under runs/ so evaluate.py uses one code path
    for name, cls in (("resnet_conv2d", ResNetConv2d), ("cnn3d", CNN3D)):
        p = RUNS / "two_be_three" / f"{name}.pt"
        if p.exists():
            m = cls()
            m.load_state_dict(torch.load(p))
            xi = data.two_be_three_input(test0, "ws")[None]
            report[name] = {"torch_vs_ort_max_abs": export(m, xi, RUNS / "two_be_three" / f"{name}.fp32.onnx",
                                                           "pet_slices", "risk", {0: "batch"}, {0: "batch"})}

    xi = data.two_be_three_input(test0, "ws")[None]
    t32 = bench(pipeline.session(out2 / "ws.fp32.onnx", args.threads), "pet_slices", xi)
    t8 = bench(pipeline.session(out2 / "ws.int8.onnx", args.threads), "pet_slices", xi)
    report["speed_ort_cpu"]["two_be_three"] = {"input_shape": list(xi.shape), "threads": args.threads, "fp32_ms": t32,
                                                        "int8_ms": t8, "speedup": t32 / t8}


if __name__ == "__main__":
    main()
