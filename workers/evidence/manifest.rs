//! The batch manifest: every job of a batch with its input sha256 and its result's hash, a
//! Merkle root over them (RFC 6962's tree hash, as Certificate Transparency uses), signed. It
//! proves no result was added, dropped or changed after the batch was collected.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::canonical::{canonical, parse_strict};
use super::keys::{Signer, TrustedKeys};
use super::signature::{check_value, digest_of_value, sign_value};
use super::EvidenceError;
use crate::schema::Signature;

/// `format` of the manifests this docpipe writes.
pub const FORMAT: &str = "docpipe.manifest.v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub case_id: String,
    pub batch_id: String,
    pub created_at: DateTime<Utc>,
    /// Whether every document of the batch, children included, had a result when this was written.
    pub complete: bool,
    /// One entry per job, sorted by job id.
    pub documents: Vec<Entry>,
    /// Lowercase hex RFC 6962 Merkle tree hash (sha256) whose leaves are the entries' RFC 8785
    /// canonical JSON, in the order above.
    pub merkle_root: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub job_id: String,
    /// sha256 of the document the job read.
    pub input_sha256: String,
    /// The result's digest: sha256 of its RFC 8785 canonical JSON without its signature (what the
    /// signature signs).
    pub result_sha256: String,
}

impl Entry {
    /// The entry for a result about to be written, whose digest is known.
    pub fn of_result(result: &crate::schema::JobResult, digest: &[u8; 32]) -> Self {
        Self { job_id: result.job_id.to_string(), input_sha256: result.document.sha256.clone(), result_sha256: hex::encode(digest) }
    }

    /// The entry for one result (parsed from its JSON text); `None` when it lacks a job id or
    /// document hash.
    pub fn of(result: &Value) -> Option<Self> {
        Some(Self {
            job_id: result.get("job_id")?.as_str()?.to_owned(),
            input_sha256: result.get("document")?.get("sha256")?.as_str()?.to_owned(),
            result_sha256: hex::encode(digest_of_value(result)),
        })
    }
}

impl Manifest {
    /// The manifest of `entries`, signed when `signer` is given. A job that appears twice keeps
    /// its last entry, as the results store keeps the last result of a resubmitted job.
    pub fn build(
        case_id: &str,
        batch_id: &str,
        complete: bool,
        entries: impl IntoIterator<Item = Entry>,
        signer: Option<&Signer>,
    ) -> Self {
        let by_job: std::collections::BTreeMap<String, Entry> = entries.into_iter().map(|e| (e.job_id.clone(), e)).collect();
        let documents: Vec<Entry> = by_job.into_values().collect();
        let mut manifest = Self {
            format: FORMAT.to_owned(),
            case_id: case_id.to_owned(),
            batch_id: batch_id.to_owned(),
            created_at: Utc::now(),
            complete,
            merkle_root: hex::encode(root_of(&documents)),
            documents,
            signature: None,
        };
        if let Some(signer) = signer {
            // No floats in a manifest, so the value built from the struct is the one its text parses to.
            let value = serde_json::to_value(&manifest).expect("manifest serializes");
            manifest.signature = Some(sign_value(&value, signer));
        }
        manifest
    }

    /// Write as pretty JSON (what is signed is the canonical form, so the layout is free).
    pub fn write(&self, path: &Path) -> Result<(), EvidenceError> {
        let text = serde_json::to_string_pretty(self).expect("manifest serializes") + "\n";
        std::fs::write(path, text).map_err(|source| EvidenceError::File { path: path.to_owned(), source })
    }
}

/// The entries of a JSON-lines results file, read a line at a time (batches of OCR'd scans make
/// files of hundreds of megabytes). With `trusted`, only results whose signature checks against
/// it are listed: a collector signs for what it verified, and `verify` then names the others as
/// not in the manifest. Returns the entries and how many results were left out.
pub fn entries_of_file(path: &Path, trusted: Option<&TrustedKeys>) -> Result<(Vec<Entry>, usize), EvidenceError> {
    use std::io::BufRead;
    let io = |source| EvidenceError::File { path: path.to_owned(), source };
    let file = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
    let (mut entries, mut left_out) = (Vec::new(), 0);
    for line in file.split(b'\n') {
        let line = line.map_err(io)?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value = std::str::from_utf8(&line).ok().and_then(|text| parse_strict(text).ok());
        match value {
            Some(value) if trusted.is_none_or(|t| check_value(&value, t).is_valid()) => match Entry::of(&value) {
                Some(entry) => entries.push(entry),
                None => left_out += 1,
            },
            _ => left_out += 1,
        }
    }
    Ok((entries, left_out))
}

/// Write the signed manifest of the results file `results` beside it (`X.manifest.json`);
/// returns its path and how many results were left out of it (see `entries_of_file`).
pub fn write_beside(
    results: &Path,
    case_id: &str,
    batch_id: &str,
    complete: bool,
    signer: Option<&Signer>,
    trusted: Option<&TrustedKeys>,
) -> Result<(PathBuf, usize), EvidenceError> {
    let (entries, left_out) = entries_of_file(results, trusted)?;
    let manifest = Manifest::build(case_id, batch_id, complete, entries, signer);
    let path = path_beside(results);
    manifest.write(&path)?;
    Ok((path, left_out))
}

/// The manifest beside a results file: `X.jsonl` → `X.manifest.json`.
pub fn path_beside(results: &Path) -> PathBuf {
    let stem = results.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    results.with_file_name(format!("{stem}.manifest.json"))
}

/// The Merkle root of the entries.
pub fn root_of(entries: &[Entry]) -> [u8; 32] {
    let leaves: Vec<[u8; 32]> = entries
        .iter()
        .map(|e| leaf_hash(&canonical(&serde_json::to_value(e).expect("entry serializes"))))
        .collect();
    tree_hash(&leaves)
}

fn leaf_hash(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// RFC 6962 section 2.1: MTH of n leaves splits at the largest power of two below n.
fn tree_hash(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            let mut h = Sha256::new();
            h.update([1u8]);
            h.update(tree_hash(&leaves[..k]));
            h.update(tree_hash(&leaves[k..]));
            h.finalize().into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(l: [u8; 32], r: [u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([1u8]);
        h.update(l);
        h.update(r);
        h.finalize().into()
    }

    #[test]
    fn tree_hash_follows_rfc_6962() {
        // The empty tree and the hash of one empty leaf, as Certificate Transparency's tests have them.
        assert_eq!(hex::encode(tree_hash(&[])), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(hex::encode(leaf_hash(b"")), "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
        let l: Vec<[u8; 32]> = (0u8..5).map(|i| leaf_hash(&[i])).collect();
        // Five leaves split 4 + 1; three split 2 + 1.
        assert_eq!(tree_hash(&l), node(node(node(l[0], l[1]), node(l[2], l[3])), l[4]));
        assert_eq!(tree_hash(&l[..3]), node(node(l[0], l[1]), l[2]));
    }

    #[test]
    fn manifest_lists_each_job_once_in_job_order() {
        let results: Vec<Value> = ["b", "a", "b"]
            .iter()
            .enumerate()
            .map(|(i, id)| serde_json::json!({"job_id": id, "document": {"sha256": format!("{i}")}}))
            .collect();
        let m = Manifest::build("c", "x", true, results.iter().filter_map(Entry::of), None);
        let ids: Vec<&str> = m.documents.iter().map(|e| e.job_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(m.documents[1].input_sha256, "2", "the last result of a job is kept");
        assert_eq!(m.merkle_root, hex::encode(root_of(&m.documents)));
    }
}
