#!/usr/bin/env python3
"""pydicom as an independent oracle for tracerd's SUV conversion of real PET series.

  qiba_suv_oracle.py expect OUT DIR...   for every folder DIR (one PET series), read its files
                                         with pydicom and write OUT/<name of DIR>.json with
                                         {"factors": [...], "z": [...]} (the SUVbw factor of each
                                         slice in order of increasing z) or {"refused": "<tag>"},
                                         and OUT/<name>.f32: the expected SUV volume (float32,
                                         x fastest, then y, then z).

The factor follows the QIBA vendor-neutral pseudo-code, written here without looking at tracerd:
Units BQML (DecayCorrection START: the series date-time unless it is after the earliest
acquisition, then GE's private post-injection date-time (0009,100D), then the earliest frame's
acquisition minus FrameReferenceTime plus the average-count time within ActualFrameDuration,
then the earliest acquisition; ADMIN: the dose as is; NONE: each frame from its own start),
Philips CNTS (SUV scale factor (7053,1000), else activity concentration scale factor (7053,1009)
times the BQML factor; the block is read as (7053,10xx) whether or not its creator is there),
GML and CM2ML by SUVType (BW; LBM James with 128 and Janmahasatian from PatientSex and
PatientSize; BSA by Du Bois in cm²); IBW and other types are refused. Doses below 1e5 are MBq.

Used by tests/library/dicom_real.rs; needs numpy and pydicom (.ci/run installs them in .venv).
"""
import datetime as dt
import json
import math
import os
import sys

import numpy as np
import pydicom


def when(date, time):
    time = str(time).replace(":", "")
    whole, _, frac = time.partition(".")
    whole = (whole + "0000")[:6]
    t = dt.datetime.strptime(str(date)[:8] + whole, "%Y%m%d%H%M%S")
    return t + dt.timedelta(seconds=float("0." + frac) if frac else 0.0)


def when_dt(text):
    text = str(text).split("+")[0].split("-")[0]
    return when(text[:8], text[8:] or "000000")


def weight_g(ds):
    w = float(ds.PatientWeight)
    return w if w > 1000 else w * 1000.0


def body_factor(ds):
    """SUVbw per unit of the stored normalised value (GML or CM2ML), or raise KeyError(tag)."""
    units = ds.Units.upper()
    kind = str(ds.get("SUVType", "BSA" if units == "CM2ML" else "BW")).upper()
    if units == "GML" and kind == "BW":
        return 1.0
    if (units, kind) not in {("GML", "LBM"), ("GML", "LBMJAMES128"), ("GML", "LBMJANMA"),
                             ("CM2ML", "BSA")}:
        raise KeyError("SUVType")
    w = float(ds.PatientWeight)
    w = w / 1000.0 if w > 1000 else w
    h = float(ds.PatientSize)
    h = h / 100.0 if h > 3 else h
    if kind == "BSA":
        bsa_cm2 = 71.84 * w ** 0.425 * (h * 100) ** 0.725
        return w * 1000.0 / bsa_cm2
    sex = str(ds.get("PatientSex", "")).upper()
    if sex not in ("M", "F"):
        raise KeyError("PatientSex")
    if kind == "LBMJANMA":
        bmi = w / h ** 2
        lbm = 9270 * w / ((6680 + 216 * bmi) if sex == "M" else (8780 + 244 * bmi))
    else:
        r = (w / (h * 100)) ** 2
        lbm = 1.10 * w - 128 * r if sex == "M" else 1.07 * w - 148 * r
    return w / lbm


def private(ds, element):
    e = ds.get((0x7053, 0x1000 | element))
    if e is None:
        return None
    v = e.value
    v = v.decode() if isinstance(v, bytes) else v
    v = float(str(v).strip("\0 "))
    return v or None


