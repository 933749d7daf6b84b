//! Library-level integration tests, one binary: readers and writers against their oracles
//! (nibabel, pydicom, dcm2niix, highdicom), the engines against onnxruntime's Python API, the
//! committed model files against their goldens, and the Rust pipeline against its Python
//! reference. Run one group with `cargo test --test library <module>`.

#[path = "../common/mod.rs"]
mod common;

mod dicom_assembly;
mod dicom_bad;
mod dicom_compressed;
mod dicom_dcm2niix;
mod dicom_real;
mod dicom_results;
mod dicom_roundtrip;
mod dicom_seg;
mod dicom_suv_oracle;
mod dicom_suv_vendor;
mod heldout_dice;
mod infer_engines;
mod model_golden;
mod nifti_malformed;
mod nifti_oracle;
mod pipeline_parity;
mod precision;
