"""The Python peer of `cargo bench --bench pipeline`: the job `tracerd process` does on a NIfTI
study, written the way a MONAI / nnU-Net user writes it — nibabel, numpy, scipy.ndimage,
onnxruntime — with every parameter read from the model cards (models/*/model.toml):

1. The PET is re-oriented so that i, j, k run along LPS +x, +y, +z (the cards' [z][y][x] layout).
   The body box is found on it: the planes whose voxels above `body_suv` cover
   `body_min_area_mm2`, widened by `body_margin_mm`.
2. The model grid covers that box at `target_spacing_mm`, centred on it; PET and CT are resampled
   onto it trilinearly (scipy.ndimage.affine_transform; CT between its voxel centres,
   `ct_outside_hu` outside).
3. 2Be3-Net [WS]: K transverse slices evenly over the model grid's z extent (each the maximum over
   its slab when the card says slab = "max"), clipped and scaled, centre-cropped or zero-padded to
   crop × crop → three risk scores; none when the body box is shorter head to foot than the
   card's `ws_min_body_length_mm` (a scan of one region), as tracerd does.
4. L2SNet: loc2d on every coronal slice of the model grid (zero-padded to `pad_multiple`) → the
   location cue; seg3d over the whole model grid in windows of `patch_zyx`, `overlap` apart,
   blended with Gaussian importance weights (nnU-Net) → the probability.
5. Cue and probability go back onto the native PET grid (trilinear, 0 outside the model grid);
   there the adaptive threshold (each lesion cut back at the card's `edge_threshold` if it has
   one), 18-connected lesions (largest first) and their voxels, volume,
   SUVmax, SUVmean, TLG and centroid (LPS mm).

Two choices differ from tracerd's defaults, as a typical user would make them: the peer runs the
fp32 files (`*.fp32.onnx`) whatever the card recommends (tracerd's precision "auto" runs
loc2d.int8.onnx, seg3d.int8.onnx and ws.int8.onnx on ort-cpu), and it runs loc2d and seg3d over the whole body
box, as sliding_window_inference would, without skipping the coronal slices and windows that hold
no body voxel (tracerd skips them; a body voxel's cue and probability are the same either way). With
precision "fp32" tracerd gives this peer's scores, lesions and mask; with "auto" the INT8 files
move a few voxels and, rarely, a lesion (L2SNet card, metrics.int8_seg3d: the same lesion count on
99 of 100 held-out clinical studies), and the INT8 [WS] file moves scores by up to 0.013 (its card,
100 held-out clinical studies). Batches: 16 coronal slices, 4 windows; onnxruntime's
default session options.

usage: peer.py STUDY_DIR MODELS_DIR OUT_DIR
writes OUT_DIR/result.json and OUT_DIR/lesions.nii.gz (0/1 on the PET file's own grid) and prints
one JSON line: wall seconds, peak RSS (MiB), milliseconds per stage (tracerd's stage names),
lesion count, scores, seg3d windows run.
"""
import itertools
import json
import math
import resource
import sys
import time
import tomllib
from pathlib import Path

import nibabel as nib
import numpy as np
import onnxruntime as ort
from nibabel import orientations
from scipy import ndimage

CORONAL_BATCH = 16
PATCH_BATCH = 4
EPS = 1e-6


class Stages:
    """Milliseconds per stage, added up (a stage may come back, as tracerd's "layout" does)."""

    def __init__(self):
        self.ms = {}
        self.t = time.perf_counter()

    def lap(self, name):
        now = time.perf_counter()
        self.ms[name] = round(self.ms.get(name, 0.0) + (now - self.t) * 1e3, 1)
        self.t = now


def main(study: Path, models: Path, out: Path) -> None:
    t_all = time.perf_counter()
    stages = Stages()
    l2, tb = card(models / "l2snet"), card(models / "two_be_three")
    loc = session(models / "l2snet" / "loc2d.fp32.onnx")
    seg = session(models / "l2snet" / "seg3d.fp32.onnx")
    ws = session(models / "two_be_three" / "ws.fp32.onnx")
    stages.lap("load_models")

    pet_img, ct_img = nib.load(study / "SUV.nii.gz"), nib.load(study / "CT.nii.gz")
    pet = pet_img.get_fdata(dtype=np.float32)                  # [i, j, k], as nibabel gives it
    ct = ct_img.get_fdata(dtype=np.float32, caching="unchanged")   # freed once on the model grid
    stages.lap("ingest")
    pet, affine, back = to_lps(pet_img, pet)                   # [x, y, z]
    stages.lap("layout")

    scores = risk_scores(ws, pet, affine, tb, stages)
    grid, pet_n, ct_n = l2snet_inputs(pet, affine, ct_img, ct, l2)
    del ct
    stages.lap("l2snet_preprocess")
    mask, found, windows = segment(loc, seg, pet_n, ct_n, grid, pet, affine, l2, stages)
    mask = orientations.apply_orientation(mask.astype(np.uint8), back)
    stages.lap("layout")
    write(out, nib.Nifti1Image(mask, pet_img.affine), found, scores)
    stages.lap("write")

    print(json.dumps({
        "wall_s": time.perf_counter() - t_all,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "stages_ms": stages.ms,
        "lesions": len(found),
        "scores": None if scores is None else [float(v) for v in scores],
        "windows": windows,
    }))


