"""Held-out evaluation of the exported ONNX files on onnxruntime CPU (seeds data.SPLITS["test"]).

L2SNet runs as tracerd runs it: networks on the model grid, cue and probability mapped back onto each
study's native PET grid, metrics there. autoPET metrics (Dice, FPV, FNV; 18-connectivity; voxel volume from pixdim, ml) for the
2D U-Net cue alone (threshold 0.5), the 3D U-Net alone (0.5), L2SNet with the adaptive threshold
(0.5, 0.1 where cue > 0.5), with its lesions delineated at the edge threshold (0.5; shipped from
0.5.0, pipeline.l2snet_mask) and with the paper's "and vice versa" (also 0.9 outside the cue, not
shipped), fp32 and INT8; detection, lesion-free studies, faces and the INT8 mask overlap of the
shipped rule (SHIPPED). 2Be3-Net: AUC per outcome for [WS], [H&N]
and the baselines; INT8 vs fp32 score differences. Writes runs/eval.json (L2SNet per study also to
runs/eval_l2snet_<size>.jsonl as it goes: a stopped evaluation resumes there).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time

import numpy as np
from scipy import ndimage

import data
import pipeline
from train_two_be_three import auc

MODELS = data.MODELS_OUT
RUNS = data.RUNS
CONN18 = ndimage.generate_binary_structure(3, 2)     # 18-connectivity
# The paper's raised threshold outside the cue ("and vice versa", 3.4); measured, not shipped (the card's
# raised_threshold is 0.5, README "adaptive threshold")
VICE_VERSA = 0.9
# The rule tracerd ships (the card's [postprocessing]): delineated when the card has an edge threshold
SHIPPED = "l2snet_delineated" if "edge_threshold" in data.L2SNET else "l2snet_adaptive"
EDGE = data.L2SNET.get("edge_threshold", data.L2SNET["threshold"])


def _untouched_voxels(mask, other):
    """Voxels of the 18-connected components of `mask` that share no voxel with `other`."""
    labels, n = ndimage.label(mask, CONN18)
    if not n:
        return 0
    hit = np.unique(labels[other & (labels > 0)])
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    return int(sizes[1:].sum() - sizes[hit].sum())


def autopet(gt: np.ndarray, pred: np.ndarray, voxel_ml: float):
    gt, pred = gt.astype(bool), pred.astype(bool)
    g, p = int(gt.sum()), int(pred.sum())
    dice = 2 * int((gt & pred).sum()) / (g + p) if g > 0 else float("nan")   # undefined without lesions
    fpv = _untouched_voxels(pred, gt)   # predicted components that miss the ground truth
    fnv = _untouched_voxels(gt, pred)   # ground-truth components the prediction misses
    return {"dice": dice, "fpv_ml": fpv * voxel_ml, "fnv_ml": fnv * voxel_ml,
            "inter": int((gt & pred).sum()), "gt": g, "pred": p}


def summarise(rows):
    d = [r["dice"] for r in rows if not np.isnan(r["dice"])]
    inter, g, p = (sum(r[k] for r in rows) for k in ("inter", "gt", "pred"))
    return {"mean_dice_lesion_studies": float(np.mean(d)), "n_lesion_studies": len(d),
            "pooled_dice": 2 * inter / (g + p), "mean_fpv_ml": float(np.mean([r["fpv_ml"] for r in rows])),
            "mean_fnv_ml": float(np.mean([r["fnv_ml"] for r in rows])), "n_studies": len(rows)}


def path_row(gt, mask, voxel_ml: float, seconds: float) -> dict:
    """One way of running L2SNet on one study: its mask's autoPET metrics, lesion count and time."""
    return {**autopet(gt, mask, voxel_ml), "seconds": seconds, "lesions": int(ndimage.label(mask, CONN18)[1])}


def overlap(a: np.ndarray, b: np.ndarray) -> dict:
    """Two masks of one study: voxels in both, and the two sizes summed (a mask Dice's parts)."""
    return {"both": int((a & b).sum()), "either_sum": int(a.sum() + b.sum())}


