"""Recover the frozen extractor (extractor.pt) of a shipped 2Be3-Net ONNX file.

The exported graph holds each convolution with its BatchNorm folded in (weight and bias). The
extractor's modules get those weights, and each BatchNorm becomes the identity plus the folded
bias (running mean 0, running variance 1 - eps, weight 1). The recovered model's risk output is
checked against onnxruntime on the file itself before anything is written.

Beside extractor.pt it writes train.json with the pre-training record of the file's card
(iterations, studies, wall time) and where the extractor came from, which a head training run with
--keep-extractor carries into its own record (and make_cards.py into the new card).

With --model PATH it also writes the whole recovered model (extractor and head) as a state dict, the
form train_two_be_three.py saves a head in: `--reuse --robust` then fine-tunes a shipped head further
(--variant names the file's slice rule, used for the check).

    python extractor_from_onnx.py ../two_be_three/ws.fp32.onnx runs/two_be_three/extractor.pt
    python extractor_from_onnx.py ../two_be_three/hn.fp32.onnx runs/two_be_three/extractor.pt \
        --variant hn --model runs/two_be_three/hn.pt
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import tomllib
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

import data
import pipeline
from two_be_three import TwoBeThreeNet


def folded_convs(path):
    """(weight, bias) of every Conv node of the graph, keyed by the name of the node's input."""
    m = onnx.load(path)
    init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return [(n.input[0], init[n.input[1]], init[n.input[2]]) for n in m.graph.node if n.op_type == "Conv"], init


def conv_bn_pairs(model):
    """(conv, batchnorm) pairs of the model in the order of its forward pass; in each Bottleneck
    with a downsample branch, the branch runs first (Bottleneck.forward)."""
    ex = model.extractor
    pairs = [(ex[0], ex[1])]
    for b in ex[4]:
        if b.downsample is not None:
            pairs.append((b.downsample[0], b.downsample[1]))
        pairs += [(b.conv1, b.bn1), (b.conv2, b.bn2), (b.conv3, b.bn3)]
    pairs += [(blk[0], blk[1]) for blk in model.blocks]
    return pairs


def load_folded(model, convs, init):
    with torch.no_grad():
        for (conv, bn), (_, w, b) in zip(conv_bn_pairs(model), convs, strict=True):
            conv.weight.copy_(torch.from_numpy(w))
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.from_numpy(b))
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
        for name in ("slab_fc.1.weight", "slab_fc.1.bias", "fc.1.weight", "fc.1.bias"):
            dict(model.named_parameters())[name].copy_(torch.from_numpy(init[name]))


def main(onnx_path, out, variant="ws", model_out=None):
    model = TwoBeThreeNet(data.TWO_BE_THREE["K"], data.TWO_BE_THREE["crop"])
    convs, init = folded_convs(onnx_path)
    load_folded(model, convs, init)
    model.eval()
    x = np.stack([data.two_be_three_input(s, variant) for s in data.load_many(data.split("val", 4))])
    want = pipeline.session(onnx_path, 2).run(None, {"pet_slices": x})[0]
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    err = float(np.abs(got - want).max())
    print(f"recovered model vs onnxruntime on 4 validation studies: max |diff| {err:.2e}")
    if err > 1e-4:
        raise SystemExit("the recovered weights do not reproduce the file")
    torch.save(model.extractor.state_dict(), out)
    record = Path(out).with_name("train.json")
    record.write_text(json.dumps(pretrain_record(Path(onnx_path)), indent=2))
    print(f"wrote {out} and {record}")
    if model_out:
        torch.save(model.state_dict(), model_out)
        head = Path(model_out).with_name(f"head_{variant}.json")     # the record a --robust step extends
        head.write_text(json.dumps({"recovered_from": provenance(Path(onnx_path))}, indent=2))
        print(f"wrote {model_out} and {head}")


def pretrain_record(onnx_path: Path) -> dict:
    """The pre-training figures of the card beside `onnx_path` (model.toml), and the file's identity."""
    card = tomllib.loads((onnx_path.parent / "model.toml").read_text())
    studies = re.search(r"of the first (\d+) training studies", card["training"]["extractor"])
    iters = re.search(r"(\d+) iterations of", card["training"]["extractor"])
    return {"pretrain_s": card["training"]["wall_time_s"]["pretrain"],
            "pretrain_studies": int(studies.group(1)),
            "pretrain_iters": PRETRAIN_ITERS.get(card["version"], int(iters.group(1))),
            "extractor_source": f"the extractor of {provenance(onnx_path)}"}


def provenance(onnx_path: Path) -> str:
    """'2Be3-Net <card version> (recovered from <file>, sha256 <prefix>…, by extractor_from_onnx.py)'."""
    version = tomllib.loads((onnx_path.parent / "model.toml").read_text())["version"]
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    return f"2Be3-Net {version} (recovered from {onnx_path.name}, sha256 {digest[:16]}…, by extractor_from_onnx.py)"


# 0.2.0's card says 300 pre-training iterations: its heads were trained with --keep-extractor, whose
# record took the default --pre-iters of the head run; build_all.sh pre-trained it for 1000.
PRETRAIN_ITERS = {"0.2.0": 1000}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("onnx")
    ap.add_argument("extractor_out")
    ap.add_argument("--variant", choices=("ws", "hn"), default="ws", help="the file's slice rule (the check's input)")
    ap.add_argument("--model", help="also write the whole recovered model's state dict here")
    a = ap.parse_args()
    main(a.onnx, a.extractor_out, a.variant, a.model)
