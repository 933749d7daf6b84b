"""Synthetic studies for training: generation (via tracerd's own generator), caching, loading and
every preprocessing step the Rust side has to reproduce.

Array layout used everywhere in this package (and by every ONNX model in models/):

    volume[z, y, x]  ==  NIfTI voxel array transposed: nib.load(f).get_fdata().transpose(2, 1, 0)
                     ==  the NIfTI file's on-disk order read C-contiguously ([k][j][i], i fastest)

For the identity-direction data tracerd writes, i = x (patient right -> left, LPS +x),
j = y (anterior -> posterior, LPS +y), k = z (inferior -> superior, LPS +z). No axis is ever flipped;
the model sees the stored voxel array.

Preprocessing constants live in PREPROC (written verbatim into the model cards).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

import grid
from grid import MODEL_GRID

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
# tracerd synth --size: "clinical" (adult bodies on scanner grids) for everything the models learn
# and are judged on; SYNTH_SIZE=small re-measures them on the half-scale test phantom
SIZE = os.environ.get("SYNTH_SIZE", "clinical")
CACHE = HERE / "cache" / SIZE
STUDIES = CACHE / "studies"      # raw generator output (NIfTI), deleted after caching
ARRAYS = CACHE / "arrays"        # one folder per seed: pet, ct, seg .npy on the model grid + meta.json
NATIVE = CACHE / "native"        # held-out studies' NIfTI files, kept for evaluation on the native grid
RUNS = Path(os.environ.get("TRAINING_RUNS", HERE / "runs"))        # checkpoints and records
MODELS_OUT = Path(os.environ.get("MODELS_OUT", REPO / "models"))   # shipped files and cards

# Every preprocessing parameter (copied into the model cards).
PREPROC = {
    "pet_clip_suv": [0.0, 15.0],       # L2SNet §3.2 "PET (0 to 15)": clip, then divide by 15 -> [0, 1]
    "ct_clip_hu": [-100.0, 250.0],     # L2SNet §3.2 "CT (100 to 250)": read as a soft-tissue window
                                       # [-100, 250] HU, then (hu + 100) / 350 -> [0, 1]
    "ct_outside_hu": -1000.0,          # CT value for PET voxels outside the CT grid (air)
    "ct_resampling": "trilinear between voxel centres onto the model grid (grid.py, axis-aligned "
                     "grids); a model voxel whose CT voxel coordinate is < 0 or > n-1 on any axis "
                     "gets ct_outside_hu",
}


def pet_norm(suv: np.ndarray) -> np.ndarray:
    lo, hi = PREPROC["pet_clip_suv"]
    return ((np.clip(suv, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def ct_norm(hu: np.ndarray) -> np.ndarray:
    lo, hi = PREPROC["ct_clip_hu"]
    return ((np.clip(hu, lo, hi) - lo) / (hi - lo)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------

def run_log(path: Path):
    """A `log(msg)` that prints and appends to `path`, flushed per line (training runs are long)."""
    f = open(path, "a")

    def log(msg: str) -> None:
        print(msg, flush=True)
        f.write(msg + "\n")
        f.flush()

    return log


def tracerd_binary() -> Path:
    """$TRACERD_BIN, else the release `tracerd` of this checkout, built on first use."""
    if os.environ.get("TRACERD_BIN"):
        return Path(os.environ["TRACERD_BIN"])
    exe = REPO / "target" / "release" / "tracerd"
    if not exe.exists():
        subprocess.run(["cargo", "build", "--release", "--bin", "tracerd"], cwd=REPO, check=True)
    return exe


def generate(seeds: list[int], size: str = SIZE, out: Path = STUDIES) -> None:
    """Writes out/<seed>/ with `tracerd synth` for every seed lacking a cached array."""
    todo = [s for s in seeds if not (ARRAYS / str(s) / "meta.json").exists()
            and not (out / str(s) / "labels.json").exists()]
    if not todo:
        return
    out.mkdir(parents=True, exist_ok=True)
    exe = tracerd_binary()
    for s in todo:
        subprocess.run([str(exe), "synth", "--out", str(out / str(s)), "--seed", str(s),
                        "--size", size], check=True, capture_output=True)


# ----------------------------------------------------------------------------------------------
# Loading / resampling onto the model grid
# ----------------------------------------------------------------------------------------------

def load_nifti(path: Path) -> nib.Nifti1Image:
    """nib.load, with .nii.gz decompressed by ISA-L (isal; about 3x faster than zlib on these CTs)."""
    if str(path).endswith(".gz"):
        from isal import igzip
        return nib.Nifti1Image.from_bytes(igzip.decompress(Path(path).read_bytes()))
    return nib.load(path)


def to_zyx(img: nib.Nifti1Image, dtype=np.float32) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(img.dataobj, dtype=dtype).transpose(2, 1, 0))


@dataclass
class OnModelGrid:
    """A study's PET (SUV) and CT (HU) on the model grid (grid.py), with the maps to get back."""
    pet: np.ndarray               # [z, y, x] float32
    ct: np.ndarray                # [z, y, x] float32
    native_shape_xyz: list
    scale_xyz: list               # model index -> native PET index
    offset_xyz: list
    origin_z_mm: float            # LPS z of model slice 0

    def to_native(self, vol_zyx: np.ndarray) -> np.ndarray:
        """A model-grid map (probabilities, cue) on the native PET grid: trilinear, 0 outside."""
        s, o = grid.back_map(self.scale_xyz, self.offset_xyz)
        return grid.resample(vol_zyx, self.native_shape_xyz, s, o, 0.5, 0.0)


