#!/usr/bin/env python3
"""pydicom as an independent oracle for tracerd's PET SUV conversion.

  dicom_suv_oracle.py make DIR   write one small PET series per case into DIR/<case>/ with pydicom,
                                 in Siemens-, GE- and Philips-style conventions, and for each case
                                 DIR/<case>.json: {"factors": [SUVbw factor per slice, in order of
                                 increasing z]} computed here, independently of tracerd, from the
                                 values written, and DIR/<case>.f32: the expected SUV volume
                                 (float32 little-endian, x fastest, then y, then z).

Cases cover every Units (BQML, GML, Philips CNTS with either private scale factor) and
DecayCorrection (START, ADMIN, NONE) case of DESIGN §6, per-slice RescaleSlope/Intercept, a series
time after the acquisition time (earliest acquisition; GE private post-injection time), an
injection before midnight with a scan after, a dose in MBq and a weight in grams.

Used by tests/library/dicom_suv_oracle.rs; needs numpy and pydicom (.ci/run installs them in .venv).
"""
import datetime as dt
import json
import math
import os
import sys

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

PET = "1.2.840.10008.5.1.4.1.1.128"
NX, NY, NZ = 6, 5, 4
HALF_LIFE = 6586.2


def parse(date, time):
    return dt.datetime.strptime(date + time.split(".")[0], "%Y%m%d%H%M%S") + dt.timedelta(
        seconds=float("0." + time.split(".")[1]) if "." in time else 0.0
    )


CASES = {
    # Siemens: BQML, START, series time before the first acquisition, start date-time given.
    "siemens_bqml_start": dict(
        units="BQML", decay="START", weight="81.5", dose="3.91e8", series=("20240102", "101500"),
        acq=[("20240102", "101502.250000")] * NZ, inj_dt="20240102091230.000000", inj_tm="091230.000000",
    ),
    # Siemens reconstruction rewrote the series time: after acquisition → earliest acquisition.
    "siemens_series_after_acquisition": dict(
        units="BQML", decay="START", weight="67", dose="374000000", series=("20240102", "123515"),
        acq=[("20240102", "120301.5"), ("20240102", "120100.25"), ("20240102", "120301.5"), ("20240102", "120459")],
        inj_dt=None, inj_tm="110500",
    ),
    # GE: series after acquisition, private post-injection date-time (0009,100D) wins.
    "ge_private_post_injection": dict(
        units="BQML", decay="START", weight="52", dose="152022720", series=("20240103", "095621"),
        acq=[("20240103", "095000")] * NZ, inj_dt="20240103084500.00", inj_tm="084500.00",
        ge_post="20240103094510.00",
    ),
    # Philips: CNTS with the SUV scale factor.
    "philips_cnts_suv_scale": dict(
        units="CNTS", decay="START", weight="54", dose="238000000", series=("20240104", "093556"),
        acq=[("20240104", "095439")] * NZ, inj_dt=None, inj_tm="083000",
        philips_suv="0.000551", philips_act="1.602563",
    ),
    # Philips: CNTS with only the activity concentration scale factor → as BQML.
    "philips_cnts_activity_scale": dict(
        units="CNTS", decay="START", weight="64", dose="126000000", series=("20240104", "110155"),
        acq=[("20240104", "110156")] * NZ, inj_dt="20240104100058", inj_tm="100058",
        philips_act="4.709921",
    ),
    # Decay-corrected to administration: the dose as is.
    "admin": dict(
        units="BQML", decay="ADMIN", weight="90", dose="400000000", series=("20240105", "120000"),
        acq=[("20240105", "120010")] * NZ, inj_dt=None, inj_tm="110000",
    ),
    # Not decay-corrected: each slice from its own acquisition start and frame duration.
    "decay_none_per_frame": dict(
        units="BQML", decay="NONE", weight="75", dose="350000000", series=("20240106", "100000"),
        acq=[("20240106", "100000"), ("20240106", "100300"), ("20240106", "100600"), ("20240106", "100900")],
        durations=[180000, 180000, 150000, 200000], inj_dt=None, inj_tm="090000",
        corrected="ATTN\\SCAT\\NORM",
    ),
    # Injection before midnight, scan after; start time only; dose in MBq; weight in grams.
    "midnight_mbq_grams": dict(
        units="BQML", decay="START", weight="72500", dose="370", series=("20240107", "004500"),
        acq=[("20240107", "004501")] * NZ, inj_dt=None, inj_tm="234000",
    ),
    # Already SUV.
    "gml": dict(
        units="GML", decay="START", weight="70", dose="300000000", series=("20240108", "100000"),
        acq=[("20240108", "100000")] * NZ, inj_dt=None, inj_tm="090000",
    ),
}


