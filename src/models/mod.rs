//! The models tracerd runs: their cards, and (with the inference issue) the pre- and
//! post-processing pipeline of each.

pub mod card;
