#!/usr/bin/env python3
"""onnxruntime (Python) as the oracle for tracerd's inference engines.

  onnx_oracle.py make DIR     build small ONNX models with the `onnx` package (fixed seeded
                              weights; the operators tracerd's models use: Conv 2D/3D, batch and
                              instance normalisation, ReLU, MaxPool, bilinear Resize, Concat, Add,
                              Sigmoid, Gemm) and, for each CASE, write CASE.onnx, CASE.in.f32,
                              CASE.out.f32 (little-endian float32, C order) and CASE.json (model,
                              input and output shapes) with onnxruntime's CPU output.

Used by tests/library/infer_engines.rs.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(20261122)


def init(name, *shape, scale=0.3):
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def save(model, path):
    model = helper.make_model(model, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def unet3d():
    """Conv3d → InstanceNorm → ReLU → MaxPool → Conv3d → Resize ×2 → Concat(skip) → Conv → Sigmoid."""
    x = helper.make_tensor_value_info("petct_patch", TensorProto.FLOAT, ["batch", 2, 8, 8, 8])
    y = helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 1, 8, 8, 8])
    nodes = [
        helper.make_node("Conv", ["petct_patch", "w1", "b1"], ["c1"], pads=[1] * 6, kernel_shape=[3, 3, 3]),
        helper.make_node("InstanceNormalization", ["c1", "g1", "be1"], ["n1"], epsilon=1e-5),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2, 2], strides=[2, 2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1] * 6, kernel_shape=[3, 3, 3]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Resize", ["r2", "", "scales"], ["u2"], mode="linear",
                         coordinate_transformation_mode="half_pixel"),
        helper.make_node("Concat", ["u2", "r1"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w3", "b3"], ["c3"], kernel_shape=[1, 1, 1]),
        helper.make_node("Sigmoid", ["c3"], ["prob"]),
    ]
    inits = [
        init("w1", 4, 2, 3, 3, 3), init("b1", 4), init("g1", 4, scale=1.0), init("be1", 4),
        init("w2", 4, 4, 3, 3, 3), init("b2", 4), init("w3", 1, 8, 1, 1, 1), init("b3", 1),
        numpy_helper.from_array(np.array([1, 1, 2, 2, 2], dtype=np.float32), "scales"),
    ]
    return helper.make_graph(nodes, "unet3d", [x], [y], inits)


def unet2d():
    """Free spatial size (symbolic H, W) as in the coronal localisation model."""
    x = helper.make_tensor_value_info("pet_coronal", TensorProto.FLOAT, ["batch", 1, "H", "W"])
    y = helper.make_tensor_value_info("cue", TensorProto.FLOAT, ["batch", 1, "H", "W"])
    nodes = [
        helper.make_node("Conv", ["pet_coronal", "w1", "b1"], ["c1"], pads=[1] * 4, kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c1", "g", "be", "mu", "var"], ["n1"], epsilon=1e-5),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Resize", ["p1", "", "scales"], ["u1"], mode="linear",
                         coordinate_transformation_mode="half_pixel"),
        helper.make_node("Add", ["u1", "r1"], ["s1"]),
        helper.make_node("Conv", ["s1", "w2", "b2"], ["c2"], kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["c2"], ["cue"]),
    ]
    inits = [
        init("w1", 6, 1, 3, 3), init("b1", 6), init("g", 6, scale=1.0), init("be", 6), init("mu", 6),
        numpy_helper.from_array((RNG.random(6) + 0.5).astype(np.float32), "var"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales"),
        init("w2", 1, 6, 1, 1), init("b2", 1),
    ]
    return helper.make_graph(nodes, "unet2d", [x], [y], inits)


def head():
    """Gemm + Sigmoid on a flattened feature map: the risk-score head's tail."""
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 2, 3, 4, 4])
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])
    nodes = [
        helper.make_node("GlobalAveragePool", ["features"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "w", "b"], ["z"], transB=1),
        helper.make_node("Sigmoid", ["z"], ["scores"]),
    ]
    return helper.make_graph(nodes, "head", [x], [y], [init("w", 3, 2, scale=1.0), init("b", 3)])


def make(outdir):
    cases = {
        "unet3d_b1": (unet3d, "unet3d", [1, 2, 8, 8, 8]),
        "unet3d_b3": (unet3d, "unet3d", [3, 2, 8, 8, 8]),
        "unet2d_64x96": (unet2d, "unet2d", [2, 1, 64, 96]),
        "unet2d_32x40": (unet2d, "unet2d", [5, 1, 32, 40]),
        "head": (head, "head", [2, 2, 3, 4, 4]),
    }
    built = {}
    for case, (graph, model, shape) in cases.items():
        path = f"{outdir}/{model}.onnx"
        if model not in built:
            save(graph(), path)
            built[model] = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        sess = built[model]
        x = RNG.standard_normal(shape).astype(np.float32)
        (y,) = sess.run(None, {sess.get_inputs()[0].name: x})
        x.astype("<f4").tofile(f"{outdir}/{case}.in.f32")
        y.astype("<f4").tofile(f"{outdir}/{case}.out.f32")
        with open(f"{outdir}/{case}.json", "w") as f:
            json.dump({"model": model + ".onnx", "input_shape": list(x.shape),
                       "output_shape": list(y.shape), "onnxruntime": ort.__version__}, f)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(sys.argv[2])
    else:
        sys.exit(__doc__)
