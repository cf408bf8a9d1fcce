//! Stage threads: each owns its stage instance (and so the engines and models the stage holds)
//! and pulls work from a bounded channel, so CPU-heavy work never blocks the async runtime. A
//! panic is caught and reported; a stage that overruns its time limit is abandoned and its thread
//! replaced, so capacity stays constant.
//!
//! Pattern to copy: state that needs `&mut` (a Tesseract handle, a KV cache) lives on one OS
//! thread and is reached through a bounded channel plus a oneshot reply; the async side only
//! awaits. Time limits count from pick-up, not from queueing. A panic is an error kind, never a
//! dead thread, and the span of the task travels with it so its log lines name the right job.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::sync::oneshot;

use docpipe_models::extract::{Input, SNIFF_BYTES};

use crate::blob::{key_for, sha256_hex, BlobError, BlobStore};
use crate::error::{ErrorKind, StageError};
use crate::schema::{Content, Job, JobResult};
use crate::stages::{Stage, StageFactory, StageInput, StageOutput};

struct Task {
    job: Arc<Job>,
    result: Arc<JobResult>,
    span: tracing::Span,
    /// Set when the caller gave up on the task: the stage should stop at its next checkpoint,
    /// and the thread running it exits afterwards (a replacement already took its place).
    abandoned: Arc<AtomicBool>,
    started: Option<oneshot::Sender<()>>,
    reply: oneshot::Sender<Reply>,
}

/// A stage's outcome, plus the media type sniffed from the bytes when they were read, which
/// the result keeps even when the stage fails.
pub struct Reply {
    pub detected_media_type: Option<String>,
    pub outcome: Result<StageOutput, StageError>,
}

/// Threads running one stage.
pub struct StagePool {
    stage: String,
    tx: flume::Sender<Task>,
    rx: flume::Receiver<Task>,
    factory: StageFactory,
    store: Arc<dyn BlobStore>,
    /// Documents larger than this reach the stage as a file, not in memory.
    in_memory: u64,
}

impl StagePool {
    pub fn start(stage: &str, factory: StageFactory, store: Arc<dyn BlobStore>, threads: usize, depth: usize, in_memory: u64) -> Self {
        let (tx, rx) = flume::bounded(depth);
        let pool = Self { stage: stage.to_owned(), tx, rx, factory, store, in_memory };
        for _ in 0..threads {
            pool.spawn_thread();
        }
        pool
    }

    fn spawn_thread(&self) {
        let (rx, factory, store, name, in_memory) = (self.rx.clone(), self.factory.clone(), self.store.clone(), self.stage.clone(), self.in_memory);
        std::thread::Builder::new()
            .name(format!("stage-{}", self.stage))
            .spawn(move || stage_loop(&name, rx, factory, store, in_memory))
            .expect("spawn stage thread");
    }

    /// Run the stage on one document, within `limit`.
    pub async fn run(&self, job: Arc<Job>, result: Arc<JobResult>, limit: Duration) -> Reply {
        let (reply, answer) = oneshot::channel();
        let (started_tx, started) = oneshot::channel();
        let abandoned = Arc::new(AtomicBool::new(false));
        let task = Task {
            job,
            result,
            span: tracing::Span::current(),
            abandoned: abandoned.clone(),
            started: Some(started_tx),
            reply,
        };
        let failed = |kind, reason: String| Reply { detected_media_type: None, outcome: Err(StageError::new(kind, reason)) };
        if self.tx.send_async(task).await.is_err() {
            return failed(ErrorKind::Internal, "stage threads have stopped".into());
        }
        // The limit counts from when a stage thread takes the task, so time spent queued behind long
        // documents is not charged to this one. A hung thread is replaced below, so the queue moves.
        if started.await.is_err() {
            return failed(ErrorKind::Internal, "stage thread dropped the task".into());
        }
        match tokio::time::timeout(limit, answer).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => failed(ErrorKind::Internal, "stage thread dropped the task".into()),
            Err(_) => {
                abandoned.store(true, Ordering::SeqCst);
                self.spawn_thread();
                failed(ErrorKind::Timeout, format!("stage {} exceeded its {}s limit", self.stage, limit.as_secs_f32()))
            }
        }
    }
}

