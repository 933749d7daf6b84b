#!/usr/bin/env python3
"""pydicom reads tracerd's DICOM SEG back into a mask on the PET grid, independently of tracerd.

  dicom_seg_oracle.py SEG PET_DIR OUT

PET_DIR holds the source PET series (any nesting; other files are skipped). The PET slices are
sorted by position along their normal; every SEG frame is placed on the slice its
DerivationImageSequence references, and the frame's PlanePositionSequence must equal that slice's
ImagePositionPatient (1e-3 mm), its DimensionIndexValues must be (its segment, that slice's
index) and its source reference must say SpatialLocationsPreserved YES. Also checked: SOP class,
BINARY type, segments numbered 1..N, each labelled "Lesion n" and coded SCT 108369006 (Neoplasm)
in category SCT 49755003, no two frames for one (segment, slice), no segment on a voxel another
segment holds, ReferencedSeriesSequence naming the PET series. OUT gets the label map (0, or the
segment number) as uint32, x fastest, then y, then z (tracerd's volume order). Exits non-zero
with a message on any problem.
"""
import sys

import numpy as np
import pydicom

from pet_series import pet_headers, slice_order


def main():
    seg_path, pet_dir, out = sys.argv[1:4]
    seg = pydicom.dcmread(seg_path)
    problems = []
    if seg.SOPClassUID != "1.2.840.10008.5.1.4.1.1.66.4":
        problems.append(f"SOP class {seg.SOPClassUID}")
    if seg.SegmentationType != "BINARY":
        problems.append(f"SegmentationType {seg.SegmentationType}")
    for n, segment in enumerate(seg.SegmentSequence, start=1):
        if segment.SegmentNumber != n or segment.SegmentLabel != f"Lesion {n}":
            problems.append(f"segment {n}: number {segment.SegmentNumber}, label {segment.SegmentLabel}")
        t = segment.SegmentedPropertyTypeCodeSequence[0]
        c = segment.SegmentedPropertyCategoryCodeSequence[0]
        if (t.CodeValue, t.CodingSchemeDesignator) != ("108369006", "SCT"):
            problems.append(f"segment {n}: type code {t.CodeValue} {t.CodingSchemeDesignator}")
        if (c.CodeValue, c.CodingSchemeDesignator) != ("49755003", "SCT"):
            problems.append(f"segment {n}: category code {c.CodeValue} {c.CodingSchemeDesignator}")

    pet = pet_headers(pet_dir)
    any_pet = next(iter(pet.values()))
    if seg.ReferencedSeriesSequence[0].SeriesInstanceUID != any_pet.SeriesInstanceUID:
        problems.append("ReferencedSeriesSequence does not name the PET series")
    order = slice_order(pet)
    index = {u: k for k, u in enumerate(order)}
    rows, cols = int(any_pet.Rows), int(any_pet.Columns)
    if (seg.Rows, seg.Columns) != (rows, cols):
        problems.append(f"SEG {seg.Rows}x{seg.Columns}, PET {rows}x{cols}")
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), rows, cols)
    labels = np.zeros((len(order), rows, cols), dtype=np.uint32)
    seen = set()
    for f, fg in enumerate(seg.PerFrameFunctionalGroupsSequence):
        source = fg.DerivationImageSequence[0].SourceImageSequence[0]
        ref = source.ReferencedSOPInstanceUID
        if ref not in index:
            problems.append(f"frame {f}: references an unknown instance")
            continue
        if getattr(source, "SpatialLocationsPreserved", "") != "YES":
            problems.append(f"frame {f}: SpatialLocationsPreserved is not YES")
        k = index[ref]
        n = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        pos = np.array(fg.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        if np.abs(pos - np.array(pet[ref].ImagePositionPatient, dtype=float)).max() > 1e-3:
            problems.append(f"frame {f}: position {pos} is not that of the referenced slice")
        if list(fg.FrameContentSequence[0].DimensionIndexValues) != [n, k + 1]:
            problems.append(f"frame {f}: DimensionIndexValues {fg.FrameContentSequence[0].DimensionIndexValues}")
        if (n, k) in seen:
            problems.append(f"frame {f}: a second frame for segment {n} on slice {k}")
        seen.add((n, k))
        on = frames[f] != 0
        if not on.any():
            problems.append(f"frame {f}: empty frame")
        if (labels[k][on] != 0).any():
            problems.append(f"frame {f}: segment {n} overlaps another segment")
        labels[k][on] = n
    if problems:
        sys.exit("\n".join(problems))
    labels.tofile(out)


if __name__ == "__main__":
    main()
