//! The directory store: blobs as files `<dir>/<aa>/<bb>/<sha256>`. Hosts share it through a
//! shared mount; without one, use the S3 store.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{checked_key, digest_of, io, verified, BlobError, BlobStore, HashingWriter};

/// Copy buffer: large enough that a 2 GB file is a few thousand reads.
const PIECE: usize = 1 << 20;

/// Blobs written to a temporary name and renamed into place, so a crash never leaves a
/// half-written blob under its final name.
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

    /// Move a finished temporary file to the blob path of `digest`.
    fn place(&self, tmp: &Path, digest: &str) -> Result<(), BlobError> {
        let path = self.path(digest);
        let parent = path.parent().expect("blob path has a parent");
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        // Renaming over an identical blob is harmless: same name, same content.
        std::fs::rename(tmp, &path).map_err(io(&path))
    }
}

impl BlobStore for FileStore {
    fn put(&self, sha256: &str, bytes: &[u8]) -> Result<String, BlobError> {
        let key = checked_key(sha256, bytes)?;
        if self.path(sha256).exists() {
            return Ok(key);
        }
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let (tmp, mut file) = tempfile_in(&self.dir)?;
        let written = file.write_all(bytes).and_then(|_| file.sync_all()).map_err(io(&tmp));
        if let Err(e) = written.and_then(|()| self.place(&tmp, sha256)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(key)
    }

    fn put_file(&self, source: &Path) -> Result<(String, u64), BlobError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let mut input = std::fs::File::open(source).map_err(io(source))?;
        let (tmp, file) = tempfile_in(&self.dir)?;
        let copied = (|| {
            let mut writer = std::io::BufWriter::with_capacity(PIECE, file);
            let mut hasher = Sha256::new();
            let mut buffer = vec![0u8; PIECE];
            let mut size = 0u64;
            loop {
                let n = match input.read(&mut buffer) {
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
        let placed = copied.and_then(|(digest, size)| self.place(&tmp, &digest).map(|()| (digest, size)));
        if placed.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        placed
    }

    fn read_into(&self, key: &str, out: &mut dyn Write) -> Result<u64, BlobError> {
        let digest = digest_of(key)?;
        let path = self.path(digest);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BlobError::NotFound { key: key.to_owned() }),
            Err(e) => return Err(BlobError::Io { path, source: e }),
        };
        let mut hashing = HashingWriter::new(out);
        std::io::copy(&mut std::io::BufReader::with_capacity(PIECE, file), &mut hashing).map_err(io(&path))?;
        hashing.finish(key, digest)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
        // One allocation of the right size, then one hash: the stages' common read.
        let digest = digest_of(key)?;
        let path = self.path(digest);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BlobError::NotFound { key: key.to_owned() }),
            Err(e) => return Err(BlobError::Io { path, source: e }),
        };
        verified(key, digest, bytes)
    }

    fn has(&self, key: &str) -> Result<bool, BlobError> {
        Ok(self.path(digest_of(key)?).is_file())
    }

    fn check(&self) -> Result<(), BlobError> {
        match std::fs::metadata(&self.dir) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(BlobError::Io { path: self.dir.clone(), source: std::io::Error::other("not a directory") }),
            Err(e) => Err(BlobError::Io { path: self.dir.clone(), source: e }),
        }
    }
}

fn tempfile_in(dir: &Path) -> Result<(PathBuf, std::fs::File), BlobError> {
    let path = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    let file = std::fs::File::create(&path).map_err(io(&path))?;
    Ok((path, file))
}

#[cfg(test)]
mod tests {
    use super::super::{key_for, sha256_hex};
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
        let mut streamed = Vec::new();
        assert_eq!(store.read_into(&key, &mut streamed).unwrap(), bytes.len() as u64);
        assert_eq!(streamed, bytes);
        assert!(store.has(&key).unwrap());

        let path = store.path(&sha);
        std::fs::write(&path, b"exhibit 8").unwrap();
        assert!(matches!(store.get(&key), Err(BlobError::Mismatch { .. })));
        assert!(matches!(store.read_into(&key, &mut Vec::new()), Err(BlobError::Mismatch { .. })));
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
        assert!(matches!(store.has("sha256:../../etc/passwd"), Err(BlobError::BadKey(_))));
        assert!(matches!(store.get(&key_for(&wrong)), Err(BlobError::NotFound { .. })));
        assert!(store.check().is_ok());
        assert!(FileStore::new(dir.path().join("absent")).check().is_err());
    }
}
