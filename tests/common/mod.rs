//! Shared helpers for integration tests against the real RabbitMQ on 127.0.0.1:5672.
//! Every test uses its own prefix, so its exchanges and queues are its own.
#![allow(dead_code)]

pub mod results;
pub mod s3;
pub mod webdriver;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use docpipe::amqp::short;
use docpipe::amqp::topology::{declare, Names};
use docpipe::amqp::{confirm_channel, connect, json_properties, publish, JOB_TYPE};
use docpipe::blob::sha256_hex;
use docpipe::config::{Config, StageConfig, EMBEDDED};
use docpipe::error::{ErrorKind, StageError};
use docpipe::schema::{BatchSpec, Content, DocumentRef, Job, JobOptions, JobResult};
use docpipe::stages::{Stage, StageCatalog, StageInput, StageOutput};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;

/// A config with a unique prefix, short retry delays and the fault stages after extract.
pub fn config(prefix: &str, blob_dir: &std::path::Path) -> Config {
    let env = [
        ("DOCPIPE_BROKER__PREFIX", prefix.to_owned()),
        ("DOCPIPE_RETRY__BACKOFF_MS", "[300, 600]".to_owned()),
        ("DOCPIPE_BLOBS__DIR", format!("\"{}\"", blob_dir.display())),
        ("DOCPIPE_BLOBS__INLINE_MAX_BYTES", "64".to_owned()),
        ("DOCPIPE_WORKER__SHUTDOWN_GRACE_SECS", "20".to_owned()),
        ("DOCPIPE_BROKER__RECONNECT_MAX_MS", "1000".to_owned()),
    ];
    let env = env.into_iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_owned(), v));
    let mut config = Config::from_toml("test", EMBEDDED, env).expect("test config");
    for (name, timeout_secs) in [("flaky", 10), ("panics", 10), ("slow", 30), ("sleepy", 1), ("counts", 10)] {
        config.stages.push(StageConfig { name: name.into(), timeout_secs, optional: false, threads: None });
    }
    config
}

