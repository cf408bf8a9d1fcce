//! The published message contract. Job comes in, Result goes out. JSON Schema files in
//! `schemas/` are generated from these types (`docpipe schema`) and a test fails on drift.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use docpipe_models::faithful;

use crate::error::{ErrorKind, StageError};

/// Version of both messages. A reader refuses versions it does not know.
pub const SCHEMA_VERSION: u32 = 1;

/// A request to process one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Must equal 1 for this contract.
    pub schema_version: u32,
    pub job_id: Uuid,
    /// The case-management system's identifier for the investigation.
    pub case_id: String,
    pub batch_id: String,
    /// How many jobs the batch holds, when the submitter knows (lets readers tell when it is done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_total: Option<u64>,
    pub submitted_at: DateTime<Utc>,
    pub document: DocumentRef,
    /// Stages to run, in pipeline order. Empty means every stage in pipeline.toml.
    #[serde(default)]
    pub stages: Vec<String>,
    #[serde(default)]
    pub options: JobOptions,
    /// Set when this document was found inside another (archive member, attachment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    /// How many times this job was sent again after a failure (`docpipe resubmit`): 0 for the
    /// first submission. A resubmitted job keeps its job id, so its result replaces the failed one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resubmission: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !b
}

fn is_zero_f32(n: &f32) -> bool {
    *n == 0.0
}

/// What every job of a batch shares: who asked, and what to do with each document.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchSpec {
    pub case_id: String,
    pub batch_id: String,
    pub batch_total: Option<u64>,
    pub stages: Vec<String>,
    pub options: JobOptions,
}

impl Job {
    /// A job of `batch` for `document`, submitted now. The only place a `Job` is assembled:
    /// submit, the embedded mode, child documents and the tests all come through here.
    pub fn new(job_id: Uuid, batch: &BatchSpec, document: DocumentRef) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            job_id,
            case_id: batch.case_id.clone(),
            batch_id: batch.batch_id.clone(),
            batch_total: batch.batch_total,
            submitted_at: Utc::now(),
            document,
            stages: batch.stages.clone(),
            options: batch.options.clone(),
            parent: None,
            resubmission: 0,
        }
    }

    /// The id of the job for the file at `path` with digest `sha256` in batch `batch_id`: derived,
    /// so submitting or processing the same batch again gives the same ids and results dedupe.
    pub fn id_for(batch_id: &str, path: &str, sha256: &str) -> Uuid {
        Uuid::new_v5(&Uuid::NAMESPACE_URL, format!("docpipe:{batch_id}/{path}/{sha256}").as_bytes())
    }

    /// What this job shares with the other jobs of its batch; children inherit it, without a total.
    pub fn batch(&self) -> BatchSpec {
        BatchSpec {
            case_id: self.case_id.clone(),
            batch_id: self.batch_id.clone(),
            batch_total: self.batch_total,
            stages: self.stages.clone(),
            options: self.options.clone(),
        }
    }
}

/// The document a child document was found in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParentRef {
    pub job_id: Uuid,
    pub sha256: String,
    /// Path inside the parent (member path, attachment name).
    pub path: String,
    /// Nesting level: 1 for a member of a submitted file.
    pub depth: u32,
    /// What this document's own descendants may still unpack: its share of the submitted file's
    /// tree budget (`[extract] tree_max_total_bytes`, `tree_max_members`). Absent: the whole
    /// budget, as for a submitted file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<TreeBudget>,
}

/// A share of a document tree's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TreeBudget {
    pub bytes: u64,
    pub members: u64,
}

/// The document a job is about. The sha256 is checked against the content on every read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentRef {
    /// Lower-case hex SHA-256 of the content, computed on arrival.
    pub sha256: String,
    pub size: u64,
    /// Name as seized or uploaded, path included where it helps the analyst.
    pub filename: String,
    /// Media type declared by the sender, if any. docpipe sniffs the bytes regardless.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_media_type: Option<String>,
    pub content: Content,
}

