//! Compressed transfer syntaxes that scanners and PACS use, encoded by another toolkit
//! (pydicom with pylibjpeg-openjpeg, tests/oracle/dicom_compress_oracle.py): a synthetic PET/CT
//! drop re-encoded as JPEG 2000 lossless converts to exactly the voxels of the uncompressed one.
//! JPEG-LS has no well-kept pure-Rust decoder for dicom-pixeldata and is refused by name
//! (`dicom_bad::unsupported_transfer_syntax`).

use crate::common;

use std::path::Path;

use common::run_oracle;
use tracerd::io::dicom;
use tracerd::io::nifti;
use tracerd::synth::dicom as synth_dicom;
use tracerd::synth::{self, Size, SynthOptions};

#[test]
fn jpeg2000_lossless_decodes_to_the_uncompressed_voxels() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    let study = synth::generate(&SynthOptions {
        seed: 12,
        size: Size::Small,
    });
    synth_dicom::write_dicom(&study, &plain).unwrap();
    let j2k = dir.path().join("j2k");
    run_oracle(
        "dicom_compress_oracle.py",
        &[Path::new("j2k"), &plain, &j2k],
    );
    let syntax = dicom_object::open_file(&common::pet_files(&j2k)[0])
        .unwrap()
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    assert_eq!(syntax, "1.2.840.10008.1.2.4.90");
    let outs = [dir.path().join("out-plain"), dir.path().join("out-j2k")];
    for (input, out) in [&plain, &j2k].iter().zip(&outs) {
        let r = dicom::convert(input, out, &Default::default()).unwrap();
        if let Err(e) = &r[0].result {
            panic!("{}: {e}", input.display());
        }
    }
    for name in ["pet_suv.nii.gz", "ct.nii.gz"] {
        let a = nifti::read_f32(&outs[0].join(name)).unwrap();
        let b = nifti::read_f32(&outs[1].join(name)).unwrap();
        assert_eq!(a.geometry(), b.geometry(), "{name}");
        assert!(a.data() == b.data(), "{name}: voxels differ");
    }
}
