//! The results store: every result kept once per idempotency key, indexed for search in every
//! script. One small trait, two implementations: SQLite (embedded default, a file under the data
//! directory) and PostgreSQL (selected in pipeline.toml). Both index the same terms, made here,
//! so a query finds the same documents in either.

mod postgres;
mod sql;
mod sqlite;
pub mod terms;

use std::sync::Arc;

use serde::Deserialize;

use crate::schema::{AnnotationBody, Faithfulness, JobResult, JobStatus, TextSegment, TranslationStatus};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("stored result {key} does not parse: {source}")]
    Stored { key: String, source: serde_json::Error },
    #[error("store task: {0}")]
    Task(String),
    #[error("store.password_file {path}: {source}")]
    Secret { path: std::path::PathBuf, source: std::io::Error },
}

/// `[store]` in pipeline.toml. Absent means the SQLite default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite` (a file, nothing to run) or `postgres`.
    pub kind: StoreKind,
    /// The SQLite database file.
    pub sqlite_path: std::path::PathBuf,
    /// PostgreSQL connection string without the password (e.g.
    /// `host=127.0.0.1 user=docpipe dbname=docpipe`); the password comes from
    /// `DOCPIPE_STORE_PASSWORD` or `password_file`.
    pub postgres: String,
    /// Optional file whose first line is the PostgreSQL password.
    pub password_file: Option<std::path::PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Sqlite,
            sqlite_path: "var/docpipe.sqlite".into(),
            postgres: "host=127.0.0.1 user=postgres dbname=docpipe".into(),
            password_file: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

/// What `ingest` did with a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// First result for its idempotency key.
    Inserted,
    /// Replaced a stored result that was worse (`failed` by `partial` or `complete`, `partial` by
    /// `complete`): a redelivery or a `dlq replay` that went further.
    Replaced,
    /// Kept the stored result, as good or better; nothing changed.
    Kept,
}

/// A search: terms in any script, within the cases a user may see.
#[derive(Debug, Clone, Default)]
pub struct Search {
    pub query: String,
    /// Only these cases (access control); empty finds nothing.
    pub cases: Vec<String>,
    pub batch: Option<String>,
    pub limit: usize,
}

/// One document a search found, with the field and a snippet around the first match.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub key: String,
    pub case_id: String,
    pub batch_id: String,
    pub filename: String,
    pub status: JobStatus,
    pub field: Field,
    pub snippet: Snippet,
}

/// A piece of text around a match: `before`, the matched `hit`, `after` (escaped by whoever
/// shows it, like all document text).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snippet {
    pub before: String,
    pub hit: String,
    pub after: String,
}

/// The parts of a result that are indexed, each searchable on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Original,
    Translation,
    Summary,
    Filename,
    Metadata,
}

impl Field {
    pub const ALL: [Field; 5] = [Field::Original, Field::Translation, Field::Summary, Field::Filename, Field::Metadata];

    pub fn as_str(self) -> &'static str {
        match self {
            Field::Original => "original",
            Field::Translation => "translation",
            Field::Summary => "summary",
            Field::Filename => "filename",
            Field::Metadata => "metadata",
        }
    }

    pub fn parse(s: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// Its place in `ALL` (the SQLite store numbers search rows with it).
    pub fn number(self) -> i64 {
        Field::ALL.iter().position(|f| *f == self).expect("every field is in ALL") as i64
    }
}

/// Documents of a batch by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub complete: u64,
    pub partial: u64,
    pub failed: u64,
    /// Submitted documents with no result yet, when the submitter gave the batch's size
    /// (documents found inside others are not counted against it).
    pub pending: Option<u64>,
}

impl Counts {
    /// From the status counts, the batch size results carry, and how many results are of
    /// submitted (not contained) documents.
    pub fn new(complete: i64, partial: i64, failed: i64, batch_total: Option<i64>, submitted: i64) -> Self {
        Self {
            complete: complete as u64,
            partial: partial as u64,
            failed: failed as u64,
            pending: batch_total.map(|total| total.saturating_sub(submitted).max(0) as u64),
        }
    }
}

/// An analyst and the cases granted to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// Argon2 PHC string.
    pub password_hash: String,
    pub cases: Vec<String>,
}

