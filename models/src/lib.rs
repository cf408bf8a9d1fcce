//! Synchronous engines for docpipe. Nothing here knows about queues or async runtimes:
//! the service wraps these in stages that run on threads owning their engines.

pub mod ocr;
#[cfg(feature = "eval")]
pub mod eval;
pub mod extract;
pub mod faithful;
pub mod langid;
pub mod llm;
pub mod mt;
pub mod rouge;
pub mod script;
pub mod segment;
pub mod sniff;
pub mod spm;
pub mod summarize;
pub mod text;
pub mod threads;
pub mod translation_check;

/// sha256 of a file, read in a stream (model weights run to gigabytes).
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    sha256_file_sized(path).map(|(sha256, _)| sha256)
}

/// sha256 and length of a file, read in a stream: the one file hash of docpipe (model weights,
/// registry manifests, the embedded mode's inputs).
pub fn sha256_file_sized(path: &std::path::Path) -> std::io::Result<(String, u64)> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher)?;
    Ok((hex::encode(hasher.finalize()), size))
}

/// sha256 of bytes already in memory, as [`sha256_file`] gives it for a file (weights read once,
/// hashed and loaded from the same buffer).
pub fn sha256_bytes(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
