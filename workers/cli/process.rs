//! `docpipe process`: the embedded mode. Same stages, same result documents, no broker.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::collections::VecDeque;
use std::time::Instant;

use anyhow::Context;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;

use super::inputs::{self, Input};
use crate::blob::{key_for, BlobStore};
use crate::config::Config;
use crate::error::ErrorKind;
use crate::evidence::manifest::{Entry, Manifest};
use crate::evidence::signature::digest_of_result;
use crate::retry::{self, Action};
use crate::runner::{ChildJob, Outcome, Runner};
use crate::schema::{BatchSpec, Content, DocumentRef, Job, JobResult, JobStatus};
use crate::stages::StageCatalog;
use crate::store::ResultStore;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files and folders to process (folders are walked).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Output directory: results.jsonl (one result per document), its manifest
    /// results.manifest.json, and unreadable.jsonl.
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

/// Documents by outcome, printed at the end and used by tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub complete: usize,
    pub partial: usize,
    pub failed: usize,
    pub unreadable: usize,
}

pub async fn run(config: Arc<Config>, catalog: StageCatalog, args: Args) -> anyhow::Result<std::process::ExitCode> {
    let tally = process(config, catalog, args).await?;
    println!(
        "{} documents: {} complete, {} partial, {} failed; {} unreadable",
        tally.complete + tally.partial + tally.failed,
        tally.complete,
        tally.partial,
        tally.failed,
        tally.unreadable
    );
    Ok(std::process::ExitCode::SUCCESS)
}

pub async fn process(config: Arc<Config>, catalog: StageCatalog, args: Args) -> anyhow::Result<Tally> {
    let (stages, options) = args.job.resolve(&config)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let (found, unreadable) = inputs::walk(&args.paths);
    let mut skipped = std::fs::File::create(args.out.join("unreadable.jsonl"))?;
    for u in &unreadable {
        eprintln!("unreadable: {}: {}", inputs::printable(&u.path.display().to_string()), u.reason);
        serde_json::to_writer(&mut skipped, u)?;
        skipped.write_all(b"\n")?;
    }
    let batch = BatchSpec {
        case_id: args.case.unwrap_or_else(|| config.defaults.case_id.clone()),
        batch_id: args.batch.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        batch_total: Some(found.len() as u64),
        stages,
        options,
    };
    tracing::info!(documents = found.len(), unreadable = unreadable.len(), batch_id = %batch.batch_id, "processing");
    let out_path = args.out.join("results.jsonl");
    let mut sink = Sink::Jsonl {
        results: std::io::BufWriter::new(std::fs::File::create(&out_path)?),
        unreadable: skipped,
        entries: Vec::new(),
    };
    let work = found.into_iter().map(Work::File).collect();
    let stages = config.stage_names();
    let signer = crate::evidence::signer_from(&config)?;
    let mut tally = run_embedded(config, &catalog, &stages, &batch, work, &mut sink).await?;
    tally.unreadable += unreadable.len();
    sink.flush()?;
    let Sink::Jsonl { entries, .. } = sink else { unreachable!("the JSON lines sink") };
    let manifest = crate::evidence::manifest::path_beside(&out_path);
    Manifest::build(&batch.case_id, &batch.batch_id, true, entries, signer.as_ref()).write(&manifest)?;
    eprintln!(
        "results in {}, manifest in {}{}",
        out_path.display(),
        manifest.display(),
        if signer.is_some() { " (signed)" } else { " (not signed: no [signing] key_file)" }
    );
    Ok(tally)
}

/// Where the embedded mode puts what it made.
pub enum Sink<'a> {
    /// JSON lines files (`docpipe process --out`), and the manifest's entries for what was written.
    Jsonl { results: std::io::BufWriter<std::fs::File>, unreadable: std::fs::File, entries: Vec<Entry> },
    /// Straight into the results store, one commit per result (`docpipe resubmit`).
    Store(&'a dyn ResultStore),
}

impl Sink<'_> {
    /// Write one finished result; `digest` is what `Runner::finish` returned for it.
    async fn result(&mut self, result: &JobResult, digest: &[u8; 32]) -> anyhow::Result<()> {
        match self {
            Sink::Jsonl { results, entries, .. } => {
                serde_json::to_writer(&mut *results, result)?;
                results.write_all(b"\n")?;
                entries.push(Entry::of_result(result, digest));
            }
            Sink::Store(store) => {
                store.ingest(result).await?;
            }
        }
        Ok(())
    }

    fn unreadable(&mut self, unreadable: &inputs::Unreadable) -> anyhow::Result<()> {
        if let Sink::Jsonl { unreadable: file, .. } = self {
            serde_json::to_writer(&mut *file, unreadable)?;
            file.write_all(b"\n")?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if let Sink::Jsonl { results, .. } = self {
            results.flush()?;
        }
        Ok(())
    }
}

/// What the embedded mode is given to do.
pub enum Work {
    /// A file of the user's, hashed and copied into the blob store when its turn comes.
    File(Input),
    /// A job whose document is already in the blob store: a child found inside another document,
    /// or a resubmitted one.
    Job(Box<Job>),
}

