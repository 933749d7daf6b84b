//! SUV conversion against pydicom-written PET series (tests/oracle/dicom_suv_oracle.py): Siemens-,
//! GE- and Philips-style headers, every Units and DecayCorrection case, per-slice slopes and
//! intercepts, scrambled file order, mixed explicit/implicit VR, a series time after the
//! acquisition, an injection before midnight, a dose in MBq, a weight in grams. The oracle
//! computes the expected SUVbw factor of every slice itself; tracerd's SUV volume must match
//! voxel by voxel to 1e-5 relative.

use crate::common;

use common::{read_f32_file, read_json, run_oracle};
use tracerd::io::dicom::{assemble::assemble, convert::load_study, scan::scan_folder};

const TOL: f64 = 1e-5;

#[test]
fn pydicom_vendor_cases_match_the_oracle_factors() {
    let dir = tempfile::tempdir().unwrap();
    run_oracle(
        "dicom_suv_oracle.py",
        &[std::path::Path::new("make"), dir.path()],
    );
    let mut cases: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".json").map(str::to_string)
        })
        .collect();
    cases.sort();
    assert_eq!(cases.len(), 9, "oracle cases: {cases:?}");
    for case in cases {
        let scan = scan_folder(&dir.path().join(&case)).unwrap();
        assert!(scan.unreadable.is_empty(), "{case}: {:?}", scan.unreadable);
        let mut outcomes = assemble(scan);
        assert_eq!(outcomes.len(), 1, "{case}");
        let study = outcomes
            .remove(0)
            .result
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let loaded = load_study(&study, &[]).unwrap_or_else(|e| panic!("{case}: {e}"));
        let expected = read_f32_file(&dir.path().join(format!("{case}.f32")));
        let got = loaded.pet.data();
        assert_eq!(got.len(), expected.len(), "{case}");
        for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
            let rel = ((*a as f64) - (*b as f64)).abs() / (*b as f64).abs();
            assert!(
                rel <= TOL,
                "{case}: voxel {i}: tracerd {a}, oracle {b} (rel {rel:e})"
            );
        }
        let info = read_json(&dir.path().join(format!("{case}.json")));
        let factors: Vec<f64> = serde_json::from_value(info["factors"].clone()).unwrap();
        let r = &loaded.report.suv;
        let (lo, hi) = factors
            .iter()
            .fold((f64::INFINITY, 0f64), |(l, h), f| (l.min(*f), h.max(*f)));
        assert!(
            (r.suv_factor_min / lo - 1.0).abs() < TOL,
            "{case}: {} vs {lo}",
            r.suv_factor_min
        );
        assert!(
            (r.suv_factor_max / hi - 1.0).abs() < TOL,
            "{case}: {} vs {hi}",
            r.suv_factor_max
        );
    }
}
