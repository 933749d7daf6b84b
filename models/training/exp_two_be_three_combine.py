"""Experiment behind README "2Be3-Net 0.3.0", "After the choice" (not part of the shipped chain):
AUC LR / DM / OS of trained [WS] heads, alone and as the mean of two heads' logits on one shared
extractor, in torch.

    python exp_two_be_three_combine.py val            # validation 700..759, cached features
    python exp_two_be_three_combine.py FIRST          # held-out seeds FIRST..FIRST+99

Heads: runs/two_be_three/ws.pt (shipped, robust step), runs/k311v_plain/ws.pt (the same head
before the robust step, copied there by hand) and runs/two_be_three/resnet_conv2d.pt (the 2D
baseline). The README's figures were measured with 0.3.0's heads (400 studies; kept in
runs/v030_backup/), before 0.4.0 replaced the files under runs/two_be_three/."""
import sys

import numpy as np
import torch

import data
import train_two_be_three as T
from two_be_three import ResNetConv2d, TwoBeThreeNet

HEADS = {"shipped": (TwoBeThreeNet, "two_be_three/ws.pt"), "no_robust": (TwoBeThreeNet, "k311v_plain/ws.pt"),
         "conv2d": (ResNetConv2d, "two_be_three/resnet_conv2d.pt")}
PAIRS = [("shipped", "conv2d"), ("no_robust", "conv2d")]


def load_heads():
    out = {}
    for name, (cls, path) in HEADS.items():
        m = cls(T.K, T.CROP)
        m.load_state_dict(torch.load(data.RUNS / path))
        out[name] = m.eval()
    return out


@torch.no_grad()
def validation_logits(heads):
    va = data.load_many(data.split("val", 60))
    mm = np.load(data.CACHE / "feat_ws_val.npy", mmap_mode="r")
    batches = [list(range(i, min(i + 8, len(va)))) for i in range(0, len(va), 8)]
    logits = {k: np.concatenate([m.head(T.feats_batch(mm, b, T.draw_slices(va, b, "ws", None))).numpy()
                                 for b in batches]) for k, m in heads.items()}
    return logits, np.stack([s.outcomes for s in va])


@torch.no_grad()
def heldout_logits(heads, first):
    test = data.load_many(range(first, first + 100))
    logits = {k: [] for k in heads}
    for t in test:
        f = heads["shipped"].features(torch.from_numpy(data.two_be_three_input(t, "ws")[None]))
        for k, m in heads.items():
            logits[k].append(m.head(f).numpy()[0])
    return {k: np.stack(v) for k, v in logits.items()}, np.stack([t.outcomes for t in test])


def main():
    torch.set_num_threads(1)
    heads = load_heads()
    which = sys.argv[1]
    logits, y = validation_logits(heads) if which == "val" else heldout_logits(heads, int(which))
    logits.update({f"{a}+{b}": (logits[a] + logits[b]) / 2 for a, b in PAIRS})
    for name, v in logits.items():
        print(which, f"{name:18s} AUC LR/DM/OS", [round(T.auc(y[:, j], v[:, j]), 3) for j in range(3)], flush=True)


if __name__ == "__main__":
    main()
