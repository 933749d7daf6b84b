//! Synthetic studies.