def scan_start(series, half_life):
    d0 = series[0]
    seriesdt = when(d0.SeriesDate, d0.SeriesTime)
    acq = [when(d.get("AcquisitionDate", d0.SeriesDate), d.AcquisitionTime) for d in series]
    k = int(np.argmin(acq))
    if seriesdt <= acq[k]:
        return seriesdt
    ge = d0.get((0x0009, 0x100D))
    if ge is not None:
        return when_dt(ge.value.decode() if isinstance(ge.value, bytes) else ge.value)
    first = series[k]
    if first.get("FrameReferenceTime") and first.get("ActualFrameDuration"):
        lam = math.log(2) / half_life
        x = lam * float(first.ActualFrameDuration) / 1000.0
        average = math.log(x / (1 - math.exp(-x))) / lam
        back = -float(first.FrameReferenceTime) / 1000.0 + average
        return acq[k] + dt.timedelta(seconds=back)
    return acq[k]


def bqml_factors(series):
    d0 = series[0]
    rp = d0.RadiopharmaceuticalInformationSequence[0]
    dose = float(rp.RadionuclideTotalDose)
    dose = dose * 1e6 if dose < 1e5 else dose
    half_life = float(rp.RadionuclideHalfLife)
    w = weight_g(d0)
    decay = d0.DecayCorrection.upper()
    if decay == "ADMIN":
        return [w / dose] * len(series)
    ref = when(d0.SeriesDate, d0.SeriesTime)
    if "RadiopharmaceuticalStartDateTime" in rp:
        inj = when_dt(rp.RadiopharmaceuticalStartDateTime)
    else:
        inj = when(d0.SeriesDate, rp.RadiopharmaceuticalStartTime)
        if inj > ref:
            inj -= dt.timedelta(days=1)
    lam = math.log(2) / half_life
    if decay == "NONE":
        out = []
        for d in series:
            t = (when(d.get("AcquisitionDate", d0.SeriesDate), d.AcquisitionTime) - inj).total_seconds()
            x = lam * float(d.ActualFrameDuration) / 1000.0
            out.append(w / (dose * math.exp(-lam * t)) * x / (1 - math.exp(-x)))
        return out
    t = (scan_start(series, half_life) - inj).total_seconds()
    return [w / (dose * 2 ** (-t / half_life))] * len(series)


def factors(series):
    d0 = series[0]
    units = d0.Units.upper()
    if units in ("GML", "CM2ML"):
        return [body_factor(d0)] * len(series)
    if units == "CNTS":
        suv, act = private(d0, 0x00), private(d0, 0x09)
        if suv:
            return [suv] * len(series)
        return [act * f for f in bqml_factors(series)]
    return bqml_factors(series)


def expect(out, folder):
    name = os.path.basename(os.path.normpath(folder))
    paths = [os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs]
    series = [pydicom.dcmread(p, force=True) for p in sorted(paths)]
    series = [d for d in series if d.get("Modality") == "PT"]
    normal = np.cross(*np.array(series[0].ImageOrientationPatient, float).reshape(2, 3))
    series.sort(key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, float))))
    z = [float(np.dot(normal, np.array(d.ImagePositionPatient, float))) for d in series]
    try:
        f = factors(series)
    except KeyError as e:
        with open(os.path.join(out, name + ".json"), "w") as fh:
            json.dump({"refused": e.args[0]}, fh)
        return
    vol = np.stack([
        (d.pixel_array.astype(np.float64) * float(d.get("RescaleSlope", 1))
         + float(d.get("RescaleIntercept", 0))) * fk
        for d, fk in zip(series, f)
    ])
    with open(os.path.join(out, name + ".json"), "w") as fh:
        json.dump({"factors": f, "z": z}, fh)
    vol.astype("<f4").tofile(os.path.join(out, name + ".f32"))


def main():
    if len(sys.argv) < 4 or sys.argv[1] != "expect":
        sys.exit(__doc__)
    for folder in sys.argv[3:]:
        expect(sys.argv[2], folder)


if __name__ == "__main__":
    main()