def agreement(rows, a: str, b: str) -> dict:
    """Path `b` against path `a` over rows holding path_row under each name and overlap's fields:
    mask Dice (pooled, worst and mean study), studies with the same lesion count, the change of the
    mean Dice against the truth, and the largest change of one study's."""
    per = [2 * r["both"] / r["either_sum"] if r["either_sum"] else 1.0 for r in rows]
    both, either = sum(r["both"] for r in rows), sum(r["either_sum"] for r in rows)
    changes = [r[b]["dice"] - r[a]["dice"] for r in rows if not np.isnan(r[a]["dice"])]
    return {
        "mask_dice_pooled": 2 * both / either if either else 1.0,
        "mask_dice_min": float(min(per)), "mask_dice_mean": float(np.mean(per)),
        "same_lesion_count": sum(r[b]["lesions"] == r[a]["lesions"] for r in rows),
        "mean_dice_change": summarise([r[b] for r in rows])["mean_dice_lesion_studies"]
                            - summarise([r[a] for r in rows])["mean_dice_lesion_studies"],
        "largest_study_dice_change": float(max(changes, key=abs)),
        "differing_lesion_counts": [[r["seed"], r[a]["lesions"], r[b]["lesions"]]
                                    for r in rows if r[b]["lesions"] != r[a]["lesions"]],
    }


def resumable_rows(path, seeds, row_of, shown=lambda row: ""):
    """Per seed, the row in the JSON-lines file `path`, or `row_of(seed)` appended to it (a long
    measurement survives being stopped); printed with its time and `shown(row)` as it goes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {json.loads(line)["seed"]: json.loads(line) for line in path.open()} if path.exists() else {}
    for seed in seeds:
        if seed in done:
            continue
        t = time.time()
        done[seed] = row_of(seed)
        with path.open("a") as f:
            f.write(json.dumps(done[seed]) + "\n")
        print(seed, f"{time.time() - t:.0f} s", shown(done[seed]), flush=True)
    return [done[s] for s in seeds]


def native(seed: int):
    """A held-out study's native files: (OnModelGrid, native SEG [z, y, x] bool, voxel ml, labels)."""
    import nibabel as nib
    d = data.NATIVE / str(seed)
    pet_img = nib.load(d / "SUV.nii.gz")
    m = data.on_model_grid(pet_img, nib.load(d / "CT.nii.gz"))
    seg = data.to_zyx(nib.load(d / "SEG.nii.gz"), np.uint8) > 0
    voxel_ml = float(np.prod(pet_img.header.get_zooms()[:3])) / 1000.0
    return m, seg, voxel_ml, json.loads((d / "labels.json").read_text())


SIZE_BANDS_ML = [0.0, 0.5, 2.0, 8.0, float("inf")]


def lesion_detection(gt, pred, voxel_ml):
    """Per ground-truth lesion (18-connected component): its volume band and whether the prediction
    touches it. Returns {band: [detected, total]}."""
    lab, n = ndimage.label(gt, CONN18)
    out = {}
    for i in range(1, n + 1):
        comp = lab == i
        ml = comp.sum() * voxel_ml
        band = next(f"{a:g}-{b:g} ml" for a, b in zip(SIZE_BANDS_ML, SIZE_BANDS_ML[1:]) if ml < b)
        hit = bool((comp & pred).any())
        d = out.setdefault(band, [0, 0])
        d[0] += hit
        d[1] += 1
    return out


VOLUME_MIN_ML = 5.0   # the volume check: found within 10 % of the truth for lesions of 5 ml or more


def lesion_volumes(gt, pred, voxel_ml):
    """Per ground-truth lesion of VOLUME_MIN_ML or more (18-connected): [true ml, found ml], found =
    the predicted components (18-connected) that touch it, as the 2 / 4 mm test measures it."""
    lab, n = ndimage.label(gt, CONN18)
    plab, _ = ndimage.label(pred, CONN18)
    sizes = np.bincount(plab.ravel())
    out = []
    for i in range(1, n + 1):
        comp = lab == i
        true_ml = comp.sum() * voxel_ml
        if true_ml >= VOLUME_MIN_ML:
            touched = np.unique(plab[comp & (plab > 0)])
            out.append([float(true_ml), float(sizes[touched].sum() * voxel_ml)])
    return out


