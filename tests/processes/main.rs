//! The `tracerd` binary as a process, one test binary: the daemon under systemd's protocol,
//! crashes and restarts, DICOM drops, and the one-shot commands. Daemon tests hold
//! `common::daemon::serial()` so only one daemon runs at a time. Run one group with
//! `cargo test --test processes <module>`.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod daemon;
mod daemon_crash;
mod daemon_dicom;
mod network;
mod process_cli;
