"""Train L2SNet: phase 1 (2D U-Net, coronal PET slices) then phase 2 (3D U-Net, PET+CT patches,
loss weighted by 1 + location cue). Writes runs/l2snet/{loc2d.pt, seg3d.pt, train.json}."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import data
import pipeline
from l2snet import Loc2D, UNet3D, bce_dice

RUNS = data.RUNS / "l2snet"


def poly(opt, base_lr, it, total, power=0.9):
    for g in opt.param_groups:
        g["lr"] = base_lr * (1 - it / total) ** power


def export_tmp(model, shape, path, in_name, out_name):
    model.eval()
    torch.onnx.export(model, (torch.zeros(*shape),), str(path), dynamo=False, opset_version=17,
                      input_names=[in_name], output_names=[out_name],
                      dynamic_axes={in_name: {0: "batch"}, out_name: {0: "batch"}})


def phase1(studies, args, log):
    rng = np.random.default_rng(1)
    torch.manual_seed(1)
    model = Loc2D()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr1, weight_decay=1e-4)
    # coronal slices (normalised) and their masks, [n, y] indexable
    sl = [data.coronal_slices(s.pet) for s in studies]                     # [ny, 1, Zp, Xp]
    ms = []
    for s, x in zip(studies, sl):
        m = np.zeros_like(x)
        nz, ny, nx = s.seg.shape
        m[:, 0, :nz, :nx] = s.seg.transpose(1, 0, 2)
        ms.append(m)
    pos = [(i, j) for i, m in enumerate(ms) for j in range(m.shape[0]) if m[j].any()]
    crop = args.crop1
    t0 = time.time()
    model.train()
    for it in range(args.iters1):
        poly(opt, args.lr1, it, args.iters1)
        xb, yb = [], []
        for _ in range(args.batch1):
            if rng.random() < args.lesion_fraction and pos:
                i, j = pos[rng.integers(len(pos))]
            else:
                i = rng.integers(len(sl))
                j = rng.integers(sl[i].shape[0])
            x, m = sl[i][j], ms[i][j]
            zp = x.shape[1]
            if crop < zp:   # random crop along z, kept on a lesion when the slice has one
                zs = np.nonzero(m[0].any(1))[0]
                if len(zs) and rng.random() < 0.9:
                    c = int(rng.choice(zs))
                    a = int(np.clip(c - rng.integers(crop), 0, zp - crop))
                else:
                    a = int(rng.integers(zp - crop + 1))
                x, m = x[:, a:a + crop], m[:, a:a + crop]
            if rng.random() < 0.5:   # random horizontal (x) flip
                x, m = x[:, :, ::-1], m[:, :, ::-1]
            xb.append(x.copy())
            yb.append(m.copy())
        xb, yb = torch.from_numpy(np.stack(xb)), torch.from_numpy(np.stack(yb))
        loss = bce_dice(model.logits(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 25 == 0 or it == args.iters1 - 1:
            log(f"phase1 it {it} loss {loss.item():.4f} {time.time() - t0:.0f}s")
    return model, time.time() - t0


def phase2(studies, cues, args, log):
    rng = np.random.default_rng(2)
    torch.manual_seed(2)
    model = UNet3D()
    # prior-probability initialisation of the output bias (p = 0.01): training starts from
    # "background everywhere" instead of p = 0.5, which the short CPU schedule needs
    torch.nn.init.constant_(model.out.bias, -4.6)
    if args.init_seg3d:   # continue training from a previous phase-2 checkpoint
        model.load_state_dict(torch.load(args.init_seg3d))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr2, weight_decay=1e-4)
    pz, py, px = data.L2SNET["patch_zyx"]
    xs = [pipeline.petct_input(s.pet, s.ct) for s in studies]
    fgs = [np.argwhere(s.seg > 0) for s in studies]
    t0 = time.time()
    model.train()
    for it in range(args.iters2):
        poly(opt, args.lr2, it, args.iters2)
        xb, yb, wb = [], [], []
        for _ in range(args.batch2):
            i = int(rng.integers(len(studies)))
            s, x, cue = studies[i], xs[i], cues[i]
            nz, ny, nx = s.seg.shape
            fg = fgs[i]
            if len(fg) and rng.random() < args.fg_fraction:   # patch holding a random lesion voxel
                cz, cy, cx = fg[rng.integers(len(fg))]
                z = int(np.clip(cz - rng.integers(pz), 0, max(0, nz - pz)))
                y = int(np.clip(cy - rng.integers(py), 0, max(0, ny - py)))
                w = int(np.clip(cx - rng.integers(px), 0, max(0, nx - px)))
            else:
                z = int(rng.integers(max(1, nz - pz + 1)))
                y = int(rng.integers(max(1, ny - py + 1)))
                w = int(rng.integers(max(1, nx - px + 1)))
            sl = (slice(z, z + pz), slice(y, y + py), slice(w, w + px))
            xp = x[(slice(None),) + sl]
            mp = s.seg[sl][None].astype(np.float32)
            cp = cue[sl][None].astype(np.float32)
            if rng.random() < 0.5:
                xp, mp, cp = xp[..., ::-1], mp[..., ::-1], cp[..., ::-1]
            xb.append(xp.copy()), yb.append(mp.copy()), wb.append(1.0 + cp.copy())
        xb, yb, wb = (torch.from_numpy(np.stack(a)) for a in (xb, yb, wb))
        loss = bce_dice(model.logits(xb), yb, weight=wb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 25 == 0 or it == args.iters2 - 1:
            log(f"phase2 it {it} loss {loss.item():.4f} {time.time() - t0:.0f}s")
    return model, time.time() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train1", type=int, default=400)
    ap.add_argument("--n-train2", type=int, default=150)
    ap.add_argument("--iters1", type=int, default=500)
    ap.add_argument("--batch1", type=int, default=8)
    ap.add_argument("--crop1", type=int, default=64)
    ap.add_argument("--lesion-fraction", type=float, default=0.5)
    ap.add_argument("--lr1", type=float, default=1e-3)
    ap.add_argument("--iters2", type=int, default=300)
    ap.add_argument("--batch2", type=int, default=4)
    ap.add_argument("--fg-fraction", type=float, default=0.67)
    ap.add_argument("--lr2", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-phase1", action="store_true")
    ap.add_argument("--init-seg3d", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    RUNS.mkdir(parents=True, exist_ok=True)
    log = data.run_log(RUNS / "train.log")

    t_all = time.time()
    seeds1 = data.split("train", args.n_train1)
    studies = data.load_many(seeds1)
    info = {"args": vars(args), "seeds_phase1": [seeds1[0], seeds1[-1]]}
    if args.skip_phase1:
        loc = Loc2D()
        loc.load_state_dict(torch.load(RUNS / "loc2d.pt"))
        info["phase1_s"] = json.loads((RUNS / "train.json").read_text()).get("phase1_s")
    else:
        loc, info["phase1_s"] = phase1(studies, args, log)
        torch.save(loc.state_dict(), RUNS / "loc2d.pt")
    # location cue for the phase-2 studies, computed with the exported model on onnxruntime
    export_tmp(loc, (1, 1, 96, 64), RUNS / "loc2d.tmp.onnx", "pet_coronal", "cue")
    sess = pipeline.session(RUNS / "loc2d.tmp.onnx", args.threads)
    st2 = studies[:args.n_train2]
    t = time.time()
    cue_file = RUNS / f"cues_{st2[0].seed}_{st2[-1].seed}.npy"
    if args.skip_phase1 and cue_file.exists():
        cues = list(np.load(cue_file))
    else:
        cues = [pipeline.location_cue(sess, s.pet).astype(np.float16) for s in st2]
        np.save(cue_file, np.stack(cues))
    info["cue_s"] = time.time() - t
    log(f"cues for {len(st2)} studies in {info['cue_s']:.0f}s")
    info["seeds_phase2"] = [st2[0].seed, st2[-1].seed]
    seg, info["phase2_s"] = phase2(st2, cues, args, log)
    if args.init_seg3d:
        prev = json.loads((RUNS / "train.json").read_text())
        info["phase2_s"] += prev.get("phase2_s", 0)
        info["phase2_rounds"] = prev.get("phase2_rounds", [prev.get("args", {}).get("iters2")]) + [args.iters2]
    torch.save(seg.state_dict(), RUNS / "seg3d.pt")
    info["total_s"] = time.time() - t_all
    (RUNS / "train.json").write_text(json.dumps(info, indent=2))
    log(json.dumps(info))


if __name__ == "__main__":
    main()
