//! Ed25519 signing keys: generated here, kept as standard PEM files (PKCS#8 private key,
//! SubjectPublicKeyInfo public key) that OpenSSL and every crypto library read, and named by a
//! key id that is the sha256 of the raw public key.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::EvidenceError;

/// File names `docpipe keys generate` writes.
pub const PRIVATE_FILE: &str = "signing.key";
pub const PUBLIC_FILE: &str = "signing.pub";

/// The key id: lowercase hex sha256 of the 32-byte public key.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A private key and its id.
pub struct Signer {
    key: SigningKey,
    id: String,
}

impl std::fmt::Debug for Signer {
    // Never print the key, whatever derives Debug around it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("key_id", &self.id).finish_non_exhaustive()
    }
}

impl Signer {
    pub fn new(key: SigningKey) -> Self {
        let id = key_id(&key.verifying_key());
        Self { key, id }
    }

    /// Read a PKCS#8 PEM private key, refusing a file that group or others can read.
    pub fn load(path: &Path) -> Result<Self, EvidenceError> {
        let io = |source| EvidenceError::KeyFile { path: path.to_owned(), source };
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(EvidenceError::KeyExposed { path: path.to_owned(), mode: mode & 0o777 });
        }
        let pem = std::fs::read_to_string(path).map_err(io)?;
        // The parser's message says nothing of the key bytes; keep it that way by not quoting it.
        let key = SigningKey::from_pkcs8_pem(&pem)
            .map_err(|_| EvidenceError::BadKey { path: path.to_owned(), what: "not a PKCS#8 PEM Ed25519 private key" })?;
        Ok(Self::new(key))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn public(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub fn sign(&self, message: &[u8]) -> ed25519_dalek::Signature {
        use ed25519_dalek::Signer as _;
        self.key.sign(message)
    }
}

/// Generate a key pair in `dir`: `signing.key` (mode 0600, never overwritten) and `signing.pub`.
pub fn generate(dir: &Path) -> Result<(String, PathBuf, PathBuf), EvidenceError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| EvidenceError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    std::fs::create_dir_all(dir).map_err(|source| EvidenceError::KeyFile { path: dir.to_owned(), source })?;
    let private_path = dir.join(PRIVATE_FILE);
    let public_path = dir.join(PUBLIC_FILE);
    let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| EvidenceError::Encode(e.to_string()))?;
    let public = key.verifying_key().to_public_key_pem(LineEnding::LF).map_err(|e| EvidenceError::Encode(e.to_string()))?;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| EvidenceError::KeyFile { path, source }
    };
    // create_new, both files: an existing key is someone's evidence trail; never replace it, nor
    // the public key that goes with it.
    let create = |path: &Path, mode: u32, text: &str| -> Result<(), EvidenceError> {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(io(path))?;
        let written = file.write_all(text.as_bytes()).and_then(|()| file.sync_all());
        if let Err(e) = written {
            // A half-written key would block the next attempt and sign nothing.
            let _ = std::fs::remove_file(path);
            return Err(io(path)(e));
        }
        Ok(())
    };
    if public_path.exists() {
        return Err(io(&public_path)(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "already exists")));
    }
    create(&private_path, 0o600, &pem)?;
    if let Err(e) = create(&public_path, 0o644, &public) {
        let _ = std::fs::remove_file(&private_path);
        return Err(e);
    }
    Ok((key_id(&key.verifying_key()), private_path, public_path))
}

/// Public keys a verifier accepts, by key id. Several at once: keys are rotated, and results
/// signed with the old key stay valid.
#[derive(Debug, Default, Clone)]
pub struct TrustedKeys {
    keys: BTreeMap<String, VerifyingKey>,
}

impl TrustedKeys {
    /// Read SPKI PEM public keys from files, and from every `*.pub` file of directories.
    pub fn load(paths: &[PathBuf]) -> Result<Self, EvidenceError> {
        let mut trusted = Self::default();
        for path in paths {
            if path.is_dir() {
                let entries = std::fs::read_dir(path).map_err(|source| EvidenceError::KeyFile { path: path.clone(), source })?;
                let mut files: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "pub"))
                    .collect();
                files.sort();
                for file in files {
                    trusted.add_file(&file)?;
                }
            } else {
                trusted.add_file(path)?;
            }
        }
        Ok(trusted)
    }

    fn add_file(&mut self, path: &Path) -> Result<(), EvidenceError> {
        let pem = std::fs::read_to_string(path).map_err(|source| EvidenceError::KeyFile { path: path.to_owned(), source })?;
        let key = VerifyingKey::from_public_key_pem(&pem)
            .map_err(|_| EvidenceError::BadKey { path: path.to_owned(), what: "not an SPKI PEM Ed25519 public key" })?;
        self.add(key);
        Ok(())
    }

    pub fn add(&mut self, key: VerifyingKey) {
        self.keys.insert(key_id(&key), key);
    }

    pub fn get(&self, id: &str) -> Option<&VerifyingKey> {
        self.keys.get(id)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_loads_and_world_readable_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (id, private, public) = generate(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&private).unwrap().permissions().mode() & 0o777, 0o600);
        let signer = Signer::load(&private).unwrap();
        assert_eq!(signer.id(), id);
        let trusted = TrustedKeys::load(&[dir.path().to_owned()]).unwrap();
        assert!(trusted.get(&id).is_some());
        assert_eq!(TrustedKeys::load(&[public]).unwrap().ids().collect::<Vec<_>>(), [id.as_str()]);
        // Debug output names the key id and nothing else.
        assert!(!format!("{signer:?}").contains("key:"));

        // Never overwritten.
        assert!(matches!(generate(dir.path()), Err(EvidenceError::KeyFile { .. })));

        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Signer::load(&private).unwrap_err();
        assert!(matches!(err, EvidenceError::KeyExposed { mode: 0o644, .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
