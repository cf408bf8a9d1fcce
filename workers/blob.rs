//! Claim-check blob store, addressed by SHA-256. Every read re-hashes: a mismatch is an
//! `Integrity` error, never silently different bytes.
//!
//! Pattern to copy: content addressing (the key is the digest, so a key names exactly one
//! content), writes to a temporary file renamed into place (a crash never leaves half a blob under
//! its final name), and verification on every read rather than trust in whoever wrote it.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

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
}

/// Storage for document bytes. The file store below is the only one today; an S3-compatible
/// store implements the same two calls.
pub trait BlobStore: Send + Sync {
    /// Store `bytes` whose digest is `sha256`; returns the key. Storing twice is harmless.
    fn put(&self, sha256: &str, bytes: &[u8]) -> Result<String, BlobError>;
    /// Read the bytes for `key`, checked against the key's digest.
    fn get(&self, key: &str) -> Result<Vec<u8>, BlobError>;
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn key_for(sha256: &str) -> String {
    format!("sha256:{sha256}")
}

/// `bytes` if they hash to `digest`, else a mismatch naming `key`.
fn verified(key: &str, digest: &str, bytes: Vec<u8>) -> Result<Vec<u8>, BlobError> {
    let actual = sha256_hex(&bytes);
    if actual != digest {
        return Err(BlobError::Mismatch { key: key.to_owned(), actual });
    }
    Ok(bytes)
}

fn digest_of(key: &str) -> Result<&str, BlobError> {
    match key.strip_prefix("sha256:") {
        Some(d) if d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) => Ok(d),
        _ => Err(BlobError::BadKey(key.to_owned())),
    }
}

/// Blobs as files `<dir>/<aa>/<bb>/<sha256>`, written to a temporary name and renamed into place
/// so a crash never leaves a half-written blob under its final name.
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(&digest[..2]).join(&digest[2..4]).join(digest)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io { path: path.to_owned(), source }
}

impl BlobStore for FileStore {
    fn put(&self, sha256: &str, bytes: &[u8]) -> Result<String, BlobError> {
        let key = key_for(sha256);
        let digest = digest_of(&key)?;
        let actual = sha256_hex(bytes);
        if actual != digest {
            return Err(BlobError::Mismatch { key, actual });
        }
        let path = self.path(digest);
        if path.exists() {
            return Ok(key);
        }
        let parent = path.parent().expect("blob path has a parent");
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let mut tmp = tempfile_in(parent)?;
        tmp.1.write_all(bytes).and_then(|_| tmp.1.sync_all()).map_err(io(&tmp.0))?;
        std::fs::rename(&tmp.0, &path).map_err(io(&path))?;
        Ok(key)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
        let digest = digest_of(key)?;
        let path = self.path(digest);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound { key: key.to_owned() })
            }
            Err(e) => return Err(BlobError::Io { path, source: e }),
        };
        verified(key, digest, bytes)
    }

}

fn tempfile_in(dir: &Path) -> Result<(PathBuf, std::fs::File), BlobError> {
    let path = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    let file = std::fs::File::create(&path).map_err(io(&path))?;
    Ok((path, file))
}

/// Files on local disk, known by digest: what `docpipe process` reads from without copying
/// anything into a store. Reads verify the digest like any other store.
#[derive(Default)]
pub struct LocalFiles {
    paths: std::sync::RwLock<std::collections::HashMap<String, PathBuf>>,
    /// Child documents (archive members, attachments) held until processed, with how many
    /// pending children share the bytes (identical attachments share one entry).
    memory: std::sync::RwLock<std::collections::HashMap<String, (usize, Vec<u8>)>>,
}

impl LocalFiles {
    pub fn add(&self, sha256: &str, path: PathBuf) -> String {
        let key = key_for(sha256);
        self.paths.write().expect("lock").insert(key.clone(), path);
        key
    }

    pub fn add_bytes(&self, sha256: &str, bytes: Vec<u8>) -> String {
        let key = key_for(sha256);
        self.memory.write().expect("lock").entry(key.clone()).or_insert((0, bytes)).0 += 1;
        key
    }

    /// Forget a child once it has been processed (the bytes stay while an identical one waits).
    pub fn forget(&self, key: &str) {
        let mut memory = self.memory.write().expect("lock");
        if let Some(entry) = memory.get_mut(key) {
            entry.0 -= 1;
            if entry.0 == 0 {
                memory.remove(key);
            }
        }
    }
}

impl BlobStore for LocalFiles {
    fn put(&self, _sha256: &str, _bytes: &[u8]) -> Result<String, BlobError> {
        Err(BlobError::Io {
            path: PathBuf::new(),
            source: std::io::Error::new(std::io::ErrorKind::Unsupported, "local file view is read-only"),
        })
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
        let digest = digest_of(key)?;
        if let Some((_, bytes)) = self.memory.read().expect("lock").get(key) {
            return Ok(bytes.clone());
        }
        let path = self.paths.read().expect("lock").get(key).cloned();
        let path = path.ok_or_else(|| BlobError::NotFound { key: key.to_owned() })?;
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        verified(key, digest, bytes)
    }

}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let bytes = b"exhibit 7";
        let sha = sha256_hex(bytes);
        let key = store.put(&sha, bytes).unwrap();
        assert_eq!(store.put(&sha, bytes).unwrap(), key);
        assert_eq!(store.get(&key).unwrap(), bytes);

        let path = store.path(&sha);
        std::fs::write(&path, b"exhibit 8").unwrap();
        assert!(matches!(store.get(&key), Err(BlobError::Mismatch { .. })));
    }

    #[test]
    fn refuses_wrong_digest_and_bad_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let wrong = sha256_hex(b"other");
        assert!(matches!(store.put(&wrong, b"this"), Err(BlobError::Mismatch { .. })));
        assert!(matches!(store.get("sha256:../../etc/passwd"), Err(BlobError::BadKey(_))));
        assert!(matches!(store.get(&key_for(&wrong)), Err(BlobError::NotFound { .. })));
    }
}
