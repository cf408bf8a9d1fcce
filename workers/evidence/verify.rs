//! Checking a batch offline: every result's signature, the manifest's signature and Merkle root,
//! that the results and the manifest list the same jobs with the same hashes, and optionally that
//! the original files still have the hashes the results record.

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::canonical::parse_strict;
use super::keys::TrustedKeys;
use super::manifest::{root_of, Entry, Manifest, FORMAT};
use super::signature::{check_value, SignatureCheck};

/// Why one document does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The line is not a result.
    Unreadable(String),
    Signature(SignatureCheck),
    /// A result for a job the manifest does not list.
    NotInManifest,
    /// The result's hash is not the one the manifest records.
    DiffersFromManifest,
    /// A second result for the same job.
    Duplicate,
    /// A claim-check stub (annotations left in the blob store): not the full result.
    Stub,
    /// The original file at the recorded name has other content.
    OriginalDiffers { path: PathBuf, sha256: String },
    /// No file among the originals has the recorded sha256.
    OriginalMissing,
    /// A child document whose parent's result does not list it with this sha256.
    NotListedByParent,
    /// A result of another case or batch than the manifest's.
    OtherBatch,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Unreadable(why) => write!(f, "not a result: {why}"),
            Problem::Signature(check) => write!(f, "{check}"),
            Problem::NotInManifest => write!(f, "not in the manifest: added after the batch was collected"),
            Problem::DiffersFromManifest => write!(f, "result hash differs from the manifest: changed after the batch was collected"),
            Problem::Duplicate => write!(f, "a second result for the same job"),
            Problem::Stub => write!(f, "claim-check stub without its annotations: verify the full result (`docpipe results` writes it)"),
            Problem::OriginalDiffers { path, sha256 } => {
                write!(f, "original {} has sha256 {}, not the one recorded: swapped or altered", path.display(), &sha256[..16])
            }
            Problem::OriginalMissing => write!(f, "no original file with the recorded sha256"),
            Problem::NotListedByParent => write!(f, "its parent's result does not list this child with this sha256"),
            Problem::OtherBatch => write!(f, "of another case or batch than the manifest's"),
        }
    }
}

/// The verdict on one result line.
#[derive(Debug, Clone)]
pub struct DocumentVerdict {
    /// 1-based line in the results file.
    pub line: usize,
    pub job_id: Option<String>,
    /// The document's name as recorded (a path, or a member path for a child).
    pub name: String,
    pub signature: SignatureCheck,
    /// What else was checked and held (for the report).
    pub checked: Vec<&'static str>,
    pub problems: Vec<Problem>,
}

impl DocumentVerdict {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct ManifestVerdict {
    pub signature: SignatureCheck,
    pub entries: usize,
    pub complete: bool,
    pub case_id: String,
    pub batch_id: String,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub documents: Vec<DocumentVerdict>,
    pub manifest: Option<ManifestVerdict>,
    /// Manifest entries no result answers: dropped results.
    pub missing: Vec<Entry>,
    /// What fails the whole set: no results, no manifest where one is required.
    pub problems: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
            && self.documents.iter().all(DocumentVerdict::ok)
            && self.missing.is_empty()
            && self.manifest.as_ref().is_none_or(|m| m.problems.is_empty())
    }
}

/// What to verify against.
pub struct Inputs<'a> {
    /// The results file's lines.
    pub results: &'a str,
    /// The manifest's text, if there is one.
    pub manifest: Option<&'a str>,
    pub trusted: &'a TrustedKeys,
    /// Directory of the original files, if they are to be checked.
    pub originals: Option<&'a Path>,
    /// Accept results without a manifest (then additions and removals cannot be checked).
    pub without_manifest: bool,
    /// Accept a manifest written before its batch was complete.
    pub incomplete: bool,
}