pub fn prefix(test: &str) -> String {
    format!("t-{test}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// Fails with a transient error `times` times (counted across the process), then succeeds.
pub struct Flaky {
    pub failures: Arc<AtomicU32>,
    pub times: u32,
}

impl Stage for Flaky {
    fn run(&mut self, _: StageInput<'_>) -> Result<StageOutput, StageError> {
        if self.failures.fetch_add(1, Ordering::SeqCst) < self.times {
            return Err(StageError::new(ErrorKind::Unavailable, "injected transient fault"));
        }
        Ok(StageOutput::default())
    }
}

struct Panics;
impl Stage for Panics {
    fn run(&mut self, _: StageInput<'_>) -> Result<StageOutput, StageError> {
        panic!("injected panic");
    }
}

pub struct Sleeps(pub Duration);
impl Stage for Sleeps {
    fn run(&mut self, _: StageInput<'_>) -> Result<StageOutput, StageError> {
        std::thread::sleep(self.0);
        Ok(StageOutput::default())
    }
}

/// Fails unless the extract text annotation reached it: proves the hand-off between stage queues.
struct Counts;
impl Stage for Counts {
    fn run(&mut self, input: StageInput<'_>) -> Result<StageOutput, StageError> {
        let has_text = input.result.annotations.iter().any(|a| a.provenance.stage == "extract");
        if has_text {
            Ok(StageOutput::default())
        } else {
            Err(StageError::new(ErrorKind::Internal, "extract annotation missing"))
        }
    }
}

/// The built-in stages plus the fault-injection ones.
pub fn catalog(flaky_times: u32, slow: Duration) -> StageCatalog {
    let mut catalog = StageCatalog::builtin(&config("catalog", std::path::Path::new("/nonexistent")));
    let failures = Arc::new(AtomicU32::new(0));
    catalog.add("flaky", move || Ok(Box::new(Flaky { failures: failures.clone(), times: flaky_times }) as Box<dyn Stage>));
    catalog.add("panics", || Ok(Box::new(Panics) as Box<dyn Stage>));
    catalog.add("slow", move || Ok(Box::new(Sleeps(slow)) as Box<dyn Stage>));
    catalog.add("sleepy", || Ok(Box::new(Sleeps(Duration::from_secs(5))) as Box<dyn Stage>));
    catalog.add("counts", || Ok(Box::new(Counts) as Box<dyn Stage>));
    catalog
}

/// An inline job over `text` running `stages`.
pub fn job(text: &str, stages: &[&str], batch: &str) -> Job {
    let bytes = text.as_bytes();
    let batch = BatchSpec {
        case_id: "case-test".into(),
        batch_id: batch.into(),
        batch_total: None,
        stages: stages.iter().map(|s| s.to_string()).collect(),
        options: JobOptions::default(),
    };
    Job::new(
        uuid::Uuid::new_v4(),
        &batch,
        DocumentRef {
            sha256: sha256_hex(bytes),
            size: bytes.len() as u64,
            filename: "note.txt".into(),
            declared_media_type: None,
            content: Content::Inline { base64: base64::engine::general_purpose::STANDARD.encode(bytes) },
        },
    )
}

/// Publish raw bodies to the jobs exchange, confirmed.
pub async fn publish_raw(config: &Config, bodies: &[(Vec<u8>, BasicProperties)]) {
    let connection = connect(config).await.expect("connect");
    let channel = confirm_channel(&connection).await.expect("channel");
    declare(&channel, config).await.expect("declare");
    let exchange = Names::new(config).jobs_exchange();
    for (body, properties) in bodies {
        publish(&channel, &exchange, "", body, properties.clone(), Duration::from_secs(10)).await.expect("publish");
    }
    connection.close(200, short("")).await.ok();
}

pub async fn publish_jobs(config: &Config, jobs: &[Job]) {
    let bodies: Vec<_> =
        jobs.iter().map(|j| (serde_json::to_vec(j).unwrap(), json_properties(JOB_TYPE))).collect();
    publish_raw(config, &bodies).await;
}

/// Every result delivered on the results queue until `want` distinct jobs were seen or `limit`
/// passed. Duplicates are returned too, so tests can count them. Survives broker restarts.
pub async fn collect_results(config: &Config, want: usize, limit: Duration) -> Vec<JobResult> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut all = Vec::new();
    let mut seen = HashSet::new();
    while seen.len() < want && tokio::time::Instant::now() < deadline {
        let Ok(connection) = connect(config).await else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let Ok(channel) = connection.create_channel().await else { continue };
        if declare(&channel, config).await.is_err() {
            continue;
        }
        let queue = Names::new(config).results_queue();
        let Ok(mut consumer) =
            channel.basic_consume(short(&queue), short(""), BasicConsumeOptions::default(), FieldTable::default()).await
        else {
            continue;
        };
        while seen.len() < want {
            let next = tokio::time::timeout_at(deadline, consumer.next()).await;
            let Ok(Some(Ok(delivery))) = next else { break };
            let result: JobResult = serde_json::from_slice(&delivery.data).expect("result parses");
            seen.insert(result.job_id);
            all.push(result);
            if delivery.acker.ack(BasicAckOptions::default()).await.is_err() {
                break;
            }
        }
        connection.close(200, short("")).await.ok();
    }
    all
}

/// Remove what a test declared.
pub async fn cleanup(config: &Config) {
    let names = Names::new(config);
    let Ok(connection) = connect(config).await else { return };
    let Ok(channel) = connection.create_channel().await else { return };
    let mut queues: Vec<String> = config.stages.iter().map(|s| names.stage_queue(&s.name)).collect();
    queues.extend((0..config.retry.backoff_ms.len()).map(|i| names.retry_queue(i)));
    queues.extend([names.dead_queue(), names.results_queue(), names.progress_queue()]);
    for q in queues {
        let _ = channel.queue_delete(short(&q), QueueDeleteOptions::default()).await;
    }
    for e in [names.jobs_exchange(), names.work_exchange(), names.retry_exchange(), names.dead_exchange(), names.results_exchange(), names.progress_exchange()] {
        let _ = channel.exchange_delete(short(&e), ExchangeDeleteOptions::default()).await;
    }
    connection.close(200, short("")).await.ok();
}

/// Run an in-process worker until the returned sender fires.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_test_writer().try_init();
    // Injected panics in stage threads print one line, no backtrace: with RUST_BACKTRACE=1,
    // symbolizing a debug test binary took longer than the stage's time limit on a loaded
    // machine, and the panic was reported as a timeout. The test thread's own panics keep theirs.
    static QUIET_STAGES: std::sync::Once = std::sync::Once::new();
    QUIET_STAGES.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| match std::thread::current().name() {
            Some(name) if name.starts_with("stage-") => eprintln!("{name}: {info}"),
            _ => default(info),
        }));
    });
}

