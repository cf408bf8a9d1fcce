//! Signed results and manifests, checked the way a receiving authority checks them: `docpipe
//! process` signs, `docpipe verify` (the real binary) catches each kind of tampering by name.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use docpipe::evidence::keys::{generate, Signer};
use docpipe::evidence::sign_result;
use docpipe::schema::{AnnotationBody, JobResult};

fn docpipe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_docpipe"))
}

/// A processed batch: originals, results, manifest, the key that signed them.
struct Batch {
    dir: tempfile::TempDir,
}

impl Batch {
    fn originals(&self) -> PathBuf {
        self.dir.path().join("originals")
    }
    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }
    fn keys(&self) -> PathBuf {
        self.dir.path().join("keys")
    }
    fn results(&self) -> String {
        std::fs::read_to_string(self.out().join("results.jsonl")).unwrap()
    }
}

/// Three text files and a ZIP holding a fourth, processed and signed.
fn processed_batch() -> Batch {
    let dir = tempfile::tempdir().unwrap();
    let batch = Batch { dir };
    let originals = batch.originals();
    std::fs::create_dir_all(originals.join("sub")).unwrap();
    std::fs::write(originals.join("a.txt"), "The suspect transferred 40,000 euros on 3 March.\n").unwrap();
    std::fs::write(originals.join("b.txt"), "Le navire a quitté le port de Marseille le 12 avril.\n").unwrap();
    std::fs::write(originals.join("sub/c.txt"), "Груз прибыл в Одессу без документов.\n").unwrap();
    let mut zip = zip::ZipWriter::new(std::fs::File::create(originals.join("d.zip")).unwrap());
    zip.start_file("inner/ledger.txt", zip::write::SimpleFileOptions::default()).unwrap();
    zip.write_all(b"Payment 2 of 5 was made in cash.\n").unwrap();
    zip.finish().unwrap();
    generate(&batch.keys()).unwrap();

    let output = process(&batch, &batch.keys().join("signing.key"));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("(signed)"));
    batch
}

fn process(batch: &Batch, key: &Path) -> Output {
    docpipe()
        .args(["process", "--stages", "extract,langid", "--case", "evidence", "--batch", "b1", "--out"])
        .arg(batch.out())
        // A folder and a folder inside it: the file in both is one job, once.
        .arg(batch.originals())
        .arg(batch.originals().join("sub"))
        .env("DOCPIPE_SIGNING__KEY_FILE", key)
        .env("DOCPIPE_BLOBS__DIR", batch.dir.path().join("blobs"))
        .output()
        .unwrap()
}

/// Run `docpipe verify` on `results` text (written beside a copy of the manifest).
fn verify(batch: &Batch, results: &str, manifest: Option<&str>, extra: &[&str]) -> (bool, String) {
    let check = batch.dir.path().join(format!("check-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&check).unwrap();
    std::fs::write(check.join("results.jsonl"), results).unwrap();
    let manifest = manifest.map(str::to_owned).unwrap_or_else(|| std::fs::read_to_string(batch.out().join("results.manifest.json")).unwrap());
    std::fs::write(check.join("results.manifest.json"), manifest).unwrap();
    let output = docpipe().arg("verify").arg(check.join("results.jsonl")).arg("--keys").arg(batch.keys()).args(extra).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), stdout)
}