/// Where the bytes are: inline for small documents, else in the blob store (claim check).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Content {
    Inline {
        /// Standard base64 of the whole document.
        base64: String,
    },
    Blob {
        /// Blob-store key; for the file store, `sha256:<hex>`.
        key: String,
    },
}

/// Per-job choices. Anything not given takes the pipeline default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobOptions {
    /// BCP-47 language to translate into.
    #[serde(default = "default_target_language")]
    pub target_language: String,
    /// Tesseract language codes to try first (e.g. `rus`, `chi_sim`).
    #[serde(default)]
    pub ocr_languages: Vec<String>,
    /// Sentences in each summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary_sentences: Option<u32>,
}

impl Default for JobOptions {
    fn default() -> Self {
        Self { target_language: default_target_language(), ocr_languages: Vec::new(), summary_sentences: None }
    }
}

fn default_target_language() -> String {
    "en".to_owned()
}

/// What docpipe made of one job. Published to the results exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobResult {
    pub schema_version: u32,
    /// Equal for every redelivery of the same job: keep one result per key.
    pub idempotency_key: String,
    pub job_id: Uuid,
    pub case_id: String,
    pub batch_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_total: Option<u64>,
    pub document: DocumentIdentity,
    pub status: JobStatus,
    /// One entry per requested stage, in pipeline order.
    pub stages: Vec<StageReport>,
    /// Machine output. Every annotation says what produced it.
    pub annotations: Vec<Annotation>,
    /// Set when the whole result was too large for the broker: the blob-store key (`sha256:…`)
    /// of the complete result, whose `annotations` this message leaves out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations_blob: Option<String>,
    /// Set when this document was found inside another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    /// Attachments and archive members found inside this document. Each is processed as a job
    /// of its own (`job_id`) whose result names this document as its parent.
    #[serde(default)]
    pub children: Vec<ChildDocument>,
    /// When the last stage finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// The stages the job asked for (empty: every stage), and its choices (target language, OCR
    /// languages, summary length): the result says what was asked, and a failed job can be sent
    /// again as it was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requested_stages: Vec<String>,
    #[serde(default)]
    pub options: JobOptions,
    /// The job's `resubmission` count.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resubmission: u32,
    /// Set when the producing worker has a signing key: an Ed25519 signature over the digest of
    /// this whole result (annotations included, this member left out) in RFC 8785 canonical JSON.
    /// A claim-check message carries the signature of the full result it points to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

/// A signature over the JSON object that holds it (see README, "Verifying docpipe output").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// `ed25519-sha256-jcs`: Ed25519 (RFC 8032) over the SHA-256 digest of the RFC 8785
    /// canonical JSON of the object without its `signature` member.
    pub scheme: String,
    /// Lowercase hex sha256 of the signer's 32-byte public key.
    pub key_id: String,
    /// The 64-byte signature, base64 (RFC 4648, with padding).
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentIdentity {
    pub sha256: String,
    pub size: u64,
    pub filename: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_media_type: Option<String>,
    /// Sniffed from the bytes by the first stage that read them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_media_type: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Every requested stage succeeded.
    Complete,
    /// Some stages succeeded, some did not: see `stages`.
    Partial,
    /// No stage produced output.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageReport {
    pub stage: String,
    pub status: StageStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StageError>,
    /// Deliveries of this stage, counting retries.
    pub attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    Ok,
    Error,
}

/// One piece of machine output with its provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Annotation {
    pub provenance: Provenance,
    pub body: AnnotationBody,
}

/// Who made an annotation, with what, how, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    pub stage: String,
    pub engine: String,
    pub engine_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRef>,
    /// Settings that shaped the output (limits, languages, decoding parameters).
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// True when the content was produced by a statistical model rather than read from the input.
    pub machine_generated: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub worker_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    pub id: String,
    pub weights_sha256: String,
}