pub fn verify(inputs: Inputs<'_>) -> Report {
    let mut problems = Vec::new();
    let manifest = inputs.manifest.map(|text| check_manifest(text, inputs.trusted, inputs.incomplete));
    if manifest.is_none() && !inputs.without_manifest {
        problems.push("no manifest: without it a dropped or added result cannot be detected (give --manifest, or --no-manifest to check signatures only)".to_owned());
    }
    let case_batch = manifest.as_ref().and_then(|(v, m)| m.as_ref().map(|_| (v.case_id.clone(), v.batch_id.clone())));
    let listed: HashMap<String, Entry> = manifest
        .as_ref()
        .and_then(|(_, m)| m.as_ref())
        .map(|m| m.documents.iter().map(|e| (e.job_id.clone(), e.clone())).collect())
        .unwrap_or_default();
    let mut originals = inputs.originals.map(Originals::new);

    let mut parsed: Vec<(usize, Value)> = Vec::new();
    let mut documents = Vec::new();
    for (i, line) in inputs.results.split('\n').enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_strict(line) {
            Ok(value) if value.is_object() => parsed.push((i + 1, value)),
            Ok(_) => documents.push(unreadable(i + 1, "not a JSON object".into())),
            Err(e) => documents.push(unreadable(i + 1, e.to_string())),
        }
    }
    // What each parent result says its children are.
    let mut listed_children: HashMap<String, HashSet<String>> = HashMap::new();
    for (_, value) in &parsed {
        for child in value.get("children").and_then(Value::as_array).into_iter().flatten() {
            if let (Some(id), Some(sha)) = (child.get("job_id").and_then(Value::as_str), child.get("sha256").and_then(Value::as_str)) {
                listed_children.entry(id.to_owned()).or_default().insert(sha.to_owned());
            }
        }
    }

    let mut seen: HashSet<String> = HashSet::new();
    for (line, value) in &parsed {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let job_id = text(value.get("job_id"));
        let document = value.get("document");
        let sha256 = text(document.and_then(|d| d.get("sha256"))).unwrap_or_default();
        let parent = value.get("parent").filter(|p| !p.is_null());
        let name = match parent {
            Some(p) => text(p.get("path")).unwrap_or_default(),
            None => text(document.and_then(|d| d.get("filename"))).unwrap_or_default(),
        };
        let signature = check_value(value, inputs.trusted);
        let mut verdict = DocumentVerdict { line: *line, job_id: job_id.clone(), name, signature: signature.clone(), checked: Vec::new(), problems: Vec::new() };
        if signature.is_valid() {
            verdict.checked.push("signature");
        } else {
            verdict.problems.push(Problem::Signature(signature));
        }
        if value.get("annotations_blob").is_some_and(|b| !b.is_null()) {
            verdict.problems.push(Problem::Stub);
        }
        if let Some((case_id, batch_id)) = &case_batch {
            let of = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or_default();
            if of("case_id") != case_id || of("batch_id") != batch_id {
                verdict.problems.push(Problem::OtherBatch);
            }
        }
        if let Some(id) = &job_id {
            if !seen.insert(id.clone()) {
                verdict.problems.push(Problem::Duplicate);
            }
            if manifest.is_some() {
                match listed.get(id) {
                    None => verdict.problems.push(Problem::NotInManifest),
                    Some(entry) if Entry::of(value).as_ref() != Some(entry) => verdict.problems.push(Problem::DiffersFromManifest),
                    Some(_) => verdict.checked.push("manifest"),
                }
            }
            if parent.is_some() {
                match listed_children.get(id) {
                    Some(shas) if shas.contains(&sha256) => verdict.checked.push("listed by parent"),
                    _ => verdict.problems.push(Problem::NotListedByParent),
                }
            }
        } else {
            verdict.problems.push(Problem::Unreadable("no job_id".into()));
        }
        if let (Some(originals), None) = (originals.as_mut(), parent) {
            match originals.check(&verdict.name, &sha256) {
                Ok(()) => verdict.checked.push("original"),
                Err(problem) => verdict.problems.push(problem),
            }
        }
        documents.push(verdict);
    }
    documents.sort_by_key(|d| d.line);

    let mut missing: Vec<Entry> = listed.into_values().filter(|e| !seen.contains(&e.job_id)).collect();
    missing.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    if documents.is_empty() {
        problems.push("no results to verify".to_owned());
    }
    Report { documents, manifest: manifest.map(|(verdict, _)| verdict), missing, problems }
}

