//! DICOM drops through `tracerd run`: a good PET/CT study is published with its DICOM SEG and
//! archived; bad ones (truncated file, PET without PatientWeight, Units CPS) end in `failed/`
//! with a specific reason and every input byte, and so does an out-of-scope one (a Lu-177
//! SPECT stored as PET: stage `scope`); a complete PET series (ImageIndex covers
//! NumberOfSlices) is claimed without waiting for the settle time; and no patient identifier
//! reaches the log, a file name or an error.

use crate::common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{
    NotifySocket, Settings, Spool, checksums, serial, signal, wait_exit, wait_until,
};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use tracerd::synth::dicom as synth_dicom;
use tracerd::synth::{self, Size, SynthOptions};

fn write_drop(dir: &Path, seed: u64) {
    let study = synth::generate(&SynthOptions {
        seed,
        size: Size::Small,
    });
    synth_dicom::write_dicom(&study, dir).unwrap();
}

#[test]
fn dicom_drops_good_and_bad_through_the_daemon() {
    let _serial = serial();
    // A settle time far longer than the test: only the ImageIndex rule can complete a drop.
    let spool = Spool::new(&Settings {
        settle_seconds: 3600.0,
        ..Settings::default()
    });
    let staging = spool.dir("staging");
    let cases: [(&str, u64, &str); 5] = [
        ("good", 81, ""),
        ("truncated", 82, "not a readable DICOM file"),
        ("no-weight", 83, "PatientWeight"),
        ("cps", 84, "CPS"),
        ("lu177", 85, "not an 18F-FDG PET"),
    ];
    for (name, seed, _) in cases {
        write_drop(&staging.join(name), seed);
    }
    let pet = common::pet_files(&staging.join("truncated"));
    let bytes = fs::read(&pet[0]).unwrap();
    fs::write(&pet[0], &bytes[..bytes.len() / 3]).unwrap();
    for p in common::pet_files(&staging.join("no-weight")) {
        common::rewrite_dicom(&p, |o| {
            o.remove_element(tags::PATIENT_WEIGHT);
        });
    }
    for p in common::pet_files(&staging.join("cps")) {
        common::rewrite_dicom(&p, |o| {
            o.put(DataElement::new(
                tags::UNITS,
                VR::CS,
                PrimitiveValue::from("CPS"),
            ));
        });
    }
    for p in common::pet_files(&staging.join("lu177")) {
        common::rewrite_dicom(&p, as_lu177_spect);
    }
    let before: Vec<_> = cases
        .iter()
        .map(|(name, ..)| checksums(&staging.join(name)))
        .collect();

    let notify = NotifySocket::new();
    let mut child = spool.spawn(&[("NOTIFY_SOCKET", &notify.path)]);
    notify.wait_for("READY=1", Duration::from_secs(60));
    let dropped = Instant::now();
    for (name, ..) in cases {
        fs::rename(staging.join(name), spool.dir("inbox").join(name)).unwrap();
    }
    wait_until(&spool, Duration::from_secs(180), "all five done", || {
        spool.entries("archive").len() + spool.entries("failed").len() == 5
    });
    let took = dropped.elapsed();
    signal(&child, "TERM");
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), Some(0));

    // The good study: published under its UID hash with a DICOM SEG, archived unchanged.
    let outbox = spool.entries("outbox");
    assert_eq!(outbox.len(), 1, "{outbox:?}\n{}", spool.log());
    let result = spool.dir("outbox").join(&outbox[0]);
    let r: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(result.join("result.json")).unwrap()).unwrap();
    assert_eq!(r["inputs"]["format"], "dicom");
    if r["lesions"]["count"].as_u64().unwrap() > 0 {
        assert!(result.join("lesions.seg.dcm").is_file());
    }
    assert_eq!(spool.entries("archive"), ["good"]);
    assert_eq!(checksums(&spool.dir("archive/good")), before[0]);

    // The bad ones: a specific reason each, inputs unchanged.
    assert_eq!(
        spool.entries("failed"),
        ["cps", "lu177", "no-weight", "truncated"]
    );
    let mut errors = String::new();
    for ((name, _, needle), sums) in cases.iter().zip(&before).skip(1) {
        let dir = spool.dir("failed").join(name);
        let text = fs::read_to_string(dir.join("error.json")).unwrap();
        errors.push_str(&text);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let error = json["error"].as_str().unwrap();
        assert!(error.contains(needle), "{name}: {error}");
        let stage = if *name == "lu177" { "scope" } else { "ingest" };
        assert_eq!(json["stage"], stage, "{name}: {error}");
        println!("{name:>10}: {error}");
        fs::remove_file(dir.join("error.json")).unwrap();
        assert_eq!(&checksums(&dir), sums, "{name}");
    }

    // Claimed by the ImageIndex rule, long before the hour of settle time.
    assert!(took < Duration::from_secs(170));
    assert!(
        spool
            .log()
            .contains("DICOM study complete (PET by ImageIndex, CT over its extent)"),
        "{}",
        spool.log()
    );

    // No patient identifier anywhere tracerd writes.
    let log = spool.log();
    for (_, seed, _) in cases {
        for id in [format!("SYNTHETIC^SEED{seed}"), format!("SYNTH{seed}")] {
            assert!(!log.contains(&id), "{id} in the log");
            assert!(
                !text_of(&spool.dir("outbox")).contains(&id),
                "{id} in the outbox"
            );
            for name in common::daemon::walk(spool.root.path()) {
                assert!(!name.to_string_lossy().contains(&id), "{id} in a file name");
            }
        }
    }
    assert!(!errors.contains("SYNTH"), "{errors}");
}

/// What a Siemens gamma camera writes for a Lu-177 SPECT stored as PET Image Storage
/// (the public SPECT of issue 15): a parallel-hole collimator and Lu-177's half-life and code.
fn as_lu177_spect(o: &mut dicom_object::InMemDicomObject) {
    use dicom_core::value::DataSetSequence;
    let rp_tag = tags::RADIOPHARMACEUTICAL_INFORMATION_SEQUENCE;
    let mut rp = o.element(rp_tag).unwrap().items().unwrap()[0].clone();
    let code = dicom_object::InMemDicomObject::from_element_iter([
        DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from("C-101ED")),
        DataElement::new(
            tags::CODING_SCHEME_DESIGNATOR,
            VR::SH,
            PrimitiveValue::from("99SDM"),
        ),
        DataElement::new(
            tags::CODE_MEANING,
            VR::LO,
            PrimitiveValue::from("177 Lutetium"),
        ),
    ]);
    rp.put(DataElement::new(
        tags::RADIONUCLIDE_CODE_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![code]),
    ));
    rp.put(DataElement::new(
        tags::RADIONUCLIDE_HALF_LIFE,
        VR::DS,
        PrimitiveValue::from("574300"),
    ));
    o.put(DataElement::new(
        rp_tag,
        VR::SQ,
        DataSetSequence::from(vec![rp]),
    ));
    o.put(DataElement::new(
        tags::COLLIMATOR_TYPE,
        VR::CS,
        PrimitiveValue::from("PARA"),
    ));
}

/// Every JSON file under `dir`, concatenated.
fn text_of(dir: &Path) -> String {
    common::daemon::walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| fs::read_to_string(p).unwrap())
        .collect()
}
