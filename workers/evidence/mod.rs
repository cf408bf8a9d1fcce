//! Evidence another authority can check offline: Ed25519-signed results and batch manifests over
//! RFC 8785 canonical JSON, and the verification of both against the trusted public keys and the
//! original files. See README, "Verifying docpipe output".

pub mod canonical;
pub mod jcs_serializer;
pub mod keys;
pub mod manifest;
pub mod signature;
pub mod verify;

use std::path::PathBuf;

pub use keys::{Signer, TrustedKeys};
pub use signature::{check_result, check_value, sign_result, SignatureCheck};

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("{path}: {source}")]
    KeyFile { path: PathBuf, source: std::io::Error },
    #[error("signing key {path} is readable by group or others (mode {mode:o}); chmod 600 it")]
    KeyExposed { path: PathBuf, mode: u32 },
    #[error("{path}: {what}")]
    BadKey { path: PathBuf, what: &'static str },
    #[error("no random numbers from the operating system: {0}")]
    Random(String),
    #[error("encoding a key: {0}")]
    Encode(String),
    #[error("{path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
}

/// The signer the configuration names (`[signing] key_file`), if any.
pub fn signer_from(config: &crate::config::Config) -> Result<Option<Signer>, EvidenceError> {
    match config.signing.key_file.as_deref() {
        // An empty setting is a mistake, not a choice to sign nothing.
        Some(path) if path.as_os_str().is_empty() => {
            Err(EvidenceError::BadKey { path: path.to_owned(), what: "signing.key_file is empty (unset it to sign nothing)" })
        }
        Some(path) => Signer::load(path).map(Some),
        None => Ok(None),
    }
}

/// Keys a reader of results trusts by configuration: `[signing] trusted_keys`, and the
/// configured signing key's own public key.
pub fn trusted_from(config: &crate::config::Config) -> Result<TrustedKeys, EvidenceError> {
    trusted_with(config, signer_from(config)?.as_ref())
}

/// The same, for a caller that has loaded the signing key already.
pub fn trusted_with(config: &crate::config::Config, signer: Option<&Signer>) -> Result<TrustedKeys, EvidenceError> {
    let mut trusted = TrustedKeys::load(&config.signing.trusted_keys)?;
    if let Some(signer) = signer {
        trusted.add(signer.public());
    }
    Ok(trusted)
}
