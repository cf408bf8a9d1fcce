//! The S3 blob store against a real S3 server (s3s-fs on 127.0.0.1), and two worker "hosts" that
//! share only RabbitMQ and that server.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::s3::{S3Server, BUCKET};
use docpipe::blob::{key_for, sha256_hex, BlobError, BlobStore, S3Store};
use docpipe::config::{Config, S3Config, EMBEDDED};
use docpipe::schema::{JobResult, JobStatus};

fn s3_config(server: &S3Server) -> Config {
    Config::from_toml("test", EMBEDDED, server.env()).expect("config")
}

/// The same `Config` as the environment gives, with credentials set for this process only.
fn store(server: &S3Server) -> S3Store {
    for (key, value) in server.env() {
        if key.starts_with("DOCPIPE_S3_") {
            std::env::set_var(key, value);
        }
    }
    S3Store::new(&s3_config(server).blobs.s3).expect("S3 store")
}

#[test]
fn the_s3_store_keeps_the_blob_contract() {
    let server = S3Server::start();
    let store = store(&server);
    store.check().unwrap();

    let bytes = b"exhibit 7: ledger page";
    let sha = sha256_hex(bytes);
    let key = store.put(&sha, bytes).unwrap();
    assert_eq!(key, key_for(&sha));
    assert_eq!(store.put(&sha, bytes).unwrap(), key, "storing twice is harmless");
    assert!(store.has(&key).unwrap());
    assert_eq!(store.get(&key).unwrap(), bytes);
    let mut streamed = Vec::new();
    assert_eq!(store.read_into(&key, &mut streamed).unwrap(), bytes.len() as u64);
    assert_eq!(streamed, bytes);
    // Content-addressed under the prefix, as the directory store lays files out.
    let object = server.object_path(&format!("blobs/{}/{}/{sha}", &sha[..2], &sha[2..4]));
    assert_eq!(std::fs::read(&object).unwrap(), bytes);

    // Refused before anything is sent: a digest that is not the content's, a malformed key.
    assert!(matches!(store.put(&sha256_hex(b"other"), bytes), Err(BlobError::Mismatch { .. })));
    assert!(matches!(store.get("sha256:../../etc/passwd"), Err(BlobError::BadKey(_))));
    let absent = key_for(&sha256_hex(b"never stored"));
    assert!(matches!(store.get(&absent), Err(BlobError::NotFound { .. })));
    assert!(matches!(store.read_into(&absent, &mut Vec::new()), Err(BlobError::NotFound { .. })));
    assert!(!store.has(&absent).unwrap());

    // Bytes changed on the server are caught on every read path.
    std::fs::write(&object, b"exhibit 7: ledger page, altered").unwrap();
    assert!(matches!(store.get(&key), Err(BlobError::Mismatch { .. })));
    assert!(matches!(store.read_into(&key, &mut Vec::new()), Err(BlobError::Mismatch { .. })));
}

