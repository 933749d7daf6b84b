"""Checks a published outbox folder with independent tools: result.json against the committed
JSON Schema (jsonschema, draft 2020-12), its "outputs" against the folder's files, overview.png
with Pillow (a PNG, RGB, of a plausible size), lesions.nii.gz with nibabel against the input PET.

usage: result_oracle.py OUTBOX_STUDY_DIR SCHEMA PET_NIFTI
Exits non-zero with the reason on any mismatch; prints a JSON summary on success.
"""
import json
import sys
from pathlib import Path

import jsonschema
import nibabel as nib
import numpy as np
from PIL import Image


def main(folder: Path, schema_path: Path, pet_path: Path) -> None:
    result = json.loads((folder / "result.json").read_text())
    schema = json.loads(schema_path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(result)
    summary = {"schema_valid": True}
    files = sorted(p.name for p in folder.iterdir())
    if files != sorted(result["outputs"]):
        sys.exit(f"outputs {result['outputs']} but the folder holds {files}")
    with Image.open(folder / "overview.png") as picture:
        if picture.format != "PNG" or picture.mode != "RGB" or min(picture.size) < 400:
            sys.exit(f"overview.png is {picture.format} {picture.mode} {picture.size}")
        summary["overview_size"] = list(picture.size)
    mask_path = folder / "lesions.nii.gz"
    if mask_path.exists():
        mask = nib.load(mask_path)
        pet = nib.load(pet_path)
        if mask.shape != pet.shape:
            sys.exit(f"mask shape {mask.shape} != PET shape {pet.shape}")
        for name, m in [("sform", mask.get_sform(coded=True)), ("qform", mask.get_qform(coded=True))]:
            affine, code = m
            if code != 1 and code != 2:
                sys.exit(f"mask {name} code {code}")
            if np.abs(affine - pet.affine).max() > 1e-4:
                sys.exit(f"mask {name} {affine.tolist()} != PET affine {pet.affine.tolist()}")
        arr = np.asarray(mask.dataobj)
        if arr.dtype != np.uint8 or not set(np.unique(arr)).issubset({0, 1}):
            sys.exit(f"mask is {arr.dtype} with values {np.unique(arr)[:5]}")
        lesions = result["lesions"]
        if int(arr.sum()) != sum(l["voxels"] for l in lesions["items"]):
            sys.exit("mask voxel count differs from the lesion items")
        zooms = pet.header.get_zooms()[:3]
        mtv = float(arr.sum()) * float(np.prod(zooms)) / 1000.0
        if abs(mtv - lesions["mtv_ml"]) > 1e-3:
            sys.exit(f"MTV {lesions['mtv_ml']} != {mtv} from nibabel")
        summary["mask_voxels"] = int(arr.sum())
    print(json.dumps(summary))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
