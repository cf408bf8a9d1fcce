//! pipeline.toml, then `DOCPIPE_SECTION__KEY` environment overrides, then command-line flags.
//! Unknown keys are refused, and every error names the key.
//!
//! Pattern to copy: every section is a `deny_unknown_fields` struct with a doc comment per field;
//! values with a fixed set of choices are enums, so a typo is refused by name instead of quietly
//! meaning something else; secrets come from the environment or a file, never the file itself;
//! each layering rule has its own test.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The embedded default: the repository's pipeline.toml, compiled in.
pub const EMBEDDED: &str = include_str!("../pipeline.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{origin}: not valid TOML: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: key `{key}`: {message}")]
    Key { origin: String, key: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("broker password file {path}: {source}")]
    Password { path: PathBuf, source: std::io::Error },
    #[error("broker TLS file {path}: {message}")]
    Tls { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub broker: BrokerConfig,
    pub retry: RetryConfig,
    pub worker: WorkerConfig,
    pub blobs: BlobConfig,
    pub limits: LimitsConfig,
    /// `[extract]`: limits on what one document may cost (sizes, pages, time).
    pub extract: docpipe_models::extract::Limits,
    pub models: ModelsConfig,
    pub langid: LangIdConfig,
    pub summarize: SummarizeConfig,
    pub translate: TranslateConfig,
    pub llm: LlmConfig,
    pub abstractive: AbstractiveConfig,
    pub defaults: DefaultsConfig,
    pub log: LogConfig,
    /// `[store]`: where results are kept for review and search (SQLite unless it says otherwise).
    #[serde(default)]
    pub store: crate::store::StoreConfig,
    /// `[signing]`: the key that signs results and manifests, and the keys trusted to have.
    #[serde(default)]
    pub signing: SigningConfig,
    /// Stages in pipeline order. The first reads the document bytes and is every job's entry.
    #[serde(rename = "stage")]
    pub stages: Vec<StageConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// AMQP URL, normally without a password.
    pub url: String,
    /// Other nodes of the same RabbitMQ cluster, tried in turn when the one in use cannot be
    /// reached. Same form as `url` (user, vhost, scheme); the same password and TLS settings.
    #[serde(default)]
    pub failover_urls: Vec<String>,
    /// File holding the broker password; `DOCPIPE_BROKER_PASSWORD` wins over it.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Every exchange and queue name starts with this.
    pub prefix: String,
    /// Unacknowledged deliveries per consumer.
    pub prefetch: u16,
    /// Deliveries of one message before the broker dead-letters it (guards crash loops).
    pub delivery_limit: u32,
    /// Seconds to wait for a publisher confirm.
    pub confirm_timeout_secs: u64,
    /// Hand-offs and results larger than this go through the blob store (claim check) instead
    /// of the broker, whose message size is limited (128 MiB by default on RabbitMQ 3).
    pub max_message_bytes: u64,
    /// First and largest pause between reconnection attempts.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// PEM file of the CA certificates that may sign the broker's certificate, for `amqps://`
    /// URLs (added to the system's roots). The broker's name must match its certificate.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for brokers that ask for one, with its PKCS#8 PEM key.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// PKCS#8 PEM Ed25519 private key (`docpipe keys generate`), mode 0600. Unset: results are
    /// not signed. A path only: the key itself is never configuration or a command-line flag.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Public keys (files, or directories of `.pub` files) whose signatures the review workspace
    /// accepts besides the signing key's own: keys of other workers, earlier keys after rotation.
    #[serde(default)]
    pub trusted_keys: Vec<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Delay before each retry of a transient failure; its length is the number of retries.
    pub backoff_ms: Vec<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Engine threads per stage (each owns its engines).
    pub threads: usize,
    /// Jobs handled at once per stage; also bounds the engine queue.
    pub concurrency: usize,
    /// Seconds to let in-flight jobs finish on SIGTERM before they are requeued.
    pub shutdown_grace_secs: u64,
    /// Identifier written into provenance; empty means host name and process id.
    #[serde(default)]
    pub id: String,
    /// Address for `/metrics` (Prometheus), `/healthz` and `/readyz`; empty serves none.
    #[serde(default)]
    pub metrics_bind: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobConfig {
    /// Which store holds the blobs: a directory, or an S3-compatible bucket.
    #[serde(default)]
    pub kind: BlobKind,
    /// Directory of the content-addressed store; relative paths are relative to the working directory.
    pub dir: PathBuf,
    /// Documents up to this size travel inline in the job message; larger ones by claim check.
    pub inline_max_bytes: u64,
    /// `[blobs.s3]`: the bucket, used when `kind = "s3"`.
    #[serde(default)]
    pub s3: S3Config,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    #[default]
    Dir,
    S3,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// Server URL; empty means AWS itself (the region picks the endpoint).
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    /// `http://host/bucket/key` requests rather than `http://bucket.host/key`: what most
    /// self-hosted servers (MinIO, Ceph, s3s) expect.
    pub path_style: bool,
    /// Object names start with this (several pipelines can share one bucket).
    pub prefix: String,
    /// Plain HTTP endpoints are refused unless this is set (loopback or private test servers).
    pub allow_http: bool,
    /// How long one request keeps retrying a server that fails or cannot be reached (seconds).
    pub retry_secs: u64,
    /// File with the access key id and secret (AWS credentials-file lines `aws_access_key_id = ...`
    /// and `aws_secret_access_key = ...`). The environment wins over it.
    pub credentials_file: Option<PathBuf>,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            bucket: String::new(),
            region: "us-east-1".into(),
            path_style: true,
            prefix: "blobs".into(),
            allow_http: false,
            retry_secs: 60,
            credentials_file: None,
        }
    }
}

