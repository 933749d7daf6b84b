"""The source PET series of a drop folder, read by pydicom for the DICOM-output oracles.

pet_headers(folder): {SOPInstanceUID: header} of every PT file (any nesting; other files skipped).
slice_order(pet): the SOPInstanceUIDs sorted by position along the slice normal (tracerd's k).
"""
import os

import numpy as np
import pydicom


def pet_headers(folder):
    pet = {}
    for root, _, files in os.walk(folder):
        for f in files:
            try:
                ds = pydicom.dcmread(os.path.join(root, f), stop_before_pixels=True)
            except Exception:
                continue
            if getattr(ds, "Modality", "") == "PT":
                pet[ds.SOPInstanceUID] = ds
    return pet


def slice_order(pet):
    any_pet = next(iter(pet.values()))
    iop = np.array(any_pet.ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    position = lambda u: float(np.dot(normal, np.array(pet[u].ImagePositionPatient, dtype=float)))
    return sorted(pet, key=position)
