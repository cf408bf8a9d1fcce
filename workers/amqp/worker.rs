//! The worker: consume stage queues, run stages on engine threads, publish what they produced,
//! and only then ack. Reconnects when the broker goes away; drains on shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::topology::{declare, Names};
use super::*;
use crate::blob::{BlobError, BlobStore};
use crate::config::Config;
use crate::error::{ErrorKind, StageError};
use crate::retry::{self, Action, Attempted};
use crate::runner::{next_stage, ChildJob, Outcome, Runner};
use anyhow::Context as _;
use crate::metrics::Metrics;
use crate::schema::{check_version, Content, Job, JobResult, SCHEMA_VERSION};
use crate::stages::StageCatalog;
use base64::Engine as _;

/// A job between stages: the job and the result so far. Internal to docpipe.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handoff {
    pub schema_version: u32,
    pub job: Job,
    pub result: JobResult,
}

/// A hand-off too large for the broker, kept in the blob store (claim check). The message
/// carries the job itself, so a hand-off that is lost can still be reported as that job's result.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoffRef {
    pub schema_version: u32,
    /// Blob-store key of the serialized [`Handoff`].
    pub key: String,
    pub job: Job,
}

impl HandoffRef {
    fn parse(body: &[u8]) -> Result<Self, String> {
        let value = check_version(body).map_err(|e| e.to_string())?;
        serde_json::from_value(value).map_err(|e| format!("bad hand-off reference: {e}"))
    }
}

struct Ctx {
    runner: Runner,
    names: Names,
    confirm_timeout: Duration,
    store: Arc<dyn BlobStore>,
    inline_max: u64,
    max_message: u64,
    /// Per stage, `Config::stage_jobs` jobs handled at once; further prefetched deliveries wait
    /// for a slot.
    slots: HashMap<String, tokio::sync::Semaphore>,
    metrics: Arc<Metrics>,
}