fn stage_loop(name: &str, rx: flume::Receiver<Task>, factory: StageFactory, store: Arc<dyn BlobStore>, in_memory: u64) {
    let mut stage: Option<Box<dyn Stage>> = None;
    while let Ok(mut task) = rx.recv() {
        let _enter = task.span.enter();
        if task.reply.is_closed() {
            continue; // nobody waits for it any more (the delivery was dropped on a reconnect)
        }
        if let Some(started) = task.started.take() {
            let _ = started.send(());
        }
        let mut detected = None;
        let outcome = catch_unwind(AssertUnwindSafe(|| run_one(name, &mut stage, &factory, store.as_ref(), in_memory, &task, &mut detected)))
            .unwrap_or_else(|payload| {
                stage = None; // its state is suspect after a panic: rebuild before the next task
                Err(StageError::new(ErrorKind::Panic, format!("stage panicked: {}", panic_message(&*payload))))
            });
        let abandoned = task.abandoned.load(Ordering::SeqCst);
        let _ = task.reply.send(Reply { detected_media_type: detected, outcome });
        if abandoned {
            tracing::warn!("stage thread finished an abandoned task and exits");
            return; // the pool has already replaced this thread
        }
    }
}

fn run_one(
    name: &str,
    stage: &mut Option<Box<dyn Stage>>,
    factory: &StageFactory,
    store: &dyn BlobStore,
    in_memory: u64,
    task: &Task,
    detected: &mut Option<String>,
) -> Result<StageOutput, StageError> {
    if stage.is_none() {
        let started = std::time::Instant::now();
        let built = factory();
        crate::metrics::engine_built(name, built.is_ok(), started.elapsed());
        *stage = Some(built?);
    }
    let stage = stage.as_mut().expect("stage built above");
    let content = if stage.needs_content() { Some(load_content(&task.job, store, in_memory)?) } else { None };
    let input = content.as_ref().map(Loaded::input);
    if let Some(head) = input.and_then(|input| input.head(SNIFF_BYTES).ok()) {
        *detected = Some(docpipe_models::sniff::media_type(&head).to_owned());
    }
    stage.run(StageInput { job: &task.job, result: &task.result, content: input, cancel: &task.abandoned })
}

/// A document as a stage reads it: in memory, or, when larger than the stage may hold
/// (`extract.max_in_memory_bytes`), in a private temporary file that goes when this is dropped.
pub enum Loaded {
    Memory(Vec<u8>),
    File { path: tempfile::TempPath, len: u64 },
}

impl Loaded {
    pub fn input(&self) -> Input<'_> {
        match self {
            Loaded::Memory(bytes) => Input::Bytes(bytes),
            Loaded::File { path, len } => Input::File { path, len: *len },
        }
    }
}

/// The document, checked against the job's sha256 and size whatever its source. One larger than
/// `in_memory` bytes is copied from the store to a temporary file, hashed on the way.
pub fn load_content(job: &Job, store: &dyn BlobStore, in_memory: u64) -> Result<Loaded, StageError> {
    let unavailable = |e: std::io::Error| StageError::new(ErrorKind::Unavailable, format!("copying the document to a temporary file: {e}"));
    let loaded = match &job.document.content {
        Content::Inline { base64 } => Loaded::Memory(
            base64::engine::general_purpose::STANDARD
                .decode(base64)
                .map_err(|e| StageError::new(ErrorKind::Corrupt, format!("inline content is not valid base64: {e}")))?,
        ),
        // Read no further than the size the job states: a job that understates its blob's size
        // cannot make the read take more memory (or disk) than its size allows.
        Content::Blob { key } if job.document.size > in_memory => {
            let (file, path) = tempfile::Builder::new().prefix("docpipe-document-").tempfile().map_err(unavailable)?.into_parts();
            let mut writer = Capped { out: std::io::BufWriter::with_capacity(1 << 20, file), left: job.document.size };
            let len = store.read_into(key, &mut writer).map_err(|e| oversize(e, job))?;
            writer.out.into_inner().map_err(|e| unavailable(e.into_error()))?;
            Loaded::File { path, len }
        }
        Content::Blob { key } => {
            let mut writer = Capped { out: Vec::with_capacity(job.document.size as usize), left: job.document.size };
            store.read_into(key, &mut writer).map_err(|e| oversize(e, job))?;
            Loaded::Memory(writer.out)
        }
    };
    // A blob stored under the job's own digest was verified by the store as it was read; only
    // inline content, or a blob under another key, still needs hashing here.
    let checked = matches!(&job.document.content, Content::Blob { key } if *key == key_for(&job.document.sha256));
    if !checked {
        let actual = match &loaded {
            Loaded::Memory(bytes) => sha256_hex(bytes),
            Loaded::File { path, .. } => docpipe_models::sha256_file(path).map_err(unavailable)?,
        };
        if actual != job.document.sha256 {
            return Err(StageError::new(
                ErrorKind::Integrity,
                format!("content hashes to {actual}, job says {}", job.document.sha256),
            ));
        }
    }
    let len = loaded.input().len();
    if len != job.document.size {
        return Err(StageError::new(ErrorKind::Integrity, format!("content is {len} bytes, job says {}", job.document.size)));
    }
    Ok(loaded)
}

