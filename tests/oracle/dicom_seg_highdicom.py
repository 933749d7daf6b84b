#!/usr/bin/env python3
"""highdicom reads tracerd's per-lesion DICOM SEG back by source instance, independently of tracerd.

  dicom_seg_highdicom.py SEG PET_DIR OUT

The PET slices in PET_DIR (any nesting; other files are skipped) are sorted along their normal and
highdicom's Segmentation.get_pixels_by_source_instance builds the label map over them
(combine_segments: each voxel holds its segment number, 0 for none) with spatial-location checks
on (the frames must declare SpatialLocationsPreserved). Slices without frames must be empty.
OUT gets the label map as uint32, x fastest, then y, then z (tracerd's volume order).
"""
import sys

import highdicom as hd
import numpy as np

from pet_series import pet_headers, slice_order


def main():
    seg_path, pet_dir, out = sys.argv[1:4]
    seg = hd.seg.segread(seg_path)
    order = slice_order(pet_headers(pet_dir))
    labels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=order,
        combine_segments=True,
        assert_missing_frames_are_empty=True,
    )
    np.asarray(labels, dtype=np.uint32).tofile(out)


if __name__ == "__main__":
    main()