def on_model_grid(pet_img: nib.Nifti1Image, ct_img: nib.Nifti1Image | None) -> OnModelGrid:
    """grid.py's steps 1-3 on a NIfTI PET (SUV) and CT (HU; None: every voxel ct_outside_hu)."""
    pet = to_zyx(pet_img)
    sp = [float(v) for v in pet_img.header.get_zooms()[:3]]
    box = grid.body_box(pet, sp)
    if box is None:
        raise ValueError("no body in the PET: no plane has enough voxels above the body SUV")
    shape, scale, offset = grid.model_map(box, sp)
    pet_m = grid.resample(pet, shape, scale, offset, 0.5, 0.0)
    fill = PREPROC["ct_outside_hu"]
    if ct_img is None:
        ct_m = np.full(pet_m.shape, fill, np.float32)
    else:
        cs, co = grid.affine_map(grid.model_affine(pet_img.affine, scale, offset), ct_img.affine)
        ct = np.asarray(ct_img.dataobj, dtype=np.float32).transpose(2, 1, 0)   # a view: no copy
        ct_m = grid.resample(ct, shape, cs, co, 0.0, fill)
    origin_z = float(grid.model_affine(pet_img.affine, scale, offset)[2, 3])
    return OnModelGrid(pet_m, ct_m, list(pet_img.shape[:3]), scale, offset, origin_z)


@dataclass
class Study:
    """A training study on the model grid (seg: the lesion mask resampled there, a fraction in
    [0, 1]; > 0.5 is the binary mask)."""
    seed: int
    pet: np.ndarray       # [z, y, x] SUV float32
    ct: np.ndarray        # [z, y, x] HU (float16 in the cache)
    seg: np.ndarray       # [z, y, x] float16 fraction
    labels: dict
    spacing: tuple        # (sz, sy, sx) mm of the model grid
    origin_z_mm: float    # LPS z of model slice 0

    @property
    def outcomes(self) -> np.ndarray:
        o = self.labels["outcomes"]
        return np.array([o["lr"], o["dm"], o["os"]], dtype=np.float32)

    @property
    def mask(self) -> np.ndarray:
        return np.asarray(self.seg) > 0.5

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def site_mask(self) -> np.ndarray:
        """[z, y, x] uint8: 0 background, 1 lesion voxels of a neck lesion, 2 of a distant one (the
        sites behind the LR and DM outcomes). The generator puts every neck lesion's centre inside
        head_neck_region_mm and every other site's outside it (train seeds 0-139: all 153 neck
        lesions inside, all 132 others outside), so a connected lesion belongs to the neck when its
        centroid lies in that range."""
        from scipy import ndimage
        lab, n = ndimage.label(self.mask, ndimage.generate_binary_structure(3, 3))
        out = np.zeros(lab.shape, np.uint8)
        if n == 0:
            return out
        lo, hi = self.hn_slice_range()
        zc = np.array(ndimage.center_of_mass(np.ones_like(lab), lab, range(1, n + 1)))[:, 0]
        site = np.concatenate([[0], np.where((zc >= lo) & (zc <= hi), 1, 2)]).astype(np.uint8)
        return site[lab]

    def hn_slice_range(self) -> tuple[float, float]:
        """Head-and-neck region as fractional z indices of the model grid."""
        lo, hi = self.labels["head_neck_region_mm"]
        return (lo - self.origin_z_mm) / self.spacing[0], (hi - self.origin_z_mm) / self.spacing[0]


