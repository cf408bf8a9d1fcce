//! Synchronous engines for docpipe. Nothing here knows about queues or async runtimes:
//! the service wraps these in stages that run on threads owning their engines.

pub mod ocr;
pub mod extract;
pub mod faithful;
pub mod langid;
pub mod llm;
pub mod mt;
pub mod rouge;
pub mod segment;
pub mod sniff;
pub mod spm;
pub mod summarize;
pub mod text;

/// sha256 of a file, read in a stream (model weights run to gigabytes).
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}