/// Run `work` through `stages` (threads started for each) in this process, children included as they are found. Each
/// input is copied into the blob store (content-addressed, hashed on the way in), as `submit`
/// does, so the review workspace can show and re-check originals and failed documents can be
/// sent again.
pub async fn run_embedded(
    config: Arc<Config>,
    catalog: &StageCatalog,
    stages: &[String],
    batch: &BatchSpec,
    work: VecDeque<Work>,
    sink: &mut Sink<'_>,
) -> anyhow::Result<Tally> {
    let blobs = crate::blob::open(&config.blobs)?;
    let runner = Runner::start(config.clone(), catalog, stages, blobs.clone(), crate::runner::worker_id(&config))?;
    let mut tally = Tally::default();
    let progress = inputs::Progress::new(work.len() as u64, "process");
    let mut pending = work;
    let mut running = FuturesUnordered::new();
    // A document goes through the stages one after another: as many in flight as the busiest
    // stage works on at once keeps each stage's threads fed.
    let in_flight = stages.iter().map(|s| config.stage_jobs(s)).max().unwrap_or(config.worker.concurrency);
    loop {
        while running.len() < in_flight {
            let Some(work) = pending.pop_front() else { break };
            running.push(process_one(&runner, &blobs, batch, &progress, work));
        }
        let Some((outcome, children)) = running.next().await else { break };
        progress.bar.inc_length(children.len() as u64);
        for ChildJob { job, bytes } in children {
            let (store, sha256) = (blobs.clone(), job.document.sha256.clone());
            tokio::task::spawn_blocking(move || store.put_child(&sha256, &bytes)).await.expect("blob task")?;
            pending.push_back(Work::Job(Box::new(job)));
        }
        match outcome {
            Ok((result, digest)) => {
                match result.status {
                    JobStatus::Complete => tally.complete += 1,
                    JobStatus::Partial => tally.partial += 1,
                    JobStatus::Failed => tally.failed += 1,
                }
                sink.result(&result, &digest).await?;
            }
            Err(u) => {
                progress.line(&format!("unreadable: {}: {}", inputs::printable(&u.path.display().to_string()), u.reason));
                sink.unreadable(&u)?;
                tally.unreadable += 1;
            }
        }
        progress.bar.inc(1);
    }
    progress.bar.finish_and_clear();
    Ok(tally)
}

async fn process_one(
    runner: &Runner,
    blobs: &Arc<dyn BlobStore>,
    batch: &BatchSpec,
    progress: &inputs::Progress,
    work: Work,
) -> (Result<(JobResult, [u8; 32]), inputs::Unreadable>, Vec<ChildJob>) {
    let started = Instant::now();
    let job = match work {
        Work::Job(job) => *job,
        Work::File(input) => {
            let (store, path) = (blobs.clone(), input.path.clone());
            let copied = tokio::task::spawn_blocking(move || store.put_file(&path)).await.expect("copying task");
            let (sha256, size) = match copied {
                Ok(c) => c,
                Err(e) => return (Err(inputs::Unreadable { path: input.path, reason: e.to_string() }), Vec::new()),
            };
            let document = DocumentRef {
                content: Content::Blob { key: key_for(&sha256) },
                sha256,
                size,
                filename: input.path.display().to_string(),
                declared_media_type: None,
            };
            // As `submit` derives them: processing the same batch again gives the same job ids.
            Job::new(Job::id_for(&batch.batch_id, &document.filename, &document.sha256), batch, document)
        }
    };
    let job = Arc::new(job);
    // What the progress lines call the document: the user's own path, or for a document found
    // inside another its digest (names inside documents are document content, kept off stderr).
    let name = match &job.parent {
        None => inputs::printable(&job.document.filename),
        Some(parent) => format!("sha256:{} (in sha256:{})", &job.document.sha256[..12], &parent.sha256[..12]),
    };
    let mut result = JobResult::start(&job);
    let mut children = Vec::new();
    let limit = runner.config().limits.max_document_bytes;
    if job.document.size > limit {
        let reason = format!("{} bytes is over limits.max_document_bytes ({limit})", job.document.size);
        result.fail_stage(&runner.config().stages[0].name, 0, ErrorKind::TooLarge, &reason);
    } else {
        let plan = runner.plan(&job, &mut result);
        for stage in &plan {
            let stage_started = Instant::now();
            children.extend(run_with_retries(runner, stage, &job, &mut result).await);
            let status = match result.stages.iter().rev().find(|r| &r.stage == stage).and_then(|r| r.error.as_ref()) {
                Some(error) => error.kind.as_str(),
                None => "ok",
            };
            progress.line(&format!("  {stage:<11} {status:<11} {:>7.1} s  {name}", stage_started.elapsed().as_secs_f64()));
        }
    }
    let digest = runner.finish(&mut result).unwrap_or_else(|| digest_of_result(&mut result));
    progress.line(&format!("{:<23} {:>7.1} s  {name}", format!("{:?}", result.status).to_lowercase(), started.elapsed().as_secs_f64()));
    tracing::debug!(job_id = %job.job_id, sha256 = %job.document.sha256, status = ?result.status, children = children.len(), "document processed");
    (Ok((result, digest)), children)
}

/// In-process retries follow the broker's decision and back-off schedule, with a sleep for the
/// delay queue.
async fn run_with_retries(runner: &Runner, stage: &str, job: &Arc<Job>, result: &mut JobResult) -> Vec<ChildJob> {
    let mut attempt = 1u32;
    loop {
        let outcome = runner.run_stage(stage, job, result, attempt).await;
        match retry::decide(outcome.attempted(), attempt, &runner.config().retry.backoff_ms) {
            Action::Continue => {
                return match outcome {
                    Outcome::Recorded(children) => children,
                    _ => Vec::new(),
                }
            }
            Action::Retry { next_attempt, delay, .. } => {
                tracing::info!(job_id = %job.job_id, stage, attempt, "transient failure; retrying");
                tokio::time::sleep(delay).await;
                attempt = next_attempt;
            }
            Action::GiveUp { kind, reason } => {
                tracing::warn!(job_id = %job.job_id, stage, attempt, error_kind = %kind, "stage given up");
                result.fail_stage(stage, attempt, kind, &reason);
                return Vec::new();
            }
        }
    }
}
