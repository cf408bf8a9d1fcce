//! External converters (poppler) run as child processes: a crash or hang in a parser of hostile
//! files cannot take the worker with it, and every run has a deadline.
//!
//! Pattern to copy: any external program runs through [`run`] (stdin closed, both pipes drained
//! on their own threads, polled against a deadline and killed past it), never a bare
//! `Command::output()`, which waits forever and can deadlock on a full pipe.

use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{ExtractError, ExtractErrorKind};

pub struct Output {
    pub status: std::process::ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// Run `program` with `args`, killing it after `timeout`.
pub fn run(program: &str, args: &[&std::ffi::OsStr], timeout: Duration) -> Result<Output, ExtractError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ExtractError::new(ExtractErrorKind::Unsupported, format!("{program} is not available ({e}); install poppler-utils")))?;
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| io_error(program, e))? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ExtractError::new(ExtractErrorKind::Timeout, format!("{program} ran past its {}s limit", timeout.as_secs())));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).chars().take(500).collect();
    Ok(Output { status, stdout, stderr })
}

fn io_error(program: &str, e: std::io::Error) -> ExtractError {
    ExtractError::new(ExtractErrorKind::Corrupt, format!("{program}: {e}"))
}

/// A private temporary copy of the input for tools that want a path.
pub struct TempFile {
    dir: std::path::PathBuf,
    pub path: std::path::PathBuf,
}

impl TempFile {
    pub fn new(bytes: &[u8], name: &str) -> Result<Self, ExtractError> {
        let dir = std::env::temp_dir().join(format!("docpipe-{}-{:x}", std::process::id(), rand_suffix()));
        // Private to this user: the copy is evidence.
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| io_error("tempdir", e))?;
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| io_error("tempfile", e))?;
        Ok(Self { dir, path })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() as u64);
    (nanos << 20) ^ COUNTER.fetch_add(1, Ordering::Relaxed)
}
