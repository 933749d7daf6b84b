//! tracerd: a scanner-side PET/CT inference daemon.
//!
//! The binary (`src/main.rs`) only parses the command line; everything it does lives in this
//! library so that it can be tested without spawning processes. Module map:
//! `docs/architecture.md`.

pub mod check;
pub mod config;
pub mod daemon;
pub mod fsio;
pub mod infer;
pub mod io;
pub mod models;
pub mod net;
pub mod outbox;
pub mod process;
pub mod report;
pub mod study;
pub mod synth;
pub mod volume;

pub use volume::{Geometry, Interpolation, Volume};