/// A writer that refuses bytes past `left`.
struct Capped<W> {
    out: W,
    left: u64,
}

impl<W: std::io::Write> std::io::Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(std::io::Error::new(std::io::ErrorKind::FileTooLarge, CAPPED));
        }
        let written = self.out.write(buf)?;
        self.left -= written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

const CAPPED: &str = "the blob is larger than the job says";

/// A blob read stopped by [`Capped`] is the job's size being wrong: an integrity failure, not
/// the store's.
fn oversize(e: BlobError, job: &Job) -> StageError {
    match &e {
        BlobError::Io { source, .. } if source.kind() == std::io::ErrorKind::FileTooLarge => {
            StageError::new(ErrorKind::Integrity, format!("content is more than the {} bytes the job says", job.document.size))
        }
        _ => blob_error(e),
    }
}

fn blob_error(e: BlobError) -> StageError {
    match e {
        BlobError::Mismatch { .. } => StageError::new(ErrorKind::Integrity, e.to_string()),
        BlobError::BadKey(_) => StageError::new(ErrorKind::Corrupt, e.to_string()),
        BlobError::NotFound { .. } | BlobError::Io { .. } | BlobError::Remote { .. } | BlobError::Config(_) => {
            StageError::new(ErrorKind::Unavailable, e.to_string())
        }
    }
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into());
    // Bounded: a panic message is code-authored, but keep headers and results small.
    message.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::FileStore;
    use crate::schema::{BatchSpec, DocumentRef, JobOptions};

    fn job(sha256: &str, size: u64) -> Job {
        let batch = BatchSpec { case_id: "c".into(), batch_id: "b".into(), batch_total: None, stages: Vec::new(), options: JobOptions::default() };
        let document = DocumentRef { sha256: sha256.into(), size, filename: "d".into(), declared_media_type: None, content: Content::Blob { key: key_for(sha256) } };
        Job::new(uuid::Uuid::nil(), &batch, document)
    }

    #[test]
    fn a_document_past_the_bound_comes_as_a_private_file_read_no_further_than_its_size() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let bytes = vec![7u8; 5000];
        let sha256 = sha256_hex(&bytes);
        store.put(&sha256, &bytes).unwrap();
        match load_content(&job(&sha256, 5000), &store, 10_000).unwrap() {
            Loaded::Memory(read) => assert_eq!(read, bytes),
            Loaded::File { .. } => panic!("under the bound: in memory"),
        }
        match load_content(&job(&sha256, 5000), &store, 1000).unwrap() {
            Loaded::File { path, len } => {
                assert_eq!((len, std::fs::read(&path).unwrap()), (5000, bytes.clone()));
                assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            }
            Loaded::Memory(_) => panic!("over the bound: a file"),
        }
        // A job that understates its blob: the read stops at the stated size, in memory or file.
        for in_memory in [10_000, 100] {
            let refused = load_content(&job(&sha256, 4000), &store, in_memory).err().expect("refused");
            assert_eq!(refused.kind, ErrorKind::Integrity);
            assert!(refused.reason.contains("more than the 4000 bytes the job says"), "{}", refused.reason);
        }
    }
}