def volume_summary(pairs):
    """Found / true volume over the lesions of lesion_volumes that were found at all."""
    r = np.array([f / t for t, f in pairs if f > 0])
    q = [float(x) for x in np.percentile(r, [25, 50, 75])] if r.size else [float("nan")] * 3
    return {"lesions": len(pairs), "found": int(r.size), "ratio_median": q[1], "ratio_q1_q3": [q[0], q[2]],
            "within_10_percent": int((np.abs(r - 1) <= 0.10).sum()), "pairs_ml": pairs}


def edge_voxels(mask, gt, r=2):
    """Predicted voxels within r voxels of a volume face where the ground truth has none."""
    edge = np.zeros(mask.shape, bool)
    for a in range(3):
        sl = [slice(None)] * 3
        sl[a] = slice(0, r)
        edge[tuple(sl)] = True
        sl[a] = slice(mask.shape[a] - r, None)
        edge[tuple(sl)] = True
    return int((mask & edge).sum()) if not (gt & edge).any() else 0


def l2snet_files_id() -> str:
    """The L2SNet files a per-study row was measured with (seg3d fp32, loc2d fp32 and INT8)."""
    h = hashlib.sha256()
    for f in ("seg3d.fp32.onnx", "loc2d.fp32.onnx", "loc2d.int8.onnx"):
        h.update((MODELS / "l2snet" / f).read_bytes())
    return h.hexdigest()[:16]


def study_row(seed, seg, locs):
    """Everything eval_l2snet reports about one held-out study, on its native grid. fp32 = loc2d.fp32 +
    seg3d.fp32; int8 = loc2d.int8 + seg3d.fp32 (INT8 is not shipped for the 3D U-Net: no CPU gain),
    so the 3D probabilities are computed once and shared."""
    m, gt, voxel_ml, labels = native(seed)
    row = {"seed": seed, "seconds": {}, "rules": {}, "int8_overlap": {},
           "crop": 1.0 - m.pet.size * float(np.prod(m.scale_xyz)) / float(np.prod(m.native_shape_xyz))}
    t = time.time()
    prob = m.to_native(pipeline.sliding_window(seg, pipeline.petct_input(m.pet, m.ct),
                                                  inside=pipeline.body(m.pet)))
    row["seconds"]["seg3d_fp32"] = time.time() - t
    m_plain = prob > data.L2SNET["threshold"]
    shipped = {}
    for prec, loc in locs.items():
        t = time.time()
        cue = m.to_native(pipeline.location_cue(loc, m.pet))
        row["seconds"][f"loc2d_{prec}"] = time.time() - t
        m_adapt = pipeline.adaptive_threshold(prob, cue)
        masks = {"unet2d_cue_0.5": cue > 0.5, "unet3d_0.5": m_plain, "l2snet_adaptive": m_adapt,
                 "l2snet_delineated": pipeline.delineate(m_adapt, prob, EDGE),
                 "l2snet_vice_versa": pipeline.adaptive_threshold(prob, cue, VICE_VERSA)}
        shipped[prec] = masks[SHIPPED]
        row["rules"][prec] = {k: autopet(gt, v, voxel_ml) for k, v in masks.items()}
        if prec == "fp32":
            row["shipped_rule"] = SHIPPED
            row["detection"] = lesion_detection(gt, shipped[prec], voxel_ml)
            row["false_lesions"] = None if gt.any() else int(ndimage.label(shipped[prec], CONN18)[1])
            row["edges"] = edge_voxels(shipped[prec], gt)
            row["volumes"] = {k: lesion_volumes(gt, masks[k], voxel_ml)
                              for k in ("unet3d_0.5", "l2snet_adaptive", "l2snet_delineated")}
    for name, a, b in (("plain", m_plain, m_plain), ("shipped", shipped["fp32"], shipped["int8"])):
        row["int8_overlap"][name] = [int((a & b).sum()), int(a.sum() + b.sum())]
    return row, labels


