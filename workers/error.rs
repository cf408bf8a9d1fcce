//! One table of error kinds. The same kind string appears in logs, dead-letter headers and
//! result statuses, so users and machines read the same precise reason.
//!
//! Pattern to copy: one enum is the only place a kind's name is spelled; `as_str`, parsing
//! (`--kind` flags) and serde all agree, and a test ties them together. Other crates keep their
//! own narrower error enums (e.g. `docpipe_models::extract::ExtractErrorKind`) and map into this
//! table at the boundary.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Stable error kinds. Never rename one: case systems match on these strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The input is damaged or is not what it claims to be.
    Corrupt,
    /// A format or feature docpipe does not handle (yet); nothing was guessed.
    Unsupported,
    /// Password protection or encryption.
    Encrypted,
    /// Nothing readable in it: a blank page, a picture without text.
    Empty,
    /// Over a configured limit (size, pages, members, ratio).
    TooLarge,
    /// The stage ran past its time limit.
    Timeout,
    /// Content does not match its sha256: storage corruption or tampering.
    Integrity,
    /// A model is missing, refused or failed.
    Model,
    /// A transient fault (storage, network); retried with backoff.
    Unavailable,
    /// The stage panicked. Treated as a bug, not retried.
    Panic,
    /// The job was delivered as often as the queue allows without finishing: workers crashed,
    /// were killed (out of memory?) or lost their connection while on it.
    WorkerCrash,
    /// The message itself could not be read (bad JSON, unknown schema version).
    BadMessage,
    /// Transient retries ran out.
    RetriesExhausted,
    /// A fault inside docpipe that fits no other kind.
    Internal,
    /// The OCR traineddata a page needs (its script, or the job's `ocr_languages`) is not
    /// installed; the reason names the Debian package.
    MissingLanguage,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::Corrupt,
        ErrorKind::Unsupported,
        ErrorKind::Encrypted,
        ErrorKind::Empty,
        ErrorKind::TooLarge,
        ErrorKind::Timeout,
        ErrorKind::Integrity,
        ErrorKind::Model,
        ErrorKind::Unavailable,
        ErrorKind::Panic,
        ErrorKind::WorkerCrash,
        ErrorKind::BadMessage,
        ErrorKind::RetriesExhausted,
        ErrorKind::Internal,
        ErrorKind::MissingLanguage,
    ];

    /// The kind's stable name, as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Encrypted => "encrypted",
            ErrorKind::Empty => "empty",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Integrity => "integrity",
            ErrorKind::Model => "model",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Panic => "panic",
            ErrorKind::WorkerCrash => "worker_crash",
            ErrorKind::BadMessage => "bad_message",
            ErrorKind::RetriesExhausted => "retries_exhausted",
            ErrorKind::Internal => "internal",
            ErrorKind::MissingLanguage => "missing_language",
        }
    }

    /// Worth another attempt later: the same input may succeed once the fault clears.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Unavailable)
    }
}

impl std::str::FromStr for ErrorKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown error kind `{s}` (kinds: {})", names.join(", "))
        })
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a stage reports when it cannot produce its output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize, JsonSchema)]
#[error("{kind}: {reason}")]
pub struct StageError {
    pub kind: ErrorKind,
    /// Human-readable reason. Never contains document text.
    pub reason: String,
}

impl StageError {
    pub fn new(kind: ErrorKind, reason: impl Into<String>) -> Self {
        Self { kind, reason: reason.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL` lists every variant: adding a kind without listing it fails to compile here.
    #[test]
    fn all_lists_every_kind_once() {
        for (i, kind) in ErrorKind::ALL.into_iter().enumerate() {
            let position = match kind {
                ErrorKind::Corrupt => 0,
                ErrorKind::Unsupported => 1,
                ErrorKind::Encrypted => 2,
                ErrorKind::Empty => 3,
                ErrorKind::TooLarge => 4,
                ErrorKind::Timeout => 5,
                ErrorKind::Integrity => 6,
                ErrorKind::Model => 7,
                ErrorKind::Unavailable => 8,
                ErrorKind::Panic => 9,
                ErrorKind::WorkerCrash => 10,
                ErrorKind::BadMessage => 11,
                ErrorKind::RetriesExhausted => 12,
                ErrorKind::Internal => 13,
                ErrorKind::MissingLanguage => 14,
            };
            assert_eq!(position, i, "{kind:?} is out of place in ErrorKind::ALL");
        }
    }

    #[test]
    fn as_str_is_the_serde_name_and_parses_back() {
        for kind in ErrorKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), serde_json::Value::String(kind.as_str().into()));
            assert_eq!(serde_json::from_value::<ErrorKind>(kind.as_str().into()).unwrap(), kind);
            assert_eq!(kind.as_str().parse::<ErrorKind>().unwrap(), kind);
        }
        assert!("malformed".parse::<ErrorKind>().unwrap_err().contains("bad_message"));
    }
}