#[test]
fn large_files_go_up_in_parts_and_come_back_whole() {
    let server = S3Server::start();
    let store = store(&server);
    let dir = tempfile::tempdir().unwrap();
    // Three parts of 8 MiB and a tail: the multipart path, parts uploaded concurrently.
    let bytes: Vec<u8> = (0..(25 << 20) + 4099u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let source = dir.path().join("disk-image.bin");
    std::fs::write(&source, &bytes).unwrap();
    let (sha, size) = store.put_file(&source).unwrap();
    assert_eq!((sha.as_str(), size), (sha256_hex(&bytes).as_str(), bytes.len() as u64));
    let object = server.object_path(&format!("blobs/{}/{}/{sha}", &sha[..2], &sha[2..4]));
    assert_eq!(std::fs::metadata(&object).unwrap().len(), bytes.len() as u64);
    assert!(store.get(&key_for(&sha)).unwrap() == bytes);
    let mut streamed = Vec::new();
    store.read_into(&key_for(&sha), &mut streamed).unwrap();
    assert!(streamed == bytes);
    // Stored already: found by its digest, not uploaded again.
    let modified = std::fs::metadata(&object).unwrap().modified().unwrap();
    assert_eq!(store.put_file(&source).unwrap().0, sha);
    assert_eq!(std::fs::metadata(&object).unwrap().modified().unwrap(), modified);
    // A small file takes the one-request path.
    let small = dir.path().join("note.txt");
    std::fs::write(&small, b"short note").unwrap();
    assert_eq!(store.put_file(&small).unwrap(), (sha256_hex(b"short note"), 10));
    assert!(store.put_file(&dir.path().join("missing")).is_err());
}

#[test]
fn wrong_settings_and_credentials_are_named_not_guessed() {
    let server = S3Server::start();
    let base = s3_config(&server).blobs.s3;
    let _ = store(&server); // sets this process's credentials

    let plain = S3Config { allow_http: false, ..base.clone() };
    let err = S3Store::new(&plain).err().expect("plain HTTP refused").to_string();
    assert!(err.contains("plain HTTP"), "{err}");

    let missing = S3Store::new(&S3Config { bucket: "no-such-bucket".into(), retry_secs: 1, ..base.clone() }).unwrap();
    assert!(matches!(missing.check(), Err(BlobError::Remote { .. })));

    // Credentials from a file: group-readable is refused; 0600 works; the secret is never quoted.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s3-credentials");
    std::fs::write(&file, format!("[default]\naws_access_key_id = {}\naws_secret_access_key = wrong-secret-51c2\n", common::s3::ACCESS_KEY)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let from_file = S3Config { credentials_file: Some(file.clone()), retry_secs: 1, ..base };
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "credentials_file_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env_remove("DOCPIPE_S3_ACCESS_KEY_ID")
        .env_remove("DOCPIPE_S3_SECRET_ACCESS_KEY")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("DOCPIPE_TEST_S3_ENDPOINT", &from_file.endpoint)
        .env("DOCPIPE_TEST_S3_CREDENTIALS", &file)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("group-readable refused: chmod 600"), "{report}");
    assert!(report.contains("wrong secret refused by the server"), "{report}");
    assert!(!report.contains("wrong-secret-51c2"), "{report}");
}

/// Run by `wrong_settings_and_credentials_are_named_not_guessed` in a process without S3
/// credentials in its environment.
#[test]
#[ignore]
fn credentials_file_child() {
    let (Ok(endpoint), Ok(file)) = (std::env::var("DOCPIPE_TEST_S3_ENDPOINT"), std::env::var("DOCPIPE_TEST_S3_CREDENTIALS")) else {
        return;
    };
    let config = S3Config { endpoint, bucket: BUCKET.into(), allow_http: true, retry_secs: 1, credentials_file: Some(file.clone().into()), ..S3Config::default() };
    let err = S3Store::new(&config).err().expect("group-readable credentials refused").to_string();
    assert!(err.contains("chmod 600"), "{err}");
    println!("group-readable refused: chmod 600");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let store = S3Store::new(&config).unwrap();
    let err = store.put(&sha256_hex(b"x"), b"x").unwrap_err();
    assert!(matches!(err, BlobError::Remote { .. }), "{err}");
    println!("wrong secret refused by the server: {err}");
}

fn docpipe(dir: &Path, env: &[(String, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_docpipe"));
    command.current_dir(dir).env("OMP_THREAD_LIMIT", "1").envs(env.iter().map(|(k, v)| (k, v)));
    command
}

struct Host(Child);

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two worker processes, each in its own working directory with no blob directory in common,
/// sharing only RabbitMQ and the S3 server: the batch's documents, the stage-to-stage hand-offs
/// (forced through the store by a small message limit) and the results all cross between them.
#[test]
fn two_hosts_share_only_the_broker_and_the_s3_store() {
    let server = S3Server::start();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let prefix = common::prefix("two-hosts");
    let mut env = server.env();
    env.extend([
        ("DOCPIPE_BROKER__PREFIX".to_owned(), prefix.clone()),
        // Every document over 64 bytes is stored, not sent inline, and every hand-off over 2 KiB
        // goes by claim check: the second host must read what the first one stored.
        ("DOCPIPE_BLOBS__INLINE_MAX_BYTES".to_owned(), "64".to_owned()),
        ("DOCPIPE_BROKER__MAX_MESSAGE_BYTES".to_owned(), "2048".to_owned()),
        ("DOCPIPE_WORKER__THREADS".to_owned(), "1".to_owned()),
        // Each host has its own models installed; here both use the repository's.
        ("DOCPIPE_MODELS__DIR".to_owned(), format!("\"{}\"", root.join("var/models").display())),
        ("DOCPIPE_LANGID__MODEL".to_owned(), format!("\"{}\"", root.join("var/models/lid.176.ftz").display())),
    ]);
    let (host_a, host_b, desk) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let extract = Host(
        docpipe(host_a.path(), &env)
            .args(["worker", "--stages", "extract"])
            .env("DOCPIPE_WORKER__METRICS_BIND", format!("127.0.0.1:{metrics_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let language = Host(docpipe(host_b.path(), &env).args(["worker", "--stages", "langid,summarize"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());

    let samples = root.join("samples/batch");
    let files: Vec<_> = ["easychair.txt", "flores-rus.txt", "flores-zho.txt", "russian.cp866.txt", "testEmailWithPNGAtt.eml", "testTXT_win-1252.txt", "scansmpl.pdf"]
        .iter()
        .map(|name| samples.join(name))
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(files.len(), 7, "sample files present");
    let submitted = docpipe(desk.path(), &env)
        .args(["submit", "--case", "two-hosts", "--batch", "b1", "--stages", "extract,langid,summarize"])
        .args(&files)
        .output()
        .unwrap();
    assert!(submitted.status.success(), "{}", String::from_utf8_lossy(&submitted.stderr));
    let collected = docpipe(desk.path(), &env)
        .args(["results", "--batch", "b1", "--out", "out", "--idle-timeout", "240"])
        .output()
        .unwrap();
    assert!(collected.status.success(), "{}", String::from_utf8_lossy(&collected.stderr));
    // The extract host's metrics moved with the batch: its documents, the email's picture read
    // by OCR and the scanned PDF, the engines it built.
    let metrics = http_get(metrics_port, "/metrics");
    assert!(metrics.lines().any(|l| l == "docpipe_deliveries_total{stage=\"extract\"} 8"), "seven files and the email's picture:\n{metrics}");
    let pages: u64 = metrics.lines().find_map(|l| l.strip_prefix("docpipe_pages_ocr_total ")).and_then(|n| n.parse().ok()).expect("pages counted");
    assert!(pages >= 1, "the scanned PDF was read by OCR:\n{metrics}");
    assert!(metrics.lines().any(|l| l.starts_with("docpipe_engine_load_seconds_count{stage=\"extract\"} ")), "{metrics}");
    assert!(http_get(metrics_port, "/readyz").starts_with("HTTP/1.1 200"), "ready: broker connected, S3 reachable");
    drop((extract, language));

    let text = std::fs::read_to_string(desk.path().join("out/b1.jsonl")).unwrap();
    let results: Vec<JobResult> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let top: HashMap<String, &JobResult> = results.iter().filter(|r| r.parent.is_none()).map(|r| (r.document.filename.clone(), r)).collect();
    assert_eq!(top.len(), files.len(), "one result per submitted file");
    for file in &files {
        let result = top[&file.display().to_string()];
        assert_eq!(result.document.sha256, sha256_hex(&std::fs::read(file).unwrap()));
        assert_eq!(result.status, JobStatus::Complete, "{}: {:?}", file.display(), result.stages);
        let stages: HashSet<&str> = result.stages.iter().map(|s| s.stage.as_str()).collect();
        assert!(["extract", "langid", "summarize"].iter().all(|s| stages.contains(s)), "{stages:?}");
        // Each stage ran on the host that serves it.
        let worker_of = |stage: &str| result.annotations.iter().find(|a| a.provenance.stage == stage).map(|a| a.provenance.worker_id.clone()).unwrap();
        assert_ne!(worker_of("extract"), worker_of("langid"));
    }
    // The hosts kept nothing locally: no blob directory on either, every blob on the server.
    for host in [host_a.path(), host_b.path(), desk.path()] {
        assert!(!host.join("var/blobs").exists(), "{} has a local blob directory", host.display());
    }
    let stored: HashSet<String> = server.objects().iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        if bytes.len() > 64 {
            assert!(stored.contains(&sha256_hex(&bytes)), "{} is in the S3 store", file.display());
        }
    }
}

/// The response to a plain HTTP/1.1 GET on 127.0.0.1 (status line, headers and body).
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}