def risk_scores(ws, pet, affine, tb, stages) -> np.ndarray | None:
    """2Be3-Net [WS] on the PET [x, y, z] (SUV): [LR, DM, OS], or None for a body box shorter
    head to foot than the card's ws_min_body_length_mm."""
    spacing = nib.affines.voxel_sizes(affine)
    box = body_box(pet, spacing, tb["model_grid"])
    if (box[2][1] - box[2][0] + 1) * spacing[2] < tb["slices"].get("ws_min_body_length_mm", 0.0):
        stages.lap("two_be_three_preprocess")
        return None
    grid = model_grid(pet, spacing, tb["model_grid"], box)
    x = two_be_three_input(to_model(pet, grid).T, tb["preprocessing"])
    stages.lap("two_be_three_preprocess")
    scores = run(ws, x)[0]
    stages.lap("two_be_three")
    return scores


def l2snet_inputs(pet, affine, ct_img, ct, l2):
    """L2SNet's model grid over the PET [x, y, z] (SUV) and the normalised PET and CT (HU, its
    own grid [i, j, k]) on it, [z, y, x]."""
    pre = l2["preprocessing"]
    grid = model_grid(pet, nib.affines.voxel_sizes(affine), l2["model_grid"])
    pet_n = normalise(to_model(pet, grid).T, pre["pet_clip_suv"])
    ct_m = ct_to_model(ct_img, ct, affine @ index_map(grid), grid[0], pre["ct_outside_hu"])
    return grid, pet_n, normalise(ct_m.T, pre["ct_clip_hu"])


def segment(loc, seg, pet_n, ct_n, grid, pet, affine, l2, stages):
    """L2SNet's networks on the model grid, then the mask on the PET grid [x, y, z], its
    lesions, the number of seg3d windows run."""
    cue = location_cue(loc, pet_n, l2["loc2d"]["pad_multiple"])
    stages.lap("l2snet_loc2d")
    prob, windows = sliding_window(seg, np.stack([pet_n, ct_n]), l2["seg3d"])
    stages.lap("l2snet_seg3d")
    cue, prob = to_native(cue.T, grid, pet.shape), to_native(prob.T, grid, pet.shape)
    mask = adaptive_threshold(prob, cue, l2["postprocessing"])
    found = lesions(mask.T, pet.T, affine)
    stages.lap("l2snet_postprocess")
    return mask, found, windows


def card(folder: Path) -> dict:
    return tomllib.loads((folder / "model.toml").read_text())


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def normalise(v: np.ndarray, clip) -> np.ndarray:
    """(clip(v, lo, hi) - lo) / (hi - lo) in float32, C-ordered (the cards' pet_norm, ct_norm)."""
    lo, hi = clip
    return np.ascontiguousarray((np.clip(v, lo, hi) - lo) / (hi - lo), dtype=np.float32)


def to_lps(img, data: np.ndarray):
    """`data` with i, j, k along LPS +x, +y, +z (flips and permutations only), its affine, and
    the orientation that takes an array back to the file's own."""
    own = nib.io_orientation(img.affine)
    lps = orientations.axcodes2ornt("LPS")
    to = orientations.ornt_transform(own, lps)
    affine = img.affine @ orientations.inv_ornt_aff(to, data.shape)
    return orientations.apply_orientation(data, to), affine, orientations.ornt_transform(lps, own)


def body_box(pet: np.ndarray, spacing, spec) -> list:
    """Inclusive native index range per axis (x, y, z) of the body: from the first to the last
    plane whose voxels above body_suv cover body_min_area_mm2, widened by body_margin_mm."""
    body = pet > spec["body_suv"]
    box = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        area = body.sum(axis=others) * math.prod(float(spacing[a]) for a in others)
        planes = np.flatnonzero(area >= spec["body_min_area_mm2"])
        if planes.size == 0:
            sys.exit("no body in the PET")
        margin = math.ceil(spec["body_margin_mm"] / spacing[axis] - EPS)
        box.append((max(0, planes[0] - margin), min(pet.shape[axis] - 1, planes[-1] + margin)))
    return box


