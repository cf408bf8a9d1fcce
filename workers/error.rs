//! One table of error kinds. The same kind string appears in logs, dead-letter headers and
//! result statuses, so users and machines read the same precise reason.

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
}

impl ErrorKind {
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
        }
    }

    /// Worth another attempt later: the same input may succeed once the fault clears.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Unavailable)
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
