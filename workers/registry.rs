//! Installed model directories, each with a manifest of file hashes, so a model is always known
//! by its weights' sha256 and a changed or damaged file is refused, not used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}: no weights file (model.safetensors, pytorch_model.bin or *.gguf)")]
    NoWeights(PathBuf),
    #[error("weights of {name} hash to {actual}, expected {expected}")]
    WrongHash { name: String, actual: String, expected: String },
    #[error("model {0} is not installed")]
    Missing(String),
    #[error("model {name}: {detail}")]
    Damaged { name: String, detail: String },
    #[error("{0}: unsupported archive (use a directory, .tar, .tar.gz/.tgz or .zip)")]
    Archive(PathBuf),
    #[error("model name {0:?} must be letters, digits, '-', '_' or '.'")]
    BadName(String),
}

/// What kind of network a model directory holds, and so which loader reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Marian (OPUS-MT) encoder-decoder, Hugging Face layout.
    Marian,
    /// T5, flan-t5 or mT5, Hugging Face layout.
    T5,
    /// A GGUF instruction model (Qwen2, Llama).
    Gguf,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Marian => "marian",
            ModelKind::T5 => "t5",
            ModelKind::Gguf => "gguf",
        }
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `install` records next to the files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub kind: ModelKind,
    /// The weights file and its sha256: the identity provenance records.
    pub weights: String,
    pub weights_sha256: String,
    /// Every file (relative path) and its sha256.
    pub files: BTreeMap<String, String>,
    pub source: String,
    pub installed_at: chrono::DateTime<chrono::Utc>,
}

const MANIFEST: &str = "docpipe-manifest.json";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io { path: path.to_owned(), source }
}

fn sha256_file(path: &Path) -> Result<String, RegistryError> {
    docpipe_models::sha256_file(path).map_err(io(path))
}

fn files_under(root: &Path) -> Result<BTreeMap<String, String>, RegistryError> {
    let mut files = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).follow_links(false).sort_by_file_name() {
        let entry = entry.map_err(|e| RegistryError::Io { path: root.to_owned(), source: e.into() })?;
        if !entry.file_type().is_file() || entry.file_name() == MANIFEST {
            continue;
        }
        let relative = entry.path().strip_prefix(root).expect("under root").to_string_lossy().into_owned();
        files.insert(relative, sha256_file(entry.path())?);
    }
    Ok(files)
}

fn weights_of(files: &BTreeMap<String, String>) -> Option<&String> {
    let preferred = ["model.safetensors", "pytorch_model.bin"];
    preferred.iter().find_map(|p| files.keys().find(|f| f == p)).or_else(|| files.keys().find(|f| f.ends_with(".gguf")))
}

pub struct ModelRegistry {
    dir: PathBuf,
}

impl ModelRegistry {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Copy a model directory or unpack an archive under `name`, hash every file, and refuse it
    /// if `expected_sha256` is given and the weights differ. Nothing is left behind on failure.
    pub fn install(&self, source: &Path, name: &str, kind: ModelKind, expected_sha256: Option<&str>) -> Result<Manifest, RegistryError> {
        self.install_as(source, name, kind, expected_sha256, &source.display().to_string())
    }

