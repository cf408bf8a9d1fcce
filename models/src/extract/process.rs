//! External converters (poppler, antiword, catdoc, readpst, unar) run as child processes: a crash
//! or hang in a parser of hostile files cannot take the worker with it, and every run has a
//! deadline.
//!
//! Pattern to copy: any external program runs through [`run`] (stdin closed, both pipes drained
//! on their own threads, polled against a deadline and killed past it), never a bare
//! `Command::output()`, which waits forever and can deadlock on a full pipe.

use std::io::{Read, Write};
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

/// Most output taken from one converter run into memory: text of a document, a listing.
pub const OUTPUT_LIMIT: u64 = 512 << 20;

/// Run `program` with `args`, killing it after `timeout`; its output is kept up to [`OUTPUT_LIMIT`].
pub fn run(program: &str, args: &[&std::ffi::OsStr], timeout: Duration) -> Result<Output, ExtractError> {
    let mut stdout = Vec::new();
    let (status, stderr) = run_into(program, args, timeout, OUTPUT_LIMIT, &mut stdout)?;
    Ok(Output { status, stdout, stderr })
}

/// Run `program`, streaming its standard output into `sink` as it comes: killed (and `too_large`)
/// past `limit` bytes, killed (and `timeout`) past `timeout`. Returns the exit status and the
/// start of its standard error.
pub fn run_into(program: &str, args: &[&std::ffi::OsStr], timeout: Duration, limit: u64, sink: &mut dyn Write) -> Result<(std::process::ExitStatus, String), ExtractError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ExtractError::new(ExtractErrorKind::Unsupported, format!("{program} is not available ({e}); install {}", package_of(program))))?;
    // Both pipes are drained on threads so a chatty child cannot block on a full pipe; standard
    // output comes back in chunks so its size and the deadline are checked as it arrives.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (chunks, received) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            if chunks.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut buf);
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        buf
    });
    let deadline = Instant::now() + timeout;
    let mut written = 0u64;
    let stop = |child: &mut std::process::Child, error: ExtractError| {
        let _ = child.kill();
        let _ = child.wait();
        error
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(chunk) => {
                written += chunk.len() as u64;
                if written > limit {
                    return Err(stop(&mut child, ExtractError::new(ExtractErrorKind::TooLarge, format!("{program} produced over {limit} bytes"))));
                }
                if let Err(e) = sink.write_all(&chunk) {
                    return Err(stop(&mut child, io_error(program, e)));
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                return Err(stop(&mut child, ExtractError::new(ExtractErrorKind::Timeout, format!("{program} ran past its {}s limit", timeout.as_secs()))));
            }
        }
    }
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| io_error(program, e))? {
            break status;
        }
        if Instant::now() > deadline {
            return Err(stop(&mut child, ExtractError::new(ExtractErrorKind::Timeout, format!("{program} ran past its {}s limit", timeout.as_secs()))));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = reader.join();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).chars().take(500).collect();
    Ok((status, stderr))
}

/// The Debian package that carries a converter, for the error that says it is missing.
fn package_of(program: &str) -> &'static str {
    match program {
        "pdfinfo" | "pdftotext" | "pdftoppm" => "poppler-utils",
        "antiword" => "antiword",
        "catdoc" | "xls2csv" | "catppt" => "catdoc",
        "readpst" => "pst-utils",
        "lsar" | "unar" => "unar",
        _ => "the program",
    }
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
        let mut file = Self::scratch()?;
        file.path = file.dir.join(name);
        std::fs::write(&file.path, bytes).map_err(|e| io_error("tempfile", e))?;
        Ok(file)
    }

    /// The private directory alone, for a tool's output (`path` is the directory itself).
    pub fn scratch() -> Result<Self, ExtractError> {
        let dir = std::env::temp_dir().join(format!("docpipe-{}-{:x}", std::process::id(), rand_suffix()));
        // Private to this user: copies and converter output are evidence.
        // Not recursive: a directory of that name made by someone else is an error, not reused.
        std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(|e| io_error("tempdir", e))?;
        Ok(Self { path: dir.clone(), dir })
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
