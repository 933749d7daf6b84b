"""Train L2SNet: phase 1 (2D U-Net, coronal PET slices) then phase 2 (3D U-Net, PET+CT patches,
loss weighted by 1 + location cue). Writes runs/l2snet/{loc2d.pt, seg3d.pt, train.json, train.log}.

Both phases can run under CPU bfloat16 autocast (--bf16; weights, optimiser state and the loss stay
float32), about 2x faster per iteration on AVX512-BF16 CPUs. Both phases validate every --val-every*
iterations on validation seeds (700..) with the inference of pipeline.py (Gaussian sliding window,
adaptive threshold) and keep the best checkpoint (phase 1: pooled Dice of cue > 0.5; phase 2: mean of
the plain and adaptive mean Dice); the last checkpoints are kept as *_last.pt."""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

import data
import grid
import pipeline
from evaluate import autopet, summarise
from grid import MODEL_GRID
from l2snet import Loc2D, UNet3D, bce_dice

RUNS = data.RUNS / "l2snet"


def poly(opt, base_lr, it, total, power=0.9):
    for g in opt.param_groups:
        g["lr"] = base_lr * (1 - it / total) ** power


def autocast(args):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(args.bf16))


@torch.no_grad()
def cue_torch(model, pet, args, batch=16):
    """pipeline.location_cue on the torch model (validation only)."""
    nz, ny, nx = pet.shape
    sl = torch.from_numpy(data.coronal_slices(pet, data.L2SNET["loc2d_multiple"]))
    with autocast(args):
        out = torch.cat([model(sl[i:i + batch]).float() for i in range(0, ny, batch)])
    return np.ascontiguousarray(out[:, 0, :nz, :nx].numpy().transpose(1, 0, 2))


@torch.no_grad()
def sliding_window_torch(model, x, args, batch=9, inside=None):
    """pipeline.blend_windows on the torch model (same windows, same Gaussian blending; `inside`:
    the body, as at inference)."""
    def predict(xb):
        with autocast(args):
            return model(torch.from_numpy(xb)).float().numpy()[:, 0]
    return pipeline.blend_windows(x, predict, batch=batch, inside=inside)


def validate1(model, val, args):
    model.eval()
    rows = [autopet(s.mask, cue_torch(model, s.pet, args) > 0.5, s.voxel_ml) for s in val]
    model.train()
    return summarise(rows)


def validate2(model, val, val_cues, args):
    model.eval()
    p = data.L2SNET
    plain, adapt = [], []
    for s, cue in zip(val, val_cues):
        prob = sliding_window_torch(model, pipeline.petct_input(s.pet, s.ct), args,
                                    inside=pipeline.body(s.pet))
        plain.append(autopet(s.mask, prob > p["threshold"], s.voxel_ml))
        adapt.append(autopet(s.mask, pipeline.adaptive_threshold(prob, cue), s.voxel_ml))
    model.train()
    a, b = summarise(plain), summarise(adapt)
    return {"plain": a, "adaptive": b,
            "score": 0.5 * (a["mean_dice_lesion_studies"] + b["mean_dice_lesion_studies"])}


def fmt(m):
    return (f"dice {m['mean_dice_lesion_studies']:.4f} pooled {m['pooled_dice']:.4f} "
            f"fpv {m['mean_fpv_ml']:.3f} fnv {m['mean_fnv_ml']:.3f}")


