//! Runs stages for a job and records what happened. Shared by `docpipe process` and the
//! RabbitMQ workers, so the embedded mode is the same pipeline without a broker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use uuid::Uuid;

use crate::blob::{child_sha256, key_for, BlobStore};
use crate::config::Config;
use crate::pool::StagePool;
use crate::error::{ErrorKind, StageError};
use crate::evidence::signature::sign_result;
use crate::evidence::Signer;
use crate::retry::Attempted;
use crate::schema::{
    Annotation, BatchSpec, ChildDocument, Content, DocumentRef, Job, JobResult, ParentRef, Provenance, StageReport,
    StageStatus, TreeBudget,
};
use docpipe_models::extract::{Budget, ChildBytes};
use crate::stages::{ChildPayload, StageCatalog};

/// A document found inside another, ready to become a job of its own. The caller decides
/// where its bytes live (inline, blob store, memory).
#[derive(Debug)]
pub struct ChildJob {
    pub job: Job,
    pub bytes: ChildBytes,
}

/// How a stage attempt ended, from the transport's point of view.
#[derive(Debug)]
pub enum Outcome {
    /// Recorded in the result: success, or a document-level error such as `encrypted`. Carries
    /// the child documents the stage found.
    Recorded(Vec<ChildJob>),
    /// Worth retrying later; nothing was recorded.
    Transient(StageError),
    /// A crash (panic). Nothing was recorded; the message belongs in the dead-letter queue.
    Crashed(StageError),
}

impl Outcome {
    /// The outcome as the retry decision sees it.
    pub fn attempted(&self) -> Attempted<'_> {
        match self {
            Outcome::Recorded(_) => Attempted::Recorded,
            Outcome::Transient(e) => Attempted::Transient(e),
            Outcome::Crashed(e) => Attempted::Crashed(e),
        }
    }
}

pub struct Runner {
    config: Arc<Config>,
    pools: HashMap<String, StagePool>,
    worker_id: String,
    /// Signs every finished result when `[signing] key_file` is set.
    signer: Option<Signer>,
}

impl Runner {
    /// Start stage threads for `stages` (names from the config).
    pub fn start(
        config: Arc<Config>,
        catalog: &StageCatalog,
        stages: &[String],
        store: Arc<dyn BlobStore>,
        worker_id: String,
    ) -> anyhow::Result<Self> {
        let mut pools = HashMap::new();
        for name in stages {
            anyhow::ensure!(config.stage(name).is_some(), "stage `{name}` is not in the pipeline configuration");
            let factory = catalog.get(name).ok_or_else(|| anyhow::anyhow!("no implementation of stage `{name}`"))?;
            let (threads, depth) = (config.stage_threads(name), config.stage_jobs(name));
            pools.insert(name.clone(), StagePool::start(name, factory, store.clone(), threads, depth, config.extract.max_in_memory_bytes));
        }
        // A key that cannot be read stops the worker before it takes a job: results must not
        // quietly come out unsigned.
        let signer = crate::evidence::signer_from(&config)?;
        if let Some(signer) = &signer {
            tracing::info!(key_id = signer.id(), "signing results");
        }
        Ok(Self { config, pools, worker_id, signer })
    }

