"""The arithmetic of `cargo bench --bench pipeline`'s seg3d figure: how many floating-point
operations one seg3d window costs, and how fast this machine multiplies dense matrices.

usage: flops.py SEG3D_ONNX Z Y X
prints one JSON line:
  seg3d_gflop_per_window  2 x the multiply-adds of every Conv and ConvTranspose for one window of
                          Z x Y x X (batch 1), from the ONNX graph with its shapes inferred by the
                          `onnx` package; normalisation, activations and pooling are left out
                          (memory-bound, a few percent of the arithmetic)
  matmul_gflops           onnxruntime (the library both tracerd and the peer run) multiplying two
                          float32 matrices of 2048 x 2048 with its default threads, best of 5
                          after a warm-up: the dense rate this machine reaches
  matmul_int8_gops        the same in 8 bits (MatMulInteger, uint8 x int8 -> int32, the product
                          onnxruntime's INT8 QDQ convolutions run on), in integer operations per
                          second: the peer of a seg3d stage that ran the INT8 file
"""
import json
import math
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper, shape_inference


def dims(value_info) -> list:
    return [d.dim_value for d in value_info.type.tensor_type.shape.dim]


def with_input_shape(model: onnx.ModelProto, shape: list) -> onnx.ModelProto:
    """The model with its one input fixed to `shape`, and every shape inferred."""
    inp = model.graph.input[0]
    for d, n in zip(inp.type.tensor_type.shape.dim, shape):
        d.Clear()
        d.dim_value = n
    return shape_inference.infer_shapes(model)


def conv_gflop(model: onnx.ModelProto) -> float:
    g = model.graph
    weights = {w.name: numpy_helper.to_array(w).shape for w in g.initializer}
    shapes = {v.name: dims(v) for v in list(g.value_info) + list(g.input) + list(g.output)}
    total = 0
    for node in g.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        w = weights[node.input[1]]
        kernel = math.prod(w[2:])
        # groups are in the weight shapes: W is [Cout, Cin/g, k...] for Conv (per output voxel),
        # [Cin, Cout/g, k...] for ConvTranspose (per input voxel)
        if node.op_type == "Conv":
            out = shapes[node.output[0]]
            total += math.prod(out) * w[1] * kernel
        else:
            inp = shapes[node.input[0]]
            total += math.prod(inp) * w[1] * kernel
    return 2 * total / 1e9


def matmul_gflops(n: int = 2048, repeats: int = 5, int8: bool = False) -> float:
    """Float32 MatMul, or with `int8` MatMulInteger (uint8 x int8 -> int32)."""
    ta, tb, tc = ((TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32) if int8 else (TensorProto.FLOAT,) * 3)
    a = helper.make_tensor_value_info("a", ta, [n, n])
    b = helper.make_tensor_value_info("b", tb, [n, n])
    c = helper.make_tensor_value_info("c", tc, [n, n])
    op = "MatMulInteger" if int8 else "MatMul"
    graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["c"])], "mm", [a, b], [c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    if int8:
        feed = {"a": rng.integers(0, 256, (n, n), np.uint8), "b": rng.integers(-128, 128, (n, n), np.int8)}
    else:
        feed = {"a": rng.random((n, n), np.float32), "b": rng.random((n, n), np.float32)}
    sess.run(None, feed)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, feed)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def main(path: str, z: int, y: int, x: int) -> None:
    model = with_input_shape(onnx.load(path), [1, 2, z, y, x])
    print(json.dumps({
        "seg3d_gflop_per_window": round(conv_gflop(model), 4),
        "matmul_gflops": round(matmul_gflops(), 1),
        "matmul_int8_gops": round(matmul_gflops(int8=True), 1),
    }))


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:5]))