/// Run a worker for `stages` until `shutdown` resolves. Returns after in-flight jobs finished
/// (or, past the grace period, were left unacked for the broker to requeue).
pub async fn run(
    config: Arc<Config>,
    catalog: StageCatalog,
    stages: Vec<String>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let store = crate::blob::open(&config.blobs)?;
    let worker_id = crate::runner::worker_id(&config);
    let runner = Runner::start(config.clone(), &catalog, &stages, store.clone(), worker_id.clone())?;
    let ctx = Arc::new(Ctx {
        runner,
        names: Names::new(&config),
        confirm_timeout: Duration::from_secs(config.broker.confirm_timeout_secs),
        store,
        inline_max: config.blobs.inline_max_bytes,
        max_message: config.broker.max_message_bytes,
        slots: stages.iter().map(|s| (s.clone(), tokio::sync::Semaphore::new(config.stage_jobs(s)))).collect(),
        metrics: Arc::new(Metrics::default()),
    });
    if !config.worker.metrics_bind.is_empty() {
        let listener = tokio::net::TcpListener::bind(&config.worker.metrics_bind)
            .await
            .with_context(|| format!("worker.metrics_bind {}", config.worker.metrics_bind))?;
        tracing::info!(address = %listener.local_addr()?, "metrics and health checks served");
        let (metrics, blobs) = (ctx.metrics.clone(), ctx.store.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(listener, metrics, blobs).await {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        });
    }
    tokio::pin!(shutdown);
    let mut backoff = Backoff::new(&config);
    tracing::info!(worker = %worker_id, stages = ?stages, "worker starting");
    loop {
        let connection = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            connected = connect(&config) => connected,
        };
        let connection = match connection {
            Ok(c) => c,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot reach broker");
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        let began = tokio::time::Instant::now();
        let ended = session(&ctx, &config, &connection, &stages, &mut shutdown).await;
        ctx.metrics.set_connected(false);
        match ended {
            Ok(()) => {
                let _ = connection.close(200, short("shutdown")).await;
                tracing::info!("worker stopped");
                return Ok(());
            }
            Err(e) => {
                let _ = connection.close(320, short("reconnecting")).await;
                ctx.metrics.reconnect();
                // A session that failed at once (e.g. a queue redeclared with other arguments)
                // must not turn into a tight reconnect loop; a long healthy one starts afresh.
                if began.elapsed() > Duration::from_secs(60) {
                    backoff = Backoff::new(&config);
                }
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "broker connection lost; reconnecting");
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// One connection's life. Ok means shutdown was requested; Err means the connection was lost.
async fn session(
    ctx: &Arc<Ctx>,
    config: &Config,
    connection: &Connection,
    stages: &[String],
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<(), TransportError> {
    // Connection-level errors (heartbeat lost, socket closed, broker closing) arrive as events.
    let mut events = connection.events_listener();
    let setup = connection.create_channel().await?;
    declare(&setup, config).await?;
    let _ = setup.close(200, short("declared")).await;

    let mut consumers = Vec::new();
    let mut streams = Vec::new();
    for stage in stages {
        let channel = confirm_channel(connection).await?;
        channel.basic_qos(config.broker.prefetch, BasicQosOptions::default()).await?;
        let consumer = channel
            .basic_consume(short(&ctx.names.stage_queue(stage)), short(""), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        consumers.push((channel.clone(), consumer.tag()));
        let stage = stage.clone();
        streams.push(consumer.map(move |d| (stage.clone(), channel.clone(), d)).boxed());
    }
    let mut deliveries = futures_util::stream::select_all(streams);
    let mut tasks = JoinSet::new();
    // A job whose publish the broker did not confirm says so here, and the session ends.
    let (broken, mut broker_fault) = tokio::sync::mpsc::channel::<TransportError>(1);
    ctx.metrics.set_connected(true);
    tracing::info!("consuming");

    loop {
        tokio::select! {
            _ = shutdown.as_mut() => break,
            Some(event) = events.next() => {
                if let lapin::Event::Error(error) = event {
                    tasks.abort_all();
                    return Err(error.into());
                }
            }
            next = deliveries.next() => match next {
                Some((stage, channel, Ok(delivery))) => {
                    let (ctx, broken) = (ctx.clone(), broken.clone());
                    tasks.spawn(async move { handle(&ctx, &stage, &channel, delivery, &broken).await });
                }
                Some((_, _, Err(error))) => {
                    tasks.abort_all();
                    return Err(error.into());
                }
                None => {
                    tasks.abort_all();
                    return Err(TransportError::ConsumersEnded);
                }
            },
            Some(error) = broker_fault.recv() => {
                tasks.abort_all();
                return Err(error);
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }

    // Shutdown: take no more deliveries, let in-flight jobs finish within the grace period.
    tracing::info!(in_flight = tasks.len(), "shutdown requested: draining");
    for (channel, tag) in &consumers {
        let _ = channel.basic_cancel(short(tag.as_str()), BasicCancelOptions::default()).await;
    }
    let grace = Duration::from_secs(config.worker.shutdown_grace_secs);
    let drained = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(left = tasks.len(), "grace period over: unfinished jobs return to their queues");
        tasks.abort_all();
    }
    for (channel, _) in &consumers {
        let _ = channel.close(200, short("shutdown")).await; // unacked deliveries are requeued by the broker
    }
    Ok(())
}

/// Handle one delivery end to end. Ack only after every publish it caused is confirmed. Every
/// log line of it, acks included, is inside the job's span: the span is attached to the future,
/// never entered across an await, so it cannot leak into other deliveries' lines.
///
/// A publish the broker did not confirm is reported on `broken`, ending the session: with a
/// cluster that lost its majority, a nack sent on the old channel may never be applied, and the
/// delivery would stay checked out to this consumer for as long as the connection lives (seen:
/// 6 of 60 jobs never finished after two of three nodes came back). Closing the connection is the
/// one way the broker is sure to requeue every unacked delivery.
async fn handle(ctx: &Ctx, stage: &str, channel: &Channel, delivery: Delivery, broken: &tokio::sync::mpsc::Sender<TransportError>) {
    let attempt = header_u32(delivery.properties.headers(), H_ATTEMPT).unwrap_or(1).max(1);
    let span = tracing::info_span!("job", stage, attempt, job_id = tracing::field::Empty);
    async {
        let _in_flight = ctx.metrics.delivery(stage);
        // Jobs beyond the stage's job count wait here, already prefetched, for a free slot.
        let _slot = match ctx.slots.get(stage) {
            Some(slots) => slots.acquire().await.ok(),
            None => None,
        };
        let done = std::panic::AssertUnwindSafe(process(ctx, stage, channel, &delivery, attempt)).catch_unwind().await;
        let done = match done {
            Ok(done) => done,
            // A bug in docpipe's own transport code. It would recur on every redelivery, so park
            // the message and give the case system a result now, as for a stage that panicked.
            Err(payload) => {
                let reason = format!("panic while handling the delivery: {}", crate::pool::panic_message(&*payload));
                // The reason (a panic message can quote text) goes to the result and headers, not the log.
                tracing::error!(error_kind = %ErrorKind::Panic, "to dead-letter queue");
                let result = read(&delivery).ok().map(|(job, result)| result.unwrap_or_else(|| JobResult::start(&job)));
                give_up(ctx, channel, &delivery, stage, attempt, ErrorKind::Panic, &reason, result).await
            }
        };
        match done {
            Ok(()) => {
                if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                    tracing::warn!(error = %e, "ack failed; the broker will redeliver (results are idempotent)");
                }
            }
            Err(e) => {
                // Nothing was decided for good: the broker redelivers, and the delivery limit
                // check in `process` gives up with a result if this keeps happening.
                tracing::warn!(error = %e, "publish failed; returning the message to its queue");
                let _ = delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
                if e.is_broker_fault() {
                    let _ = broken.try_send(e);
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// Why a delivery could not be turned into a job: nothing names the job, so no result can be
/// published; the message is parked with the reason.
struct Unreadable {
    kind: ErrorKind,
    reason: String,
}

/// The job and, for a hand-off, the result so far. A claim-check reference is parsed first and
/// its blob loaded only by `load_handoff`, after the delivery limit was checked.
fn read(delivery: &Delivery) -> Result<(Job, Option<JobResult>), Unreadable> {
    let kind = delivery.properties.kind().as_ref().map(|k| k.as_str().to_owned());
    if kind.as_deref() == Some(HANDOFF_REF_TYPE) {
        let reference = HandoffRef::parse(&delivery.data)
            .map_err(|reason| Unreadable { kind: ErrorKind::BadMessage, reason })?;
        return Ok((reference.job, None));
    }
    decode(kind.as_deref(), &delivery.data)
        .map(|(job, result)| (job, Some(result)))
        .map_err(|reason| Unreadable { kind: ErrorKind::BadMessage, reason })
}

async fn process(ctx: &Ctx, stage: &str, channel: &Channel, delivery: &Delivery, attempt: u32) -> Result<(), TransportError> {
    let (job, result) = match read(delivery) {
        Ok(read) => read,
        Err(unreadable) => {
            // A JSON error quotes the offending value, which may be document text: kind only.
            tracing::warn!(error_kind = %unreadable.kind, "unreadable message to dead-letter queue");
            return give_up(ctx, channel, delivery, stage, attempt, unreadable.kind, &unreadable.reason, None).await;
        }
    };
    tracing::Span::current().record("job_id", tracing::field::display(job.job_id));
    // The broker parks a message silently once it passes the delivery limit. Before that
    // happens, and before anything that could fail again (loading a hand-off), park it ourselves
    // with the reason and tell the case system.
    let deliveries = header_u32(delivery.properties.headers(), "x-delivery-count").unwrap_or(0);
    if let Some(Action::GiveUp { kind, reason }) = retry::over_delivery_limit(deliveries, ctx.runner.config().broker.delivery_limit) {
        tracing::error!(error_kind = %kind, "to dead-letter queue");
        let result = result.unwrap_or_else(|| JobResult::start(&job));
        return give_up(ctx, channel, delivery, stage, attempt, kind, &reason, Some(result)).await;
    }
    let mut result = match result {
        Some(result) => result,
        None => match load_handoff(ctx, delivery, &job).await {
            Ok(result) => result,
            Err(error) => {
                // A hand-off that cannot be read is a stage attempt that failed: transient
                // faults (the store is unreachable) retry, lost or damaged ones give up with a
                // failed result, so the case system hears of it.
                let attempted =
                    if error.kind.is_transient() { Attempted::Transient(&error) } else { Attempted::Crashed(&error) };
                let action = retry::decide(attempted, attempt, &ctx.runner.config().retry.backoff_ms);
                return carry_out(ctx, channel, delivery, stage, attempt, action, JobResult::start(&job)).await;
            }
        },
    };
    let plan = ctx.runner.plan(&job, &mut result);
    let job = Arc::new(job);
    let started = std::time::Instant::now();
    let annotated = result.annotations.len();
    let outcome = ctx.runner.run_stage(stage, &job, &mut result, attempt).await;
    ctx.metrics.annotations(result.annotations.get(annotated..).unwrap_or_default());
    let label = match &outcome {
        Outcome::Recorded(_) => match result.stages.last().filter(|r| r.stage == stage).and_then(|r| r.error.as_ref()) {
            Some(error) => error.kind.as_str(),
            None => "ok",
        },
        Outcome::Transient(e) | Outcome::Crashed(e) => e.kind.as_str(),
    };
    ctx.metrics.stage_run(stage, label, started.elapsed());
    match retry::decide(outcome.attempted(), attempt, &ctx.runner.config().retry.backoff_ms) {
        Action::Continue => {
            let children = match outcome {
                Outcome::Recorded(children) => children,
                _ => Vec::new(),
            };
            if let Some(report) = result.stages.last().filter(|r| r.stage == stage) {
                tracing::info!(status = ?report.status, error_kind = report.error.as_ref().map(|e| e.kind.as_str()), children = children.len(), "stage done");
            }
            let found = children.len() as u64;
            publish_children(ctx, channel, children).await?;
            progress(ctx, channel, progress::Event::new(&result, stage, label, found, started.elapsed())).await;
            forward(ctx, channel, delivery, &plan, &job, result).await
        }
        action => carry_out(ctx, channel, delivery, stage, attempt, action, result).await,
    }
}

/// Carry out a retry or a give-up decided for this delivery.
async fn carry_out(
    ctx: &Ctx,
    channel: &Channel,
    delivery: &Delivery,
    stage: &str,
    attempt: u32,
    action: Action,
    result: JobResult,
) -> Result<(), TransportError> {
    match action {
        Action::Continue => unreachable!("continuing is the caller's own path"),
        Action::Retry { next_attempt, step, delay } => {
            tracing::info!(retry_in_ms = delay.as_millis() as u64, "transient failure; retrying after delay");
            ctx.metrics.retry();
            retry(ctx, channel, delivery, stage, next_attempt, step).await
        }
        Action::GiveUp { kind, reason } => {
            tracing::warn!(error_kind = %kind, "to dead-letter queue");
            give_up(ctx, channel, delivery, stage, attempt, kind, &reason, Some(result)).await
        }
    }
}

/// Park the message with the reason and, when the job is known, publish its failed result.
#[allow(clippy::too_many_arguments)]
async fn give_up(
    ctx: &Ctx,
    channel: &Channel,
    delivery: &Delivery,
    stage: &str,
    attempt: u32,
    kind: ErrorKind,
    reason: &str,
    result: Option<JobResult>,
) -> Result<(), TransportError> {
    dead_letter(ctx, channel, delivery, stage, kind, reason, attempt).await?;
    match result {
        Some(mut result) => {
            result.fail_stage(stage, attempt, kind, reason);
            publish_result(ctx, channel, delivery, result).await
        }
        None => Ok(()),
    }
}

fn decode(kind: Option<&str>, body: &[u8]) -> Result<(Job, JobResult), String> {
    let value = check_version(body).map_err(|e| e.to_string())?;
    let (job, result) = if kind == Some(HANDOFF_TYPE) {
        let handoff: Handoff = serde_json::from_value(value).map_err(|e| format!("bad hand-off: {e}"))?;
        (handoff.job, handoff.result)
    } else {
        let job: Job = serde_json::from_value(value).map_err(|e| format!("bad job: {e}"))?;
        let result = JobResult::start(&job);
        (job, result)
    };
    let sha = &job.document.sha256;
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err("document.sha256 is not 64 lower-case hex digits".into());
    }
    Ok((job, result))
}

/// Children become jobs of their own, published (and confirmed) before the parent moves on, so
/// a parent's result never names a child that is not queued.
async fn publish_children(ctx: &Ctx, channel: &Channel, children: Vec<ChildJob>) -> Result<(), TransportError> {
    for ChildJob { mut job, bytes } in children {
        if job.document.size <= ctx.inline_max {
            // Inline children are small, so in memory (spilling starts at a megabyte) or quick to read back.
            let data = bytes.read().map_err(|e| TransportError::Store(format!("reading a child document back: {e}")))?;
            job.document.content = Content::Inline { base64: base64::engine::general_purpose::STANDARD.encode(&data) };
        } else {
            let (store, sha) = (ctx.store.clone(), job.document.sha256.clone());
            let stored = tokio::task::spawn_blocking(move || store.put_child(&sha, &bytes)).await.expect("blob write task");
            // A store that cannot be written is a transport-level fault: the delivery is requeued.
            job.document.content = Content::Blob { key: stored.map_err(|e| TransportError::Store(e.to_string()))? };
        }
        let body = serde_json::to_vec(&job).expect("job serializes");
        let properties = json_properties(JOB_TYPE).with_message_id(ShortString::from(job.job_id.to_string()));
        publish(channel, &ctx.names.jobs_exchange(), "", &body, properties, ctx.confirm_timeout).await?;
    }
    Ok(())
}

/// Pass the job to its next stage, or publish the result when there is none.
async fn forward(
    ctx: &Ctx,
    channel: &Channel,
    delivery: &Delivery,
    plan: &[String],
    job: &Job,
    result: JobResult,
) -> Result<(), TransportError> {
    let Some(next) = next_stage(plan, &result) else {
        return publish_result(ctx, channel, delivery, result).await;
    };
    let handoff = Handoff { schema_version: SCHEMA_VERSION, job: job.clone(), result };
    let body = serde_json::to_vec(&handoff).expect("hand-off serializes");
    let (kind, body) = if body.len() as u64 > ctx.max_message {
        let key = store_blob(ctx, body).await?;
        let reference = HandoffRef { schema_version: SCHEMA_VERSION, key, job: job.clone() };
        (HANDOFF_REF_TYPE, serde_json::to_vec(&reference).expect("hand-off reference serializes"))
    } else {
        (HANDOFF_TYPE, body)
    };
    let properties = reply_properties(&delivery.properties, json_properties(kind));
    publish(channel, &ctx.names.work_exchange(), next, &body, properties, ctx.confirm_timeout).await
}

/// Keep `bytes` in the blob store; returns the key.
async fn store_blob(ctx: &Ctx, bytes: Vec<u8>) -> Result<String, TransportError> {
    let store = ctx.store.clone();
    tokio::task::spawn_blocking(move || store.put(&crate::blob::sha256_hex(&bytes), &bytes))
        .await
        .expect("blob write task")
        .map_err(|e| TransportError::Store(e.to_string()))
}

/// The result so far that a claim-check message names, read back, verified and checked to be
/// this job's. Errors carry the kind a stage error would: `unavailable` for a store that cannot
/// be reached, `integrity` for a hand-off that is lost, damaged or someone else's.
async fn load_handoff(ctx: &Ctx, delivery: &Delivery, job: &Job) -> Result<JobResult, StageError> {
    let reference = HandoffRef::parse(&delivery.data).map_err(|reason| StageError::new(ErrorKind::BadMessage, reason))?;
    let store = ctx.store.clone();
    let key = reference.key.clone();
    let bytes = tokio::task::spawn_blocking(move || store.get(&key))
        .await
        .map_err(|e| StageError::new(ErrorKind::Internal, format!("blob read task: {e}")))?
        .map_err(|e| {
            let kind = match e {
                BlobError::Io { .. } | BlobError::Remote { .. } | BlobError::Config(_) => ErrorKind::Unavailable,
                BlobError::NotFound { .. } | BlobError::Mismatch { .. } | BlobError::BadKey(_) => ErrorKind::Integrity,
            };
            StageError::new(kind, format!("hand-off from the previous stage: {e}"))
        })?;
    let (handed_job, result) = decode(Some(HANDOFF_TYPE), &bytes).map_err(|reason| StageError::new(ErrorKind::Integrity, format!("hand-off blob {}: {reason}", reference.key)))?;
    if handed_job.job_id != job.job_id {
        return Err(StageError::new(ErrorKind::Integrity, format!("hand-off blob {} belongs to job {}", reference.key, handed_job.job_id)));
    }
    Ok(result)
}

async fn publish_result(ctx: &Ctx, channel: &Channel, delivery: &Delivery, mut result: JobResult) -> Result<(), TransportError> {
    // Signed whole: the claim-check message below keeps the full result's signature.
    ctx.runner.finish(&mut result);
    let mut body = serde_json::to_vec(&result).expect("result serializes");
    if body.len() as u64 > ctx.max_message {
        // Too large for the broker: the full result goes to the blob store, the message says where.
        let key = store_blob(ctx, body).await?;
        result.annotations.clear();
        result.annotations_blob = Some(key);
        body = serde_json::to_vec(&result).expect("result serializes");
    }
    let mut headers = FieldTable::default();
    set_header(&mut headers, "case_id", result.case_id.clone());
    set_header(&mut headers, "batch_id", result.batch_id.clone());
    let properties = json_properties(RESULT_TYPE)
        .with_message_id(ShortString::from(result.idempotency_key.clone()))
        .with_headers(headers);
    let properties = match delivery.properties.correlation_id() {
        Some(id) => properties.with_correlation_id(id.clone()),
        None => properties,
    };
    let key = result_routing_key(&result.case_id, &result.batch_id);
    publish(channel, &ctx.names.results_exchange(), &key, &body, properties.clone(), ctx.confirm_timeout).await?;
    if let Some(reply_to) = delivery.properties.reply_to() {
        publish(channel, "", reply_to.as_str(), &body, properties, ctx.confirm_timeout).await?;
    }
    let status = crate::store::status_str(result.status);
    ctx.metrics.result(status);
    tracing::info!(status = ?result.status, "result published");
    progress(ctx, channel, progress::Event::new(&result, "result", status, 0, Duration::ZERO)).await;
    Ok(())
}

/// Tell `docpipe status` about a job's step. Never holds the job up: a failure is logged.
async fn progress(ctx: &Ctx, channel: &Channel, event: progress::Event) {
    if let Err(e) = progress::publish(channel, &ctx.names, &event).await {
        tracing::warn!(error = %e, "progress event not sent");
    }
}

/// Send the same message through the delay queue `step`; it comes back to the stage queue as
/// attempt `next_attempt`.
async fn retry(ctx: &Ctx, channel: &Channel, delivery: &Delivery, stage: &str, next_attempt: u32, step: usize) -> Result<(), TransportError> {
    let mut headers = own_headers(delivery.properties.headers());
    set_header(&mut headers, H_ATTEMPT, next_attempt.to_string());
    set_header(&mut headers, H_RETRY_STEP, step.to_string());
    let properties = delivery.properties.clone().with_headers(headers);
    publish(channel, &ctx.names.retry_exchange(), stage, &delivery.data, properties, ctx.confirm_timeout).await
}

/// Park the message, unchanged, in the dead-letter queue with why it is there.
async fn dead_letter(
    ctx: &Ctx,
    channel: &Channel,
    delivery: &Delivery,
    stage: &str,
    kind: ErrorKind,
    reason: &str,
    attempt: u32,
) -> Result<(), TransportError> {
    let mut headers = own_headers(delivery.properties.headers());
    set_header(&mut headers, H_STAGE, stage);
    set_header(&mut headers, H_ERROR_KIND, kind.as_str());
    set_header(&mut headers, H_REASON, reason);
    set_header(&mut headers, H_ATTEMPT, attempt.to_string());
    set_header(&mut headers, H_DEAD_AT, Utc::now().to_rfc3339());
    let properties = delivery.properties.clone().with_headers(headers);
    publish(channel, &ctx.names.dead_exchange(), stage, &delivery.data, properties, ctx.confirm_timeout).await?;
    ctx.metrics.dead_letter(kind.as_str());
    Ok(())
}

/// Carry the case system's correlation id and reply address to the next message.
fn reply_properties(from: &BasicProperties, to: BasicProperties) -> BasicProperties {
    let to = match from.correlation_id() {
        Some(id) => to.with_correlation_id(id.clone()),
        None => to,
    };
    match from.reply_to() {
        Some(r) => to.with_reply_to(r.clone()),
        None => to,
    }
}