def cache_study(seed: int, keep_native: bool = False) -> None:
    d = STUDIES / str(seed)
    pet_img = load_nifti(d / "SUV.nii.gz")
    m = on_model_grid(pet_img, load_nifti(d / "CT.nii.gz"))
    seg = to_zyx(load_nifti(d / "SEG.nii.gz"))
    seg_m = grid.resample(seg, [m.pet.shape[2], m.pet.shape[1], m.pet.shape[0]], m.scale_xyz,
                          m.offset_xyz, 0.5, 0.0)
    tmp = ARRAYS / f"{seed}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "pet.npy", m.pet)
    np.save(tmp / "ct.npy", m.ct.astype(np.float16))
    np.save(tmp / "seg.npy", seg_m.astype(np.float16))
    t = MODEL_GRID["target_spacing_mm"]
    (tmp / "meta.json").write_text(json.dumps({
        "labels": json.loads((d / "labels.json").read_text()),
        "spacing_zyx": [t[2], t[1], t[0]], "origin_z_mm": m.origin_z_mm,
        "native_shape_xyz": m.native_shape_xyz, "scale_xyz": m.scale_xyz,
        "offset_xyz": m.offset_xyz}))
    shutil.rmtree(ARRAYS / str(seed), ignore_errors=True)
    os.replace(tmp, ARRAYS / str(seed))
    if keep_native:
        NATIVE.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(NATIVE / str(seed), ignore_errors=True)
        os.replace(d, NATIVE / str(seed))
    else:
        shutil.rmtree(d)


def _make(seed: int, keep_native: bool) -> None:
    generate([seed])
    cache_study(seed, keep_native)


def ensure(seeds: list[int], keep_native: bool = False, jobs: int = 2) -> None:
    """Generates and caches every seed lacking a cache, `jobs` studies at a time."""
    seeds = [s for s in seeds if not (ARRAYS / str(s) / "meta.json").exists()]
    if not seeds:
        return
    tracerd_binary()
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(jobs) as pool:
        list(pool.map(_make, seeds, [keep_native] * len(seeds)))


def load(seed: int) -> Study:
    d = ARRAYS / str(seed)
    meta = json.loads((d / "meta.json").read_text())
    return Study(seed=seed, pet=np.load(d / "pet.npy", mmap_mode="r"),
                 ct=np.load(d / "ct.npy", mmap_mode="r"), seg=np.load(d / "seg.npy", mmap_mode="r"),
                 labels=meta["labels"], spacing=tuple(meta["spacing_zyx"]),
                 origin_z_mm=meta["origin_z_mm"])


def load_many(seeds, keep_native: bool = False) -> list[Study]:
    ensure(list(seeds), keep_native)
    return [load(s) for s in seeds]


# ----------------------------------------------------------------------------------------------
# Splits (written into the cards)
# ----------------------------------------------------------------------------------------------
SPLITS = {
    "train": (0, 699),          # seeds 0..=699
    "val": (700, 799),          # model selection / calibration
    # held out; only evaluate.py touches it. 400 studies: with the first 100 alone (until 2026-11-22) a
    # mean-volume effect of a few voxels and the INT8 worst case were not resolved (README "Measured here")
    "test": (100000, 100399),
}


