#!/usr/bin/env python3
"""nibabel as an independent oracle for tracerd's NIfTI reader and writer.

  nifti_oracle.py make DIR            write NIfTI variants with nibabel into DIR; for each NAME
                                      also NAME.json (nibabel's affine, shape) and NAME.f32 (the
                                      scaled voxel values, float32 little-endian, first axis fastest)
  nifti_oracle.py describe FILE OUT   what nibabel sees in FILE: OUT.json and OUT.f32 as above,
                                      plus both header transforms, their codes and the datatype

Used by tests/library/nifti_oracle.rs; needs numpy and nibabel (.ci/run installs them in .venv).
"""
import json
import sys

import nibabel as nib
import numpy as np


def rotation(ax, ay, az):
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def affine(zooms, rot, offset):
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(zooms)
    a[:3, 3] = offset
    return a


def dump(img, out, extra=None):
    data = np.asarray(img.get_fdata(dtype=np.float64), dtype="<f4")
    data.ravel(order="F").tofile(out + ".f32")
    info = {
        "affine": img.affine.tolist(),
        "shape": [int(s) for s in img.shape],
    }
    if extra:
        info.update(extra)
    with open(out + ".json", "w") as f:
        json.dump(info, f)


def make(outdir):
    rng = np.random.default_rng(1234)
    shape = (7, 6, 5)
    ramp = np.arange(np.prod(shape), dtype=np.float64).reshape(shape, order="F")
    oblique = affine([2.0, 2.5, 3.0], rotation(0.2, -0.1, 0.3), [-90.5, 120.25, -40.0])
    axial_lps = affine([4.0, 4.0, 4.0], np.diag([-1.0, -1.0, 1.0]), [380.0, 380.0, -600.0])

    variants = {}

    # float32, sform only (the common PET export)
    img = nib.Nifti1Image((ramp * 0.37 - 5).astype(np.float32), oblique)
    img.set_qform(None, code=0)
    img.set_sform(oblique, code=2)
    variants["float32_sform"] = img

    # int16 with scl_slope/inter, qform only (CT from many converters)
    hu = (ramp * 13 - 1000).astype(np.int16)
    img = nib.Nifti1Image(hu, None)
    img.set_qform(axial_lps, code=1)
    img.set_sform(None, code=0)
    img.header.set_slope_inter(0.5, -1024.0)
    img.header.set_data_dtype(np.int16)
    variants["int16_scaled_qform"] = img

    # uint8 mask with both transforms (equal)
    mask = (rng.random(shape) > 0.6).astype(np.uint8)
    img = nib.Nifti1Image(mask, oblique, dtype=np.uint8)
    img.set_qform(oblique, code=1)
    img.set_sform(oblique, code=1)
    variants["uint8_both"] = img

    # float64, sform and a *different* qform: sform must win
    img = nib.Nifti1Image(rng.normal(size=shape), oblique, dtype=np.float64)
    img.set_qform(axial_lps, code=1)
    img.set_sform(oblique, code=2)
    variants["float64_sform_over_qform"] = img

    # qform with a left-handed (qfac = -1) frame, sform code 0
    lefty = affine([1.5, 1.5, 2.0], rotation(0.0, 0.0, 0.4) @ np.diag([1.0, 1.0, -1.0]), [10, 20, 30])
    img = nib.Nifti1Image(ramp.astype(np.float32), None)
    img.set_qform(lefty, code=2)
    img.set_sform(None, code=0)
    variants["float32_qform_qfac_neg"] = img

    # neither transform: nibabel falls back to the centred base affine
    img = nib.Nifti1Image(ramp.astype(np.int16), None, dtype=np.int16)
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    img.header.set_zooms((3.0, 3.0, 2.0))
    variants["int16_no_transform"] = img

    # a 4D file with a single frame is a 3D volume in disguise (common converter output)
    img = nib.Nifti1Image(ramp.astype(np.float32)[..., None], oblique)
    variants["float32_4d_single_frame"] = img

    # uint16 and int32, uncompressed .nii
    img = nib.Nifti1Image(ramp.astype(np.uint16), oblique, dtype=np.uint16)
    variants["uint16_plain"] = img
    img = nib.Nifti1Image((ramp * -7).astype(np.int32), axial_lps, dtype=np.int32)
    variants["int32_plain"] = img

    for name, img in variants.items():
        ext = ".nii" if name.endswith("_plain") else ".nii.gz"
        path = f"{outdir}/{name}{ext}"
        nib.save(img, path)
        back = nib.load(path)  # describe what is on disk, after nibabel's own rounding
        dump(back, f"{outdir}/{name}", {"file": name + ext})


def describe(path, out):
    img = nib.load(path)
    hdr = img.header
    qform, qcode = hdr.get_qform(coded=True)
    sform, scode = hdr.get_sform(coded=True)
    dump(
        img,
        out,
        {
            "qform": None if qform is None else qform.tolist(),
            "qform_code": int(qcode),
            "sform": None if sform is None else sform.tolist(),
            "sform_code": int(scode),
            "dtype": str(hdr.get_data_dtype()),
            "zooms": [float(z) for z in hdr.get_zooms()],
            "units": list(hdr.get_xyzt_units()),
        },
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "describe":
        describe(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
