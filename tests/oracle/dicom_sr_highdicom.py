#!/usr/bin/env python3
"""highdicom reads tracerd's TID 1500 measurement report back, independently of tracerd.

  dicom_sr_highdicom.py SR OUT_JSON

hd.sr.srread parses the file; MeasurementReport.from_sequence parses the content tree as TID 1500
(it raises on a tree that does not follow the template); every TID 1411 volumetric group is read
with highdicom's own accessors. OUT_JSON gets, per group: tracking identifier and UID, finding,
the referenced SEG instance and segment number, the source series, and each measurement by
(concept, derivation) with its unit and value:

  {"evidence": [[study, series, sop_instance, sop_class], ...],
   "groups": [{"tracking_id", "tracking_uid", "finding", "seg_instance", "segment",
               "source_series", "measurements": {"118565006 SCT/": {"unit", "value"}, ...}}]}
"""
import json
import sys

import highdicom as hd


def code(c):
    return f"{c.value} {c.scheme_designator}"


def main():
    sr_path, out = sys.argv[1:3]
    sr = hd.sr.srread(sr_path)
    report = hd.sr.MeasurementReport.from_sequence(sr.content)
    groups = []
    for g in report.get_volumetric_roi_measurement_groups():
        segment = g.referenced_segment
        measurements = {}
        for m in g.get_measurements():
            key = code(m.name) + "/" + (code(m.derivation) if m.derivation else "")
            measurements[key] = {"unit": code(m.unit), "value": float(m.value)}
        source = segment.get_source_series_for_segmentation() if hasattr(
            segment, "get_source_series_for_segmentation") else segment.source_series_for_segmentation
        groups.append({
            "tracking_id": g.tracking_identifier,
            "tracking_uid": str(g.tracking_uid),
            "finding": code(g.finding_type),
            "seg_instance": str(segment.referenced_sop_instance_uid),
            "segment": segment.referenced_segment_numbers,
            "source_series": str(source.value) if source is not None else None,
            "measurements": measurements,
        })
    evidence = [[str(u) for u in e] for e in sr.get_evidence()]
    with open(out, "w") as f:
        json.dump({"evidence": evidence, "groups": groups}, f, indent=1)


if __name__ == "__main__":
    main()