def expected_factors(c):
    """SUVbw factor per slice, from QIBA's definitions, written without looking at tracerd."""
    if c["units"] == "GML":
        return [1.0] * NZ
    if c["units"] == "CNTS" and "philips_suv" in c:
        return [float(c["philips_suv"])] * NZ
    w = float(c["weight"])
    grams = w if w > 1000 else w * 1000.0
    dose = float(c["dose"])
    dose_bq = dose * 1e6 if dose < 1e5 else dose
    series = parse(*c["series"])
    acq = [parse(*a) for a in c["acq"]]
    if c["inj_dt"]:
        inj = parse(c["inj_dt"][:8], c["inj_dt"][8:].strip())
    else:
        inj = parse(c["series"][0], c["inj_tm"])
        if inj > series:  # injected the evening before
            inj -= dt.timedelta(days=1)
    lam = math.log(2) / HALF_LIFE
    scale = float(c["philips_act"]) if c["units"] == "CNTS" else 1.0
    if c["decay"] == "ADMIN":
        return [scale * grams / dose_bq] * NZ
    if c["decay"] == "NONE":
        out = []
        for a, d in zip(acq, c["durations"]):
            t = (a - inj).total_seconds()
            x = lam * d / 1000.0
            # mean activity over the frame → activity at frame start; dose at frame start
            out.append(scale * grams / (dose_bq * math.exp(-lam * t)) * x / (1 - math.exp(-x)))
        return out
    earliest = min(acq)
    if series <= earliest:
        ref = series
    elif "ge_post" in c:
        ref = parse(c["ge_post"][:8], c["ge_post"][8:])
    else:
        ref = earliest
    t = (ref - inj).total_seconds()
    return [scale * grams / (dose_bq * 2 ** (-t / HALF_LIFE))] * NZ


def write_case(root, name, c, rng):
    os.makedirs(os.path.join(root, name), exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    factors = expected_factors(c)
    suv = np.zeros((NZ, NY, NX), dtype=np.float64)
    # Write slices in a scrambled order with file names unrelated to position.
    order = [2, 0, 3, 1]
    for n, k in enumerate(order):
        stored = rng.integers(100, 30000, size=(NY, NX)).astype(np.int16)
        slope = [0.731, 1.9, 0.052, 3.3][k] * (1000 if c["units"] != "GML" else 0.0004)
        intercept = [0.0, 0.0, 12.5, -3.0][k] if c["units"] != "GML" else 0.0
        suv[k] = (stored.astype(np.float64) * slope + intercept) * factors[k]
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = PET
        meta.MediaStorageSOPInstanceUID = generate_uid()
        # Alternate explicit and implicit VR, as a mixed archive export would.
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if n % 2 == 0 else ImplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = PET
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = "PT"
        ds.PatientName = "ORACLE^CASE"
        ds.PatientID = "ORACLE"
        ds.PatientWeight = c["weight"]
        ds.SeriesDate, ds.SeriesTime = c["series"]
        ds.AcquisitionDate, ds.AcquisitionTime = c["acq"][k]
        ds.ActualFrameDuration = (c.get("durations") or [120000] * NZ)[k]
        ds.Units = c["units"]
        ds.DecayCorrection = c["decay"]
        ds.CorrectedImage = c.get("corrected", "NORM\\DTIM\\ATTN\\SCAT\\DECY\\RAN").split("\\")
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-10.0, -12.5, 100.0 + 3.27 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [2.5, 2.0]
        ds.SliceThickness = 3.27
        ds.Rows, ds.Columns = NY, NX
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope = f"{slope:.10g}"
        ds.RescaleIntercept = f"{intercept:.10g}"
        rp = Dataset()
        rp.Radiopharmaceutical = "Fluorodeoxyglucose"
        rp.RadiopharmaceuticalStartTime = c["inj_tm"]
        if c["inj_dt"]:
            rp.RadiopharmaceuticalStartDateTime = c["inj_dt"]
        rp.RadionuclideTotalDose = c["dose"]
        rp.RadionuclideHalfLife = str(HALF_LIFE)
        ds.RadiopharmaceuticalInformationSequence = Sequence([rp])
        if "ge_post" in c:
            ds.private_block(0x0009, "GEMS_PETD_01", create=True).add_new(0x0D, "DT", c["ge_post"])
        if "philips_suv" in c or "philips_act" in c:
            block = ds.private_block(0x7053, "Philips PET Private Group", create=True)
            if "philips_suv" in c:
                block.add_new(0x00, "DS", c["philips_suv"])
            block.add_new(0x09, "DS", c["philips_act"])
        ds.PixelData = stored.tobytes()
        ds.save_as(os.path.join(root, name, f"f{n:02d}"), enforce_file_format=True)
    with open(os.path.join(root, name + ".json"), "w") as f:
        json.dump({"factors": factors}, f)
    suv.astype("<f4").tofile(os.path.join(root, name + ".f32"))


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "make":
        sys.exit(__doc__)
    root = sys.argv[2]
    rng = np.random.default_rng(6)
    for name, c in CASES.items():
        write_case(root, name, c, rng)


if __name__ == "__main__":
    main()