    /// Settle the result's status and sign it: the last thing done to a result before it leaves.
    /// Returns the result's digest (what a batch manifest records for it) when it was signed;
    /// unsigned, nothing computes one that only the embedded mode's manifest would use.
    pub fn finish(&self, result: &mut JobResult) -> Option<[u8; 32]> {
        result.settle();
        self.signer.as_ref().map(|signer| sign_result(result, signer))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Stages this job runs, in pipeline order. The entry stage always runs: it reads the bytes.
    /// Requested names the pipeline lacks are recorded as `unsupported` in `result`.
    pub fn plan(&self, job: &Job, result: &mut JobResult) -> Vec<String> {
        plan(&self.config, job, result)
    }

    /// Run `stage` once for `job`, recording success or a document error in `result`.
    pub async fn run_stage(&self, stage: &str, job: &Arc<Job>, result: &mut JobResult, attempt: u32) -> Outcome {
        let Some(pool) = self.pools.get(stage) else {
            return Outcome::Crashed(StageError::new(ErrorKind::Internal, format!("stage `{stage}` is not running here")));
        };
        let limit = Duration::from_secs(self.config.stage(stage).map_or(60, |s| s.timeout_secs));
        let started_at = Utc::now();
        let reply = pool.run(job.clone(), Arc::new(result.clone()), limit).await;
        let finished_at = Utc::now();
        if reply.detected_media_type.is_some() {
            result.document.detected_media_type = reply.detected_media_type;
        }
        match reply.outcome {
            Ok(output) => {
                if output.detected_media_type.is_some() {
                    result.document.detected_media_type = output.detected_media_type;
                }
                for produced in output.annotations {
                    result.annotations.push(Annotation {
                        provenance: Provenance {
                            stage: stage.to_owned(),
                            engine: produced.engine.name,
                            engine_version: produced.engine.version,
                            model: produced.engine.model,
                            parameters: produced.parameters,
                            machine_generated: produced.machine_generated,
                            started_at,
                            finished_at,
                            worker_id: self.worker_id.clone(),
                        },
                        body: produced.body,
                    });
                }
                // Hashing children (up to gigabytes) is CPU work: off the async threads.
                let (parent, payloads) = (job.clone(), output.children);
                let tree = tree_budget(&self.config, job);
                let hashed = tokio::task::spawn_blocking(move || {
                    let shares = tree.split(&payloads.iter().map(|c| c.bytes.len()).collect::<Vec<_>>());
                    payloads.into_iter().zip(shares).enumerate().map(|(i, (c, share))| child_job(&parent, i, c, share)).collect::<Result<Vec<_>, _>>()
                })
                .await
                .expect("child hashing task");
                // A spilled child that cannot be read back is this worker's disk, not the
                // document: nothing is recorded and the job is tried again.
                let hashed = match hashed {
                    Ok(hashed) => hashed,
                    Err(e) => return Outcome::Transient(StageError::new(ErrorKind::Unavailable, format!("reading back a child document spilled to disk: {e}"))),
                };
                let mut children = Vec::with_capacity(hashed.len());
                for (document, child) in hashed {
                    result.children.push(document);
                    children.push(child);
                }
                let status = if output.condition.is_some() { StageStatus::Error } else { StageStatus::Ok };
                result.stages.push(StageReport { stage: stage.into(), status, error: output.condition, attempts: attempt });
                Outcome::Recorded(children)
            }
            Err(error) if error.kind.is_transient() => Outcome::Transient(error),
            Err(error) if error.kind == ErrorKind::Panic => Outcome::Crashed(error),
            Err(error) => {
                result.stages.push(StageReport {
                    stage: stage.into(),
                    status: StageStatus::Error,
                    error: Some(error),
                    attempts: attempt,
                });
                Outcome::Recorded(Vec::new())
            }
        }
    }
}

/// What `job`'s descendants may unpack: its share from its parent, or the whole tree's budget.
fn tree_budget(config: &Config, job: &Job) -> Budget {
    match job.parent.as_ref().and_then(|p| p.budget) {
        Some(share) => Budget { bytes: share.bytes, members: share.members },
        None => Budget::of_tree(&config.extract),
    }
}

/// A child's job: same case, batch, stages and options as its parent; a job id derived from the
/// parent's, so a redelivered parent yields the same child ids (and results dedupe). `share` is
/// what the child's own descendants may unpack.
fn child_job(parent: &Job, index: usize, child: ChildPayload, share: Budget) -> std::io::Result<(ChildDocument, ChildJob)> {
    let sha256 = child_sha256(&child.bytes)?;
    let head = child.bytes.head(64 * 1024)?;
    let job_id = Uuid::new_v5(&parent.job_id, format!("{index}:{sha256}:{}", child.path).as_bytes());
    let size = child.bytes.len();
    let document = ChildDocument {
        job_id,
        sha256: sha256.clone(),
        size,
        path: child.path.clone(),
        parent_sha256: parent.document.sha256.clone(),
        media_type: Some(docpipe_models::sniff::media_type_named(&head, Some(&child.path)).to_owned()),
    };
    let batch = BatchSpec { batch_total: None, ..parent.batch() };
    let mut job = Job::new(
        job_id,
        &batch,
        DocumentRef {
            sha256: sha256.clone(),
            size,
            filename: format!("{}/{}", parent.document.filename, child.path),
            declared_media_type: None,
            content: Content::Blob { key: key_for(&sha256) },
        },
    );
    job.parent = Some(ParentRef {
        job_id: parent.job_id,
        sha256: parent.document.sha256.clone(),
        path: child.path,
        depth: parent.parent.as_ref().map_or(0, |p| p.depth) + 1,
        budget: Some(TreeBudget { bytes: share.bytes, members: share.members }),
    });
    Ok((document, ChildJob { job, bytes: child.bytes }))
}

pub fn plan(config: &Config, job: &Job, result: &mut JobResult) -> Vec<String> {
    let entry = &config.stages[0].name;
    for name in &job.stages {
        if config.stage(name).is_none() && !result.stages.iter().any(|s| &s.stage == name) {
            result.fail_stage(name, 0, ErrorKind::Unsupported, &format!("no stage named `{name}` in this pipeline"));
        }
    }
    config
        .stages
        .iter()
        .map(|s| &s.name)
        .filter(|name| *name == entry || job.stages.is_empty() || job.stages.contains(name))
        .cloned()
        .collect()
}

/// The next stage of `plan` that has no report yet.
pub fn next_stage<'a>(plan: &'a [String], result: &JobResult) -> Option<&'a String> {
    plan.iter().find(|name| !result.stages.iter().any(|s| &s.stage == *name))
}

/// `host-pid`, unless the config names the worker.
pub fn worker_id(config: &Config) -> String {
    if !config.worker.id.is_empty() {
        return config.worker.id.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{host}-{}", std::process::id())
}
