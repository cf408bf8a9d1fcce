//! `docpipe submit`: hash on arrival, keep a content-addressed copy, publish one job per file.

use std::path::PathBuf;

use anyhow::Context;
use base64::Engine as _;

use super::inputs;
use crate::amqp::short;
use crate::amqp::topology::declare_batch_queue;
use crate::amqp::{connect, JobPublisher};
use crate::blob::key_for;
use crate::config::Config;
use crate::schema::{BatchSpec, Content, DocumentRef, Job};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files and folders to submit (folders are walked).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Case id the documents belong to.
    #[arg(long)]
    pub case: String,
    /// Batch id (default: a new UUID, printed at the end).
    #[arg(long)]
    pub batch: Option<String>,
    #[command(flatten)]
    pub job: super::JobArgs,
}

/// What a submission did.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub batch_id: String,
    pub published: usize,
    pub not_submitted: Vec<inputs::Unreadable>,
}

/// Exit status 2 when some files could not be submitted (they are listed on stderr).
pub async fn run(config: &Config, args: Args) -> anyhow::Result<std::process::ExitCode> {
    let submitted = submit(config, args).await?;
    for u in &submitted.not_submitted {
        eprintln!("not submitted: {}: {}", u.path.display(), u.reason);
    }
    println!("batch {}", submitted.batch_id);
    println!("{} jobs published, {} files not submitted", submitted.published, submitted.not_submitted.len());
    println!("collect results with: docpipe results --batch {}", submitted.batch_id);
    Ok(if submitted.not_submitted.is_empty() { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(2) })
}

struct Stored {
    path: PathBuf,
    sha256: String,
    size: u64,
}

pub async fn submit(config: &Config, args: Args) -> anyhow::Result<Submitted> {
    let (stages, options) = args.job.resolve(config)?;
    let batch_id = args.batch.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let store = crate::blob::open(&config.blobs)?;

    // Pass 1: hash and keep a verified copy of everything, so the batch size is known before
    // the first job leaves and a file changing afterwards cannot change what was submitted.
    let (found, mut not_submitted) = inputs::walk(&args.paths);
    let bar = inputs::progress(found.len() as u64, "hash");
    let mut stored = Vec::with_capacity(found.len());
    for input in found {
        bar.inc(1);
        if input.size > config.limits.max_document_bytes {
            not_submitted.push(inputs::Unreadable {
                path: input.path,
                reason: format!("too_large: {} bytes is over limits.max_document_bytes", input.size),
            });
            continue;
        }
        let (store, path) = (store.clone(), input.path.clone());
        let copied = tokio::task::spawn_blocking(move || -> anyhow::Result<(String, u64)> {
            let bytes = std::fs::read(&path)?;
            let sha256 = crate::blob::sha256_hex(&bytes);
            store.put(&sha256, &bytes)?;
            Ok((sha256, bytes.len() as u64))
        })
        .await?;
        match copied {
            Ok((sha256, size)) => stored.push(Stored { path: input.path, sha256, size }),
            Err(e) => not_submitted.push(inputs::Unreadable { path: input.path, reason: format!("{e:#}") }),
        }
    }
    bar.finish_and_clear();

    // Pass 2: publish, keeping a window of unconfirmed publishes for throughput.
    let connection = connect(config).await.context("connecting to the broker")?;
    let mut publisher = JobPublisher::open(&connection, config).await?;
    declare_batch_queue(publisher.channel(), config, &batch_id).await?;
    let total = stored.len() as u64;
    let batch = BatchSpec { case_id: args.case.clone(), batch_id: batch_id.clone(), batch_total: Some(total), stages, options };
    let bar = inputs::progress(total, "publish");
    for item in stored {
        let content = if item.size <= config.blobs.inline_max_bytes {
            let bytes = store.get(&key_for(&item.sha256))?;
            Content::Inline { base64: base64::engine::general_purpose::STANDARD.encode(bytes) }
        } else {
            Content::Blob { key: key_for(&item.sha256) }
        };
        // Derived from batch, path and content: resubmitting a batch after a failure mid-publish
        // gives the same job ids, so results dedupe instead of counting twice.
        let job_id = Job::id_for(&batch_id, &item.path.display().to_string(), &item.sha256);
        let document = DocumentRef {
            sha256: item.sha256,
            size: item.size,
            filename: item.path.display().to_string(),
            declared_media_type: None,
            content,
        };
        publisher.publish(&Job::new(job_id, &batch, document)).await.context("publishing a job")?;
        bar.inc(1);
    }
    publisher.wait().await.context("publishing a job")?;
    bar.finish_and_clear();
    connection.close(200, short("submitted")).await?;
    Ok(Submitted { batch_id, published: total as usize, not_submitted })
}
