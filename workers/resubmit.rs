//! Sending a batch's failed documents again. They are chosen in the results store, rebuilt from
//! their stored results as the same jobs (same job id and options, `resubmission` counted up, the
//! original read from the blob store), and sent through the broker or run in this process. Same
//! job id means same idempotency key: a better result replaces the failed one in the store, and
//! the lineage of the document stays one line. Each act goes to the document's audit trail.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::amqp::short;
use crate::blob::{key_for, BlobStore};
use crate::cli::process::{run_embedded, Sink, Tally, Work};
use crate::config::Config;
use crate::error::ErrorKind;
use crate::schema::{BatchSpec, Content, DocumentRef, Job, JobResult, JobStatus};
use crate::stages::StageCatalog;
use crate::store::{FailedDocument, ResultStore};

/// Which documents of a batch to send again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub case_id: String,
    pub batch_id: String,
    /// `partial` results too, not only `failed` ones.
    pub partial: bool,
    /// Only documents with a stage error of this kind.
    pub kind: Option<ErrorKind>,
}

impl Selection {
    pub fn wants(&self, document: &FailedDocument) -> bool {
        let status = document.status == JobStatus::Failed || (self.partial && document.status == JobStatus::Partial);
        status && self.kind.is_none_or(|kind| document.errors.iter().any(|e| e.kind == kind.as_str()))
    }
}

/// How the jobs travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Published to the jobs exchange; workers run them and the results consumer stores them.
    Broker,
    /// Run in this process; each result goes straight into the store.
    Embedded,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Broker => "broker",
            Via::Embedded => "embedded",
        }
    }
}

/// What a resubmission did.
#[derive(Debug, Default)]
pub struct Resubmitted {
    /// Job ids sent again.
    pub sent: Vec<uuid::Uuid>,
    /// File names that could not be sent, and why (their original is not in the blob store, say).
    pub not_sent: Vec<(String, String)>,
    /// Outcomes, when run embedded.
    pub tally: Option<Tally>,
}

/// The job `result` came from, ready to run again: same id, batch, document, stages and options.
pub fn job_again(result: &JobResult) -> Job {
    let batch = BatchSpec {
        case_id: result.case_id.clone(),
        batch_id: result.batch_id.clone(),
        batch_total: result.batch_total,
        stages: result.requested_stages.clone(),
        options: result.options.clone(),
    };
    let document = DocumentRef {
        sha256: result.document.sha256.clone(),
        size: result.document.size,
        filename: result.document.filename.clone(),
        declared_media_type: result.document.declared_media_type.clone(),
        content: Content::Blob { key: key_for(&result.document.sha256) },
    };
    let mut job = Job::new(result.job_id, &batch, document);
    job.parent = result.parent.clone();
    job.resubmission = result.resubmission + 1;
    job
}

/// The jobs for the documents `selection` picks, each recorded in its audit trail as sent again
/// by `user_name`; documents whose original the blob store lacks are listed, not sent.
pub async fn prepare(
    store: &dyn ResultStore,
    blobs: &dyn BlobStore,
    selection: &Selection,
    user_name: &str,
    via: Via,
) -> anyhow::Result<(Vec<Job>, Resubmitted)> {
    let mut jobs = Vec::new();
    let mut outcome = Resubmitted::default();
    for document in store.failures(&selection.case_id, &selection.batch_id).await? {
        if !selection.wants(&document) {
            continue;
        }
        let Some(result) = store.get(&document.key).await? else { continue };
        let key = key_for(&result.document.sha256);
        if !blobs.has(&key)? {
            outcome.not_sent.push((document.filename, format!("the original ({key}) is not in the blob store")));
            continue;
        }
        let job = job_again(&result);
        let before = format!(
            "{}: {}",
            crate::store::status_str(document.status),
            document.errors.iter().map(|e| format!("{} {}", e.stage, e.kind)).collect::<Vec<_>>().join(", ")
        );
        let after = format!("sent again (resubmission {}, {})", job.resubmission, via.as_str());
        store.record(&document.key, user_name, "resubmit", Some(&before), &after).await?;
        outcome.sent.push(job.job_id);
        jobs.push(job);
    }
    Ok((jobs, outcome))
}

/// Send the selected documents again and, when embedded, run them to the end.
pub async fn resubmit(
    config: Arc<Config>,
    store: &dyn ResultStore,
    selection: &Selection,
    user_name: &str,
    via: Via,
) -> anyhow::Result<Resubmitted> {
    let blobs = crate::blob::open(&config.blobs)?;
    let (jobs, mut outcome) = prepare(store, blobs.as_ref(), selection, user_name, via).await?;
    if jobs.is_empty() {
        return Ok(outcome);
    }
    match via {
        Via::Broker => publish(&config, &jobs).await?,
        Via::Embedded => outcome.tally = Some(run(config, store, jobs).await?),
    }
    Ok(outcome)
}

/// Publish `jobs` with confirms.
pub async fn publish(config: &Config, jobs: &[Job]) -> anyhow::Result<()> {
    let connection = crate::amqp::connect(config).await?;
    let mut publisher = crate::amqp::JobPublisher::open(&connection, config).await?;
    for job in jobs {
        publisher.publish(job).await?;
    }
    publisher.wait().await?;
    connection.close(200, short("resubmitted")).await?;
    Ok(())
}

/// Run `jobs` in this process, each result ingested into `store` as it is made. Only the stages
/// they ask for are started (no model is loaded for a stage none of them runs).
pub async fn run(config: Arc<Config>, store: &dyn ResultStore, jobs: Vec<Job>) -> anyhow::Result<Tally> {
    let Some(first) = jobs.first() else { return Ok(Tally::default()) };
    let batch = first.batch();
    let mut stages = Vec::new();
    for job in &jobs {
        let mut result = JobResult::start(job);
        for stage in crate::runner::plan(&config, job, &mut result) {
            if !stages.contains(&stage) {
                stages.push(stage);
            }
        }
    }
    let catalog = StageCatalog::builtin(&config);
    let work: VecDeque<Work> = jobs.into_iter().map(|job| Work::Job(Box::new(job))).collect();
    run_embedded(config, &catalog, &stages, &batch, work, &mut Sink::Store(store)).await
}