def split(name: str, n: int | None = None) -> list[int]:
    a, b = SPLITS[name]
    seeds = list(range(a, b + 1))
    return seeds[:n] if n else seeds


# ----------------------------------------------------------------------------------------------
# 2Be3-Net inputs
# ----------------------------------------------------------------------------------------------
TWO_BE_THREE = {"K": 66, "crop": 90, "slab": "max"}


def centre_crop(sl: np.ndarray, size: int) -> np.ndarray:
    """Centre crop (or zero-pad) the last two axes to size x size. Start index of the crop in an
    axis of length n is (n - size) // 2 when n >= size; when n < size the slice is placed at offset
    (size - n) // 2 in a zero image."""
    out = np.zeros(sl.shape[:-2] + (size, size), dtype=np.float32)
    ys, xs = sl.shape[-2:]

    def rng(n):
        if n >= size:
            a = (n - size) // 2
            return slice(a, a + size), slice(0, size)
        a = (size - n) // 2
        return slice(0, n), slice(a, a + n)

    sy, dy = rng(ys)
    sx, dx = rng(xs)
    out[..., dy, dx] = sl[..., sy, sx]
    return out


def slice_indices(study: Study, variant: str, rng: np.random.Generator | None, K: int = 66):
    """Ordered z indices of the K slices. Inference (rng None): evenly spaced,
    k_i = round(lo + i * (hi - lo) / (K - 1)), i = 0..K-1, with [lo, hi] = [0, nz-1] for WS (on the
    model grid: the body's axial extent) and the head-and-neck region clamped to [0, nz-1] for H&N
    (indices repeat when the region holds fewer than K slices). Training (rng given): K sorted
    uniform draws from the same range (WS: without replacement when nz >= K; H&N: with
    replacement)."""
    nz = study.pet.shape[0]
    if variant == "ws":
        lo, hi = 0.0, float(nz - 1)
    elif variant == "hn":
        lo, hi = study.hn_slice_range()
        lo, hi = max(0.0, lo), min(float(nz - 1), hi)
    else:
        raise ValueError(variant)
    return slice_positions(nz, lo, hi, variant == "ws", rng, K)


def slice_positions(nz: int, lo: float, hi: float, distinct: bool, rng, K: int):
    """slice_indices' rule on the range [lo, hi] of nz slices (distinct: draw without replacement)."""
    if rng is None:
        idx = np.floor(lo + np.arange(K) * (hi - lo) / (K - 1) + 0.5).astype(np.int64)
    else:
        a, b = int(np.ceil(lo)), int(np.floor(hi))
        if distinct and b - a + 1 >= K:
            idx = np.sort(rng.choice(np.arange(a, b + 1), K, replace=False))
        else:
            idx = np.sort(rng.integers(a, b + 1, K))
    return np.clip(idx, 0, nz - 1)


def slab_half_width(study: Study, variant: str, K: int = 66) -> int:
    """Half-width h (in slices) of the slab each selected slice stands for: floor of half the
    spacing of K evenly spaced slices over the variant's range, so that the K slabs together
    cover the range with no slice skipped (an adult's body is ~450 model-grid slices, which K =
    66 single slices would sample every 7th: most lesions fall between). 0 when the range holds
    fewer than 2K slices (the H&N region; the small phantom)."""
    nz = study.pet.shape[0]
    if variant == "ws":
        lo, hi = 0.0, float(nz - 1)
    else:
        lo, hi = study.hn_slice_range()
        lo, hi = max(0.0, lo), min(float(nz - 1), hi)
    return max(0, int(np.floor((hi - lo) / (K - 1) / 2.0)))


