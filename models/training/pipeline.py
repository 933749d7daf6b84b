"""Inference exactly as the Rust side must do it, on onnxruntime (CPU): the reference
implementation of every pre- and post-processing step in the cards. Both networks run on the model
grid (grid.py: the body box resampled to the cards' target spacing); L2SNet's cue and probability
go back onto the native PET grid before the threshold."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
from scipy import ndimage

import data
from grid import MODEL_GRID


def session(path, threads=2) -> ort.InferenceSession:
    """onnxruntime CPU on a file (a path) or on a serialised model (bytes)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def body(pet_suv: np.ndarray) -> np.ndarray:
    """The body on the model grid: PET above the card's body_suv. The networks run only where it
    is (coronal slices and windows holding none of it are skipped and read 0)."""
    return np.asarray(pet_suv) > MODEL_GRID["body_suv"]


def location_cue(sess, pet_suv: np.ndarray, batch: int = 16) -> np.ndarray:
    """pet_suv [z, y, x] -> cue [z, y, x]: every coronal slice pet[:, j, :] that holds a body
    voxel through loc2d; 0 on the others."""
    nz, ny, nx = pet_suv.shape
    keep = np.flatnonzero(body(pet_suv).any(axis=(0, 2)))
    sl = data.coronal_slices(pet_suv, data.L2SNET["loc2d_multiple"])[keep]   # [n, 1, Zp, Xp]
    name = sess.get_inputs()[0].name
    cue = np.zeros((ny, nz, nx), np.float32)
    if len(keep):
        outs = [sess.run(None, {name: sl[i:i + batch]})[0] for i in range(0, len(keep), batch)]
        cue[keep] = np.concatenate(outs, 0)[:, 0, :nz, :nx]                   # [y, z, x]
    return np.ascontiguousarray(cue.transpose(1, 0, 2))


def petct_input(pet_suv: np.ndarray, ct_hu: np.ndarray) -> np.ndarray:
    """[2, z, y, x]: channel 0 = normalised PET, channel 1 = normalised CT (both on the PET grid)."""
    return np.stack([data.pet_norm(pet_suv), data.ct_norm(ct_hu)], 0)


GAUSSIAN_SIGMA_FRACTION = 0.125


def gaussian_weights(patch) -> np.ndarray:
    """Importance weight of every voxel of a patch (pz, py, px): w = g(z;pz) g(y;py) g(x;px) with
    g(i;p) = exp(-(i - (p-1)/2)^2 / (2 sigma^2)), sigma = p * 0.125, computed in float64, then cast
    to float32. No floor or clamp."""
    gs = []
    for p in patch:
        i = np.arange(p, dtype=np.float64)
        sigma = p * GAUSSIAN_SIGMA_FRACTION
        gs.append(np.exp(-((i - (p - 1) / 2.0) ** 2) / (2.0 * sigma ** 2)))
    w = gs[0][:, None, None] * gs[1][None, :, None] * gs[2][None, None, :]
    return w.astype(np.float32)


def sliding_window(sess, x: np.ndarray, patch=None, overlap=None, inside=None, cued=None) -> np.ndarray:
    """x [2, z, y, x] -> probability [z, y, x] from the ONNX seg3d session, one window per run
    (blend_windows; `inside`: the body; `cued`: the cued region)."""
    name = sess.get_inputs()[0].name
    return blend_windows(x, lambda xb: sess.run(None, {name: xb})[0][:, 0], patch, overlap, inside=inside,
                         cued=cued)


def cued_region(cue: np.ndarray, gate: float | None = None) -> np.ndarray | None:
    """Where seg3d runs besides the body: the windows holding a voxel where the location cue
    exceeds the card's [seg3d] cue_gate (data.L2SNET; `gate` overrides it); None without a gate
    (every body window runs)."""
    gate = data.L2SNET.get("cue_gate") if gate is None else gate
    return None if gate is None else cue > gate


def blend_windows(x: np.ndarray, predict, patch=None, overlap=None, batch=1, inside=None,
                  cued=None) -> np.ndarray:
    """x [2, z, y, x] -> probability [z, y, x]. Windows from data.window_starts on each axis;
    a volume smaller than the patch on an axis is zero-padded at the high end; `predict` maps a
    batch of windows [b, 2, pz, py, px] to probabilities [b, pz, py, px] (up to `batch` at a
    time); overlapping window probabilities are blended with Gaussian importance weights
    (gaussian_weights): prob = sum_windows(w * p_window) / sum_windows(w), float32 accumulators.
    With `inside` (the body, [z, y, x] bool) only windows holding one of its voxels run, and a
    voxel no window covered reads 0; a body voxel gets what the whole-volume pass gives. With
    `cued` (cued_region, [z, y, x] bool) a window must hold one of its voxels too, and a cued
    voxel still gets every window that holds it (its probability is the whole-volume one)."""
    patch = patch or data.L2SNET["patch_zyx"]
    shape = x.shape[1:]
    xp = pad_to_patch(x, patch)
    acc = np.zeros(xp.shape[1:], np.float32)
    wsum = np.zeros(xp.shape[1:], np.float32)
    wg = gaussian_weights(patch)
    sls = window_slices(shape, patch, overlap, inside, cued)
    for i in range(0, len(sls), batch):
        part = sls[i:i + batch]
        pb = predict(np.stack([xp[(slice(None),) + sl] for sl in part]))
        for sl, p in zip(part, pb):
            acc[sl] += wg * p
            wsum[sl] += wg
    prob = np.divide(acc, wsum, out=np.zeros_like(acc), where=wsum > 0)
    return prob[:shape[0], :shape[1], :shape[2]]


