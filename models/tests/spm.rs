//! SentencePiece encoding and decoding against the reference implementation's output
//! (fixtures/spm/generate.py: unigram models trained on FLORES-200 with PyPI sentencepiece).

use docpipe_models::spm::SentencePiece;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spm").join(name)
}

#[test]
fn token_ids_match_the_reference_on_every_flores_language() {
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("reference.json")).unwrap()).unwrap();
    for (model, cases) in reference["models"].as_object().unwrap() {
        let spm = SentencePiece::load(&fixture(&format!("{model}.model"))).unwrap();
        let mut failures = Vec::new();
        for case in cases.as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            let got = spm.encode(text);
            if got != want {
                failures.push(format!("{} {:?}\n  want {:?}\n  got  {:?}", case["lang"], text.chars().take(60).collect::<String>(), &want[..want.len().min(12)], &got[..got.len().min(12)]));
            }
            assert_eq!(spm.decode(&want), case["decoded"].as_str().unwrap(), "{model}: decode {text:?}");
        }
        assert!(failures.is_empty(), "{model}: {} of {} lines differ:\n{}", failures.len(), cases.as_array().unwrap().len(), failures.join("\n"));
    }
}

#[test]
fn truncated_or_foreign_files_are_refused() {
    let bytes = std::fs::read(fixture("unigram.model")).unwrap();
    assert!(SentencePiece::from_bytes(&bytes[..bytes.len() / 2], "half").is_err());
    assert!(SentencePiece::from_bytes(b"not a model at all", "text").is_err());
}
