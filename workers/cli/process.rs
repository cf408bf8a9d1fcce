//! `docpipe process`: the embedded mode. Same stages, same result documents, no broker.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use std::collections::VecDeque;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;

use super::inputs::{self, Input};
use crate::blob::{BlobStore, LocalFiles};
use crate::config::Config;
use crate::error::ErrorKind;
use crate::runner::{ChildJob, Outcome, Runner};
use crate::schema::{Content, DocumentRef, Job, JobOptions, JobResult, JobStatus, SCHEMA_VERSION};
use crate::stages::Registry;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files and folders to process (folders are walked).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Output directory: results.jsonl (one result per document) and unreadable.jsonl.
    #[arg(long)]
    pub out: PathBuf,
    /// Case id written into every result (default: defaults.case_id).
    #[arg(long)]
    pub case: Option<String>,
    /// Batch id (default: a new UUID).
    #[arg(long)]
    pub batch: Option<String>,
    #[command(flatten)]
    pub job: super::JobArgs,
}

/// Counts printed at the end and used by tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub complete: usize,
    pub partial: usize,
    pub failed: usize,
    pub unreadable: usize,
}

pub async fn run(config: Arc<Config>, registry: Registry, args: Args) -> anyhow::Result<std::process::ExitCode> {
    let summary = process(config, registry, args).await?;
    println!(
        "{} documents: {} complete, {} partial, {} failed; {} unreadable",
        summary.complete + summary.partial + summary.failed,
        summary.complete,
        summary.partial,
        summary.failed,
        summary.unreadable
    );
    Ok(std::process::ExitCode::SUCCESS)
}