fn unreadable(line: usize, why: String) -> DocumentVerdict {
    DocumentVerdict {
        line,
        job_id: None,
        name: String::new(),
        signature: SignatureCheck::Unsigned,
        checked: Vec::new(),
        problems: vec![Problem::Unreadable(why)],
    }
}

/// Check the manifest's own signature, format, entries and Merkle root.
fn check_manifest(text: &str, trusted: &TrustedKeys, incomplete: bool) -> (ManifestVerdict, Option<Manifest>) {
    let mut verdict = ManifestVerdict {
        signature: SignatureCheck::Unsigned,
        entries: 0,
        complete: false,
        case_id: String::new(),
        batch_id: String::new(),
        problems: Vec::new(),
    };
    let value: Value = match parse_strict(text) {
        Ok(v) => v,
        Err(e) => {
            verdict.problems.push(format!("manifest is not JSON (RFC 8785 needs I-JSON): {e}"));
            return (verdict, None);
        }
    };
    verdict.signature = check_value(&value, trusted);
    if !verdict.signature.is_valid() {
        verdict.problems.push(format!("manifest: {}", verdict.signature));
    }
    let manifest: Manifest = match serde_json::from_value(value) {
        Ok(m) => m,
        Err(e) => {
            verdict.problems.push(format!("manifest is not a docpipe manifest: {e}"));
            return (verdict, None);
        }
    };
    if manifest.format != FORMAT {
        verdict.problems.push(format!("manifest format `{}` (this docpipe reads `{FORMAT}`)", manifest.format));
    }
    if !manifest.documents.windows(2).all(|w| w[0].job_id < w[1].job_id) {
        verdict.problems.push("manifest: entries are not in strictly increasing job id order (a job listed twice?)".into());
    }
    if hex::encode(root_of(&manifest.documents)) != manifest.merkle_root {
        verdict.problems.push("manifest: the Merkle root does not match its entries".into());
    }
    if !manifest.complete && !incomplete {
        verdict.problems.push("manifest: written before the batch was complete (a later one lists more; --allow-incomplete accepts it)".into());
    }
    verdict.entries = manifest.documents.len();
    verdict.complete = manifest.complete;
    verdict.case_id = manifest.case_id.clone();
    verdict.batch_id = manifest.batch_id.clone();
    (verdict, Some(manifest))
}

/// The original files, found by recorded name first, by content hash otherwise.
struct Originals {
    dir: PathBuf,
    /// sha256 → a file with it, built the first time a name does not lead to the file.
    by_hash: Option<HashMap<String, PathBuf>>,
}

impl Originals {
    fn new(dir: &Path) -> Self {
        Self { dir: dir.to_owned(), by_hash: None }
    }

    fn check(&mut self, name: &str, sha256: &str) -> Result<(), Problem> {
        for candidate in self.candidates(name) {
            if candidate.is_file() {
                let found = docpipe_models::sha256_file(&candidate).map_err(|e| Problem::Unreadable(format!("{}: {e}", candidate.display())))?;
                return if found == sha256 { Ok(()) } else { Err(Problem::OriginalDiffers { path: candidate, sha256: found }) };
            }
        }
        let dir = self.dir.clone();
        let index = self.by_hash.get_or_insert_with(|| index(&dir));
        if index.contains_key(sha256) {
            Ok(())
        } else {
            Err(Problem::OriginalMissing)
        }
    }

    /// The recorded name under the originals directory (only its plain components: a name
    /// in a results file never reaches outside the directory), then its file name alone.
    fn candidates(&self, name: &str) -> Vec<PathBuf> {
        let plain: PathBuf = Path::new(name)
            .components()
            .filter_map(|c| match c {
                Component::Normal(part) => Some(part),
                _ => None,
            })
            .collect();
        let mut out = Vec::new();
        // The name as given to `process` often starts with the directory the originals are
        // in: try dropping leading components one by one.
        let parts: Vec<_> = plain.components().collect();
        for skip in 0..parts.len() {
            out.push(self.dir.join(parts[skip..].iter().collect::<PathBuf>()));
        }
        out
    }
}

fn index(dir: &Path) -> HashMap<String, PathBuf> {
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| docpipe_models::sha256_file(e.path()).ok().map(|h| (h, e.path().to_owned())))
        .collect()
}