def export_tmp(model, shape, path, in_name, out_name):
    model.eval()
    dyn = {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(model, (torch.zeros(*shape),), str(path), dynamo=False, opset_version=17,
                      input_names=[in_name], output_names=[out_name],
                      dynamic_axes={in_name: dyn, out_name: dyn})


def coronal_pair(s, j: int, multiple: int):
    """Coronal slice j of a cached study: normalised PET and the mask fraction, [1, Zp, Xp]."""
    nz, ny, nx = s.pet.shape
    zp, xp = -(-nz // multiple) * multiple, -(-nx // multiple) * multiple
    x = np.zeros((1, zp, xp), np.float32)
    m = np.zeros((1, zp, xp), np.float32)
    x[0, :nz, :nx] = data.pet_norm(np.asarray(s.pet[:, j, :]))
    m[0, :nz, :nx] = s.seg[:, j, :]
    return x, m


def random_crop(x, m, crop, rng, size_axis):
    """Crop axis `size_axis` (1: z, 2: x) of a [1, Zp, Xp] pair to `crop`, on a lesion row or
    column 90 % of the time when the slice has one."""
    n = x.shape[size_axis]
    if crop >= n:
        return x, m
    other = 1 if size_axis == 1 else 0           # m[0] is [Zp, Xp]: reduce over the other axis
    on = np.nonzero((m[0] > 0.5).any(axis=other))[0]
    if len(on) and rng.random() < 0.9:
        c = int(rng.choice(on))
        a = int(np.clip(c - rng.integers(crop), 0, n - crop))
    else:
        a = int(rng.integers(n - crop + 1))
    sl = [slice(None)] * 3
    sl[size_axis] = slice(a, a + crop)
    return x[tuple(sl)], m[tuple(sl)]


def phase1(studies, val, args, log):
    rng = np.random.default_rng(1)
    torch.manual_seed(1)
    model = Loc2D()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr1, weight_decay=1e-4)
    multiple = data.L2SNET["loc2d_multiple"]
    # (study, coronal index) of every slice holding a lesion voxel (mask fraction > 0.5)
    pos = [(i, int(j)) for i, s in enumerate(studies) for j in np.nonzero(s.mask.any(axis=(0, 2)))[0]]
    crop = args.crop1
    history, best = [], None
    t0 = time.time()
    model.train()
    for it in range(args.iters1):
        poly(opt, args.lr1, it, args.iters1)
        xb, yb = [], []
        for _ in range(args.batch1):
            if rng.random() < args.lesion_fraction and pos:
                i, j = pos[rng.integers(len(pos))]
            else:
                i = int(rng.integers(len(studies)))
                j = int(rng.integers(studies[i].pet.shape[1]))
            x, m = coronal_pair(studies[i], j, multiple)
            x, m = random_crop(x, m, crop, rng, 1)
            x, m = random_crop(x, m, crop, rng, 2)
            if x.shape[1] < crop or x.shape[2] < crop:   # pad to one batch shape
                xp = np.zeros((1, crop, crop), np.float32)
                mp = np.zeros((1, crop, crop), np.float32)
                xp[:, :x.shape[1], :x.shape[2]] = x
                mp[:, :m.shape[1], :m.shape[2]] = m
                x, m = xp, mp
            if rng.random() < 0.5:   # random horizontal (x) flip
                x, m = x[:, :, ::-1], m[:, :, ::-1]
            xb.append(x.copy())
            yb.append(m.copy())
        xb, yb = torch.from_numpy(np.stack(xb)), torch.from_numpy(np.stack(yb))
        with autocast(args):
            logits = model.logits(xb)
        loss = bce_dice(logits.float(), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 100 == 0 or it == args.iters1 - 1:
            log(f"phase1 it {it} loss {loss.item():.4f} {time.time() - t0:.0f}s")
        if val and args.val_every1 and ((it + 1) % args.val_every1 == 0 or it == args.iters1 - 1):
            t = time.time()
            m = validate1(model, val, args)
            history.append({"it": it + 1, **m})
            if best is None or m["pooled_dice"] > best[0]:
                best = (m["pooled_dice"], it + 1, {k: v.detach().clone() for k, v in model.state_dict().items()})
            log(f"phase1 val it {it + 1}: cue>0.5 {fmt(m)} ({time.time() - t:.0f}s)")
    torch.save(model.state_dict(), RUNS / "loc2d_last.pt")
    info = {"history": history}
    if best is not None:
        model.load_state_dict(best[2])
        info["best_it"] = best[1]
        log(f"phase1 best checkpoint: it {best[1]} (pooled Dice of cue > 0.5 {best[0]:.4f})")
    return model, time.time() - t0, info


def patch_start(centre, shape, patch, rng):
    """Start of a patch that holds voxel `centre` at a random position inside it, kept inside the
    volume where the volume is larger than the patch."""
    return tuple(int(np.clip(c - rng.integers(p), 0, max(0, n - p)))
                 for c, n, p in zip(centre, shape, patch))


def pad_to(a, patch):
    """[c, z, y, x] zero-padded at the high end to the patch (volumes thinner than a patch)."""
    if list(a.shape[1:]) == list(patch):
        return a
    out = np.zeros((a.shape[0], *patch), np.float32)
    out[:, :a.shape[1], :a.shape[2], :a.shape[3]] = a
    return out


def flat_ct(xp: np.ndarray) -> np.ndarray:
    """A patch [2, z, y, x] with its CT channel replaced by soft tissue (40 HU) in the body and air
    outside: the network must then read a lesion from the PET alone (--ct-dropout)."""
    out = xp.copy()
    inside = xp[0] > data.pet_norm(np.float32(MODEL_GRID["body_suv"]))
    out[1] = np.where(inside, data.ct_norm(np.float32(40.0)), data.ct_norm(np.float32(-1000.0)))
    return out


def load_seg3d(model, path: str) -> None:
    """Starting weights for a continued phase 2: a torch state dict (.pt) or a shipped seg3d ONNX
    file, whose initializers carry the state dict's names (the legacy exporter keeps them; the
    3D U-Net has no batch norm for it to fold)."""
    if not path.endswith(".onnx"):
        model.load_state_dict(torch.load(path))
        return
    import onnx
    from onnx import numpy_helper
    inits = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy())
             for t in onnx.load(path).graph.initializer}
    state = model.state_dict()
    missing = sorted(set(state) - set(inits))
    if missing:
        raise SystemExit(f"{path}: no initializer for {missing[:3]}")
    model.load_state_dict({k: inits[k] for k in state})


