//! Signing and checking JSON objects (results, manifests). The object's digest is the sha256 of
//! its RFC 8785 canonical form without its `signature` member; the signature is Ed25519
//! (RFC 8032) over that digest, carried in the `signature` member. The object can be
//! re-serialized, stored and reloaded; the signature still holds. The same digest is what a batch
//! manifest records for a result, so one canonical form per result serves both.

use base64::Engine as _;
use ed25519_dalek::Verifier as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::canonical::canonical_without;
use super::jcs_serializer::to_canonical;
use super::keys::{Signer, TrustedKeys};
use crate::schema::{JobResult, Signature};

/// The `scheme` docpipe writes: Ed25519 over the SHA-256 digest of the RFC 8785 (JCS) form.
pub const SCHEME: &str = "ed25519-sha256-jcs";

/// The member that holds the signature and is left out of what is signed.
const MEMBER: &str = "signature";

/// What checking one object's signature found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureCheck {
    Valid { key_id: String },
    /// No `signature` member.
    Unsigned,
    /// Signed by a key the verifier does not trust (or does not have).
    UnknownKey { key_id: String },
    /// The signature does not match the content: changed after signing.
    Mismatch { key_id: String },
    /// The `signature` member is not a docpipe signature.
    Malformed(String),
}

impl SignatureCheck {
    pub fn is_valid(&self) -> bool {
        matches!(self, SignatureCheck::Valid { .. })
    }

    /// Short stable name, for tables and the review page.
    pub fn as_str(&self) -> &'static str {
        match self {
            SignatureCheck::Valid { .. } => "valid",
            SignatureCheck::Unsigned => "unsigned",
            SignatureCheck::UnknownKey { .. } => "unknown_key",
            SignatureCheck::Mismatch { .. } => "mismatch",
            SignatureCheck::Malformed(_) => "malformed",
        }
    }
}

impl std::fmt::Display for SignatureCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignatureCheck::Valid { key_id } => write!(f, "signature valid (key {})", short(key_id)),
            SignatureCheck::Unsigned => write!(f, "not signed"),
            SignatureCheck::UnknownKey { key_id } => write!(f, "signed by an untrusted or unknown key {}", short(key_id)),
            SignatureCheck::Mismatch { key_id } => {
                write!(f, "signature does not match the content: changed after signing (key {})", short(key_id))
            }
            SignatureCheck::Malformed(why) => write!(f, "signature unreadable: {why}"),
        }
    }
}

/// The first 16 hex digits of a key id, as people read it.
pub fn short(key_id: &str) -> &str {
    // By characters: a key id read from a file being checked need not be hex.
    key_id.char_indices().nth(16).map_or(key_id, |(i, _)| &key_id[..i])
}

/// Sign a JSON object (its `signature` member, if any, is not part of what is signed).
pub fn sign_value(value: &Value, signer: &Signer) -> Signature {
    signature_over(&digest_of_value(value), signer)
}

/// Sign a result in place; returns its digest. The signature covers everything in it: document
/// sha256, stage reports, every annotation with its provenance and model weights hashes, children.
pub fn sign_result(result: &mut JobResult, signer: &Signer) -> [u8; 32] {
    result.signature = None;
    let digest = digest_of_result(result);
    result.signature = Some(signature_over(&digest, signer));
    digest
}

/// The digest of a result: sha256 of its canonical form without its signature.
pub fn digest_of_result(result: &mut JobResult) -> [u8; 32] {
    let signature = result.signature.take();
    let digest = Sha256::digest(to_canonical(&*result).expect("a result serializes")).into();
    result.signature = signature;
    digest
}

/// The digest of a JSON object parsed from its text (what a verifier has).
pub fn digest_of_value(value: &Value) -> [u8; 32] {
    Sha256::digest(canonical_without(value, Some(MEMBER))).into()
}

fn signature_over(digest: &[u8; 32], signer: &Signer) -> Signature {
    Signature {
        scheme: SCHEME.to_owned(),
        key_id: signer.id().to_owned(),
        value: base64::engine::general_purpose::STANDARD.encode(signer.sign(digest).to_bytes()),
    }
}

/// Check the signature a JSON object carries against `trusted`.
pub fn check_value(value: &Value, trusted: &TrustedKeys) -> SignatureCheck {
    let Some(member) = value.get(MEMBER) else { return SignatureCheck::Unsigned };
    match serde_json::from_value::<Signature>(member.clone()) {
        Ok(signature) => check(&signature, &digest_of_value(value), trusted),
        Err(e) => SignatureCheck::Malformed(e.to_string()),
    }
}

/// Check a result the store handed back, as a verifier would check its JSON text.
pub fn check_result(result: &JobResult, trusted: &TrustedKeys) -> SignatureCheck {
    let Some(signature) = &result.signature else { return SignatureCheck::Unsigned };
    let mut unsigned = result.clone();
    check(signature, &digest_of_result(&mut unsigned), trusted)
}

fn check(signature: &Signature, digest: &[u8; 32], trusted: &TrustedKeys) -> SignatureCheck {
    if signature.scheme != SCHEME {
        return SignatureCheck::Malformed(format!("scheme `{}` (this docpipe checks `{SCHEME}`)", signature.scheme));
    }
    if signature.key_id.len() != 64 || !signature.key_id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return SignatureCheck::Malformed("key_id is not 64 lowercase hex digits".into());
    }
    let bytes = match base64::engine::general_purpose::STANDARD.decode(&signature.value) {
        Ok(b) => b,
        Err(_) => return SignatureCheck::Malformed("value is not base64".into()),
    };
    let Ok(raw) = <[u8; 64]>::try_from(bytes.as_slice()) else {
        return SignatureCheck::Malformed(format!("value is {} bytes, not 64", bytes.len()));
    };
    let Some(key) = trusted.get(&signature.key_id) else {
        return SignatureCheck::UnknownKey { key_id: signature.key_id.clone() };
    };
    match key.verify(digest, &ed25519_dalek::Signature::from_bytes(&raw)) {
        Ok(()) => SignatureCheck::Valid { key_id: signature.key_id.clone() },
        Err(_) => SignatureCheck::Mismatch { key_id: signature.key_id.clone() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new(ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]))
    }

    #[test]
    fn signature_survives_reordering_and_catches_one_changed_character() {
        let signer = signer();
        let mut trusted = TrustedKeys::default();
        trusted.add(signer.public());
        let mut value: Value = serde_json::from_str(r#"{"b":"译文 text","a":[1,0.93]}"#).unwrap();
        let signature = sign_value(&value, &signer);
        value["signature"] = serde_json::to_value(&signature).unwrap();
        assert!(check_value(&value, &trusted).is_valid());

        // Re-serialized with other member order and number spelling: still valid.
        let respelled: Value =
            serde_json::from_str(&format!(r#"{{"signature":{},"a":[1.0,9.3e-1],"b":"译文 text"}}"#, value["signature"])).unwrap();
        assert!(check_value(&respelled, &trusted).is_valid());

        let mut changed = value.clone();
        changed["b"] = Value::String("译文 test".into());
        assert_eq!(check_value(&changed, &trusted), SignatureCheck::Mismatch { key_id: signer.id().into() });

        assert_eq!(check_value(&value, &TrustedKeys::default()), SignatureCheck::UnknownKey { key_id: signer.id().into() });
        let mut unsigned = value.clone();
        unsigned.as_object_mut().unwrap().remove("signature");
        assert_eq!(check_value(&unsigned, &trusted), SignatureCheck::Unsigned);
    }
}