def model_grid(pet: np.ndarray, spacing, spec, box=None):
    """(shape, scale, offset) per axis x, y, z of the model grid over the body box (`box` when
    given, else found), centred on it: model index u lies at native index scale * u + offset."""
    shape, scale, offset = [], [], []
    box = box or body_box(pet, spacing, spec)
    for (i0, i1), sp, target in zip(box, spacing, spec["target_spacing_mm"]):
        n = max(1, math.floor((i1 - i0 + 1) * sp / target + 0.5))
        shape.append(n)
        scale.append(target / sp)
        offset.append((i0 + i1) / 2 - (n - 1) / 2 * target / sp)
    return shape, scale, offset


def index_map(grid) -> np.ndarray:
    """4×4: model-grid index → native PET index."""
    m = np.eye(4)
    m[:3, :3] = np.diag(grid[1])
    m[:3, 3] = grid[2]
    return m


def to_model(pet: np.ndarray, grid) -> np.ndarray:
    """PET [x, y, z] on the model grid, trilinear (the grid lies inside the PET's voxel boxes;
    edge voxels repeat within their half voxel)."""
    shape, scale, offset = grid
    return ndimage.affine_transform(pet, scale, offset, output_shape=shape, order=1, mode="nearest")


def ct_to_model(ct_img, ct: np.ndarray, model_affine: np.ndarray, shape, outside_hu) -> np.ndarray:
    """CT [i, j, k] (HU, its own grid) on the model grid [x, y, z]: trilinear between its voxel
    centres, outside_hu beyond."""
    m = np.linalg.inv(ct_img.affine) @ model_affine
    return ndimage.affine_transform(ct, m[:3, :3], m[:3, 3], output_shape=shape, order=1,
                                    mode="constant", cval=outside_hu)


def to_native(vol: np.ndarray, grid, native_shape) -> np.ndarray:
    """A model-grid map [x, y, z] on the native PET grid: trilinear, edge values within half a
    model voxel, 0 beyond."""
    shape, scale, offset = grid
    inverse = [1 / s for s in scale]
    out = ndimage.affine_transform(vol, inverse, [-o / s for o, s in zip(offset, scale)],
                                   output_shape=native_shape, order=1, mode="nearest")
    for axis, (n, s, o) in enumerate(zip(shape, scale, offset)):
        u = (np.arange(native_shape[axis]) - o) / s
        index = [slice(None)] * 3
        index[axis] = (u < -0.5 - EPS) | (u > n - 0.5 + EPS)
        out[tuple(index)] = 0.0
    return out


def two_be_three_input(pet_m: np.ndarray, pre) -> np.ndarray:
    """[1, K, crop, crop]: K transverse slices of the model-grid PET [z, y, x] evenly over z (each
    the maximum over its slab with slab = "max"), normalised, centre-cropped or zero-padded."""
    nz, ny, nx = pet_m.shape
    k, crop = pre["K"], pre["crop"]
    ks = np.clip(np.floor(np.arange(k) * (nz - 1) / (k - 1) + 0.5).astype(int), 0, nz - 1)
    h = int((nz - 1) / (k - 1) / 2) if pre.get("slab") == "max" else 0
    slices = np.stack([pet_m[max(0, z - h):z + h + 1].max(axis=0) for z in ks])
    x = np.zeros((1, k, crop, crop), np.float32)
    (sy, dy), (sx, dx) = crop_ranges(ny, crop), crop_ranges(nx, crop)
    x[0, :, dy, dx] = normalise(slices[:, sy, sx], pre["pet_clip_suv"])
    return x


def crop_ranges(n: int, size: int):
    """(source, destination) slices of a centre crop (n >= size) or zero-pad of an axis."""
    if n >= size:
        a = (n - size) // 2
        return slice(a, a + size), slice(0, size)
    a = (size - n) // 2
    return slice(0, n), slice(a, a + n)