def hard_negatives(model, studies, args, log):
    """Hard negatives for a continued phase 2 (--init-seg3d): the voxels where the starting model
    predicts a lesion (p > 0.5) at least 2 voxels away from any true lesion, on --n-hard studies
    from --hard-start (one sliding-window pass each; cached per checkpoint and seed). Mine studies
    the starting weights were not trained on: on its own training studies a converged round
    finds almost nothing (round 2: 1 voxel on 40 studies)."""
    tag = hashlib.sha256(Path(args.init_seg3d).read_bytes()).hexdigest()[:12]
    out = RUNS / f"hard_{tag}"
    out.mkdir(exist_ok=True)
    t, found = time.time(), [[]] * args.hard_start
    model.eval()
    for s in studies[args.hard_start:args.hard_start + args.n_hard]:
        f = out / f"{s.seed}.npy"
        if not f.exists():
            with torch.no_grad():
                prob = sliding_window_torch(model, pipeline.petct_input(s.pet, s.ct), args,
                                    inside=pipeline.body(s.pet))
            near = ndimage.binary_dilation(s.mask, iterations=2)
            np.save(f, np.argwhere((prob > 0.5) & ~near).astype(np.int16))
        found.append(np.load(f).astype(np.int64))
    model.train()
    n = [len(h) for h in found]
    log(f"hard negatives: {sum(n)} voxels on {sum(1 for k in n if k)} of {args.n_hard} studies "
        f"({time.time() - t:.0f}s)")
    return found + [[]] * (len(studies) - len(found))


def site_voxels(s, site: str) -> np.ndarray:
    """Model-grid voxels [n, 3] of the study's lesions of `site` (labels.json): each lesion's centre
    (LPS mm) mapped through its native PET grid onto the model grid (meta.json's index map), and
    the lesion component holding it."""
    meta = json.loads((data.ARRAYS / str(s.seed) / "meta.json").read_text())
    pet = s.labels["pet"]
    to_model = grid.back_map(meta["scale_xyz"], meta["offset_xyz"])   # native index -> model index
    comps, _ = ndimage.label(s.mask, ndimage.generate_binary_structure(3, 2))
    out = []
    for lesion in s.labels.get("lesions", []):
        if lesion["site"] != site:
            continue
        native = [(c - o) / sp for c, o, sp in zip(lesion["centre_mm"], pet["origin_mm"], pet["spacing_mm"])]
        x, y, z = (int(round(sc * v + off)) for v, sc, off in zip(native, *to_model))
        if all(0 <= i < n for i, n in zip((z, y, x), comps.shape)) and comps[z, y, x]:
            out.append(np.argwhere(comps == comps[z, y, x]))
    return np.concatenate(out) if out else np.zeros((0, 3), np.int64)


