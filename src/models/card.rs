//! Model cards: `models/<name>/model.toml`, written by `models/training/make_cards.py`.
//!
//! A card lists the model's files (role, precision, sha256, I/O names and shapes, golden
//! reference) and every preprocessing parameter the Rust pipelines need. This module reads the
//! part every model shares and verifies files against their hashes; the model-specific sections
//! stay as TOML for the pipeline that owns them, so no number is duplicated in code.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{Engine, Precision};

/// The schema this reader understands.
pub const SCHEMA: &str = "tracerd.model-card/1";

/// File name of a card inside its model folder.
pub const CARD_FILE: &str = "model.toml";

/// A parsed `model.toml`.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelCard {
    pub schema: String,
    pub name: String,
    pub version: String,
    /// e.g. "demonstration weights, not for clinical use".
    pub status: String,
    pub files: Vec<ModelFile>,
    /// Every other section (preprocessing, metrics…), for the pipeline that owns the model.
    #[serde(flatten)]
    pub sections: toml::Table,
    /// The folder holding the card; file paths are relative to it.
    #[serde(skip)]
    pub dir: PathBuf,
}

/// One ONNX file of a model.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelFile {
    /// Which network of the model this is (e.g. `loc2d`, `seg3d`, `ws`, `hn`).
    pub role: String,
    /// Path relative to the card's folder.
    pub path: String,
    /// `fp32`, `int8` (QDQ) or `fp16`.
    pub precision: String,
    pub sha256: String,
    pub input_name: String,
    pub input_shape: Vec<Dim>,
    pub output_name: String,
    pub output_shape: Vec<Dim>,
    /// Golden reference (JSON) relative to the card's folder.
    pub golden: Option<String>,
    /// Engines on which `[inference] precision = "auto"` runs this file instead of the fp32
    /// one; the card's generator lists them only where the file's measured accuracy cost is
    /// within the card's acceptance bounds.
    #[serde(default)]
    pub auto_engines: Vec<String>,
}

/// A tensor dimension: fixed, or named (free, such as `batch`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    Fixed(u64),
    Named(String),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Named(s) => f.write_str(s),
        }
    }
}

/// A card that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error("cannot read model card {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model card {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("model file {}: sha256 is {actual}, the card says {expected}", path.display())]
    Hash {
        path: PathBuf,
        expected: String,
        actual: String,
    },
}

impl ModelCard {
    /// Reads `dir/model.toml` and checks its schema and file list (not the hashes; see
    /// [`ModelCard::verify`]).
    pub fn load(dir: &Path) -> Result<ModelCard, CardError> {
        let path = dir.join(CARD_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| CardError::Read {
            path: path.clone(),
            source,
        })?;
        let invalid = |message: String| CardError::Invalid {
            path: path.clone(),
            message,
        };
        let mut card: ModelCard =
            toml::from_str(&text).map_err(|e| invalid(e.message().to_string()))?;
        if card.schema != SCHEMA {
            return Err(invalid(format!(
                "schema is {:?}, this tracerd reads {SCHEMA:?}",
                card.schema
            )));
        }
        if card.files.is_empty() {
            return Err(invalid("lists no files".into()));
        }
        for f in &card.files {
            if Path::new(&f.path).is_absolute() || f.path.contains("..") {
                return Err(invalid(format!(
                    "file path {:?} must stay inside the model folder",
                    f.path
                )));
            }
        }
        card.dir = dir.to_path_buf();
        Ok(card)
    }