/// A signed-in browser: found by the sha256 of its cookie token (the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user_name: String,
    /// The token every form of this session must carry back.
    pub csrf: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// What an analyst recorded about a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewState {
    Unreviewed,
    Reviewed,
    NeedsAttention,
    NotRelevant,
}

impl ReviewState {
    pub const ALL: [ReviewState; 4] =
        [ReviewState::Unreviewed, ReviewState::Reviewed, ReviewState::NeedsAttention, ReviewState::NotRelevant];

    pub fn as_str(self) -> &'static str {
        match self {
            ReviewState::Unreviewed => "unreviewed",
            ReviewState::Reviewed => "reviewed",
            ReviewState::NeedsAttention => "needs_attention",
            ReviewState::NotRelevant => "not_relevant",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    pub state: ReviewState,
    pub note: String,
    pub user_name: String,
    pub at: String,
}

/// One line of a document's append-only audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub user_name: String,
    pub at: String,
    pub action: String,
    pub before: Option<String>,
    pub after: String,
}

/// A batch as the case overview shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSummary {
    pub case_id: String,
    pub batch_id: String,
    pub counts: Counts,
    /// Documents with a flag (`stage_error`, `unverified_content`, ...).
    pub attention: u64,
    pub languages: Vec<String>,
}

/// Which documents a list shows.
#[derive(Debug, Clone, Default)]
pub struct DocumentFilter {
    pub case_id: String,
    pub batch_id: Option<String>,
    pub status: Option<JobStatus>,
    /// ISO 639-3.
    pub language: Option<String>,
    pub flag: Option<String>,
    pub review: Option<ReviewState>,
    /// Children of this job only.
    pub parent_job_id: Option<String>,
    pub offset: u64,
    pub limit: u64,
}

/// A document in a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentRow {
    pub key: String,
    pub case_id: String,
    pub batch_id: String,
    pub filename: String,
    pub status: JobStatus,
    pub media_type: Option<String>,
    pub languages: Vec<String>,
    pub flags: Vec<String>,
    pub review: ReviewState,
    pub parent_job_id: Option<String>,
}

/// A stage error of a stored document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StageFailure {
    pub stage: String,
    /// An `ErrorKind` name.
    pub kind: String,
    pub reason: String,
}

/// A document of a batch whose result is `failed` or `partial`, with its stage errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedDocument {
    pub key: String,
    pub filename: String,
    pub status: JobStatus,
    pub errors: Vec<StageFailure>,
}

impl FailedDocument {
    fn parse(key: String, filename: String, status: &str, errors: &str) -> Result<Self, StoreError> {
        let errors = serde_json::from_str(errors).map_err(|source| StoreError::Stored { key: key.clone(), source })?;
        Ok(Self { key, filename, status: parse_status(status), errors })
    }
}

#[async_trait::async_trait]
pub trait ResultStore: Send + Sync {
    /// Keep `result` unless a result as good is already stored under its idempotency key;
    /// committed when this returns.
    async fn ingest(&self, result: &JobResult) -> Result<Ingested, StoreError>;
    /// As `ingest`, for many results at once (one commit where the store can: imports).
    async fn ingest_many(&self, results: &[JobResult]) -> Result<Vec<Ingested>, StoreError> {
        let mut outcomes = Vec::with_capacity(results.len());
        for result in results {
            outcomes.push(self.ingest(result).await?);
        }
        Ok(outcomes)
    }
    /// The stored result for an idempotency key.
    async fn get(&self, key: &str) -> Result<Option<JobResult>, StoreError>;
    /// Documents matching every term of the query, at most `limit`, in the given cases.
    async fn search(&self, search: &Search) -> Result<Vec<Hit>, StoreError>;
    async fn counts(&self, case_id: &str, batch_id: &str) -> Result<Counts, StoreError>;

    /// Batches of the given cases with their counts.
    async fn batches(&self, cases: &[String]) -> Result<Vec<BatchSummary>, StoreError>;
    /// One page of documents and how many match in all.
    async fn documents(&self, filter: &DocumentFilter) -> Result<(Vec<DocumentRow>, u64), StoreError>;
    /// The list row of one document.
    async fn document(&self, key: &str) -> Result<Option<DocumentRow>, StoreError>;