fn lines(text: &str) -> Vec<String> {
    text.split('\n').filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

#[test]
fn verify_passes_an_untouched_batch_and_names_each_kind_of_tampering() {
    let batch = processed_batch();
    let results = batch.results();
    let originals = batch.originals();
    let originals_arg = ["--originals", originals.to_str().unwrap()];

    // Untouched: every result (the ZIP member included) verifies against keys, manifest and originals.
    let (ok, out) = verify(&batch, &results, None, &originals_arg);
    assert!(ok, "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("OK ")).count(), 5, "{out}");
    assert!(out.contains("inner/ledger.txt") && out.contains("listed by parent"), "{out}");
    assert!(out.contains("5 results: 5 verified, 0 failed; 0 missing; VERIFIED"), "{out}");
    // An implementation that is not docpipe's (Python: rfc8785 + cryptography) agrees.
    let independent = |results: &Path| {
        Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/verify_offline.py"))
            .arg(results)
            .arg(batch.keys().join("signing.pub"))
            .output()
            .unwrap()
    };
    let output = independent(&batch.out().join("results.jsonl"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stdout.lines().filter(|l| l.starts_with("OK ")).count(), 5, "{stdout}");

    // One character of a document's text changed.
    let changed: Vec<String> = lines(&results)
        .into_iter()
        .map(|l| if l.contains("40,000 euros") { l.replacen("40,000 euros", "40,000 eurос", 1) } else { l })
        .collect();
    let (ok, out) = verify(&batch, &(changed.join("\n") + "\n"), None, &[]);
    assert!(!ok);
    assert!(out.contains("changed after signing"), "{out}");
    let edited = batch.dir.path().join("edited.jsonl");
    std::fs::write(&edited, changed.join("\n") + "\n").unwrap();
    let output = independent(&edited);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("signature does not match"));
    assert!(out.contains("result hash differs from the manifest"), "{out}");
    assert!(out.contains("4 verified, 1 failed"), "{out}");

    // A result removed.
    let kept: Vec<String> = lines(&results).into_iter().filter(|l| !l.contains("\"b.txt\"") && !l.contains("/b.txt\"")).collect();
    assert_eq!(kept.len(), 4);
    let (ok, out) = verify(&batch, &(kept.join("\n") + "\n"), None, &[]);
    assert!(!ok);
    assert!(out.contains("MISSING") && out.contains("(dropped)"), "{out}");

    // An original swapped for another file.
    let swapped = batch.dir.path().join("swapped");
    copy_dir(&originals, &swapped);
    std::fs::write(swapped.join("a.txt"), "The suspect transferred 4,000 euros on 3 March.\n").unwrap();
    let (ok, out) = verify(&batch, &results, None, &["--originals", swapped.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("swapped or altered") && out.contains("a.txt"), "{out}");

    // A result re-signed (after an edit) by a key nobody trusts.
    let stranger = batch.dir.path().join("stranger");
    generate(&stranger).unwrap();
    let stranger = Signer::load(&stranger.join("signing.key")).unwrap();
    let forged: Vec<String> = lines(&results)
        .into_iter()
        .map(|l| {
            if !l.contains("Marseille") {
                return l;
            }
            let mut result: JobResult = serde_json::from_str(&l).unwrap();
            let AnnotationBody::Text { segments, .. } = &mut result.annotations[0].body else { panic!("text first") };
            segments[0].text = segments[0].text.replace("12 avril", "14 avril");
            sign_result(&mut result, &stranger);
            serde_json::to_string(&result).unwrap()
        })
        .collect();
    let (ok, out) = verify(&batch, &(forged.join("\n") + "\n"), None, &[]);
    assert!(!ok);
    assert!(out.contains("untrusted or unknown key"), "{out}");

    // A result added that the manifest never listed (here: a copy with another job id).
    let mut extra: serde_json::Value = serde_json::from_str(&lines(&results)[0]).unwrap();
    extra["job_id"] = serde_json::Value::String(uuid::Uuid::new_v4().to_string());
    let (ok, out) = verify(&batch, &format!("{results}{extra}\n"), None, &[]);
    assert!(!ok);
    assert!(out.contains("not in the manifest"), "{out}");

    // No manifest beside the results: refused unless asked for signatures only.
    let alone = batch.dir.path().join("alone.jsonl");
    std::fs::write(&alone, &results).unwrap();
    let output = docpipe().arg("verify").arg(&alone).arg("--keys").arg(batch.keys()).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("FAILED   no manifest"), "{}", String::from_utf8_lossy(&output.stdout));
    let output = docpipe().arg("verify").arg(&alone).arg("--keys").arg(batch.keys()).arg("--no-manifest").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    // An empty results file proves nothing.
    let (ok, out) = verify(&batch, "", None, &[]);
    assert!(!ok && out.contains("no results to verify"), "{out}");

    // A member named twice: serde_json would keep the last, another reader the first.
    let twice: Vec<String> =
        lines(&results).into_iter().map(|l| if l.contains("Marseille") { l.replacen("{", "{\"status\":\"failed\",", 1) } else { l }).collect();
    let (ok, out) = verify(&batch, &(twice.join("\n") + "\n"), None, &[]);
    assert!(!ok && out.contains("names a member twice"), "{out}");

    // A key id that is not hex (multi-byte characters around the cut) is malformed, not a crash.
    let odd: Vec<String> = lines(&results)
        .into_iter()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(&l).unwrap();
            v["signature"]["key_id"] = serde_json::Value::String("ééééééééééééééééé\u{1b}[2J".into());
            v.to_string()
        })
        .collect();
    let (ok, out) = verify(&batch, &(odd.join("\n") + "\n"), None, &[]);
    assert!(!ok && out.contains("key_id is not 64 lowercase hex digits") && !out.contains('\u{1b}'), "{out}");

    // An earlier manifest, written before the batch was complete, with a result not yet in.
    let signer = Signer::load(&batch.keys().join("signing.key")).unwrap();
    let so_far: Vec<String> = lines(&results).into_iter().filter(|l| !l.contains("Marseille")).collect();
    let entries = so_far.iter().filter_map(|l| docpipe::evidence::manifest::Entry::of(&serde_json::from_str(l).unwrap()));
    let early = serde_json::to_string(&docpipe::evidence::manifest::Manifest::build("evidence", "b1", false, entries, Some(&signer))).unwrap();
    let (ok, out) = verify(&batch, &(so_far.join("\n") + "\n"), Some(&early), &[]);
    assert!(!ok && out.contains("written before the batch was complete"), "{out}");
    let (ok, out) = verify(&batch, &(so_far.join("\n") + "\n"), Some(&early), &["--allow-incomplete"]);
    assert!(ok, "{out}");

    // The manifest edited to match an edited result: its own signature fails.
    let mut manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(batch.out().join("results.manifest.json")).unwrap()).unwrap();
    manifest["documents"].as_array_mut().unwrap().pop();
    let (ok, out) = verify(&batch, &results, Some(&manifest.to_string()), &[]);
    assert!(!ok);
    assert!(out.contains("FAILED   manifest") && out.contains("changed after signing"), "{out}");
    assert!(out.contains("not in the manifest"), "{out}");
}

