#!/usr/bin/env python3
"""pydicom reads tracerd's overview Secondary Capture back, independently of tracerd.

  dicom_sc_oracle.py SC PET_DIR PNG OUT_JSON

Compares the SC's pixels (pydicom's pixel_array, RGB) with the PNG (Pillow), and its Patient and
Study with the source PET in PET_DIR (values compared, never printed). OUT_JSON:
  {"sop_class", "pixels_equal", "same_study", "same_patient", "own_series", "references_pet_series"}
"""
import json
import sys

import numpy as np
import pydicom
from PIL import Image

from pet_series import pet_headers


def main():
    sc_path, pet_dir, png, out = sys.argv[1:5]
    sc = pydicom.dcmread(sc_path)
    pet = next(iter(pet_headers(pet_dir).values()))
    picture = np.asarray(Image.open(png).convert("RGB"))
    pixels = sc.pixel_array
    refs = sc.get("ReferencedSeriesSequence", [])
    result = {
        "sop_class": str(sc.SOPClassUID),
        "pixels_equal": bool(pixels.shape == picture.shape and (pixels == picture).all()),
        "same_study": sc.StudyInstanceUID == pet.StudyInstanceUID,
        "same_patient": (sc.PatientID, str(sc.PatientName)) == (pet.PatientID, str(pet.PatientName)),
        "own_series": sc.SeriesInstanceUID != pet.SeriesInstanceUID,
        "references_pet_series": any(r.SeriesInstanceUID == pet.SeriesInstanceUID for r in refs),
    }
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