    /// Create or update an analyst; `cases` replaces their grants.
    async fn put_user(&self, name: &str, password_hash: &str, cases: &[String]) -> Result<(), StoreError>;
    async fn user(&self, name: &str) -> Result<Option<User>, StoreError>;
    async fn create_session(&self, token_sha256: &str, session: &Session) -> Result<(), StoreError>;
    async fn session(&self, token_sha256: &str) -> Result<Option<Session>, StoreError>;
    async fn delete_session(&self, token_sha256: &str) -> Result<(), StoreError>;

    /// Record a review and append it, with the state before, to the audit trail (one commit).
    async fn review(&self, key: &str, user_name: &str, state: ReviewState, note: &str) -> Result<(), StoreError>;
    async fn audit(&self, key: &str) -> Result<Vec<AuditEntry>, StoreError>;
    /// Append an act other than a review (e.g. `resubmit`) to a document's audit trail.
    async fn record(&self, key: &str, user_name: &str, action: &str, before: Option<&str>, after: &str) -> Result<(), StoreError>;

    /// Every `failed` and `partial` document of a batch, by file name.
    async fn failures(&self, case_id: &str, batch_id: &str) -> Result<Vec<FailedDocument>, StoreError>;
}

/// The store pipeline.toml names, with its migrations run.
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn ResultStore>, StoreError> {
    Ok(match config.kind {
        StoreKind::Sqlite => Arc::new(SqliteStore::open(&config.sqlite_path)?),
        StoreKind::Postgres => {
            let mut connection = config.postgres.clone();
            if let Some(password) = password(config)? {
                // libpq syntax: single-quoted, backslash-escaped.
                let quoted = password.replace('\\', "\\\\").replace('\'', "\\'");
                connection.push_str(&format!(" password='{quoted}'"));
            }
            Arc::new(PostgresStore::connect(&connection).await?)
        }
    })
}

fn password(config: &StoreConfig) -> Result<Option<String>, StoreError> {
    if let Ok(p) = std::env::var("DOCPIPE_STORE_PASSWORD") {
        return Ok(Some(p));
    }
    match &config.password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| StoreError::Secret { path: path.clone(), source })?;
            Ok(text.lines().next().map(str::to_owned))
        }
        None => Ok(None),
    }
}

/// Better results replace worse ones; equal ones are kept as first stored.
pub fn rank(status: JobStatus) -> i64 {
    match status {
        JobStatus::Failed => 0,
        JobStatus::Partial => 1,
        JobStatus::Complete => 2,
    }
}

pub fn status_str(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Complete => "complete",
        JobStatus::Partial => "partial",
        JobStatus::Failed => "failed",
    }
}

pub fn parse_status(s: &str) -> JobStatus {
    match s {
        "complete" => JobStatus::Complete,
        "partial" => JobStatus::Partial,
        _ => JobStatus::Failed,
    }
}

/// What the store keeps of a result besides its JSON: the texts it indexes and the facts the
/// document list filters on.
pub struct Indexed {
    pub texts: Vec<(Field, String)>,
    /// ISO 639-3 codes, largest share first.
    pub languages: Vec<String>,
    /// Reasons an analyst should look: `stage_error`, `unverified_content`, `unverified_translation`,
    /// `low_ocr_confidence`, `unsupported`.
    pub flags: Vec<&'static str>,
    pub media_type: Option<String>,
    /// The stage errors as a JSON array of [`StageFailure`].
    pub errors: String,
}

/// OCR pages below this mean confidence are flagged for a human look (the OCR engine's own
/// rule, for results written before pages carried its `low_confidence` flag).
const LOW_OCR_CONFIDENCE: f32 = 0.6;