def phase2(studies, cues, val, val_cues, args, log):
    rng = np.random.default_rng(2)
    torch.manual_seed(2)
    model = UNet3D()
    # prior-probability initialisation of the output bias (p = 0.01): training starts from
    # "background everywhere" instead of p = 0.5, which the short CPU schedule needs
    torch.nn.init.constant_(model.out.bias, -4.6)
    if args.init_seg3d:   # continue training from a previous phase-2 checkpoint
        load_seg3d(model, args.init_seg3d)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr2, weight_decay=1e-4)
    patch = data.L2SNET["patch_zyx"]
    fgs = [np.argwhere(s.mask) for s in studies]
    # patch centres away from lesions: body voxels (every 2nd on each axis) and, for a share of
    # --hot-fraction, hot voxels outside lesions (brain, heart, kidneys, bladder, bowel: where
    # false positives come from)
    bodies = [np.argwhere(np.asarray(s.pet[::2, ::2, ::2]) > MODEL_GRID["body_suv"]) * 2 for s in studies]
    hots = [np.argwhere((np.asarray(s.pet) > args.hot_suv) & ~s.mask) for s in studies]
    hards = hard_negatives(model, studies, args, log) if args.hard_fraction else [[]] * len(studies)
    with_hards = [i for i, h in enumerate(hards) if len(h)]
    sites = [site_voxels(s, args.site) for s in studies] if args.site_fraction else [[]] * len(studies)
    with_sites = [i for i, v in enumerate(sites) if len(v)]
    if args.site_fraction:
        log(f"{args.site} lesions: {sum(len(v) for v in sites)} voxels on {len(with_sites)} studies")
    lo = args.fg_fraction + args.hot_fraction + args.hard_fraction   # where the site band starts
    history, best = [], None
    t0 = time.time()
    model.train()
    for it in range(args.iters2):
        poly(opt, args.lr2, it, args.iters2)
        xb, yb, wb = [], [], []
        for _ in range(args.batch2):
            u = rng.random()
            hard_band = args.fg_fraction + args.hot_fraction <= u < lo
            # a patch in the hard band comes from a study that has mined false positives, so
            # --hard-fraction is the share of such patches however few studies have any
            site_band = lo <= u < lo + args.site_fraction   # empty unless --site-fraction
            if site_band and with_sites:
                i = int(rng.choice(with_sites))
            else:
                i = int(rng.choice(with_hards) if hard_band and with_hards else rng.integers(len(studies)))
            s, cue = studies[i], cues[i]
            if len(fgs[i]) and u < args.fg_fraction:            # holding a random lesion voxel
                centres = fgs[i]
            elif len(hots[i]) and u < args.fg_fraction + args.hot_fraction:
                centres = hots[i]
            elif len(hards[i]) and hard_band:
                centres = hards[i]
            elif len(sites[i]) and site_band:
                centres = sites[i]
            else:
                centres = bodies[i]
            z, y, w = patch_start(centres[rng.integers(len(centres))], s.pet.shape, patch, rng)
            pz, py, px = patch
            sl = (slice(z, z + pz), slice(y, y + py), slice(w, w + px))
            xp = pad_to(pipeline.petct_input(np.asarray(s.pet[sl]), np.asarray(s.ct[sl])), patch)
            mp = pad_to(np.asarray(s.seg[sl], np.float32)[None], patch)
            cp = pad_to(cue[sl][None].astype(np.float32), patch)
            if rng.random() < 0.5:
                xp, mp, cp = xp[..., ::-1], mp[..., ::-1], cp[..., ::-1]
            if args.ct_dropout and rng.random() < args.ct_dropout:
                xp = flat_ct(xp)
            xb.append(xp.copy()), yb.append(mp.copy()), wb.append(1.0 + cp.copy())
        xb, yb, wb = (torch.from_numpy(np.stack(a)) for a in (xb, yb, wb))
        with autocast(args):
            logits = model.logits(xb)
        loss = bce_dice(logits.float(), yb, weight=wb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 100 == 0 or it == args.iters2 - 1:
            log(f"phase2 it {it} loss {loss.item():.4f} {time.time() - t0:.0f}s")
        if val and args.val_every2 and ((it + 1) % args.val_every2 == 0 or it == args.iters2 - 1):
            t = time.time()
            m = validate2(model, val, val_cues, args)
            history.append({"it": it + 1, **m})
            if best is None or m["score"] > best[0]:
                best = (m["score"], it + 1, {k: v.detach().clone() for k, v in model.state_dict().items()})
            log(f"phase2 val it {it + 1}: plain {fmt(m['plain'])} | adaptive {fmt(m['adaptive'])} "
                f"({time.time() - t:.0f}s)")
    torch.save(model.state_dict(), RUNS / "seg3d_last.pt")
    info = {"history": history}
    if best is not None:
        model.load_state_dict(best[2])
        info["best_it"] = best[1]
        log(f"phase2 best checkpoint: it {best[1]} (mean of plain and adaptive mean Dice {best[0]:.4f})")
    return model, time.time() - t0, info


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train1", type=int, default=400)
    ap.add_argument("--n-train2", type=int, default=150)
    ap.add_argument("--iters1", type=int, default=500)
    ap.add_argument("--batch1", type=int, default=8)
    ap.add_argument("--crop1", type=int, default=96, help="coronal crop, z and x (a multiple of 32)")
    ap.add_argument("--lesion-fraction", type=float, default=0.5)
    ap.add_argument("--lr1", type=float, default=1e-3)
    ap.add_argument("--iters2", type=int, default=300)
    ap.add_argument("--batch2", type=int, default=4)
    ap.add_argument("--fg-fraction", type=float, default=0.67)
    ap.add_argument("--hot-fraction", type=float, default=0.15,
                    help="share of phase-2 patches centred on hot voxels outside lesions")
    ap.add_argument("--hot-suv", type=float, default=3.0)
    ap.add_argument("--hard-fraction", type=float, default=0.0,
                    help="share of phase-2 patches centred on the false positives of --init-seg3d")
    ap.add_argument("--n-hard", type=int, default=30, help="studies mined for hard negatives")
    ap.add_argument("--hard-start", type=int, default=0,
                    help="index of the first mined study among the phase-2 studies")
    ap.add_argument("--lr2", type=float, default=2e-3)
    ap.add_argument("--site-fraction", type=float, default=0.0,
                    help="share of phase-2 patches centred on lesions of --site (studies that have one)")
    ap.add_argument("--site", default="liver", help="lesion site of --site-fraction (labels.json)")
    ap.add_argument("--ct-dropout", type=float, default=0.0,
                    help="share of phase-2 patches whose CT channel is made flat (soft tissue in the body)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="CPU bfloat16 autocast for forward passes")
    ap.add_argument("--n-val", type=int, default=40, help="validation studies (seeds 700..) for selection")
    ap.add_argument("--val-every1", type=int, default=0)
    ap.add_argument("--val-every2", type=int, default=0)
    ap.add_argument("--skip-phase1", action="store_true")
    ap.add_argument("--init-seg3d", default="", help="starting weights: a .pt state dict or a seg3d ONNX file")
    ap.add_argument("--loc2d-onnx", default="",
                    help="with --skip-phase1: the location cue from this ONNX file (a shipped loc2d) "
                         "instead of runs/l2snet/loc2d.pt")
    ap.add_argument("--patch2", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                    help="3D patch for training and validation instead of the card's patch_zyx")
    args = ap.parse_args()
    if args.hard_fraction and not args.init_seg3d:
        ap.error("--hard-fraction mines the false positives of --init-seg3d; give both")
    if args.loc2d_onnx and not args.skip_phase1:
        ap.error("--loc2d-onnx replaces phase 1's weights; give --skip-phase1 too")
    if args.patch2:
        data.L2SNET["patch_zyx"] = list(args.patch2)
    torch.set_num_threads(args.threads)
    RUNS.mkdir(parents=True, exist_ok=True)
    log = data.run_log(RUNS / "train.log")
    if args.bf16 and not torch.cpu._is_avx512_bf16_supported():
        # without AVX512-BF16, bfloat16 Conv3d leaves oneDNN for a one-thread reference kernel:
        # under 100 iterations in 9 minutes on an AVX2 EPYC, against 1000 in 6 with AVX512-BF16
        log("--bf16 ignored: this CPU has no AVX512-BF16; training in float32")
        args.bf16 = False

    t_all = time.time()
    seeds1 = data.split("train", args.n_train1)
    studies = data.load_many(seeds1)
    val = data.load_many(data.split("val", args.n_val)) if args.n_val else []
    info = {"args": vars(args), "seeds_phase1": [seeds1[0], seeds1[-1]]}
    if val:
        info["validation_seeds"] = [val[0].seed, val[-1].seed]
    log(f"train_l2snet {json.dumps(vars(args))}")
    if args.loc2d_onnx:
        info["phase1_args"] = {"loc2d_onnx": args.loc2d_onnx}
    elif args.skip_phase1:
        loc = Loc2D()
        loc.load_state_dict(torch.load(RUNS / "loc2d.pt"))
        # train.json is written at the end of a run: absent when phase 1 finished but the run was
        # stopped before phase 2 did (phase 1's figures are then in train.log only)
        prev_file = RUNS / "train.json"
        prev = json.loads(prev_file.read_text()) if prev_file.exists() else {}
        for k in ("phase1_s", "phase1", "phase1_args", "seeds_phase1"):
            if k in prev:
                info[k] = prev[k]
        info.setdefault("phase1_args", prev.get("args"))
    else:
        loc, info["phase1_s"], info["phase1"] = phase1(studies, val, args, log)
        info["phase1_args"] = vars(args)
        torch.save(loc.state_dict(), RUNS / "loc2d.pt")
    if args.iters2 == 0:   # phase 1 only
        info["total_s"] = time.time() - t_all
        (RUNS / "train.json").write_text(json.dumps(info, indent=2))
        log(json.dumps(info))
        return
    # location cue for the phase-2 studies, computed with the exported model on onnxruntime
    if args.loc2d_onnx:
        loc_file = Path(args.loc2d_onnx)
    else:
        loc_file = RUNS / "loc2d.tmp.onnx"
        export_tmp(loc, (1, 1, 96, 64), loc_file, "pet_coronal", "cue")
    sess = pipeline.session(loc_file, args.threads)
    st2 = studies[:args.n_train2]
    t = time.time()
    loc_id = hashlib.sha256(loc_file.read_bytes() if args.loc2d_onnx
                            else (RUNS / "loc2d.pt").read_bytes()).hexdigest()[:12]
    cue_dir = RUNS / f"cues_{loc_id}"   # cues of this loc2d.pt only, one .npy per seed
    cue_dir.mkdir(exist_ok=True)
    cues = []
    for s in st2:
        f = cue_dir / f"{s.seed}.npy"
        if not f.exists():
            np.save(f, pipeline.location_cue(sess, s.pet).astype(np.float16))
        cues.append(np.load(f, mmap_mode="r"))
    val_cues = [pipeline.location_cue(sess, s.pet) for s in val]
    info["cue_s"] = time.time() - t
    log(f"cues for {len(st2)} + {len(val)} studies in {info['cue_s']:.0f}s")
    info["seeds_phase2"] = [st2[0].seed, st2[-1].seed]
    seg, info["phase2_s"], info["phase2"] = phase2(st2, cues, val, val_cues, args, log)
    if args.init_seg3d:
        prev_file = RUNS / "train.json"   # absent when the start is a shipped ONNX file
        prev = json.loads(prev_file.read_text()) if prev_file.exists() else {}
        info["phase2_s"] += prev.get("phase2_s", 0)
        info["phase2_rounds"] = prev.get("phase2_rounds", [prev.get("args", {}).get("iters2")]) + [args.iters2]
        # each round's arguments and kept checkpoint, for the card
        info["phase2_round_args"] = prev.get("phase2_round_args", [prev.get("args")]) + [vars(args)]
        info["phase2_best_its"] = prev.get("phase2_best_its", [prev.get("phase2", {}).get("best_it")]) + \
            [info["phase2"].get("best_it")]
    torch.save(seg.state_dict(), RUNS / "seg3d.pt")
    info["total_s"] = time.time() - t_all
    (RUNS / "train.json").write_text(json.dumps(info, indent=2))
    log(json.dumps(info))


if __name__ == "__main__":
    main()
