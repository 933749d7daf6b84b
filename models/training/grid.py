"""The model grid: where on a study the networks run (the reference of tracerd's
`src/models/grid.rs`).

A study arrives on its scanner's grid (1.6-5.5 mm in-plane, 1.5-5 mm slices, a field of view
much wider than the patient). Both networks were trained at one voxel spacing, so the pipeline:

1. finds the body on the native PET grid: a plane (an index along one axis) belongs to the body
   when its voxels with SUV > `body_suv` cover at least `body_min_area_mm2`; the body box runs
   from the first to the last such plane on each axis, widened by `body_margin_mm` and clipped to
   the volume;
2. lays the model grid over that box: spacing `target_spacing_mm`, n = max(1, round(box length /
   spacing)) voxels per axis, centred on the box;
3. resamples PET (trilinear, edge voxels repeated within half a voxel, 0 outside) and CT
   (trilinear between voxel centres, `ct_outside_hu` outside) onto it;
4. after the networks, resamples probabilities and cue back onto the native PET grid (trilinear,
   0 outside the model grid), where they are thresholded and measured.

Every map here is axis-aligned: target index u -> source index c = scale * u + offset, per axis.
Geometry vectors are (x, y, z); arrays are [z, y, x] as everywhere in this package.
"""
from __future__ import annotations

import numpy as np

MODEL_GRID = {
    "target_spacing_mm": [4.0, 4.0, 4.0],    # x, y, z
    "body_suv": 0.15,
    "body_min_area_mm2": 100.0,
    "body_margin_mm": 20.0,
}

EPS = 1e-6


def body_box(pet_zyx: np.ndarray, spacing_xyz, spec=MODEL_GRID):
    """[(i0, i1) for x, y, z], inclusive native index ranges of the body box, or None when no
    plane qualifies (no body in the image)."""
    fg = pet_zyx > spec["body_suv"]
    sx, sy, sz = spacing_xyz
    counts = {  # foreground voxels per plane, and the area of one voxel in that plane
        0: (fg.sum(axis=(0, 1)), sy * sz),
        1: (fg.sum(axis=(0, 2)), sx * sz),
        2: (fg.sum(axis=(1, 2)), sx * sy),
    }
    box = []
    for a in range(3):
        c, area = counts[a]
        planes = np.nonzero(c * area >= spec["body_min_area_mm2"])[0]
        if len(planes) == 0:
            return None
        m = int(np.ceil(spec["body_margin_mm"] / spacing_xyz[a] - EPS))
        box.append((max(0, int(planes[0]) - m), min(len(c) - 1, int(planes[-1]) + m)))
    return box


def model_map(box, spacing_xyz, spec=MODEL_GRID):
    """(shape_xyz, scale_xyz, offset_xyz): the model grid over `box`; model index u on axis a
    lies at native index scale[a] * u + offset[a]."""
    shape, scale, offset = [], [], []
    for (i0, i1), sp, t in zip(box, spacing_xyz, spec["target_spacing_mm"]):
        length = (i1 - i0 + 1) * sp
        n = max(1, int(np.floor(length / t + 0.5)))
        s = t / sp
        shape.append(n)
        scale.append(s)
        offset.append((i0 + i1) / 2.0 - (n - 1) / 2.0 * s)
    return shape, scale, offset


def resample(src_zyx: np.ndarray, shape_xyz, scale_xyz, offset_xyz, margin: float, fill: float,
             dtype=np.float32) -> np.ndarray:
    """Trilinear, separable: target index u -> source index c = scale * u + offset per axis. A
    target point is inside when c lies within `margin` voxels of the outermost source centres
    (0.5: the voxel boxes; 0.0: between centres); inside, c is clamped to [0, n-1] and read
    linearly; outside gets `fill`. Computed in float64, cast to `dtype` at the end."""
    out = src_zyx                  # cast to float64 after the first take (which is exact): a CT
    outside = np.zeros(tuple(reversed([int(n) for n in shape_xyz])), dtype=bool)
    for a in range(3):              # a: 0 = x (array axis 2), 1 = y (1), 2 = z (0)
        axis = 2 - a
        n_in = src_zyx.shape[axis]
        c = scale_xyz[a] * np.arange(shape_xyz[a], dtype=np.float64) + offset_xyz[a]
        bad = (c < -margin - EPS) | (c > n_in - 1 + margin + EPS)
        c = np.clip(c, 0.0, n_in - 1)
        i0 = np.floor(c).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        w = c - i0
        shape = [1, 1, 1]
        shape[axis] = len(c)
        a0 = np.take(out, i0, axis=axis).astype(np.float64)
        a1 = np.take(out, i1, axis=axis).astype(np.float64)
        out = a0 + (a1 - a0) * w.reshape(shape)
        outside = outside | bad.reshape(shape)
    out[outside] = fill
    return out.astype(dtype)


def affine_map(target_affine: np.ndarray, source_affine: np.ndarray):
    """(scale_xyz, offset_xyz) of the index map target -> source of two axis-aligned NIfTI grids."""
    m = np.linalg.inv(source_affine) @ target_affine
    lin = m[:3, :3]
    if np.abs(lin - np.diag(np.diag(lin))).max() > 1e-6:
        raise ValueError("only axis-aligned grids are supported")
    return list(np.diag(lin)), list(m[:3, 3])


def model_affine(pet_affine: np.ndarray, scale_xyz, offset_xyz) -> np.ndarray:
    """NIfTI affine of the model grid: model index -> native PET index -> world."""
    t = np.eye(4)
    t[:3, :3] = np.diag(scale_xyz)
    t[:3, 3] = offset_xyz
    return pet_affine @ t


def back_map(scale_xyz, offset_xyz):
    """(scale, offset) of the inverse map: native index -> model index."""
    inv_s = [1.0 / s for s in scale_xyz]
    return inv_s, [-o / s for o, s in zip(offset_xyz, scale_xyz)]