pub fn indexed(result: &JobResult) -> Indexed {
    let mut original = Vec::new();
    let mut translation = Vec::new();
    let mut summary = Vec::new();
    let mut metadata = Vec::new();
    let mut languages = Vec::new();
    let mut flags = Vec::new();
    if result.stages.iter().any(|s| s.error.is_some()) {
        flags.push("stage_error");
    }
    for annotation in &result.annotations {
        match &annotation.body {
            AnnotationBody::Text { segments, metadata: meta, .. } => {
                original.extend(segments.iter().map(|s| s.text.clone()));
                metadata.extend(meta.iter().map(|(k, v)| format!("{k}: {v}")));
                let low = |s: &TextSegment| s.confidence.is_some_and(|c| c < LOW_OCR_CONFIDENCE) || s.ocr.as_ref().is_some_and(|o| o.low_confidence);
                if segments.iter().any(low) {
                    flags.push("low_ocr_confidence");
                }
            }
            AnnotationBody::Languages { document, .. } => {
                languages.extend(document.iter().filter(|l| l.code != "und").map(|l| l.code.clone()));
            }
            AnnotationBody::Translation { segments, .. } => {
                translation.extend(segments.iter().filter_map(|s| s.text.clone()));
                if segments.iter().any(|s| s.status == TranslationStatus::Unsupported) {
                    flags.push("unsupported");
                }
                if segments.iter().any(|s| s.status == TranslationStatus::Unverified) {
                    flags.push("unverified_translation");
                }
            }
            AnnotationBody::Summary { sentences, key_terms, .. } => {
                summary.extend(sentences.iter().map(|s| s.text.clone()));
                summary.extend(key_terms.iter().map(|k| k.term.clone()));
            }
            AnnotationBody::AbstractiveSummary { text, faithfulness, .. } => {
                summary.push(text.clone());
                if *faithfulness == Faithfulness::UnverifiedContent {
                    flags.push("unverified_content");
                }
            }
        }
    }
    flags.sort_unstable();
    flags.dedup();
    let texts = vec![
        (Field::Original, original.join("\n\n")),
        (Field::Translation, translation.join("\n")),
        (Field::Summary, summary.join("\n")),
        (Field::Filename, result.document.filename.clone()),
        (Field::Metadata, metadata.join("\n")),
    ];
    let media_type = result.document.detected_media_type.clone().or_else(|| result.document.declared_media_type.clone());
    let errors: Vec<StageFailure> = result
        .stages
        .iter()
        .filter_map(|s| {
            let e = s.error.as_ref()?;
            Some(StageFailure { stage: s.stage.clone(), kind: e.kind.as_str().to_owned(), reason: e.reason.clone() })
        })
        .collect();
    let errors = serde_json::to_string(&errors).expect("errors serialize");
    Indexed { texts: texts.into_iter().filter(|(_, t)| !t.is_empty()).collect(), languages, flags, media_type, errors }
}

/// Import results from JSON lines files (as `docpipe process --out` and `docpipe results` write
/// them). A result that left its annotations in the blob store (claim check) is read back whole.
pub async fn import(
    store: &dyn ResultStore,
    files: &[std::path::PathBuf],
    blobs: &dyn crate::blob::BlobStore,
) -> anyhow::Result<ImportTally> {
    let mut tally = ImportTally::default();
    let mut pending = Vec::new();
    for path in files {
        // Line by line: a results file of a large batch runs to gigabytes, and only
        // `IMPORT_BATCH` results are held at once.
        let io = |source| StoreError::Io { path: path.clone(), source };
        let reader = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
        for (n, line) in std::io::BufRead::lines(reader).enumerate() {
            let line = line.map_err(io)?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<JobResult>(&line) {
                Ok(result) => pending.push(full_result(result, blobs)?),
                Err(e) => {
                    eprintln!("{}:{}: not a result: {e}", path.display(), n + 1);
                    tally.unreadable += 1;
                }
            }
            if pending.len() >= IMPORT_BATCH {
                tally.add(&store.ingest_many(&std::mem::take(&mut pending)).await?);
            }
        }
    }
    tally.add(&store.ingest_many(&pending).await?);
    Ok(tally)
}

/// Results committed together by `import`.
const IMPORT_BATCH: usize = 500;

impl ImportTally {
    fn add(&mut self, outcomes: &[Ingested]) {
        for outcome in outcomes {
            match outcome {
                Ingested::Inserted => self.inserted += 1,
                Ingested::Replaced => self.replaced += 1,
                Ingested::Kept => self.kept += 1,
            }
        }
    }
}

/// The whole result: a claim-checked one is read back from the blob store (verified by hash).
pub fn full_result(result: JobResult, blobs: &dyn crate::blob::BlobStore) -> anyhow::Result<JobResult> {
    match &result.annotations_blob {
        None => Ok(result),
        Some(key) => {
            let bytes = blobs.get(key).map_err(|e| anyhow::anyhow!("result {}: {e}", result.idempotency_key))?;
            // serde's message would quote the offending value, which can be document text.
            serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("result {}: {}", result.idempotency_key, crate::logging::json_error(&e)))
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportTally {
    pub inserted: u64,
    pub replaced: u64,
    pub kept: u64,
    pub unreadable: u64,
}