impl S3Config {
    /// Access key id and secret: `DOCPIPE_S3_ACCESS_KEY_ID` and `DOCPIPE_S3_SECRET_ACCESS_KEY`,
    /// else the usual `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, else `credentials_file`.
    /// Never from pipeline.toml. Errors name what is missing, never a value.
    pub fn credentials(&self) -> Result<(String, String), String> {
        for (id, secret) in [("DOCPIPE_S3_ACCESS_KEY_ID", "DOCPIPE_S3_SECRET_ACCESS_KEY"), ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")] {
            if let (Ok(id), Ok(secret)) = (std::env::var(id), std::env::var(secret)) {
                return Ok((id, secret));
            }
        }
        let Some(path) = &self.credentials_file else {
            return Err("no S3 credentials: set DOCPIPE_S3_ACCESS_KEY_ID and DOCPIPE_S3_SECRET_ACCESS_KEY, or blobs.s3.credentials_file".into());
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(|e| format!("blobs.s3.credentials_file {}: {e}", path.display()))?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(format!("blobs.s3.credentials_file {} is readable by group or others (mode {:o}); chmod 600 it", path.display(), mode & 0o777));
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("blobs.s3.credentials_file {}: {e}", path.display()))?;
        let value = |name: &str| {
            text.lines().find_map(|line| {
                let (key, value) = line.split_once('=')?;
                let key = key.trim();
                (key == name || key.strip_prefix("aws_") == Some(name)).then(|| value.trim().to_owned())
            })
        };
        match (value("access_key_id"), value("secret_access_key")) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => Ok((id, secret)),
            _ => Err(format!("blobs.s3.credentials_file {}: needs aws_access_key_id and aws_secret_access_key lines", path.display())),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest document accepted by submit and process.
    pub max_document_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    /// Where `docpipe models install` puts models, one directory each with its manifest.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LangIdConfig {
    /// fastText language-identification model (lid.176.ftz).
    pub model: PathBuf,
    /// Its expected sha256; a different file is refused.
    pub sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummarizeConfig {
    /// Sentences in an extractive summary unless the job asks otherwise.
    pub sentences: usize,
    /// When above 0, the summary is this share of the document's sentences instead (at least one).
    pub share: f32,
    /// Key terms reported per document.
    pub key_terms: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranslateConfig {
    /// Sentences per model call.
    pub batch: usize,
    /// Sentences translated per document; later ones get status `limit`.
    pub max_segments: usize,
    /// Time spent translating one document; sentences not reached by then get status `limit`
    /// (keep it under the stage's `timeout_secs`, which discards the stage's output).
    pub max_seconds: u64,
    pub decoding: docpipe_models::mt::Decoding,
    /// Source language → model routes.
    #[serde(default)]
    pub models: Vec<TranslationModel>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// Context window used with GGUF models (tokens); the model's own limit caps it.
    pub context: usize,
    /// MiB of f32 weight copies a GGUF model may keep for reading prompts fast (0: none).
    #[serde(default = "default_prompt_f32_mib")]
    pub prompt_f32_mib: usize,
    /// Sequences one GGUF model decodes at once (segments from every translate and abstractive
    /// thread of the process).
    #[serde(default = "default_slots")]
    pub slots: usize,
    /// Prompts waiting for a slot before the stages sending them wait.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn default_slots() -> usize {
    docpipe_models::llm::Batching::default().slots
}

fn default_queue() -> usize {
    docpipe_models::llm::Batching::default().queue
}

fn default_prompt_f32_mib() -> usize {
    docpipe_models::llm::DEFAULT_PROMPT_F32_BYTES >> 20
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbstractiveConfig {
    /// Recorded in provenance.
    pub id: String,
    /// GGUF file; relative paths are under `models.dir`.
    pub model: PathBuf,
    pub sha256: String,
    /// Sentences asked for.
    pub sentences: usize,
    pub max_new_tokens: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranslationModel {
    /// Recorded in provenance, e.g. `Helsinki-NLP/opus-mt-zh-en`.
    pub id: String,
    /// Model directory (Hugging Face layout); relative paths are under `models.dir`.
    pub path: PathBuf,
    /// `marian`, `t5` or `gguf`; anything else is refused.
    pub kind: crate::registry::ModelKind,
    /// sha256 of the weights file; a different file is refused.
    pub sha256: String,
    /// Source languages (ISO 639-3, as language identification reports them); `*` for any
    /// language no other route names.
    pub languages: Vec<String>,
    /// Language it translates into (BCP-47).
    #[serde(default = "default_target")]
    pub target: String,
    /// Text put before every input (T5 task prefixes, Marian `>>xxx<<` target tokens).
    #[serde(default)]
    pub prefix: String,
}

fn default_target() -> String {
    "en".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsConfig {
    pub case_id: String,
    pub target_language: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// tracing filter, e.g. `info` or `docpipe=debug`; `RUST_LOG` wins over it.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    pub name: String,
    /// Wall-clock limit for one document in this stage.
    pub timeout_secs: u64,
    /// Runs only when a job (or `--stages`) names it.
    #[serde(default)]
    pub optional: bool,
    /// Stage threads for this stage instead of `worker.threads`.
    #[serde(default)]
    pub threads: Option<usize>,
}

impl Config {
    /// Load `path` (or the embedded default) and apply environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (origin, text) = match path {
            Some(path) => (
                path.display().to_string(),
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?,
            ),
            None => ("embedded pipeline.toml".to_owned(), EMBEDDED.to_owned()),
        };
        Self::from_toml(&origin, &text, std::env::vars())
    }

    /// Parse `text`, apply overrides from `env`, then check the values.
    pub fn from_toml(
        origin: &str,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut value: toml::Value =
            toml::from_str(text).map_err(|e| ConfigError::Syntax { origin: origin.into(), message: e.message().into() })?;
        for (var, raw) in env {
            apply_env(&mut value, &var, &raw)?;
        }
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| ConfigError::Key {
            origin: origin.into(),
            key: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
        config.check(origin)?;
        Ok(config)
    }

    fn check(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| {
            Err(ConfigError::Key { origin: origin.into(), key: key.into(), message: message.into() })
        };
        if self.stages.is_empty() {
            return bad("stage", "at least one stage is needed");
        }
        for (i, stage) in self.stages.iter().enumerate() {
            if self.stages[..i].iter().any(|s| s.name == stage.name) {
                return bad(&format!("stage[{i}].name"), "duplicate stage name");
            }
            if stage.timeout_secs == 0 {
                return bad(&format!("stage[{i}].timeout_secs"), "must be at least 1");
            }
            if stage.threads == Some(0) {
                return bad(&format!("stage[{i}].threads"), "must be at least 1");
            }
        }
        if self.worker.threads == 0 {
            return bad("worker.threads", "must be at least 1");
        }
        if self.llm.slots == 0 || self.llm.slots > 256 {
            return bad("llm.slots", "must be 1 to 256");
        }
        if self.llm.queue == 0 {
            return bad("llm.queue", "must be at least 1");
        }
        if self.worker.concurrency == 0 {
            return bad("worker.concurrency", "must be at least 1");
        }
        if self.broker.prefetch == 0 {
            return bad("broker.prefetch", "must be at least 1");
        }
        if self.broker.prefix.is_empty() || self.broker.prefix.contains(char::is_whitespace) {
            return bad("broker.prefix", "must be a non-empty name without spaces");
        }
        Ok(())
    }

    pub fn stage(&self, name: &str) -> Option<&StageConfig> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// Engine threads of a stage: its own `threads`, else `worker.threads`.
    pub fn stage_threads(&self, name: &str) -> usize {
        self.stage(name).and_then(|s| s.threads).unwrap_or(self.worker.threads).max(1)
    }

    /// Jobs a stage works on at once: `worker.concurrency`, and never fewer than its threads. The
    /// translate stage's eight threads exist to put several documents' segments into the model's
    /// slots together; with four jobs in flight, four of them idled and the slots ran part-empty
    /// (`bench/translate_batch.sh`: 138 s with four, 123 s with eight).
    pub fn stage_jobs(&self, name: &str) -> usize {
        self.worker.concurrency.max(self.stage_threads(name))
    }

    pub fn stage_names(&self) -> Vec<String> {
        self.stages.iter().map(|s| s.name.clone()).collect()
    }

    /// The stages a job runs when it names none: all but the optional ones.
    pub fn default_stage_names(&self) -> Vec<String> {
        self.stages.iter().filter(|s| !s.optional).map(|s| s.name.clone()).collect()
    }

    /// The broker password from the environment or the password file, if either is set. It is
    /// handed to the AMQP client as it is, never written into a URL (URL errors quote the URL).
    pub fn broker_password(&self) -> Result<Option<String>, ConfigError> {
        if let Ok(password) = std::env::var("DOCPIPE_BROKER_PASSWORD") {
            return Ok(Some(password));
        }
        match &self.broker.password_file {
            Some(path) => Ok(Some(
                std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Password { path: path.clone(), source })?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            )),
            None => Ok(None),
        }
    }
}

/// `DOCPIPE_BROKER__PREFETCH=8` sets `broker.prefetch`. Values parse as TOML, else as a string.
fn apply_env(root: &mut toml::Value, var: &str, raw: &str) -> Result<(), ConfigError> {
    let Some(path) = var.strip_prefix("DOCPIPE_") else { return Ok(()) };
    if !path.contains("__") {
        return Ok(()); // DOCPIPE_CONFIG, DOCPIPE_BROKER_PASSWORD and the like are not overrides
    }
    let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
    let parsed = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let mut node = root;
    for key in &keys[..keys.len() - 1] {
        node = node
            .as_table_mut()
            .and_then(|t| t.get_mut(key))
            .ok_or_else(|| ConfigError::Env { var: var.into(), message: format!("no section `{key}`") })?;
    }
    let table = node
        .as_table_mut()
        .ok_or_else(|| ConfigError::Env { var: var.into(), message: "does not name a key in a section".into() })?;
    table.insert(keys[keys.len() - 1].clone(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml("test", text, env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn embedded_default_loads() {
        let config = load(EMBEDDED, &[]).unwrap();
        assert_eq!(config.stages[0].name, "extract");
        assert_eq!(config.defaults.target_language, "en");
    }

    #[test]
    fn unknown_key_is_named() {
        let text = EMBEDDED.replace("prefetch =", "prefetchh =");
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("broker"), "{err}");
        assert!(err.contains("prefetchh"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let text = EMBEDDED.replacen("\nthreads = 2\n", "\nthreads = \"two\"\n", 1);
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("worker.threads"), "{err}");
    }

    #[test]
    fn environment_overrides_file() {
        let config = load(EMBEDDED, &[("DOCPIPE_BROKER__PREFETCH", "9"), ("DOCPIPE_BLOBS__DIR", "/x/y")]).unwrap();
        assert_eq!(config.broker.prefetch, 9);
        assert_eq!(config.blobs.dir, PathBuf::from("/x/y"));
        let err = load(EMBEDDED, &[("DOCPIPE_NOPE__X", "1")]).unwrap_err().to_string();
        assert!(err.contains("DOCPIPE_NOPE__X"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        let err = load(&EMBEDDED.replace("threads = 2", "threads = 0"), &[]).unwrap_err().to_string();
        assert!(err.contains("worker.threads"), "{err}");
    }

    #[test]
    fn model_batching_and_stage_threads_are_read_and_checked() {
        let config = load(EMBEDDED, &[]).unwrap();
        assert_eq!((config.llm.slots, config.llm.queue), (8, 64));
        assert_eq!(config.stage("translate").and_then(|s| s.threads), Some(8));
        assert_eq!(config.stage("extract").and_then(|s| s.threads), None);
        let err = load(&EMBEDDED.replace("slots = 8", "slots = 0"), &[]).unwrap_err().to_string();
        assert!(err.contains("llm.slots"), "{err}");
        let err = load(&EMBEDDED.replace("threads = 8", "threads = 0"), &[]).unwrap_err().to_string();
        assert!(err.contains("threads"), "{err}");
    }

    #[test]
    fn a_stage_works_on_at_least_as_many_jobs_as_it_has_threads() {
        let config = load(EMBEDDED, &[]).unwrap();
        assert_eq!(config.worker.concurrency, 4);
        assert_eq!((config.stage_threads("translate"), config.stage_jobs("translate")), (8, 8));
        assert_eq!((config.stage_threads("extract"), config.stage_jobs("extract")), (2, 4));
        let config = load(EMBEDDED, &[("DOCPIPE_WORKER__CONCURRENCY", "12")]).unwrap();
        assert_eq!(config.stage_jobs("translate"), 12);
    }

}
