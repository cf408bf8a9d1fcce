//! Command-line front end. Each sub-command lives in its own module.

pub mod dlq;
pub mod inputs;
pub mod keys;
pub mod models;
pub mod ocr;
pub mod process;
pub mod resubmit;
pub mod results;
pub mod serve;
pub mod status;
pub mod store;
pub mod submit;
pub mod verify;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// docpipe: OCR, language identification, local translation and summaries for seized and
/// incoming documents, with chain of custody on every output.
#[derive(Debug, Parser)]
#[command(name = "docpipe", version)]
pub struct Cli {
    /// Pipeline configuration file. Without it, the built-in default (the repository's pipeline.toml).
    #[arg(long, short, env = "DOCPIPE_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Log as JSON lines (overrides log.format).
    #[arg(long, global = true)]
    pub json_logs: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Process files and folders in this process, without a broker (the embedded mode).
    /// Writes one result per document to <out>/results.jsonl.
    Process(process::Args),
    /// Hash files and folders, store large ones in the blob store, and publish one job each.
    Submit(submit::Args),
    /// Collect a batch's results into JSON lines; exits when the batch is complete.
    Results(results::Args),
    /// How far a batch is: done/total per stage and an ETA, from the workers' progress reports.
    Status(status::Args),
    /// Run a worker that consumes stage queues from RabbitMQ.
    Worker(WorkerArgs),
    /// Declare exchanges and queues (idempotent).
    Declare,
    /// Inspect or replay the dead-letter queue.
    Dlq(dlq::Args),
    /// List, install (from a directory or archive, hashed) and verify local models.
    Models(models::Args),
    /// What OCR can read here: installed traineddata, and the package each script would need.
    Ocr(ocr::Args),
    /// Write the JSON Schema files of the message contract.
    Schema(SchemaArgs),
    /// Send a batch's failed documents again, as the same jobs (results replace the failed ones).
    Resubmit(resubmit::Args),
    /// The results store: import results, search them, or consume them from the broker.
    Store(store::Args),
    /// Serve the review workspace (web pages over the results store) on 127.0.0.1.
    Serve(serve::Args),
    /// Manage the analysts who may sign in to the review workspace, and their cases.
    Users(serve::UsersArgs),
    /// Make the key pair that signs results and batch manifests.
    Keys(keys::Args),
    /// Check signed results offline: signatures, the batch manifest, and optionally the originals.
    /// Exit status 1 when anything does not verify.
    Verify(verify::Args),
}

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Stages to serve, comma-separated (default: every stage in the pipeline).
    #[arg(long, value_delimiter = ',')]
    pub stages: Vec<String>,
    /// Engine threads per stage (overrides worker.threads).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Jobs in flight per stage (overrides worker.concurrency; a stage still works on as many as it
    /// has threads).
    #[arg(long)]
    pub concurrency: Option<usize>,
}

#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// Directory to write job.schema.json and result.schema.json into.
    #[arg(long, default_value = "schemas")]
    pub out: PathBuf,
}

/// What to do with each document: shared by `process` and `submit`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct JobArgs {
    /// Stages to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub stages: Vec<String>,
    /// Language to translate into (default: defaults.target_language).
    #[arg(long)]
    pub target_language: Option<String>,
    /// Tesseract languages to use for OCR, comma-separated (e.g. rus,chi_sim); default: detect.
    #[arg(long, value_delimiter = ',')]
    pub ocr_languages: Vec<String>,
    /// Sentences in each summary (default: summarize.sentences).
    #[arg(long)]
    pub summary_sentences: Option<u32>,
}

impl JobArgs {
    /// The stages to run, checked against the pipeline, and the job options.
    pub fn resolve(&self, config: &crate::config::Config) -> anyhow::Result<(Vec<String>, crate::schema::JobOptions)> {
        let stages = select_stages(config, &self.stages)?;
        let options = crate::schema::JobOptions {
            target_language: self.target_language.clone().unwrap_or_else(|| config.defaults.target_language.clone()),
            ocr_languages: self.ocr_languages.clone(),
            summary_sentences: self.summary_sentences,
        };
        Ok((stages, options))
    }
}

/// Resolve `--stages` against the pipeline: empty means all; unknown names are an error.
pub fn select_stages(config: &crate::config::Config, requested: &[String]) -> anyhow::Result<Vec<String>> {
    if requested.is_empty() {
        return Ok(config.default_stage_names());
    }
    for name in requested {
        anyhow::ensure!(
            config.stage(name).is_some(),
            "--stages: no stage named `{name}` (pipeline has: {})",
            config.stage_names().join(", ")
        );
    }
    Ok(requested.to_vec())
}

/// Resolves when the process receives SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("signal received");
}
