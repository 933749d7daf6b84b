//! The models tracerd runs: their cards ([`card`]) and the pre- and post-processing of each
//! ([`l2snet`], [`two_be_three`]). [`Models`] loads both from the models folder with the
//! configured engines and runs them on one study.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::config;
use crate::infer::{Engines, InferError, LoadError, Session};

pub mod card;
pub mod grid;
pub mod l2snet;
pub mod two_be_three;

use card::{CardError, ModelCard, ModelFile};

/// Folder names of the two models inside `paths.models`.
pub const L2SNET_DIR: &str = "l2snet";
pub const TWO_BE_THREE_DIR: &str = "two_be_three";

/// Wall time per pipeline stage, milliseconds (`result.json`'s `timings_ms`).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct Timings(BTreeMap<&'static str, f64>);

impl Timings {
    /// Adds the time since `start` to `stage`.
    pub fn add(&mut self, stage: &'static str, start: Instant) {
        *self.0.entry(stage).or_default() += start.elapsed().as_secs_f64() * 1e3;
    }

    /// Sets `stage` to `ms`.
    pub fn insert(&mut self, stage: &'static str, ms: f64) {
        self.0.insert(stage, ms);
    }
}

/// `(clamp(v, lo, hi) - lo) / (hi - lo)` in f32, as the training code computes it: the PET and
/// CT normalisation of both models (`pet_clip_suv`, `ct_clip_hu` on the cards).
pub fn clip_scale(v: f32, [lo, hi]: [f32; 2]) -> f32 {
    (v.clamp(lo, hi) - lo) / (hi - lo)
}

/// A model that loaded but could not run on this study.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Infer(#[from] InferError),
    #[error("{model} returned an output of an unexpected shape (expected {expected})")]
    Output { model: String, expected: String },
    #[error("{0}")]
    Input(String),
    /// The study was made ready for inference with model parameters that a reload has since
    /// replaced; reading it again fixes it.
    #[error("the study was prepared for models that have since been reloaded")]
    Stale,
}

/// Models that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelsError {
    #[error(transparent)]
    Card(#[from] CardError),
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// One model file as it ran, for `result.json`'s `models`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelUse {
    pub name: String,
    pub version: String,
    pub role: String,
    pub file: String,
    pub sha256: String,
    pub precision: String,
    pub engine: String,
    pub device: String,
}

/// Both models, loaded.
pub struct Models {
    pub l2snet: l2snet::L2sNet,
    pub two_be_three: two_be_three::TwoBeThree,
    cards: [ModelCard; 2],
}

impl Models {
    /// Reads both cards from `models_dir`, verifies every file's sha256, and loads each network
    /// with the first engine that accepts it, in the file `inference.precision` picks for that
    /// engine ([`ModelCard::file_for`]; `tracerd check` reports the same).
    pub fn load(
        models_dir: &Path,
        engines: &Engines,
        inference: &config::Inference,
    ) -> Result<Models, ModelsError> {
        let l2 = ModelCard::load(&models_dir.join(L2SNET_DIR))?;
        let tb = ModelCard::load(&models_dir.join(TWO_BE_THREE_DIR))?;
        l2.verify()?;
        tb.verify()?;
        let open =
            |card: &ModelCard, role: &str| -> Result<(ModelFile, Box<dyn Session>), ModelsError> {
                let precision = inference.precision;
                card.require(role, "fp32")?;
                let path_for = |engine| {
                    let file = card
                        .file_for(role, engine, precision)
                        .expect("fp32 is listed");
                    card.path_of(file)
                };
                let session = engines.load_each(path_for)?;
                let engine = session.provenance().engine;
                let file = card.file_for(role, engine, precision)?.clone();
                Ok((file, session))
            };
        let l2snet = l2snet::L2sNet::new(
            l2snet::Params::from_card(&l2, inference.overlap, inference.seg3d_windows)?,
            open(&l2, "loc2d")?,
            open(&l2, "seg3d")?,
        );
        let (file, session) = open(&tb, "ws")?;
        let two_be_three =
            two_be_three::TwoBeThree::new(two_be_three::Params::from_card(&tb)?, file, session);
        Ok(Models {
            l2snet,
            two_be_three,
            cards: [l2, tb],
        })
    }

    /// Which file ran on which engine, for `result.json`.
    pub fn uses(&self) -> Vec<ModelUse> {
        let [l2, tb] = &self.cards;
        let [loc, seg] = self.l2snet.sessions();
        let ws = self.two_be_three.session();
        [(l2, loc), (l2, seg), (tb, ws)]
            .into_iter()
            .map(|(card, (file, session))| {
                let p = session.provenance();
                ModelUse {
                    name: card.name.clone(),
                    version: card.version.clone(),
                    role: file.role.clone(),
                    file: file.path.clone(),
                    sha256: file.sha256.clone(),
                    precision: file.precision.clone(),
                    engine: p.engine.to_string(),
                    device: p.device.clone(),
                }
            })
            .collect()
    }

    /// The status line of each card ("demonstration weights, not for clinical use"…).
    pub fn statuses(&self) -> Vec<String> {
        self.cards
            .iter()
            .map(|c| format!("{} {}: {}", c.name, c.version, c.status))
            .collect()
    }
}