pub fn spawn_worker(
    config: &Config,
    catalog: StageCatalog,
    stages: &[&str],
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    init_logs();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stages = stages.iter().map(|s| s.to_string()).collect();
    let handle = tokio::spawn(docpipe::amqp::worker::run(Arc::new(config.clone()), catalog, stages, async move {
        let _ = stopped.await;
    }));
    (stop, handle)
}

/// Add to `all` until every id in `want` has a result or `limit` passes.
pub async fn collect_all(config: &Config, want: &HashSet<uuid::Uuid>, all: &mut Vec<JobResult>, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let have: HashSet<_> = all.iter().map(|r| r.job_id).collect();
        let missing = want.difference(&have).count();
        let now = tokio::time::Instant::now();
        if missing == 0 || now >= deadline {
            return;
        }
        all.extend(collect_results(config, missing, deadline - now).await);
    }
}

/// This test binary, re-run as a child process that executes only the named ignored test.
pub fn spawn_child(test: &str, prefix: &str, blobs: &std::path::Path) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", test, "--ignored", "--nocapture", "--test-threads=1"])
        .env("DOCPIPE_TEST_PREFIX", prefix)
        .env("DOCPIPE_TEST_BLOBS", blobs)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn child worker")
}

/// In a child: the prefix and blob directory the parent chose, or None when run directly.
pub fn child_env() -> Option<(String, std::path::PathBuf)> {
    let prefix = std::env::var("DOCPIPE_TEST_PREFIX").ok()?;
    let blobs = std::env::var("DOCPIPE_TEST_BLOBS").ok()?;
    Some((prefix, blobs.into()))
}

/// What the dead-letter queue holds (left in place).
pub async fn dead_letters(config: &Config) -> Vec<docpipe::cli::dlq::Parked> {
    let connection = connect(config).await.expect("connect");
    let channel = confirm_channel(&connection).await.expect("channel");
    let parked = docpipe::cli::dlq::list(&channel, config, 100).await.expect("dlq list");
    connection.close(200, short("")).await.ok();
    parked
}

/// Stop an in-process worker, check it ended cleanly, and remove the test's broker objects.
pub async fn finish(config: &Config, stop: tokio::sync::oneshot::Sender<()>, worker: tokio::task::JoinHandle<anyhow::Result<()>>) {
    stop.send(()).expect("worker still running");
    worker.await.expect("worker task").expect("worker result");
    cleanup(config).await;
}

/// Log lines captured as JSON, for tests about what the logs say.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    /// A JSON subscriber at info level writing here, with every line's span list.
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .json()
            .with_span_list(true)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish()
    }

    pub fn json(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap().lines().map(|l| serde_json::from_str(l).expect("a JSON log line")).collect()
    }
}
