"""Independent reference for tracerd's model pipelines: the training package's own onnxruntime
inference (models/training/pipeline.py, data.py, grid.py: model grid over the body, maps back onto
the native PET grid), run on a NIfTI study folder.

usage: pipeline_oracle.py STUDY_DIR MODELS_DIR OUT_DIR
writes OUT_DIR/reference.json (scores, shapes) and, as raw little-endian C-order [z][y][x]
arrays, mask_adaptive.u8, prob.f32 and cue.f32.
"""
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "models" / "training"))
import tomllib  # noqa: E402

import data  # noqa: E402
import pipeline  # noqa: E402


def main(study_dir: Path, models: Path, out: Path) -> None:
    pet_img = nib.load(study_dir / "SUV.nii.gz")
    ct_img = nib.load(study_dir / "CT.nii.gz")
    m = data.on_model_grid(pet_img, ct_img)
    loc = pipeline.session(models / "l2snet" / "loc2d.fp32.onnx")
    seg = pipeline.session(models / "l2snet" / "seg3d.fp32.onnx")
    ws = pipeline.session(models / "two_be_three" / "ws.fp32.onnx")
    cue, prob, _, mask = pipeline.segment_native(loc, seg, m)
    card = tomllib.loads((models / "two_be_three" / "model.toml").read_text())
    risk = pipeline.risk(ws, m, "ws", slab=card["preprocessing"].get("slab"))
    out.mkdir(parents=True, exist_ok=True)
    mask.astype(np.uint8).tofile(out / "mask_adaptive.u8")
    prob.astype("<f4").tofile(out / "prob.f32")
    cue.astype("<f4").tofile(out / "cue.f32")
    (out / "reference.json").write_text(json.dumps({
        "scores": [float(v) for v in risk],
        "shape_zyx": list(prob.shape),
        "model_grid_zyx": list(m.pet.shape),
        "mask_voxels": int(mask.sum()),
    }))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
