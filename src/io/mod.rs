//! Readers and writers for the file formats tracerd consumes and produces.

pub mod dicom;
pub mod nifti;
