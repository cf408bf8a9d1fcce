//! Claim-check blob store, addressed by SHA-256. Every read re-hashes: a mismatch is an
//! `Integrity` error, never silently different bytes.
//!
//! Pattern to copy: content addressing (the key is the digest, so a key names exactly one
//! content), writes that appear whole or not at all (a crash never leaves half a blob under its
//! final name), and verification on every read rather than trust in whoever wrote it. Two stores
//! keep that contract: a directory ([`FileStore`]) and an S3-compatible bucket ([`S3Store`]),
//! chosen by `[blobs] kind`.

mod file;
mod s3;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use docpipe_models::extract::ChildBytes;
use sha2::{Digest, Sha256};

pub use file::FileStore;
pub use s3::S3Store;

use crate::config::{BlobConfig, BlobKind};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {key} not found")]
    NotFound { key: String },
    #[error("blob {key} fails its hash check: content hashes to {actual}")]
    Mismatch { key: String, actual: String },
    #[error("blob key {0:?} is not of the form sha256:<64 hex digits>")]
    BadKey(String),
    #[error("blob store I/O on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The remote store refused or could not be reached (network, credentials, server error).
    #[error("blob store {store}: {message}")]
    Remote { store: String, message: String },
    /// The store's settings cannot work (missing bucket or credentials, plain HTTP not allowed).
    #[error("blobs: {0}")]
    Config(String),
}

/// Storage for document bytes.
pub trait BlobStore: Send + Sync {
    /// Store `bytes` whose digest is `sha256`; returns the key. Storing twice is harmless.
    fn put(&self, sha256: &str, bytes: &[u8]) -> Result<String, BlobError>;

    /// Copy the file at `source` in, hashing the bytes as they are stored: the digest names
    /// exactly what was stored, even if the file changes meanwhile. A piece at a time, so a 2 GB
    /// file never sits in memory. Returns the digest and size.
    fn put_file(&self, source: &Path) -> Result<(String, u64), BlobError>;

    /// Write the bytes for `key` to `out` as they arrive, and check them against the key's
    /// digest at the end. Until this returns `Ok`, what `out` received is unverified. Returns
    /// the size.
    fn read_into(&self, key: &str, out: &mut dyn Write) -> Result<u64, BlobError>;

    /// Whether a blob is stored under `key` (not checked: reads check).
    fn has(&self, key: &str) -> Result<bool, BlobError>;

    /// Whether the store can be reached and read (readiness checks).
    fn check(&self) -> Result<(), BlobError>;

    /// Read the bytes for `key`, checked against the key's digest.
    fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
        let mut bytes = Vec::new();
        self.read_into(key, &mut bytes)?;
        Ok(bytes)
    }

    /// Store a child document's bytes whose digest is `sha256`, from memory or from the file they
    /// were spilled to.
    fn put_child(&self, sha256: &str, bytes: &ChildBytes) -> Result<String, BlobError> {
        let Some(path) = bytes.path() else {
            let data = bytes.read().map_err(|source| BlobError::Io { path: PathBuf::new(), source })?;
            return self.put(sha256, &data);
        };
        let (digest, _) = self.put_file(path)?;
        if digest != sha256 {
            return Err(BlobError::Mismatch { key: key_for(sha256), actual: digest });
        }
        Ok(key_for(sha256))
    }
}

/// The store `[blobs]` names.
pub fn open(config: &BlobConfig) -> Result<Arc<dyn BlobStore>, BlobError> {
    Ok(match config.kind {
        BlobKind::Dir => Arc::new(FileStore::new(config.dir.clone())),
        BlobKind::S3 => Arc::new(S3Store::new(&config.s3)?),
    })
}

/// SHA-256 of a child document's bytes, read in 1 MiB pieces if they were spilled to a file.
pub fn child_sha256(bytes: &ChildBytes) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut bytes.reader()?, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn key_for(sha256: &str) -> String {
    format!("sha256:{sha256}")
}

/// The digest a key names, if the key is well formed (lower-case hex only, so one content has
/// one key and one path).
fn digest_of(key: &str) -> Result<&str, BlobError> {
    match key.strip_prefix("sha256:") {
        Some(d) if d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) => Ok(d),
        _ => Err(BlobError::BadKey(key.to_owned())),
    }
}

/// `bytes` if they hash to `digest`, else a mismatch naming `key`.
fn verified(key: &str, digest: &str, bytes: Vec<u8>) -> Result<Vec<u8>, BlobError> {
    let actual = sha256_hex(&bytes);
    if actual != digest {
        return Err(BlobError::Mismatch { key: key.to_owned(), actual });
    }
    Ok(bytes)
}

/// `sha256` checked to be a well-formed digest of `bytes`; returns the key.
fn checked_key(sha256: &str, bytes: &[u8]) -> Result<String, BlobError> {
    let key = key_for(sha256);
    digest_of(&key)?;
    let actual = sha256_hex(bytes);
    if actual != sha256 {
        return Err(BlobError::Mismatch { key, actual });
    }
    Ok(key)
}

/// Hashes what passes through on its way to `out`, so a streamed read is checked without a
/// second pass.
struct HashingWriter<'a> {
    out: &'a mut dyn Write,
    hasher: Sha256,
    size: u64,
}

impl<'a> HashingWriter<'a> {
    fn new(out: &'a mut dyn Write) -> Self {
        Self { out, hasher: Sha256::new(), size: 0 }
    }

    /// The size, if what passed through hashes to `digest`.
    fn finish(self, key: &str, digest: &str) -> Result<u64, BlobError> {
        let actual = hex::encode(self.hasher.finalize());
        if actual != digest {
            return Err(BlobError::Mismatch { key: key.to_owned(), actual });
        }
        Ok(self.size)
    }
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// An I/O error on `path`, as a blob error naming it.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io { path: path.to_owned(), source }
}