/// Annotation payloads, tagged by `kind`. Later stages add kinds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AnnotationBody {
    /// Text of the document, split into pages or parts.
    Text {
        /// Encoding the text was decoded from, for text formats.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encoding: Option<String>,
        lines: u64,
        chars: u64,
        /// Pages the document has (may exceed the segments when a page limit applied).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        page_count: Option<u32>,
        /// Title, author, dates, email headers, archive member counts.
        #[serde(default)]
        metadata: std::collections::BTreeMap<String, String>,
        segments: Vec<TextSegment>,
    },
    /// Languages of the document and of each sentence.
    Languages {
        /// Languages with their share of the document's letters, largest first; `und` alone when
        /// nothing could be determined.
        document: Vec<LanguageShare>,
        /// One entry per sentence, with offsets into the document text.
        segments: Vec<LanguageSegment>,
    },
    /// A summary. Extractive summaries quote the document: every sentence points to its offsets.
    Summary {
        method: SummaryMethod,
        /// Which text was summarized: `original` or a translation's language tag.
        source: String,
        sentences: Vec<SummarySentence>,
        key_terms: Vec<KeyTerm>,
    },
    /// A model-written summary. Kept apart from the extractive one: nothing in it is quoted.
    AbstractiveSummary {
        /// Which text was summarized: `original` or the translation's language tag.
        source: String,
        text: String,
        /// `unverified_content` when `unverified` is not empty.
        faithfulness: Faithfulness,
        /// Numbers (dates, amounts) and names in `text` that the source does not contain.
        unverified: Vec<UnverifiedSpan>,
        /// Parts the text was cut into to fit the model's context (1 = it fitted), then merged.
        chunks: u32,
    },
    /// Machine translation, sentence by sentence, each pointing back to its source.
    Translation {
        /// BCP-47 language translated into.
        target: String,
        /// One entry per sentence of the document, in order, translated or not (and why not).
        segments: Vec<TranslationSegment>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Faithfulness {
    /// Every number and name in the summary occurs in the source.
    Verified,
    /// Some do not: see `unverified`.
    UnverifiedContent,
}

/// How a summary was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SummaryMethod {
    /// Sentences chosen from the text, quoted with their offsets.
    Extractive,
    /// Written by a model.
    Abstractive,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnverifiedSpan {
    /// `number` or `name`.
    #[schemars(schema_with = "unverified_kind_schema")]
    pub kind: faithful::Kind,
    pub text: String,
}

/// The faithfulness check's kinds, named as serde writes them (the check lives in the models
/// crate, which does not depend on schemars).
fn unverified_kind_schema(_: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
    let names = [faithful::Kind::Number, faithful::Kind::Name].map(|k| serde_json::to_value(k).expect("kind serializes"));
    schemars::schema::SchemaObject {
        instance_type: Some(schemars::schema::InstanceType::String.into()),
        enum_values: Some(names.to_vec()),
        ..Default::default()
    }
    .into()
}

/// What happened to one sentence in translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TranslationStatus {
    /// `text` is the machine translation.
    Translated,
    /// The model's output failed a check against its source (it looks answered, obeyed, refused
    /// or cut short, not translated): `text` is what the model wrote, `check` says why it is
    /// not passed off as a translation.
    Unverified,
    /// Already in the target language.
    SourceIsTarget,
    /// Language identification could not tell the language (numbers, symbols, too short).
    Undetermined,
    /// No model is configured for this language into the target.
    Unsupported,
    /// The configured model could not be loaded or failed on this sentence (see the stage error).
    ModelError,
    /// Past `translate.max_segments` or `translate.max_seconds` for one document.
    Limit,
}