#[test]
fn rotated_keys_verify_side_by_side_and_an_exposed_key_is_refused() {
    let batch = processed_batch();
    // A second key signs a second run; trusting both directories verifies both.
    let second = batch.dir.path().join("keys-2027");
    generate(&second).unwrap();
    let first_results = batch.results();
    let output = process(&batch, &second.join("signing.key"));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let second_results = batch.results();
    let both = ["--keys", second.to_str().unwrap()];
    let (ok, out) = verify(&batch, &second_results, None, &both);
    assert!(ok, "{out}");
    // The first run's results, checked with both keys trusted, against a manifest of their own.
    let first_dir = batch.dir.path().join("first");
    std::fs::create_dir_all(&first_dir).unwrap();
    std::fs::write(first_dir.join("results.jsonl"), &first_results).unwrap();
    let signer = Signer::load(&batch.keys().join("signing.key")).unwrap();
    docpipe::evidence::manifest::write_beside(&first_dir.join("results.jsonl"), "evidence", "b1", true, Some(&signer), None).unwrap();
    let output = docpipe()
        .arg("verify")
        .arg(first_dir.join("results.jsonl"))
        .arg("--keys")
        .arg(batch.keys())
        .arg("--keys")
        .arg(&second)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    // With only the new key, the old results are from an unknown key.
    let (ok, out) = {
        let output = docpipe().arg("verify").arg(first_dir.join("results.jsonl")).arg("--keys").arg(&second).output().unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    assert!(!ok && out.contains("unknown key"), "{out}");

    // A signing key others can read is refused before anything is processed.
    use std::os::unix::fs::PermissionsExt;
    let key = batch.keys().join("signing.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let output = process(&batch, &key);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("chmod 600"), "{}", String::from_utf8_lossy(&output.stderr));
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from).into_iter().filter_map(Result::ok) {
        let target = to.join(entry.path().strip_prefix(from).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