pub async fn process(config: Arc<Config>, registry: Registry, args: Args) -> anyhow::Result<Summary> {
    let (stages, options) = args.job.resolve(&config)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let (found, unreadable) = inputs::walk(&args.paths);
    let mut summary = Summary { unreadable: unreadable.len(), ..Default::default() };
    let mut skipped = std::fs::File::create(args.out.join("unreadable.jsonl"))?;
    for u in &unreadable {
        eprintln!("unreadable: {}: {}", u.path.display(), u.reason);
        serde_json::to_writer(&mut skipped, u)?;
        skipped.write_all(b"\n")?;
    }

    let files = Arc::new(LocalFiles::default());
    let store: Arc<dyn BlobStore> = files.clone();
    let runner = Arc::new(Runner::start(config.clone(), &registry, &config.stage_names(), store, crate::runner::worker_id(&config))?);
    let template = Template {
        case_id: args.case.unwrap_or_else(|| config.defaults.case_id.clone()),
        batch_id: args.batch.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        batch_total: found.len() as u64,
        stages,
        options,
    };

    tracing::info!(documents = found.len(), unreadable = unreadable.len(), batch_id = %template.batch_id, "processing");
    let out_path = args.out.join("results.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&out_path)?);
    let bar = inputs::progress(found.len() as u64, "process");
    // Children found inside documents join the queue as they appear.
    let mut pending: VecDeque<Work> = found.into_iter().map(Work::File).collect();
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < config.worker.concurrency {
            let Some(work) = pending.pop_front() else { break };
            running.push(process_one(&runner, &files, &template, work));
        }
        let Some((outcome, children)) = running.next().await else { break };
        bar.inc_length(children.len() as u64);
        for ChildJob { job, bytes } in children {
            files.add_bytes(&job.document.sha256, bytes);
            pending.push_back(Work::Child(ChildJob { job, bytes: Vec::new() }));
        }
        match outcome {
            Ok(result) => {
                match result.status {
                    JobStatus::Complete => summary.complete += 1,
                    JobStatus::Partial => summary.partial += 1,
                    JobStatus::Failed => summary.failed += 1,
                }
                serde_json::to_writer(&mut out, &result)?;
                out.write_all(b"\n")?;
            }
            Err(u) => {
                eprintln!("unreadable: {}: {}", u.path.display(), u.reason);
                serde_json::to_writer(&mut skipped, &u)?;
                skipped.write_all(b"\n")?;
                summary.unreadable += 1;
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    out.flush()?;
    eprintln!("results in {}", out_path.display());
    Ok(summary)
}

enum Work {
    File(Input),
    Child(ChildJob),
}

struct Template {
    case_id: String,
    batch_id: String,
    batch_total: u64,
    stages: Vec<String>,
    options: JobOptions,
}

async fn process_one(
    runner: &Runner,
    files: &LocalFiles,
    template: &Template,
    work: Work,
) -> (Result<JobResult, inputs::Unreadable>, Vec<ChildJob>) {
    let job = match work {
        // The bytes were registered when the parent finished (see `process`), so identical
        // children share one copy until the last of them is done.
        Work::Child(ChildJob { job, .. }) => job,
        Work::File(input) => {
            let path = input.path.clone();
            let hashed = tokio::task::spawn_blocking(move || inputs::hash_file(&path)).await.expect("hashing task");
            let (sha256, size) = match hashed {
                Ok(h) => h,
                Err(e) => return (Err(inputs::Unreadable { path: input.path, reason: e.to_string() }), Vec::new()),
            };
            let key = files.add(&sha256, input.path.clone());
            Job {
                schema_version: SCHEMA_VERSION,
                job_id: uuid::Uuid::new_v4(),
                case_id: template.case_id.clone(),
                batch_id: template.batch_id.clone(),
                batch_total: Some(template.batch_total),
                submitted_at: Utc::now(),
                document: DocumentRef {
                    sha256,
                    size,
                    filename: input.path.display().to_string(),
                    declared_media_type: None,
                    content: Content::Blob { key },
                },
                stages: template.stages.clone(),
                options: template.options.clone(),
                parent: None,
            }
        }
    };
    let job = Arc::new(job);
    let mut result = JobResult::start(&job);
    let mut children = Vec::new();
    let limit = runner.config().limits.max_document_bytes;
    if job.document.size > limit {
        let reason = format!("{} bytes is over limits.max_document_bytes ({limit})", job.document.size);
        result.fail_stage(&runner.config().stages[0].name, 0, ErrorKind::TooLarge, &reason);
    } else {
        let plan = runner.plan(&job, &mut result);
        for stage in &plan {
            children.extend(run_with_retries(runner, stage, &job, &mut result).await);
        }
    }
    if job.parent.is_some() {
        if let Content::Blob { key } = &job.document.content {
            files.forget(key);
        }
    }
    result.settle();
    tracing::debug!(job_id = %job.job_id, sha256 = %job.document.sha256, status = ?result.status, children = children.len(), "document processed");
    (Ok(result), children)
}

/// In-process retries follow the same back-off schedule as the broker's delay queues.
async fn run_with_retries(runner: &Runner, stage: &str, job: &Arc<Job>, result: &mut JobResult) -> Vec<ChildJob> {
    let backoff = runner.config().retry.backoff_ms.clone();
    let mut attempt = 1u32;
    loop {
        match runner.run_stage(stage, job, result, attempt).await {
            Outcome::Recorded(children) => return children,
            Outcome::Transient(e) if (attempt as usize) <= backoff.len() => {
                tracing::info!(job_id = %job.job_id, stage, attempt, error_kind = %e.kind, "transient failure; retrying");
                tokio::time::sleep(Duration::from_millis(backoff[attempt as usize - 1])).await;
                attempt += 1;
            }
            Outcome::Transient(e) => {
                let reason = format!("gave up after {attempt} attempts: {}", e.reason);
                result.fail_stage(stage, attempt, ErrorKind::RetriesExhausted, &reason);
                return Vec::new();
            }
            Outcome::Crashed(e) => {
                tracing::error!(job_id = %job.job_id, stage, error_kind = %e.kind, "stage crashed");
                result.fail_stage(stage, attempt, e.kind, &e.reason);
                return Vec::new();
            }
        }
    }
}