impl TranslationStatus {
    /// The name serde writes, for labels that must match the results' JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TranslationStatus::Translated => "translated",
            TranslationStatus::Unverified => "unverified",
            TranslationStatus::SourceIsTarget => "source_is_target",
            TranslationStatus::Undetermined => "undetermined",
            TranslationStatus::Unsupported => "unsupported",
            TranslationStatus::ModelError => "model_error",
            TranslationStatus::Limit => "limit",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TranslationSegment {
    /// Character offsets of the source sentence in the document text, and its page.
    pub start: u64,
    pub end: u64,
    pub page: u32,
    /// Source language (ISO 639-3) as language identification found it; for a sentence found to
    /// be in the target language but written largely in another script (a Chinese sentence merged
    /// into an English one), the language that script is read as (Han `zho`, kana `jpn`, Cyrillic
    /// `rus`, ...), so it is translated rather than passed over.
    pub source_language: String,
    pub status: TranslationStatus,
    /// The translation; present only when `status` is `translated` or `unverified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Why an `unverified` output is not taken for a translation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    /// Model id (see the annotation's `parameters.models` for its weights sha256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Geometric mean of the output token probabilities (0-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    /// The sentence was longer than the model takes and was translated in this many parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LanguageShare {
    /// ISO 639-3 (`und` when undetermined).
    pub code: String,
    /// BCP-47 tag (`zh-Hans`, `fa`).
    pub tag: String,
    /// ISO 15924 script.
    pub script: String,
    /// Share of the document's letters in this language, 0 to 1.
    pub share: f32,
    /// Mean confidence of the sentences in this language, 0 to 1.
    pub confidence: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LanguageSegment {
    pub start: u64,
    pub end: u64,
    pub page: u32,
    pub code: String,
    pub tag: String,
    pub script: String,
    pub confidence: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SummarySentence {
    /// The sentence as it stands in the document (line breaks joined).
    pub text: String,
    /// Character offsets into the document text, and the page.
    pub start: u64,
    pub end: u64,
    pub page: u32,
    /// Centrality, 0 to 1.
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyTerm {
    pub term: String,
    pub score: f32,
}

/// A page or part of the document text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextSegment {
    /// 1-based page (or part) number.
    pub page: u32,
    pub source: TextSource,
    /// Character offset (Unicode scalar values) of this segment in the document text, which is
    /// the segments' texts joined with a blank line.
    pub start: u64,
    pub end: u64,
    pub text: String,
    /// OCR mean confidence, 0 to 1; absent for text that was read rather than recognised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    /// Page size in pixels, for OCR pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Why this page has no (or incomplete) text: `too_large`, `timeout`, OCR failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<StageError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocr: Option<OcrDetails>,
}

/// Where a page's text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TextSource {
    /// The file is text (or a text format: HTML, email, office XML).
    #[serde(rename = "text")]
    Text,
    /// A PDF's text layer.
    #[serde(rename = "text-layer")]
    TextLayer,
    /// Recognised by OCR.
    #[serde(rename = "ocr")]
    Ocr,
}

impl From<docpipe_models::extract::Source> for TextSource {
    fn from(source: docpipe_models::extract::Source) -> Self {
        match source {
            docpipe_models::extract::Source::Text => TextSource::Text,
            docpipe_models::extract::Source::TextLayer => TextSource::TextLayer,
            docpipe_models::extract::Source::Ocr => TextSource::Ocr,
        }
    }
}

/// How an OCR page was read, so a reviewer can check it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OcrDetails {
    /// Clockwise rotation applied to make the page upright.
    pub rotation_degrees: u32,
    /// Skew straightened before reading, in degrees (absent when the page was straight enough):
    /// with the rotation, what turns the original into the image the word boxes refer to.
    #[serde(default, skip_serializing_if = "is_zero_f32")]
    pub deskew_degrees: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// How automatic OCR settled orientation and script: `osd` (Tesseract's detection),
    /// `upright_latin` (Leptonica found upright Roman text and the Latin reading was good, so OSD
    /// did not run) or `sideways_latin` (the same for Roman text lying on its side, turned by
    /// `rotation_degrees`). Absent when the job named the OCR languages (and on blank pages, not
    /// read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection: Option<docpipe_models::ocr::Detection>,
    /// Tesseract traineddata used.
    pub languages: Vec<String>,
    /// Share of the page's words of three letters or more found in the recogniser's dictionary
    /// (absent when there are too few such words, as on Chinese pages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dictionary_rate: Option<f32>,
    /// The reading is poor (mean word confidence under 0.6, or dictionary rate under 0.3): check
    /// the text against the page image before relying on it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub low_confidence: bool,
    /// Recognised words with boxes in page pixels (origin top left) and confidence 0 to 1.
    pub words: Vec<OcrWord>,
}

/// A recognised word with its box in page pixels (origin top left) and confidence 0 to 1: the OCR
/// engine's own word type, published as it is.
pub use docpipe_models::ocr::Word as OcrWord;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChildDocument {
    /// The job that processes this child; its result carries the child's text.
    pub job_id: Uuid,
    pub sha256: String,
    pub size: u64,
    /// Path inside the parent (archive member path, attachment name).
    pub path: String,
    pub parent_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

impl JobResult {
    /// An empty result for `job`: identity filled, nothing run yet.
    pub fn start(job: &Job) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            idempotency_key: job.job_id.to_string(),
            job_id: job.job_id,
            case_id: job.case_id.clone(),
            batch_id: job.batch_id.clone(),
            batch_total: job.batch_total,
            document: DocumentIdentity {
                sha256: job.document.sha256.clone(),
                size: job.document.size,
                filename: job.document.filename.clone(),
                declared_media_type: job.document.declared_media_type.clone(),
                detected_media_type: None,
            },
            status: JobStatus::Failed,
            parent: job.parent.clone(),
            stages: Vec::new(),
            annotations: Vec::new(),
            annotations_blob: None,
            children: Vec::new(),
            completed_at: None,
            requested_stages: job.stages.clone(),
            options: job.options.clone(),
            resubmission: job.resubmission,
            signature: None,
        }
    }