def location_cue(loc, pet_n: np.ndarray, multiple: int) -> np.ndarray:
    """loc2d on every coronal slice pet_n[:, j, :], zero-padded to multiples of `multiple`:
    the cue [z, y, x]."""
    nz, ny, nx = pet_n.shape
    zp, xp = -(-nz // multiple) * multiple, -(-nx // multiple) * multiple
    slices = np.zeros((ny, 1, zp, xp), np.float32)
    slices[:, 0, :nz, :nx] = pet_n.transpose(1, 0, 2)
    batches = range(0, ny, CORONAL_BATCH)
    cue = np.concatenate([run(loc, slices[j:j + CORONAL_BATCH]) for j in batches])
    return cue[:, 0, :nz, :nx].transpose(1, 0, 2)


def window_starts(n: int, p: int, overlap: float) -> list:
    if n <= p:
        return [0]
    step = max(1, int(p * (1 - overlap)))
    s = list(range(0, n - p + 1, step))
    return s if s[-1] == n - p else s + [n - p]


def gaussian(patch, sigma_fraction: float) -> np.ndarray:
    """nnU-Net's importance weights: a Gaussian per axis, sigma = patch * sigma_fraction."""
    g = [np.exp(-((np.arange(p) - (p - 1) / 2) ** 2) / (2 * (p * sigma_fraction) ** 2))
         for p in patch]
    return (g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]).astype(np.float32)


def sliding_window(seg, x: np.ndarray, s3) -> tuple:
    """seg3d over x [2, z, y, x] (zero-padded at the high end to at least a patch), windows
    blended with Gaussian importance weights: (probability [z, y, x], windows run)."""
    patch, overlap = s3["patch_zyx"], s3["overlap"]
    shape = x.shape[1:]
    padded = [max(n, p) for n, p in zip(shape, patch)]
    xpad = np.zeros((2, *padded), np.float32)
    xpad[:, :shape[0], :shape[1], :shape[2]] = x
    weight = gaussian(patch, s3["gaussian_sigma_fraction"])
    starts = [window_starts(n, p, overlap) for n, p in zip(padded, patch)]
    windows = [tuple(slice(a, a + p) for a, p in zip(start, patch))
               for start in itertools.product(*starts)]
    acc = np.zeros(padded, np.float32)
    wsum = np.zeros(padded, np.float32)
    for i in range(0, len(windows), PATCH_BATCH):
        chunk = windows[i:i + PATCH_BATCH]
        probs = run(seg, np.stack([xpad[(slice(None), *w)] for w in chunk]))
        for w, p in zip(chunk, probs):
            acc[w] += weight * p[0]
            wsum[w] += weight
    return (acc / wsum)[:shape[0], :shape[1], :shape[2]], len(windows)


def adaptive_threshold(prob: np.ndarray, cue: np.ndarray, post) -> np.ndarray:
    """The lowered threshold where the cue locates a lesion, the raised one elsewhere; with an
    `edge_threshold`, each lesion reaching it is cut back to its voxels above it."""
    located = cue > post["cue_threshold"]
    mask = prob > np.where(located, post["lowered_threshold"], post["raised_threshold"])
    if "edge_threshold" not in post:
        return mask
    above = prob > post["edge_threshold"]
    labels, count = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, 2))
    reaches = np.zeros(count + 1, bool)
    reaches[np.unique(labels[mask & above])] = True
    return mask & ~(reaches[labels] & ~above)


def lesions(mask: np.ndarray, suv: np.ndarray, affine: np.ndarray) -> list:
    """18-connected components of mask [z, y, x], largest first (ties in scan order), with their
    figures on the native grid; centroids in LPS mm from the LPS-ordered affine."""
    labels, count = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, 2))
    if count == 0:
        return []
    ids = np.arange(1, count + 1)
    voxels = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    suv_sum = ndimage.sum_labels(suv, labels, ids)
    suv_max = ndimage.maximum(suv, labels, ids)
    centres = ndimage.center_of_mass(mask, labels, ids)
    voxel_ml = float(np.prod(nib.affines.voxel_sizes(affine))) / 1000.0
    found = []
    for c in np.argsort(-voxels, kind="stable"):
        x, y, z = nib.affines.apply_affine(affine, centres[c][::-1])
        found.append({
            "id": len(found) + 1,
            "voxels": int(voxels[c]),
            "volume_ml": round(float(voxels[c]) * voxel_ml, 4),
            "suv_max": round(float(suv_max[c]), 4),
            "suv_mean": round(float(suv_sum[c] / voxels[c]), 4),
            "tlg": round(float(suv_sum[c]) * voxel_ml, 4),
            "centroid_mm": [round(-float(x), 2), round(-float(y), 2), round(float(z), 2)],  # LPS
        })
    return found


def write(out: Path, mask: nib.Nifti1Image, found: list, scores: np.ndarray) -> None:
    out.mkdir(parents=True, exist_ok=True)
    nib.save(mask, out / "lesions.nii.gz")
    result = {"lesions": {"count": len(found), "items": found}}
    if scores is not None:                   # absent, as in tracerd's result.json, when not scored
        lr, dm, os_ = (float(v) for v in scores)
        result = {"scores": {"lr": lr, "dm": dm, "os": os_}, **result}
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