    /// As `install`, recording `origin` as where the model came from.
    pub fn install_as(&self, source: &Path, name: &str, kind: ModelKind, expected_sha256: Option<&str>, origin: &str) -> Result<Manifest, RegistryError> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) || name.starts_with('.') {
            return Err(RegistryError::BadName(name.to_owned()));
        }
        let staging = self.dir.join(format!(".installing-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        let result = self.stage(source, &staging, name, kind, expected_sha256, origin);
        match result {
            Ok(manifest) => {
                let target = self.dir.join(name);
                let _ = std::fs::remove_dir_all(&target);
                std::fs::rename(&staging, &target).map_err(io(&target))?;
                Ok(manifest)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                Err(e)
            }
        }
    }

    fn stage(&self, source: &Path, staging: &Path, name: &str, kind: ModelKind, expected: Option<&str>, origin: &str) -> Result<Manifest, RegistryError> {
        let meta = std::fs::metadata(source).map_err(io(source))?;
        if meta.is_dir() {
            copy_dir(source, staging)?;
        } else {
            unpack(source, staging)?;
        }
        // An archive holding one top-level folder: the model is that folder.
        let root = single_subdir(staging).unwrap_or_else(|| staging.to_owned());
        let files = files_under(&root)?;
        let weights = weights_of(&files).ok_or_else(|| RegistryError::NoWeights(source.to_owned()))?.clone();
        let weights_sha256 = files[&weights].clone();
        if let Some(expected) = expected {
            if !weights_sha256.eq_ignore_ascii_case(expected) {
                return Err(RegistryError::WrongHash { name: name.to_owned(), actual: weights_sha256, expected: expected.to_owned() });
            }
        }
        if root != staging {
            // Flatten: move the folder's contents up.
            for entry in std::fs::read_dir(&root).map_err(io(&root))? {
                let entry = entry.map_err(io(&root))?;
                std::fs::rename(entry.path(), staging.join(entry.file_name())).map_err(io(staging))?;
            }
            std::fs::remove_dir(&root).map_err(io(&root))?;
        }
        let manifest = Manifest {
            name: name.to_owned(),
            kind,
            weights,
            weights_sha256,
            files,
            source: origin.to_owned(),
            installed_at: chrono::Utc::now(),
        };
        let path = staging.join(MANIFEST);
        std::fs::write(&path, serde_json::to_vec_pretty(&manifest).expect("manifest serializes")).map_err(io(&path))?;
        Ok(manifest)
    }

    /// Installed models, by name.
    pub fn list(&self) -> Result<Vec<Manifest>, RegistryError> {
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Ok(found) };
        for entry in entries.flatten() {
            let path = entry.path().join(MANIFEST);
            if let Ok(bytes) = std::fs::read(&path) {
                if let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes) {
                    found.push(manifest);
                }
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// Re-hash an installed model; every missing, changed or unexpected file is an error.
    pub fn verify(&self, name: &str) -> Result<Manifest, RegistryError> {
        let root = self.dir.join(name);
        let path = root.join(MANIFEST);
        let bytes = std::fs::read(&path).map_err(|_| RegistryError::Missing(name.to_owned()))?;
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Damaged { name: name.to_owned(), detail: format!("manifest: {e}") })?;
        let actual = files_under(&root)?;
        let mut problems = Vec::new();
        for (file, sha) in &manifest.files {
            match actual.get(file) {
                None => problems.push(format!("{file} is missing")),
                Some(a) if a != sha => problems.push(format!("{file} changed (sha256 {a}, installed as {sha})")),
                _ => {}
            }
        }
        problems.extend(actual.keys().filter(|f| !manifest.files.contains_key(*f)).map(|f| format!("{f} was added after install")));
        if problems.is_empty() {
            Ok(manifest)
        } else {
            Err(RegistryError::Damaged { name: name.to_owned(), detail: problems.join("; ") })
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), RegistryError> {
    for entry in walkdir::WalkDir::new(from).follow_links(false) {
        let entry = entry.map_err(|e| RegistryError::Io { path: from.to_owned(), source: e.into() })?;
        let relative = entry.path().strip_prefix(from).expect("under source");
        let target = to.join(relative);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).map_err(io(&target))?;
        } else if entry.file_type().is_file() {
            std::fs::copy(entry.path(), &target).map_err(io(&target))?;
        }
    }
    Ok(())
}

fn unpack(archive: &Path, to: &Path) -> Result<(), RegistryError> {
    let name = archive.to_string_lossy().to_ascii_lowercase();
    let file = std::fs::File::open(archive).map_err(io(archive))?;
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        tar::Archive::new(flate2::read::GzDecoder::new(file)).unpack(to).map_err(io(archive))
    } else if name.ends_with(".tar") {
        tar::Archive::new(file).unpack(to).map_err(io(archive))
    } else if name.ends_with(".zip") {
        let mut zip = zip::ZipArchive::new(file).map_err(|e| RegistryError::Io { path: archive.to_owned(), source: e.into() })?;
        // `extract` refuses members that would land outside the target.
        zip.extract(to).map_err(|e| RegistryError::Io { path: archive.to_owned(), source: e.into() })
    } else {
        Err(RegistryError::Archive(archive.to_owned()))
    }
}

fn single_subdir(dir: &Path) -> Option<PathBuf> {
    let entries: Vec<_> = std::fs::read_dir(dir).ok()?.flatten().collect();
    match entries.as_slice() {
        [only] if only.file_type().ok()?.is_dir() => Some(only.path()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::ModelKind;

    #[test]
    fn model_kind_names_agree_across_serde_clap_and_display() {
        use clap::ValueEnum;
        for kind in ModelKind::value_variants() {
            assert_eq!(serde_json::to_value(kind).unwrap(), serde_json::Value::String(kind.as_str().into()));
            assert_eq!(kind.to_possible_value().unwrap().get_name(), kind.as_str());
        }
        assert!(serde_json::from_value::<ModelKind>("mariann".into()).is_err());
    }
}
