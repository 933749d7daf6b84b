#!/usr/bin/env python3
"""pydicom (with pylibjpeg-openjpeg) re-encodes DICOM images into a compressed transfer syntax.

  dicom_compress_oracle.py j2k SRC DST   every file under SRC with pixel data, re-encoded as
                                         JPEG 2000 lossless (1.2.840.10008.1.2.4.90), written to
                                         the same relative path under DST; other files copied.

Used by tests/library/dicom_compressed.rs: tracerd must decode what another toolkit encoded to
exactly the voxels of the uncompressed files. Needs pydicom, pylibjpeg and pylibjpeg-openjpeg
(.ci/run installs them in .venv).
"""
import os
import shutil
import sys

import pydicom
from pydicom.uid import JPEG2000Lossless


def main():
    if len(sys.argv) != 4 or sys.argv[1] != "j2k":
        sys.exit(__doc__)
    src, dst = sys.argv[2], sys.argv[3]
    for root, _, files in os.walk(src):
        for name in files:
            path = os.path.join(root, name)
            out = os.path.join(dst, os.path.relpath(path, src))
            os.makedirs(os.path.dirname(out), exist_ok=True)
            try:
                ds = pydicom.dcmread(path)
            except pydicom.errors.InvalidDicomError:
                shutil.copy(path, out)
                continue
            if "PixelData" in ds:
                ds.compress(JPEG2000Lossless)
            ds.save_as(out, enforce_file_format=True)


if __name__ == "__main__":
    main()
