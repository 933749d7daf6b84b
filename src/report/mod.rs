//! What a person looks at: `overview.png`, the picture of a study's result.
//!
//! [`mip`] projects the SUV volume and the lesion numbering onto coronal and sagittal planes;
//! [`overview`] lays the projections out at their physical aspect, outlines and numbers the
//! lesions, and adds the table, the scores, the models and a banner where a card says the weights
//! are not for clinical use. The same picture goes to PACS as a Secondary Capture
//! ([`crate::io::dicom::sc`]).

pub mod mip;
pub mod overview;

pub use overview::{Overview, Panel, Picture, render};
