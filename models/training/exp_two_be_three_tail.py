"""Experiment (not part of the shipped chain): fine-tune the last Bottleneck of the 2Be3 [WS]
extractor (layer1[2]) together with the head, instead of freezing the whole extractor.

Why: the frozen extractor's evidence for "a distant lesion here" is weak next to hot organs (README
"distant metastasis, what was tried"); the head cannot even fit DM on its own training studies.
Training the whole extractor end to end costs about 10 min an epoch on 400 studies here; the last
Bottleneck alone about 3 min, because the stem's output (conv1 .. layer1[1], frozen) is cached once.

    python exp_two_be_three_tail.py EPOCHS [lr=1e-4] [aux=1.0] [init=k311v_plain/ws.pt] [threads=2]
    python exp_two_be_three_tail.py heldout FIRST [ckpt=/tmp/exp_two_be_three_tail/ws.pt]

BatchNorm statistics stay as trained (eval mode); the tail's and the head's weights learn. Keeps the
epoch with the best mean validation AUC (the recipe's rule). Writes /tmp/exp_two_be_three_tail/."""
import json
import pathlib
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import data
import exp_two_be_three_depth as depth
import train_two_be_three as T
from exp_two_be_three_depth import option
from two_be_three import FEAT_C, TwoBeThreeNet

OUT = pathlib.Path("/tmp/exp_two_be_three_tail")


def stem(model):
    """conv1 .. layer1[1]: the frozen part, whose output is cached."""
    ext = model.extractor
    return torch.nn.Sequential(*ext[:4], ext[4][:2])


def tail(model):
    return model.extractor[4][2]


@torch.no_grad()
def cache_stem(model, studies, split, log):
    s = stem(model).eval()

    def run(sl):
        x = torch.from_numpy(sl)[:, None]
        return s(torch.cat([x, x, x], 1)).numpy().astype(np.float16)
    return T.cache_slices(studies, "ws", data.CACHE / f"stem_ws_{split}.npy", np.float16, run, log)


def logits(model, mm, idxs, ks, with_slabs=False):
    f = T.feats_batch(mm, idxs, ks)                               # [B, 256, K, h, h] stem output
    b, c, k, h, w = f.shape
    g = tail(model)(f.permute(0, 2, 1, 3, 4).reshape(b * k, c, h, w))
    g = g.reshape(b, k, FEAT_C, h, w).permute(0, 2, 1, 3, 4)
    v = model.slab_vectors(g)
    return (model.fc(v.amax(1)), v) if with_slabs else model.fc(v.amax(1))


def set_train(model):
    model.train()
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            m.eval()


@torch.no_grad()
def validate(model, va, mm, y):
    model.eval()
    s = np.concatenate([torch.sigmoid(logits(model, mm, b, T.draw_slices(va, b, "ws", None))).numpy()
                        for b in [list(range(i, min(i + 8, len(va)))) for i in range(0, len(va), 8)]])
    return [T.auc(y[:, j], s[:, j]) for j in range(3)]


def train(epochs):
    OUT.mkdir(exist_ok=True)
    log = data.run_log(OUT / "train.log")
    model = TwoBeThreeNet(T.K, T.CROP)
    model.load_state_dict(torch.load(data.RUNS / option("init", "k311v_plain/ws.pt")))
    tr = data.load_many(data.split("train", 400))
    va = data.load_many(data.split("val", 60))
    mm = {n: (np.load(data.CACHE / f"stem_ws_{n}.npy", mmap_mode="r") if (data.CACHE / f"stem_ws_{n}.npy").exists()
              else cache_stem(model, s, n, log)) for n, s in (("train", tr), ("val", va))}
    y_tr, y_va = np.stack([s.outcomes for s in tr]), np.stack([s.outcomes for s in va])
    pw = T.pos_weight(y_tr)
    aux = T.SlabAux(model, tr, "ws", option("aux", 1.0)) if option("aux", 1.0) > 0 else None
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(tail(model).parameters()) + T.head_params(model)   # head_params: no extractor weight
    for p in params:
        p.requires_grad_(True)
    params += list(aux.layer.parameters()) if aux else []
    lr, batch = option("lr", 1e-4), 6
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    rng = np.random.default_rng(7)
    torch.manual_seed(7)
    start = validate(model, va, mm["val"], y_va)
    log(f"tail start val AUC {np.round(start, 3).tolist()}")
    best, hist, it, steps, t0 = float(np.mean(start)), [], 0, epochs * (len(tr) // batch), time.time()
    torch.save(model.state_dict(), OUT / "ws.pt")
    for ep in range(epochs):
        set_train(model)
        perm = rng.permutation(len(tr))
        for b in range(len(tr) // batch):
            T.poly_lr(opt, lr, it, steps)
            idx = perm[b * batch:(b + 1) * batch]
            ks = T.draw_slices(tr, idx, "ws", rng)
            out, v = logits(model, mm["train"], idx, ks, with_slabs=True)
            loss = F.binary_cross_entropy_with_logits(out, torch.from_numpy(y_tr[idx]), pos_weight=pw)
            loss = loss + (aux.loss(v, idx, ks) if aux else 0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            it += 1
        a = validate(model, va, mm["val"], y_va)
        hist.append({"epoch": ep, "loss": loss.item(), "val_auc": a, "s": time.time() - t0})
        log(f"tail ep {ep} loss {loss.item():.4f} val AUC {np.round(a, 3).tolist()} {time.time() - t0:.0f}s")
        torch.save(model.state_dict(), OUT / f"ws_ep{ep}.pt")
        if np.mean(a) > best:
            best = float(np.mean(a))
            torch.save(model.state_dict(), OUT / "ws.pt")
    (OUT / "train.json").write_text(json.dumps({"start": start, "history": hist, "lr": lr,
                                                "aux": option("aux", 1.0)}, indent=2))


def heldout(first):
    """exp_two_be_three_depth.heldout on a saved checkpoint (ckpt=..., default this script's)."""
    model = TwoBeThreeNet(T.K, T.CROP)
    model.load_state_dict(torch.load(option("ckpt", str(OUT / "ws.pt"))))
    depth.heldout(model, first)


def main():
    torch.set_num_threads(option("threads", 2))
    if sys.argv[1] == "heldout":
        heldout(int(sys.argv[2]))
    else:
        train(int(sys.argv[1]))


if __name__ == "__main__":
    main()
