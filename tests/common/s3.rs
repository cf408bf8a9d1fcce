//! A real S3 server for tests: `s3s-fs` (crates.io, installed by `scripts/setup.sh --broker`)
//! serving a temporary directory on 127.0.0.1, one per test, stopped when dropped. The blobs
//! bench includes it too and uses only part of it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "docpipe-test";
pub const SECRET_KEY: &str = "docpipe-test-secret-3f9a";
pub const BUCKET: &str = "evidence";

pub struct S3Server {
    pub endpoint: String,
    /// The server's data directory: `<root>/<bucket>/<object name>`.
    pub root: tempfile::TempDir,
    child: Child,
}

impl S3Server {
    pub fn start() -> Self {
        let root = tempfile::tempdir().expect("S3 root");
        std::fs::create_dir(root.path().join(BUCKET)).expect("bucket directory");
        // A free port: bind, read it, release it for the server.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs runs (scripts/setup.sh --broker installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { endpoint: format!("http://127.0.0.1:{port}"), root, child }
    }

    /// Where the server keeps the object `name` of the test bucket.
    pub fn object_path(&self, name: &str) -> PathBuf {
        self.root.path().join(BUCKET).join(name)
    }

    /// Environment that points docpipe at this server (`DOCPIPE_*` overrides and credentials).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("DOCPIPE_BLOBS__KIND", "s3".to_owned()),
            ("DOCPIPE_BLOBS__S3__ENDPOINT", self.endpoint.clone()),
            ("DOCPIPE_BLOBS__S3__BUCKET", BUCKET.to_owned()),
            ("DOCPIPE_BLOBS__S3__ALLOW_HTTP", "true".to_owned()),
            ("DOCPIPE_BLOBS__S3__RETRY_SECS", "5".to_owned()),
            ("DOCPIPE_S3_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("DOCPIPE_S3_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Every object file the server holds under `dir` of the bucket.
    pub fn objects(&self) -> Vec<PathBuf> {
        walk(&self.root.path().join(BUCKET))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> PathBuf {
    let installed = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|home| home.join("bin/s3s-fs"));
    installed.filter(|p| p.is_file()).unwrap_or_else(|| PathBuf::from("s3s-fs"))
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
