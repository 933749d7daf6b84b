"""Experiment behind README "2Be3-Net at clinical size, 2026-12-03" (not part of the shipped chain):
a 2Be3 [WS] head whose three 3D blocks keep depth (stride (1, 2, 2)), then per-slab FC 128, the
maximum over the K slabs, FC 3; trained by train_two_be_three.train_head on the cached features
of a --keep-extractor run (cache/clinical/feat_ws_{train,val}.npy, seeds 0-228 and 700-759).

    python exp_two_be_three_depth.py EPOCHS MODE [fixed] [train=N] [threads=T] [heldout]

MODE is the depth kernel of the three blocks: k333 (3x3x3 each), k1 (1x3x3 each: the 2D
baseline in 3D form), k133 (first block 1x3x3), k333c (3x3x3 with only the centre depth tap
non-zero at the start), k333v (3x3x3 without zero padding in depth: the head of 2Be3-Net 0.2.0),
k311v (first block 3x3x3 without depth padding, then 1x3x3: each slab sees 3 slabs instead of 7;
the head two_be_three.TwoBeThreeNet ships from 0.3.0). `fixed` trains on the inference slab
positions instead of random ordered draws; train=N takes the first N training studies (default 229); heldout scores
the kept head (saved as /tmp/exp_two_be_three_depth/MODE.pt) on held-out seeds 100000-100099 in
torch, heldout_from=S on S..S+99. Prints validation AUC per epoch."""
import pathlib
import sys
import types

import numpy as np
import torch
import torch.nn as nn

import data
import train_two_be_three as T
import two_be_three as M

KERNELS = {"k333": (3, 3, 3), "k333c": (3, 3, 3), "k1": (1, 1, 1), "k133": (1, 3, 3), "k333v": (3, 3, 3),
           "k311v": (3, 1, 1)}


def block(cin, cout, kd, valid=False):
    """A depth-keeping block; 3-deep ones zero-pad depth unless `valid`."""
    if kd == 1 or valid:
        return M.block3d_keep_depth(cin, cout, kd)
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride=(1, 2, 2), padding=1, bias=False),
                         nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


def depth_max_net(mode):
    if mode == "k311v":
        return M.TwoBeThreeNet
    class DepthMax(M.TwoBeThreeNet):
        def __init__(self, K=66, crop=90):
            nn.Module.__init__(self)
            self.K, self.crop = K, crop
            self.extractor = M.resnet50_first_five()
            kd = KERNELS[mode]
            v = mode.endswith("v")
            self.blocks = nn.Sequential(block(M.FEAT_C, 32, kd[0], v), block(32, 64, kd[1], v),
                                        block(64, 64, kd[2], v))
            self.slab_fc = nn.Sequential(nn.Flatten(), nn.Linear(64 * 9, 128), nn.ReLU(inplace=True))
            self.fc = nn.Sequential(nn.Dropout(0.3), nn.Linear(128, 3))
            if mode == "k333c":     # start as the 1x3x3 head (I3D-style inflation)
                with torch.no_grad():
                    for m in self.blocks.modules():
                        if isinstance(m, nn.Conv3d):
                            m.weight[:, :, 0].zero_()
                            m.weight[:, :, 2].zero_()
                            m.weight[:, :, 1].mul_(3 ** 0.5)

    return DepthMax


def option(name, default):
    """The value of a `name=value` argument, of `default`'s type, or `default`."""
    return next((type(default)(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith(name + "=")), default)


@torch.no_grad()
def heldout(model, first):
    """AUC LR / DM / OS of `model` on held-out seeds first..first+99 (the inference slab rule)."""
    model.eval()
    test = data.load_many(range(first, first + 100))
    s = np.concatenate([model(torch.from_numpy(data.two_be_three_input(t, "ws")[None])).numpy() for t in test])
    y = np.stack([t.outcomes for t in test])
    print(f"held-out {first}.. AUC LR/DM/OS", [round(T.auc(y[:, j], s[:, j]), 3) for j in range(3)], flush=True)


def main():
    epochs, mode, fixed = int(sys.argv[1]), sys.argv[2], "fixed" in sys.argv[3:]
    torch.set_num_threads(option("threads", 2))
    T.TwoBeThreeNet = depth_max_net(mode)
    if fixed:
        draw = T.draw_slices
        T.draw_slices = lambda studies, idxs, variant, rng: draw(studies, idxs, variant, None)
    tr = [data.load(s) for s in range(option("train", 229))]
    va = [data.load(s) for s in range(700, 760)]
    mm = {split: np.load(data.CACHE / f"feat_ws_{split}.npy", mmap_mode="r") for split in ("train", "val")}
    args = types.SimpleNamespace(epochs=epochs, batch=6, lr=5e-4, continue_heads=False, aux=0.0)
    T.RUNS = pathlib.Path("/tmp/exp_two_be_three_depth")
    T.RUNS.mkdir(exist_ok=True)
    ext = M.resnet50_first_five()
    ext.load_state_dict(torch.load(data.RUNS / "two_be_three" / "extractor.pt"))
    model, _ = T.train_head("2be3", "ws", ext, tr, va, mm["train"], mm["val"], args, print)
    torch.save(model.state_dict(), T.RUNS / f"{mode}.pt")
    if "heldout" in sys.argv[3:]:
        heldout(model, option("heldout_from", 100000))


if __name__ == "__main__":
    main()