    /// Status from the stage reports: all ok is complete, none ok is failed.
    pub fn settle(&mut self) {
        let ok = self.stages.iter().filter(|s| s.status == StageStatus::Ok).count();
        self.status = match ok {
            n if n == self.stages.len() && n > 0 => JobStatus::Complete,
            0 => JobStatus::Failed,
            _ => JobStatus::Partial,
        };
        self.completed_at = Some(Utc::now());
    }

    /// Record that `stage` failed for good, for results published from the dead-letter path.
    pub fn fail_stage(&mut self, stage: &str, attempts: u32, kind: ErrorKind, reason: &str) {
        self.stages.push(StageReport {
            stage: stage.to_owned(),
            status: StageStatus::Error,
            error: Some(StageError::new(kind, reason)),
            attempts,
        });
    }
}

/// Why a message body is not a job we can run.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("schema_version {0} is not supported (this worker reads {SCHEMA_VERSION})")]
    Version(u64),
    #[error("no schema_version field")]
    NoVersion,
}

/// Check the version before the shape, so a newer message is reported as such.
pub fn check_version(body: &[u8]) -> Result<serde_json::Value, DecodeError> {
    let value: serde_json::Value = serde_json::from_slice(body)?;
    match value.get("schema_version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(SCHEMA_VERSION) => Ok(value),
        Some(v) => Err(DecodeError::Version(v)),
        None => Err(DecodeError::NoVersion),
    }
}

/// JSON Schema documents for the published messages, as written to `schemas/`.
pub fn json_schemas() -> Vec<(&'static str, String)> {
    let job = schemars::schema_for!(Job);
    let result = schemars::schema_for!(JobResult);
    vec![
        ("job.schema.json", serde_json::to_string_pretty(&job).expect("schema serializes") + "\n"),
        ("result.schema.json", serde_json::to_string_pretty(&result).expect("schema serializes") + "\n"),
    ]
}
