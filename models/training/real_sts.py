"""L2SNet on real PET/CT: the three soft-tissue sarcomas of MIRP's test data (TCIA Soft-tissue-Sarcoma,
GE Discovery ST, CC BY 3.0; tests/data/real/NOTICE.md), run as tracerd runs it (pipeline.segment_native
with the shipped files) and compared with the physicians' tumour contour.

The crops are MIRP's re-exports (PET in SUVbw, CT in HU, both cropped around the tumour, 59 slices),
so this is a look at what the networks do with a real scanner's tumours, not a whole-body figure; the
contour was drawn for radiomics (the anatomical tumour, necrosis included), so Dice against it
understates a metabolic segmentation. The data is not committed (the checkout is at its size limit):
fetch oncoray/mirp and pass its `test/data/sts_images` folder.

usage: real_sts.py MIRP_STS_IMAGES [OUT_DIR]   (OUT_DIR: each case's mask and coronal/sagittal MIP)
"""
from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

import data
import evaluate
import mip
import pipeline

CASES = ("STS_001", "STS_002", "STS_003")


def case(root: Path, name: str, loc, seg, out: Path | None) -> dict:
    pet = nib.load(root / name / "PET/nifti/image/image.nii.gz")
    ct = nib.load(root / name / "CT/nifti/image/image.nii.gz")
    gt_img = nib.load(root / name / "PET/nifti/mask/mask.nii.gz")
    gt = data.to_zyx(gt_img, np.uint8) > 0
    _, prob, _, mask = pipeline.segment_native(loc, seg, data.on_model_grid(pet, ct))
    voxel_ml = float(np.prod(pet.header.get_zooms()[:3])) / 1000.0
    suv = data.to_zyx(pet)
    row = evaluate.autopet(gt, mask, voxel_ml)
    row.update(gt_ml=gt.sum() * voxel_ml, pred_ml=mask.sum() * voxel_ml, suv_max_in_gt=float(suv[gt].max()),
               suv_median_in_gt=float(np.median(suv[gt])), prob_max_in_gt=float(prob[gt].max()))
    if out:
        m = out / f"{name}_mask.nii.gz"
        nib.save(nib.Nifti1Image(np.ascontiguousarray(mask.transpose(2, 1, 0)).astype(np.uint8), pet.affine), m)
        z = pet.header.get_zooms()[:3]   # contour green, L2SNet red (mip.py's colours)
        mip.png(out / f"{name}_mip.png", mip.render(suv, (z[2], z[1], z[0]), [(gt, (0, 170, 0)), (mask, (220, 0, 0))]))
    return row


def main(argv: list[str]) -> None:
    root = Path(argv[0])
    out = Path(argv[1]) if len(argv) > 1 else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    d = data.MODELS_OUT / "l2snet"
    loc = pipeline.session(d / "loc2d.int8.onnx", 2)
    seg = pipeline.session(d / "seg3d.fp32.onnx", 2)
    for name in CASES:
        r = case(root, name, loc, seg, out)
        print(f"{name}: contour {r['gt_ml']:.1f} ml (SUV max {r['suv_max_in_gt']:.1f}, median "
              f"{r['suv_median_in_gt']:.1f}), L2SNet {r['pred_ml']:.1f} ml, Dice {r['dice']:.3f}, "
              f"FPV {r['fpv_ml']:.2f} ml, FNV {r['fnv_ml']:.2f} ml, largest probability in the contour "
              f"{r['prob_max_in_gt']:.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