def eval_l2snet(seeds, threads, log):
    """study_row for every seed, summarised. Each row is appended to runs/eval_l2snet_<size>.jsonl as
    it is measured, so a stopped evaluation resumes where it was (rows of other files are ignored)."""
    path = RUNS / f"eval_l2snet_{data.SIZE}.jsonl"
    files = l2snet_files_id()
    done = {}
    for line in (path.read_text().splitlines() if path.exists() else []):
        try:
            r = json.loads(line)
        except json.JSONDecodeError:   # a line cut short by a stopped run
            continue
        if r.get("files") == files and r.get("shipped_rule") == SHIPPED and r["seed"] in seeds:
            done[r["seed"]] = r
    if done:
        log(f"{len(done)} studies already measured with these files ({path.name})")
    d = MODELS / "l2snet"
    seg = pipeline.session(d / "seg3d.fp32.onnx", threads)
    locs = {prec: pipeline.session(d / f"loc2d.{prec}.onnx", threads) for prec in ("fp32", "int8")}
    with path.open("a") as f:
        for seed in (s for s in seeds if s not in done):
            t = time.time()
            row, labels = study_row(seed, seg, locs)
            row["files"] = files
            f.write(json.dumps(row) + "\n")
            f.flush()
            done[seed] = row
            r = row["rules"]["fp32"][SHIPPED]
            log(f"seed {seed} [{labels.get('acquisition', {}).get('scanner', data.SIZE)}, "
                f"{labels['pet']['spacing_mm']}] dice {r['dice']:.3f} fpv {r['fpv_ml']:.2f} "
                f"fnv {r['fnv_ml']:.2f} ({time.time() - t:.0f}s)")
    res = summarise_l2snet([done[s] for s in seeds])
    for prec in ("fp32", "int8"):
        log(f"l2snet {prec}: " + json.dumps(res[prec]))
    return res


def summarise_l2snet(rows):
    """eval.json's l2snet record from the per-study rows of study_row."""
    res = {prec: {k: summarise([r["rules"][prec][k] for r in rows]) for k in rows[0]["rules"][prec]}
           for prec in ("fp32", "int8")}
    overlap = lambda name: [r["int8_overlap"][name] for r in rows]
    pooled = lambda name: 2 * sum(i for i, _ in overlap(name)) / max(1, sum(s for _, s in overlap(name)))
    per_study = [1.0 if s == 0 else 2 * i / s for i, s in overlap("shipped")]
    res["int8_vs_fp32"] = {
        "mask_dice_pooled_plain": pooled("plain"), "mask_dice_pooled_shipped": pooled("shipped"),
        "mask_dice_min_shipped": float(np.min(per_study)), "mask_dice_mean_shipped": float(np.mean(per_study)),
    }
    bands = {}
    for r in rows:
        for band, (hit, n) in r["detection"].items():
            b = bands.setdefault(band, [0, 0])
            b[0] += hit
            b[1] += n
    res["detection_by_size"] = {b: {"detected": h, "lesions": n, "rate": h / n} for b, (h, n) in sorted(bands.items())}
    lesion_free = [r["false_lesions"] for r in rows if r["false_lesions"] is not None]
    res["lesion_free"] = {"studies": len(lesion_free), "with_no_lesion": sum(c == 0 for c in lesion_free),
                          "false_lesions": lesion_free}
    res["edge_voxels_without_truth"] = int(sum(r["edges"] for r in rows))
    res["shipped_rule"] = SHIPPED
    res["lesion_volume_found_vs_true"] = {k: volume_summary([p for r in rows for p in r["volumes"][k]])
                                          for k in rows[0]["volumes"]}
    res["crop_removed_fraction_mean"] = float(np.mean([r["crop"] for r in rows]))
    res["seconds_per_study_ort_cpu"] = {k: float(np.mean([r["seconds"][k] for r in rows])) for k in rows[0]["seconds"]}
    keep = [r for r in rows if not np.isnan(r["rules"]["fp32"]["unet3d_0.5"]["dice"])]
    res["per_study_fp32"] = {
        "seeds_with_lesions": [r["seed"] for r in keep],
        "dice_plain": [r["rules"]["fp32"]["unet3d_0.5"]["dice"] for r in keep],
        "dice_adaptive": [r["rules"]["fp32"]["l2snet_adaptive"]["dice"] for r in keep],
        "dice_shipped": [r["rules"]["fp32"][SHIPPED]["dice"] for r in keep],
    }
    return res


