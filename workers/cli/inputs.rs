//! Walking the user's files and folders. Anything that cannot be read is reported, never
//! skipped silently.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A regular file found under the given paths.
#[derive(Debug, Clone)]
pub struct Input {
    pub path: PathBuf,
    pub size: u64,
}

/// A path we could not take, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unreadable {
    pub path: PathBuf,
    pub reason: String,
}

/// Regular files under `paths`, sorted; symbolic links are reported, not followed.
pub fn walk(paths: &[PathBuf]) -> (Vec<Input>, Vec<Unreadable>) {
    let mut inputs = Vec::new();
    let mut unreadable = Vec::new();
    for root in paths {
        for entry in walkdir::WalkDir::new(root).follow_links(false).sort_by_file_name() {
            match entry {
                Ok(entry) if entry.file_type().is_file() => match entry.metadata() {
                    Ok(meta) => inputs.push(Input { path: entry.into_path(), size: meta.len() }),
                    Err(e) => unreadable.push(Unreadable { path: entry.into_path(), reason: e.to_string() }),
                },
                Ok(entry) if entry.file_type().is_symlink() => unreadable.push(Unreadable {
                    path: entry.into_path(),
                    reason: "symbolic link: not followed (submit its target instead)".into(),
                }),
                Ok(entry) if entry.file_type().is_dir() => {}
                Ok(entry) => unreadable
                    .push(Unreadable { path: entry.into_path(), reason: "not a regular file (device, socket or pipe)".into() }),
                Err(e) => unreadable.push(Unreadable {
                    path: e.path().map(Path::to_path_buf).unwrap_or_else(|| root.clone()),
                    reason: e.to_string(),
                }),
            }
        }
    }
    (inputs, unreadable)
}

/// SHA-256 and length of a file, streamed.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

pub fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}
