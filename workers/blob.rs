//! Claim-check blob store, addressed by SHA-256. Every read re-hashes: a mismatch is an
//! `Integrity` error, never silently different bytes.
//!
//! Pattern to copy: content addressing (the key is the digest, so a key names exactly one
//! content), writes to a temporary file renamed into place (a crash never leaves half a blob under
//! its final name), and verification on every read rather than trust in whoever wrote it.

use std::io::Write;
use std::path::{Path, PathBuf};

use docpipe_models::extract::ChildBytes;
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
    /// Store a child document's bytes whose digest is `sha256`, from memory or from the file they
    /// were spilled to. A store that can stream a file overrides this.
    fn put_child(&self, sha256: &str, bytes: &ChildBytes) -> Result<String, BlobError> {
        let data = bytes.read().map_err(|source| BlobError::Io { path: bytes.path().map(Path::to_owned).unwrap_or_default(), source })?;
        self.put(sha256, &data)
    }
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

    /// Whether a blob is stored under `key` (not checked: reads check).
    pub fn has(&self, key: &str) -> bool {
        digest_of(key).is_ok_and(|digest| self.path(digest).is_file())
    }

    /// Copy the file at `source` into the store, hashing the bytes as they are written: the
    /// digest names exactly what was stored, even if the file changes meanwhile. One buffer at a
    /// time, so a 2 GB file never sits in memory. Returns the digest and size.
    pub fn put_file(&self, source: &Path) -> Result<(String, u64), BlobError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let mut input = std::fs::File::open(source).map_err(io(source))?;
        let (tmp, file) = tempfile_in(&self.dir)?;
        let copied = (|| {
            let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
            let mut hasher = Sha256::new();
            let mut buffer = vec![0u8; 1 << 20];
            let mut size = 0u64;
            loop {
                let n = match std::io::Read::read(&mut input, &mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(BlobError::Io { path: source.to_owned(), source: e }),
                };
                hasher.update(&buffer[..n]);
                writer.write_all(&buffer[..n]).map_err(io(&tmp))?;
                size += n as u64;
            }
            let file = writer.into_inner().map_err(|e| BlobError::Io { path: tmp.clone(), source: e.into_error() })?;
            file.sync_all().map_err(io(&tmp))?;
            Ok((hex::encode(hasher.finalize()), size))
        })();
        let placed = copied.and_then(|(digest, size)| {
            let path = self.path(&digest);
            let parent = path.parent().expect("blob path has a parent");
            std::fs::create_dir_all(parent).map_err(io(parent))?;
            // Renaming over an identical blob is harmless: same name, same content.
            std::fs::rename(&tmp, &path).map_err(io(&path))?;
            Ok((digest, size))
        });
        if placed.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        placed
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
        let written = tmp.1.write_all(bytes).and_then(|_| tmp.1.sync_all()).map_err(io(&tmp.0));
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp.0, &path).map_err(io(&path))) {
            let _ = std::fs::remove_file(&tmp.0);
            return Err(e);
        }
        Ok(key)
    }

    fn put_child(&self, sha256: &str, bytes: &ChildBytes) -> Result<String, BlobError> {
        let Some(path) = bytes.path() else { return self.put(sha256, &bytes.read().expect("bytes in memory")) };
        let (digest, _) = self.put_file(path)?;
        if digest != sha256 {
            return Err(BlobError::Mismatch { key: key_for(sha256), actual: digest });
        }
        Ok(key_for(sha256))
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
    fn files_are_copied_in_hashed_on_the_way_and_leave_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("exhibit.bin");
        // Over one copy buffer, so the hash spans several reads.
        let bytes: Vec<u8> = (0..(3 << 20) + 17).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&source, &bytes).unwrap();
        let store = FileStore::new(dir.path().join("blobs"));
        let (sha, size) = store.put_file(&source).unwrap();
        assert_eq!((sha.as_str(), size), (sha256_hex(&bytes).as_str(), bytes.len() as u64));
        assert_eq!(store.get(&key_for(&sha)).unwrap(), bytes);
        assert_eq!(store.put_file(&source).unwrap().0, sha);
        assert!(store.put_file(&dir.path().join("missing")).is_err());
        let leftovers = std::fs::read_dir(dir.path().join("blobs")).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".tmp")).count();
        assert_eq!(leftovers, 0);
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