def eval_two_be_three(studies, threads, log):
    y = np.stack([s.outcomes for s in studies])
    out = {"prevalence": {n: float(y[:, j].mean()) for j, n in enumerate(("lr", "dm", "os"))}}
    files = {"2be3_ws_fp32": (MODELS / "two_be_three" / "ws.fp32.onnx", "ws"),
             "2be3_ws_int8": (MODELS / "two_be_three" / "ws.int8.onnx", "ws"),
             "2be3_hn_fp32": (MODELS / "two_be_three" / "hn.fp32.onnx", "hn"),
             "2be3_hn_int8": (MODELS / "two_be_three" / "hn.int8.onnx", "hn"),
             "resnet_conv2d_ws": (RUNS / "two_be_three" / "resnet_conv2d.fp32.onnx", "ws"),
             "cnn3d_ws": (RUNS / "two_be_three" / "cnn3d.fp32.onnx", "ws")}
    scores = {}
    for name, (path, variant) in files.items():
        if not path.exists():
            continue
        sess = pipeline.session(path, threads)
        s = np.stack([pipeline.risk(sess, st, variant) for st in studies])
        scores[name] = s
        out[name] = {"auc": {n: auc(y[:, j], s[:, j]) for j, n in enumerate(("lr", "dm", "os"))}}
        pred = s > 0.5
        for j, n in enumerate(("lr", "dm", "os")):
            tp = int((pred[:, j] & (y[:, j] == 1)).sum())
            tn = int((~pred[:, j] & (y[:, j] == 0)).sum())
            out[name].setdefault("sens_at_0.5", {})[n] = tp / max(1, int(y[:, j].sum()))
            out[name].setdefault("spec_at_0.5", {})[n] = tn / max(1, int((1 - y[:, j]).sum()))
        log(f"{name}: {out[name]}")
    for v in ("ws", "hn"):
        a, b = scores.get(f"2be3_{v}_fp32"), scores.get(f"2be3_{v}_int8")
        if a is not None and b is not None:
            out[f"int8_vs_fp32_{v}"] = {"max_abs_score_diff": float(np.abs(a - b).max()),
                                        "mean_abs_score_diff": float(np.abs(a - b).mean()),
                                        "scores_over_0.02": int((np.abs(a - b) > 0.02).sum()), "scores": int(a.size)}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-test", type=int, default=None, help="first N test seeds (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="l2snet,two_be_three")
    args = ap.parse_args()
    seeds = data.split("test", args.n_test)
    studies = data.load_many(seeds, keep_native=True)
    path = RUNS / ("eval.json" if data.SIZE == "clinical" else f"eval_{data.SIZE}.json")
    res = json.loads(path.read_text()) if path.exists() else {}
    res["test_seeds"] = [studies[0].seed, studies[-1].seed]
    log = lambda m: print(m, flush=True)
    if "l2snet" in args.only:
        t = time.time()
        res["l2snet"] = eval_l2snet(seeds, args.threads, log)
        res["l2snet"]["eval_s"] = time.time() - t
        # which weights these figures belong to (make_cards.py checks it)
        res["l2snet"]["seg3d_sha256"] = hashlib.sha256((MODELS / "l2snet" / "seg3d.fp32.onnx").read_bytes()).hexdigest()
    if "two_be_three" in args.only:
        res["two_be_three"] = eval_two_be_three(studies, args.threads, log)
        # which weights these figures belong to (make_cards.py checks it)
        for v in ("ws", "hn"):
            res["two_be_three"][f"{v}_fp32_sha256"] = hashlib.sha256(
                (MODELS / "two_be_three" / f"{v}.fp32.onnx").read_bytes()).hexdigest()
    path.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
