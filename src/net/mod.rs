//! tracerd on the hospital network: the DICOM listener that feeds the inbox
//! ([`listener`], [`staging`]) and the delivery of results to PACS ([`deliver`]).
//!
//! The drop folder stays the core: the listener writes received instances into a hidden
//! staging folder of the inbox and hands each study over, complete, as a drop; delivery reads
//! what the publisher put into the outbox and records what each destination confirmed in the
//! study's `result.json`. Both use dicom-rs's upper layer (`dicom-ul`) and the DIMSE messages
//! of [`dimse`].

pub mod deliver;
pub mod dimse;
pub mod listener;
mod message;
pub mod record;
pub mod scu;
pub mod staging;
pub mod stow;
