#!/usr/bin/env python3
"""Compares tracerd's DICOM conversion with dcm2niix's on the same files (nibabel reads both).

  dicom_dcm2niix_oracle.py D2N_DIR PET_SUV CT FACTOR

D2N_DIR holds dcm2niix's output for a synthetic study (series number 1 = CT → 1.nii,
2 = PET → 2.nii), or for a PET series alone (CT given as "-"; the one .nii there); PET_SUV and CT are tracerd's pet_suv.nii.gz and ct.nii.gz; FACTOR is the SUV
factor from conversion.json. Both images are brought to the closest canonical (RAS) voxel order
so that dcm2niix's row flip does not matter, then:
  * affines must agree to 1e-3 mm (every element);
  * CT voxels must be equal (integer HU);
  * PET: dcm2niix writes activity (Bq/ml, stored × per-slice slope); tracerd's SUV / FACTOR must
    equal it to 1e-5 of the slice's maximum (float32 rounding on both sides).
Exits non-zero with a message on any difference.
"""
import glob
import sys

import nibabel as nib
import numpy as np


def load(path):
    img = nib.as_closest_canonical(nib.load(path))
    return img.affine, np.asarray(img.dataobj, dtype=np.float64).squeeze()


def main():
    d2n, pet_path, ct_path, factor = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    problems = []
    pairs = [("CT", ct_path, f"{d2n}/1.nii"), ("PET", pet_path, f"{d2n}/2.nii")]
    if ct_path == "-":
        alone = glob.glob(f"{d2n}/*.nii")
        if len(alone) != 1:
            sys.exit(f"dcm2niix wrote {alone}, one PET expected")
        pairs = [("PET", pet_path, alone[0])]
    for name, ours, theirs in pairs:
        a_ours, v_ours = load(ours)
        a_theirs, v_theirs = load(theirs)
        d = np.abs(a_ours - a_theirs).max()
        if d > 1e-3:
            problems.append(f"{name}: affine differs by {d} mm\nours\n{a_ours}\ndcm2niix\n{a_theirs}")
            continue
        if v_ours.shape != v_theirs.shape:
            problems.append(f"{name}: shape {v_ours.shape} vs dcm2niix {v_theirs.shape}")
            continue
        if name == "CT":
            if not np.array_equal(v_ours, v_theirs):
                problems.append(f"CT: {np.count_nonzero(v_ours != v_theirs)} voxels differ")
        else:
            act = v_ours / factor
            for k in range(act.shape[2]):
                m = max(np.abs(v_theirs[:, :, k]).max(), 1e-12)
                err = np.abs(act[:, :, k] - v_theirs[:, :, k]).max() / m
                if err > 1e-5:
                    problems.append(f"PET slice {k}: differs by {err} of the slice maximum")
                    break
        print(f"{name}: affine max difference {d:.2e} mm, shape {v_ours.shape}")
    if problems:
        sys.exit("\n".join(problems))


if __name__ == "__main__":
    main()
