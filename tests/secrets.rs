//! A batch run at RUST_LOG=trace through the real binaries and the real RabbitMQ, with a broker
//! account whose password only this test knows: neither the password nor any document sentence
//! may appear in the logs, in plain text, as the decimal byte lists the AMQP client prints
//! frames as, in hex, or base64 (jobs carry small documents inline, base64-encoded), nor in the
//! results, nor in `--help`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

mod common;

fn docpipe(env: &[(&str, String)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_docpipe"));
    c.env("RUST_LOG", "trace");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl").arg("-q").args(args).stdout(Stdio::null()).status().expect("rabbitmqctl");
    assert!(status.success(), "rabbitmqctl {args:?}");
}

/// The forms a string takes in a dump: as it is, as decimal bytes ("84, 104, 101"), hex, base64.
fn forms(needle: &str) -> Vec<String> {
    let bytes = needle.as_bytes();
    let decimal = bytes.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", ");
    let decimal_tight = bytes.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(",");
    vec![
        needle.to_owned(),
        decimal,
        decimal_tight,
        hex::encode(bytes),
        hex::encode_upper(bytes),
        base64::engine::general_purpose::STANDARD.encode(bytes).trim_end_matches('=').to_owned(),
    ]
}

#[test]
fn trace_logs_hold_no_password_and_no_document_text() {
    let dir = tempfile::tempdir().unwrap();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let user = format!("docpipe-trace-{}", &id[..8]);
    let password = format!("pw-{}", &id[8..24]);
    rabbitmqctl(&["add_user", &user, &password]);
    rabbitmqctl(&["set_permissions", "-p", "/", &user, ".*", ".*", ".*"]);

    let sentences = [
        "Operation Nightjar moved seven crates through Gdansk on Tuesday night.",
        "Груз прибыл в Одессу без сопроводительных документов.",
    ];
    let inputs = dir.path().join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    std::fs::write(inputs.join("one.txt"), format!("{}\n", sentences[0])).unwrap();
    std::fs::write(inputs.join("two.txt"), format!("{}\n", sentences[1])).unwrap();
    let prefix = format!("t-trace-{}", &id[..8]);
    // The worker signs and `results` signs the manifest: the key must not leak either.
    let (_, key_file, _) = docpipe::evidence::keys::generate(&dir.path().join("keys")).unwrap();
    let key_pem = std::fs::read_to_string(&key_file).unwrap();
    let seed = {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        ed25519_dalek::SigningKey::from_pkcs8_pem(&key_pem).unwrap().to_bytes()
    };
    let env = [
        ("DOCPIPE_BROKER__URL", format!("amqp://{user}@127.0.0.1:5672/%2f")),
        ("DOCPIPE_BROKER_PASSWORD", password.clone()),
        ("DOCPIPE_BROKER__PREFIX", prefix.clone()),
        ("DOCPIPE_BLOBS__DIR", dir.path().join("blobs").display().to_string()),
        ("DOCPIPE_SIGNING__KEY_FILE", key_file.display().to_string()),
    ];
    let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();

    let mut worker = docpipe(&env)
        .args(["worker", "--stages", "extract,langid"])
        .stdout(log("worker.out"))
        .stderr(log("worker.log"))
        .spawn()
        .unwrap();
    let submit = docpipe(&env)
        .args(["submit", "--case", "c", "--batch", "trace", "--stages", "extract,langid"])
        .arg(&inputs)
        .stderr(log("submit.log"))
        .output()
        .unwrap();
    assert!(submit.status.success(), "{}", std::fs::read_to_string(dir.path().join("submit.log")).unwrap_or_default());
    let out = dir.path().join("out");
    let results = docpipe(&env)
        .args(["results", "--batch", "trace", "--idle-timeout", "180", "--out"])
        .arg(&out)
        .stderr(log("results.log"))
        .output()
        .unwrap();
    stop(&mut worker);
    assert!(results.status.success(), "{}", std::fs::read_to_string(dir.path().join("results.log")).unwrap_or_default());

    let logs: String = ["worker.log", "submit.log", "results.log"]
        .iter()
        .map(|f| std::fs::read_to_string(dir.path().join(f)).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    // The run did log, at TRACE, as itself and as the AMQP client.
    assert!(logs.contains("result published"), "{logs}");
    assert!(logs.lines().count() > 10, "{logs}");
    let written = std::fs::read_to_string(out.join("trace.jsonl")).unwrap();
    assert!(written.contains(sentences[0]), "the results do hold the text");

    for needle in [password.as_str(), sentences[0], sentences[1]] {
        for form in forms(needle) {
            assert!(!logs.contains(&form), "logs contain {needle:?} as {form:?}");
        }
    }
    assert!(!written.contains(&password));
    assert!(written.contains("ed25519-sha256-jcs"), "the results are signed");
    // The key: its PEM body lines and its 32-byte seed, in the logs, the results or the manifest.
    let manifest = std::fs::read_to_string(out.join("trace.manifest.json")).unwrap();
    let mut key_forms: Vec<String> = key_pem.lines().filter(|l| !l.starts_with("-----")).map(str::to_owned).collect();
    key_forms.extend([
        hex::encode(seed),
        seed.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", "),
        base64::engine::general_purpose::STANDARD.encode(seed).trim_end_matches('=').to_owned(),
    ]);
    for form in &key_forms {
        for (what, text) in [("logs", &logs), ("results", &written), ("manifest", &manifest)] {
            assert!(!text.contains(form.as_str()), "{what} contain the signing key as {form:?}");
        }
    }

    // Help output with the password in the environment.
    for args in [&["--help"][..], &["worker", "--help"], &["submit", "--help"]] {
        let help = docpipe(&env).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&help.stdout).into_owned() + &String::from_utf8_lossy(&help.stderr);
        assert!(!text.contains(&password), "{args:?}: {text}");
    }
    // A refused login names the user, never the password.
    let refused = docpipe(&[("DOCPIPE_BROKER_PASSWORD", format!("{password}x")), env[0].clone(), env[2].clone()]).arg("declare").output().unwrap();
    assert!(!refused.status.success());
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(!text.contains(&password), "{text}");

    rabbitmqctl(&["delete_user", &user]);
    cleanup(&prefix);
}

/// SIGTERM, then wait for the worker's graceful stop.
fn stop(worker: &mut std::process::Child) {
    let _ = Command::new("kill").arg(worker.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if worker.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = worker.kill();
}

/// Remove the test's queues and exchanges (as the guest account).
fn cleanup(prefix: &str) {
    let env = [("DOCPIPE_BROKER__PREFIX".to_owned(), prefix.to_owned())];
    let config = docpipe::config::Config::from_toml("test", docpipe::config::EMBEDDED, env).unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(common::cleanup(&config));
}