def pad_to_patch(x: np.ndarray, patch=None) -> np.ndarray:
    """x [c, z, y, x] zero-padded at the high end of every axis shorter than the patch."""
    patch = patch or data.L2SNET["patch_zyx"]
    padded = [max(n, p) for n, p in zip(x.shape[1:], patch)]
    xp = np.zeros((x.shape[0], *padded), np.float32)
    xp[:, :x.shape[1], :x.shape[2], :x.shape[3]] = x
    return xp


def window_slices(shape, patch=None, overlap=None, inside=None, cued=None) -> list[tuple[slice, ...]]:
    """The sliding windows over a volume of `shape` (zero-padded to the patch, pad_to_patch) in
    blend_windows' order: starts from data.window_starts on each axis, z outermost; with `inside`
    or `cued` ([z, y, x] bool) only the windows holding one of their voxels (both, given both)."""
    patch = patch or data.L2SNET["patch_zyx"]
    overlap = data.L2SNET["overlap"] if overlap is None else overlap
    padded = [max(n, p) for n, p in zip(shape, patch)]
    sls = [(slice(z, z + patch[0]), slice(y, y + patch[1]), slice(w, w + patch[2]))
           for z in data.window_starts(padded[0], patch[0], overlap)
           for y in data.window_starts(padded[1], patch[1], overlap)
           for w in data.window_starts(padded[2], patch[2], overlap)]
    for region in (inside, cued):
        if region is not None:
            ip = np.zeros(padded, bool)
            ip[:shape[0], :shape[1], :shape[2]] = region
            sls = [sl for sl in sls if ip[sl].any()]
    return sls


def adaptive_threshold(prob: np.ndarray, cue: np.ndarray, raised: float | None = None) -> np.ndarray:
    """L2SNet's post-processing (paper 3.4): a voxel the 2D cue calls lesion (cue > 0.5) is kept
    from a 3D probability of lowered_threshold (0.1) up, any other voxel from raised_threshold (0.5 as
    shipped: the lowering-only rule; the paper's "and vice versa" would be 0.9). Thresholds from
    data.L2SNET (the card's [postprocessing]); `raised` overrides raised_threshold (evaluation of
    the alternative rule, evaluate.py)."""
    p = data.L2SNET
    outside = p["raised_threshold"] if raised is None else raised
    return prob > np.where(cue > p["cue_threshold"], p["lowered_threshold"], outside)


def delineate(mask: np.ndarray, prob: np.ndarray, edge: float) -> np.ndarray:
    """The lowered threshold finds lesions, `edge` says where they end: each 18-connected component
    of `mask` holding a voxel with prob > edge is cut back to those voxels; the others (found only
    through the cue) keep their extent."""
    lab, _ = ndimage.label(mask, ndimage.generate_binary_structure(3, 2))
    above = prob > edge
    reaches = np.zeros(lab.max() + 1, bool)
    reaches[np.unique(lab[mask & above])] = True   # labels > 0 only: inside the mask
    return mask & ~(reaches[lab] & ~above)


def l2snet_mask(prob: np.ndarray, cue: np.ndarray) -> np.ndarray:
    """The shipped post-processing: the adaptive threshold, then, when the card has an
    edge_threshold (data.L2SNET), each found lesion delineated at it (tracerd's `delineate`)."""
    mask = adaptive_threshold(prob, cue)
    edge = data.L2SNET.get("edge_threshold")
    return mask if edge is None else delineate(mask, prob, edge)


def segment_model_grid(loc_sess, seg_sess, pet_m: np.ndarray, ct_m: np.ndarray, cued: bool = True):
    """Cue and probability on the model grid; seg3d on the cued windows (tracerd's default
    `seg3d_windows = "cued"`), or on every body window with `cued` False."""
    cue = location_cue(loc_sess, pet_m)
    prob = sliding_window(seg_sess, petct_input(pet_m, ct_m), inside=body(pet_m),
                          cued=cued_region(cue) if cued else None)
    return cue, prob


def segment(loc_sess, seg_sess, study: data.Study):
    """On a cached study (model grid): cue, probability, plain and shipped masks there."""
    cue, prob = segment_model_grid(loc_sess, seg_sess, study.pet, study.ct)
    return cue, prob, prob > data.L2SNET["threshold"], l2snet_mask(prob, cue)


def segment_native(loc_sess, seg_sess, m: data.OnModelGrid):
    """tracerd's whole L2SNet on a study brought onto the model grid (data.on_model_grid): the
    networks there, cue and probability mapped back onto the native PET grid and thresholded
    there. Returns (cue, prob, plain mask, shipped mask), all native [z, y, x]."""
    cue_m, prob_m = segment_model_grid(loc_sess, seg_sess, m.pet, m.ct)
    cue, prob = m.to_native(cue_m), m.to_native(prob_m)
    return cue, prob, prob > data.L2SNET["threshold"], l2snet_mask(prob, cue)


def risk(sess, study, variant: str, slab: str | None = data.TWO_BE_THREE["slab"]) -> np.ndarray:
    """Scores from a study on the model grid (anything with .pet, and .hn_slice_range for hn);
    `slab` is the card's [preprocessing] slab (None: single slices, as cards before it)."""
    x = data.two_be_three_input(study, variant, slab=slab)[None]
    return sess.run(None, {sess.get_inputs()[0].name: x})[0][0]
