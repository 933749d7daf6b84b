"""The Python peer of `cargo bench --bench pipeline`: the same job as `tracerd process` done the
way a MONAI / nnU-Net user writes it — nibabel, numpy, scipy.ndimage, onnxruntime with the same
ONNX files and the model cards' parameters, sliding window with Gaussian importance weights.

usage: peer.py STUDY_DIR MODELS_DIR OUT_DIR
prints one JSON line: wall seconds per stage, peak RSS (MiB), lesion count, scores.
"""
import json
import resource
import sys
import time
import tomllib
from pathlib import Path

import nibabel as nib
import numpy as np
import onnxruntime as ort
from scipy import ndimage


def main(study: Path, models: Path, out: Path) -> None:
    t_all = time.perf_counter()
    stages = {}

    def lap(name, t):
        stages[name] = round((time.perf_counter() - t) * 1e3, 1)
        return time.perf_counter()

    l2 = tomllib.loads((models / "l2snet" / "model.toml").read_text())
    tb = tomllib.loads((models / "two_be_three" / "model.toml").read_text())
    loc = ort.InferenceSession(str(models / "l2snet" / "loc2d.fp32.onnx"), providers=["CPUExecutionProvider"])
    seg = ort.InferenceSession(str(models / "l2snet" / "seg3d.fp32.onnx"), providers=["CPUExecutionProvider"])
    ws = ort.InferenceSession(str(models / "two_be_three" / "ws.fp32.onnx"), providers=["CPUExecutionProvider"])
    t = lap("load_models", t_all)

    pet_img = nib.load(study / "SUV.nii.gz")
    ct_img = nib.load(study / "CT.nii.gz")
    pet = pet_img.get_fdata()                      # [i, j, k] float64, as nibabel gives it
    ct = ct_img.get_fdata()
    t = lap("ingest", t)

    # CT onto the PET grid: voxel-to-voxel affine, trilinear, air outside.
    pre = l2["preprocessing"]
    m = np.linalg.inv(ct_img.affine) @ pet_img.affine
    ct_on_pet = ndimage.affine_transform(ct, m[:3, :3], m[:3, 3], output_shape=pet.shape, order=1,
                                         cval=pre["ct_outside_hu"])
    lo, hi = pre["pet_clip_suv"]
    pet_n = ((np.clip(pet, lo, hi) - lo) / (hi - lo)).transpose(2, 1, 0).astype(np.float32)  # [z,y,x]
    lo, hi = pre["ct_clip_hu"]
    ct_n = ((np.clip(ct_on_pet, lo, hi) - lo) / (hi - lo)).transpose(2, 1, 0).astype(np.float32)
    del ct, ct_on_pet
    t = lap("l2snet_preprocess", t)

    # Location cue: coronal slices, padded to multiples of 32, batches of 16.
    nz, ny, nx = pet_n.shape
    mult = l2["loc2d"]["pad_multiple"]
    zp, xp = -(-nz // mult) * mult, -(-nx // mult) * mult
    cue = np.zeros_like(pet_n)
    for j0 in range(0, ny, 16):
        j1 = min(ny, j0 + 16)
        batch = np.zeros((j1 - j0, 1, zp, xp), np.float32)
        batch[:, 0, :nz, :nx] = pet_n[:, j0:j1, :].transpose(1, 0, 2)
        out_b = loc.run(None, {loc.get_inputs()[0].name: batch})[0]
        cue[:, j0:j1, :] = out_b[:, 0, :nz, :nx].transpose(1, 0, 2)
    t = lap("l2snet_loc2d", t)

    # Sliding window, Gaussian importance (nnU-Net style), batches of 4 patches.
    s3 = l2["seg3d"]
    patch = s3["patch_zyx"]
    overlap = s3["overlap"]
    x = np.stack([pet_n, ct_n])
    shape = x.shape[1:]
    padded = [max(n, p) for n, p in zip(shape, patch)]
    xpad = np.zeros((2, *padded), np.float32)
    xpad[:, :shape[0], :shape[1], :shape[2]] = x
    g = [np.exp(-((np.arange(p) - (p - 1) / 2) ** 2) / (2 * (p * s3["gaussian_sigma_fraction"]) ** 2)) for p in patch]
    weight = (g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]).astype(np.float32)

    def starts(n, p):
        if n <= p:
            return [0]
        step = max(1, int(p * (1 - overlap)))
        s = list(range(0, n - p + 1, step))
        return s if s[-1] == n - p else s + [n - p]

    windows = [(a, b, c) for a in starts(padded[0], patch[0]) for b in starts(padded[1], patch[1])
               for c in starts(padded[2], patch[2])]
    acc = np.zeros(padded, np.float32)
    wsum = np.zeros(padded, np.float32)
    name = seg.get_inputs()[0].name
    for i in range(0, len(windows), 4):
        chunk = windows[i:i + 4]
        batch = np.stack([xpad[:, a:a + patch[0], b:b + patch[1], c:c + patch[2]] for a, b, c in chunk])
        probs = seg.run(None, {name: batch})[0]
        for (a, b, c), p in zip(chunk, probs):
            sl = (slice(a, a + patch[0]), slice(b, b + patch[1]), slice(c, c + patch[2]))
            acc[sl] += weight * p[0]
            wsum[sl] += weight
    prob = (acc / wsum)[:shape[0], :shape[1], :shape[2]]
    del acc, wsum, xpad, x
    t = lap("l2snet_seg3d", t)

    post = l2["postprocessing"]
    mask = prob > np.where(cue > post["cue_threshold"], post["lowered_threshold"], post["raised_threshold"])
    labels, count = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, 2))
    voxel_ml = float(np.prod(pet_img.header.get_zooms()[:3])) / 1000.0
    suv_zyx = pet.transpose(2, 1, 0)
    idx = np.arange(1, count + 1)
    sizes = ndimage.sum_labels(mask, labels, idx)
    suv_max = ndimage.maximum(suv_zyx, labels, idx) if count else []
    suv_mean = ndimage.mean(suv_zyx, labels, idx) if count else []
    centroids = ndimage.center_of_mass(mask, labels, idx) if count else []
    lesions = [{"voxels": int(n), "volume_ml": float(n) * voxel_ml, "suv_max": float(mx),
                "suv_mean": float(mn), "centroid_zyx": [float(v) for v in c]}
               for n, mx, mn, c in zip(sizes, suv_max, suv_mean, centroids)]
    t = lap("l2snet_postprocess", t)

    pre2 = tb["preprocessing"]
    k_n, crop = pre2["K"], pre2["crop"]
    ks = np.clip(np.floor(np.arange(k_n) * (nz - 1) / (k_n - 1) + 0.5).astype(int), 0, nz - 1)
    lo, hi = pre2["pet_clip_suv"]
    sl = ((np.clip(suv_zyx[ks], lo, hi) - lo) / (hi - lo)).astype(np.float32)
    inp = np.zeros((1, k_n, crop, crop), np.float32)

    def rng(n):
        if n >= crop:
            a = (n - crop) // 2
            return slice(a, a + crop), slice(0, crop)
        a = (crop - n) // 2
        return slice(0, n), slice(a, a + n)

    sy, dy = rng(ny)
    sx, dx = rng(nx)
    inp[0, :, dy, dx] = sl[:, sy, sx]
    scores = ws.run(None, {ws.get_inputs()[0].name: inp})[0][0]
    t = lap("two_be_three", t)

    out.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(mask.transpose(2, 1, 0).astype(np.uint8), pet_img.affine), out / "lesions.nii.gz")
    (out / "result.json").write_text(json.dumps({"lesions": lesions, "scores": scores.tolist()}))
    t = lap("write", t)

    print(json.dumps({
        "wall_s": time.perf_counter() - t_all,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "stages_ms": stages,
        "lesions": int(count),
        "scores": [float(v) for v in scores],
        "windows": len(windows),
    }))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