    /// Every card in the immediate sub-folders of `models_dir`, sorted by name.
    pub fn load_all(models_dir: &Path) -> Result<Vec<ModelCard>, CardError> {
        let entries = std::fs::read_dir(models_dir).map_err(|source| CardError::Read {
            path: models_dir.to_path_buf(),
            source,
        })?;
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join(CARD_FILE).is_file())
            .collect();
        dirs.sort();
        dirs.iter().map(|d| ModelCard::load(d)).collect()
    }

    /// Absolute path of a file listed on the card.
    pub fn path_of(&self, file: &ModelFile) -> PathBuf {
        self.dir.join(&file.path)
    }

    /// The file for `role` at `precision`, if the card lists one.
    pub fn file(&self, role: &str, precision: &str) -> Option<&ModelFile> {
        self.files
            .iter()
            .find(|f| f.role == role && f.precision == precision)
    }

    /// The file of `role` that runs on `engine`: with `auto`, the one whose `auto_engines`
    /// names the engine, if any; otherwise the fp32 file.
    pub fn file_for(
        &self,
        role: &str,
        engine: Engine,
        precision: Precision,
    ) -> Result<&ModelFile, CardError> {
        let engine = engine.to_string();
        let auto = (precision == Precision::Auto)
            .then(|| {
                self.files
                    .iter()
                    .find(|f| f.role == role && f.auto_engines.contains(&engine))
            })
            .flatten();
        auto.map_or_else(|| self.require(role, "fp32"), Ok)
    }

    /// A model-specific section (e.g. `preprocessing`), deserialised into the pipeline's own
    /// parameter struct; a missing or mistyped key names the card and the section.
    pub fn section<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, CardError> {
        let invalid = |message: String| CardError::Invalid {
            path: self.dir.join(CARD_FILE),
            message,
        };
        let table = self
            .sections
            .get(name)
            .ok_or_else(|| invalid(format!("has no [{name}] section")))?;
        table
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| invalid(format!("[{name}]: {}", e.message())))
    }

    /// The file for `role` at `precision`, or an error naming the card.
    pub fn require(&self, role: &str, precision: &str) -> Result<&ModelFile, CardError> {
        self.file(role, precision)
            .ok_or_else(|| CardError::Invalid {
                path: self.dir.join(CARD_FILE),
                message: format!("lists no {precision} file for {role:?}"),
            })
    }

    /// Checks every listed file against its sha256.
    pub fn verify(&self) -> Result<(), CardError> {
        for f in &self.files {
            let path = self.path_of(f);
            let actual = sha256_file(&path).map_err(|source| CardError::Read {
                path: path.clone(),
                source,
            })?;
            if !actual.eq_ignore_ascii_case(&f.sha256) {
                return Err(CardError::Hash {
                    path,
                    expected: f.sha256.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }
}

/// Lower-case hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD: &str = r#"
schema = "tracerd.model-card/1"
name = "toy"
version = "0.1.0"
status = "demonstration weights, not for clinical use"

[[files]]
role = "net"
path = "net.fp32.onnx"
precision = "fp32"
sha256 = "SHA"
input_name = "x"
input_shape = ["batch", 1, 8]
output_name = "y"
output_shape = ["batch", 3]

[preprocessing]
pet_clip_suv = [0.0, 15.0]
"#;

    fn write_card(dir: &Path, payload: &[u8]) {
        std::fs::write(dir.join("net.fp32.onnx"), payload).unwrap();
        let sha = sha256_file(&dir.join("net.fp32.onnx")).unwrap();
        std::fs::write(dir.join(CARD_FILE), CARD.replace("SHA", &sha)).unwrap();
    }

    #[test]
    fn loads_a_card_and_verifies_hashes() {
        let dir = tempfile::tempdir().unwrap();
        write_card(dir.path(), b"model bytes");
        let card = ModelCard::load(dir.path()).unwrap();
        assert_eq!(card.name, "toy");
        let f = card.file("net", "fp32").unwrap();
        assert_eq!(
            f.input_shape,
            vec![Dim::Named("batch".into()), Dim::Fixed(1), Dim::Fixed(8)]
        );
        assert!(card.sections.contains_key("preprocessing"));
        card.verify().unwrap();
        std::fs::write(dir.path().join("net.fp32.onnx"), b"tampered").unwrap();
        let err = card.verify().unwrap_err().to_string();
        assert!(err.contains("net.fp32.onnx: sha256 is"), "{err}");
    }

    #[test]
    fn rejects_other_schemas_and_escaping_paths() {
        let dir = tempfile::tempdir().unwrap();
        write_card(dir.path(), b"x");
        let text = std::fs::read_to_string(dir.path().join(CARD_FILE)).unwrap();
        std::fs::write(
            dir.path().join(CARD_FILE),
            text.replace("model-card/1", "model-card/9"),
        )
        .unwrap();
        assert!(
            ModelCard::load(dir.path())
                .unwrap_err()
                .to_string()
                .contains("schema")
        );
        std::fs::write(
            dir.path().join(CARD_FILE),
            text.replace("net.fp32.onnx", "../x.onnx"),
        )
        .unwrap();
        assert!(
            ModelCard::load(dir.path())
                .unwrap_err()
                .to_string()
                .contains("inside the model folder")
        );
    }

    #[test]
    fn sha256_of_a_known_string() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