def slab_max(vol: np.ndarray, idx: np.ndarray, h: int) -> np.ndarray:
    """[len(idx), ...]: for each index i the maximum of vol[max(0, i-h) .. min(nz-1, i+h)]."""
    if h == 0:
        return np.asarray(vol[idx])
    nz = vol.shape[0]
    return np.stack([np.asarray(vol[max(0, i - h):min(nz, i + h + 1)]).max(0) for i in idx])


def two_be_three_input(study: Study, variant: str, rng=None, K: int = 66, crop: int = 90,
                       slab: str | None = TWO_BE_THREE["slab"]):
    """[K, crop, crop] float32: SUV clipped to [0, 15] / 15, the maximum over each selected slice's
    slab (slab_half_width; slab None: the single slice), centre-cropped."""
    idx = slice_indices(study, variant, rng, K)
    h = slab_half_width(study, variant, K) if slab == "max" else 0
    sl = pet_norm(slab_max(study.pet, idx, h))
    if rng is not None and rng.random() < 0.5:   # augmentation: left-right flip
        sl = sl[:, :, ::-1]
    return centre_crop(np.ascontiguousarray(sl), crop)


# ----------------------------------------------------------------------------------------------
# L2SNet inputs
# ----------------------------------------------------------------------------------------------
L2SNET = {
    "loc2d_multiple": 32,                   # coronal slices zero-padded at the high end to a multiple
    "patch_zyx": [48, 48, 48],              # 3D U-Net patch (train and inference): 192 mm at 4 mm (rounds 1-4: 32)
    "overlap": 0.5,
    # seg3d runs only on windows holding a voxel where the location cue exceeds this (pipeline.cued_region;
    # tracerd's default [inference] seg3d_windows = "cued"), measured against every body window on
    # held-out clinical studies (cue_gate.py, README "the cued windows")
    "cue_gate": 0.1,
    "threshold": 0.5,
    "cue_threshold": 0.5,
    "lowered_threshold": 0.1,
    # where the cue is <= 0.5. 0.5 = the lowering-only rule (DESIGN 4); the paper's "and vice versa"
    # (3.4) would be 0.9, which cost lesion volume on held-out studies (README "adaptive threshold")
    "raised_threshold": 0.5,
    # from 0.5.0: a lesion the adaptive threshold finds is cut back to its voxels above this where
    # it reaches it (pipeline.delineate; the lowered 0.1 alone drew edges up to a model voxel
    # outside the 0.5 edge, README "Round 8"); without the key the adaptive mask is final
    "edge_threshold": 0.5,
}


def coronal_slices(study_pet: np.ndarray, multiple: int = 32) -> np.ndarray:
    """[ny, 1, Zp, Xp]: every coronal slice pet[:, j, :] (rows z, columns x), normalised, padded."""
    p = pet_norm(study_pet)                         # [z, y, x]
    nz, ny, nx = p.shape
    zp = -(-nz // multiple) * multiple
    xp = -(-nx // multiple) * multiple
    out = np.zeros((ny, 1, zp, xp), dtype=np.float32)
    out[:, 0, :nz, :nx] = p.transpose(1, 0, 2)
    return out


def window_starts(n: int, p: int, overlap: float) -> list[int]:
    """Sliding-window starts along one axis: step = max(1, floor(p * (1 - overlap))), starts
    0, step, ... and a last window flush with the end (n - p); one window at 0 when n <= p (the
    volume is zero-padded to p)."""
    if n <= p:
        return [0]
    step = max(1, int(p * (1 - overlap)))
    s = list(range(0, n - p + 1, step))
    if s[-1] != n - p:
        s.append(n - p)
    return s


if __name__ == "__main__":
    import argparse
    import time
    ap = argparse.ArgumentParser(description="generate and cache the synthetic studies of every split")
    ap.add_argument("--splits", default="train,val,test")
    ap.add_argument("--n", type=int, default=None, help="first N seeds of each split")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    t = time.time()
    for name in a.splits.split(","):
        seeds = split(name, a.n)
        ensure(seeds, keep_native=(name == "test"), jobs=a.jobs)
        print(f"{name}: {len(seeds)} studies cached ({time.time() - t:.0f}s)", flush=True)
