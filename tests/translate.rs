//! The translate stage through `docpipe process`: sentences routed by their language to the model
//! configured for it, everything else kept with an honest status, provenance per model.
//! Models are the random-weight fixtures (models/tests/fixtures/mt): the output text is not
//! English, but it must be exactly what that model makes of that sentence.

use std::path::{Path, PathBuf};
use std::process::Command;

use docpipe::schema::{AnnotationBody, JobResult, TranslationStatus};
use docpipe_models::mt::{Decoding, Seq2Seq};
use docpipe_models::sha256_file;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("models/tests/fixtures/mt").join(name)
}

fn flores(lang: &str, lines: std::ops::Range<usize>) -> Vec<String> {
    let text = std::fs::read_to_string(root().join("tests/data/mt").join(format!("flores200-devtest-1-100.{lang}"))).unwrap();
    text.lines().skip(lines.start).take(lines.len()).map(str::to_owned).collect()
}

const DECODING: Decoding = Decoding { beams: 2, length_penalty: 1.0, max_new_tokens: 8, min_new_tokens: 0, no_repeat_ngram: 0, early_stopping: false };

/// The embedded pipeline.toml plus routes: zho → marian-tiny, rus → t5-tiny.
fn config(dir: &Path, zh_sha: &str) -> PathBuf {
    let base = std::fs::read_to_string(root().join("pipeline.toml")).unwrap();
    let routes = format!(
        r#"
[[translate.models]]
id = "test/marian-tiny"
path = "{}"
kind = "marian"
sha256 = "{zh_sha}"
languages = ["zho"]

[[translate.models]]
id = "test/t5-tiny"
path = "{}"
kind = "t5"
sha256 = "{}"
languages = ["rus"]
"#,
        fixture("marian-tiny").display(),
        fixture("t5-tiny").display(),
        sha256_file(&fixture("t5-tiny/model.safetensors")).unwrap(),
    );
    // Without the default GGUF route, so only the fixture routes exist.
    let start = base.find("[[translate.models]]\nid = \"Qwen").expect("default route");
    let end = start + base[start..].find("\n\n").expect("end of route");
    let base = format!("{}{}", &base[..start], &base[end..]);
    let text = base.replace("beams = 4", "beams = 2").replace("max_new_tokens = 256", "max_new_tokens = 8") + &routes;
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn process(config: &Path, input: &Path, out: &Path) -> JobResult {
    let output = Command::new(env!("CARGO_BIN_EXE_docpipe"))
        .current_dir(root())
        .arg("--config")
        .arg(config)
        .arg("process")
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(["--stages", "extract,langid,translate"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    serde_json::from_str(text.lines().next().unwrap()).unwrap()
}

fn document_text(result: &JobResult) -> String {
    let AnnotationBody::Text { segments, .. } = &result.annotations[0].body else { panic!("text first") };
    let mut text = String::new();
    for s in segments {
        while text.chars().count() < s.start as usize {
            text.push('\n');
        }
        text.push_str(&s.text);
    }
    text
}

#[test]
fn sentences_go_to_the_model_for_their_language() {
    let dir = tempfile::tempdir().unwrap();
    let zh = flores("zho_Hans", 0..3);
    let ru = flores("rus_Cyrl", 3..6);
    let en = flores("eng_Latn", 6..8);
    let ar = flores("arb_Arab", 8..9);
    let body = [zh.clone(), ru.clone(), en, ar].concat().join("\n");
    let input = dir.path().join("mixed.txt");
    std::fs::write(&input, &body).unwrap();
    let zh_sha = sha256_file(&fixture("marian-tiny/model.safetensors")).unwrap();
    let result = process(&config(dir.path(), &zh_sha), &input, &dir.path().join("out"));

    let annotation = result.annotations.iter().find(|a| matches!(a.body, AnnotationBody::Translation { .. })).expect("translation annotation");
    assert!(annotation.provenance.machine_generated);
    let params = &annotation.provenance.parameters;
    assert_eq!(params["models"]["test/marian-tiny"]["weights_sha256"], zh_sha.as_str());
    assert_eq!(params["models"]["test/t5-tiny"]["kind"], "t5");
    assert_eq!(params["decoding"]["beams"], 2);
    let AnnotationBody::Translation { target, segments } = &annotation.body else { unreachable!() };
    assert_eq!(target, "en");

    let marian = Seq2Seq::load(&fixture("marian-tiny"), None).unwrap();
    let t5 = Seq2Seq::load(&fixture("t5-tiny"), None).unwrap();
    let text: Vec<char> = document_text(&result).chars().collect();
    let mut seen = std::collections::BTreeMap::new();
    for seg in segments {
        let source: String = text[seg.start as usize..seg.end as usize].iter().collect();
        *seen.entry((seg.source_language.clone(), seg.status)).or_insert(0) += 1;
        match seg.source_language.as_str() {
            "zho" | "rus" => {
                // The tiny models have random weights: what they write is checked against the
                // source like any output, and kept either way; the check decides which status.
                let expected_status = match &seg.check {
                    Some(_) => TranslationStatus::Unverified,
                    None => TranslationStatus::Translated,
                };
                assert_eq!(seg.status, expected_status, "{source}");
                assert_eq!(seg.check, docpipe_models::translation_check::suspect(&source.split_whitespace().collect::<Vec<_>>().join(" "), seg.text.as_deref().unwrap()));
                let (model, id) = if seg.source_language == "zho" { (&marian, "test/marian-tiny") } else { (&t5, "test/t5-tiny") };
                assert_eq!(seg.model.as_deref(), Some(id));
                // Exactly what that model makes of that sentence, found at the segment's offsets.
                let clean = source.split_whitespace().collect::<Vec<_>>().join(" ");
                let expected = model.run(&[clean.as_str()], &DECODING, 1).unwrap();
                assert_eq!(seg.text.as_deref(), Some(expected[0].text.as_str()), "{source}");
                let c = seg.confidence.unwrap();
                assert!((c - expected[0].hypothesis.confidence()).abs() < 1e-4 && c > 0.0 && c <= 1.0);
            }
            "eng" => assert_eq!(seg.status, TranslationStatus::SourceIsTarget),
            "ara" => {
                assert_eq!(seg.status, TranslationStatus::Unsupported);
                assert!(seg.text.is_none() && seg.model.is_none());
            }
            other => panic!("unexpected language {other} for {source:?}"),
        }
    }
    // Every line is there: FLORES lines are one sentence or a few.
    for lang in ["zho", "rus", "eng", "ara"] {
        assert!(seen.keys().any(|(l, _)| l == lang), "{lang} missing: {seen:?}");
    }
    assert!(zh.iter().chain(&ru).all(|l| body.contains(l.as_str())));
}

#[test]
fn a_model_with_the_wrong_sha256_is_refused_and_the_document_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("zh.txt");
    std::fs::write(&input, flores("zho_Hans", 0..2).join("\n")).unwrap();
    let result = process(&config(dir.path(), &"ab".repeat(32)), &input, &dir.path().join("out"));
    let errors: Vec<String> = result.stages.iter().filter_map(|s| s.error.as_ref()).map(|e| format!("{} {}", e.kind.as_str(), e.reason)).collect();
    assert!(errors.iter().any(|e| e.starts_with("model") && e.contains("sha256") && e.contains("test/marian-tiny")), "{errors:?}");
    let AnnotationBody::Translation { segments, .. } = &result.annotations.iter().find(|a| matches!(a.body, AnnotationBody::Translation { .. })).unwrap().body else {
        unreachable!()
    };
    assert!(segments.iter().all(|s| s.status == TranslationStatus::ModelError && s.text.is_none()));
}
