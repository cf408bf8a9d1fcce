//! Marian and T5 on candle against Hugging Face transformers (PyTorch, CPU): tokenization, logits,
//! encoder states and generated token ids for greedy and beam search, on the small random-weight
//! checkpoints and references that `tests/fixtures/mt/generate.py` wrote.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use docpipe_models::mt::{Decoding, MtError, Seq2Seq};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mt")
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn load(name: &str) -> Seq2Seq {
    Seq2Seq::load(&fixtures().join(name), None).unwrap_or_else(|e| panic!("{name}: {e}"))
}

const MODELS: [&str; 3] = ["marian-tiny", "t5-tiny", "t5-tiny-relu"];

fn decoding(config: &Value) -> Decoding {
    Decoding {
        beams: config["num_beams"].as_u64().unwrap() as usize,
        length_penalty: config["length_penalty"].as_f64().unwrap() as f32,
        max_new_tokens: config["max_new_tokens"].as_u64().unwrap() as usize,
        min_new_tokens: config.get("min_new_tokens").and_then(Value::as_u64).unwrap_or(0) as usize,
        no_repeat_ngram: config["no_repeat_ngram_size"].as_u64().unwrap_or(0) as usize,
        early_stopping: config["early_stopping"].as_bool().unwrap_or(false),
    }
}

/// Sequences shaped as `generate` returns them: start token, tokens, then the fill value.
fn as_reference(model: &Seq2Seq, hyps: &[docpipe_models::mt::Hypothesis], beams: usize) -> Vec<Vec<u32>> {
    let (start, eos, pad) = model.special();
    // The reference pads beam outputs with `pad or eos`, so a pad id of 0 becomes eos.
    let fill = if beams > 1 && pad == 0 { eos } else { pad };
    let width = hyps.iter().map(|h| h.tokens.len()).max().unwrap_or(0) + 1;
    hyps.iter()
        .map(|h| {
            let mut s = vec![start];
            s.extend(&h.tokens);
            s.resize(width, fill);
            s
        })
        .collect()
}

#[test]
fn generation_matches_transformers_token_for_token() {
    let reference = reference();
    let mut checked = 0;
    for name in MODELS {
        let model = load(name);
        for case in reference["models"][name]["cases"].as_array().unwrap() {
            let input = ids(&case["input_ids"]);
            let text = case["text"].as_str().unwrap();
            assert_eq!(model.tokenizer().encode(text).unwrap(), input, "{name} {}: input ids", case["name"]);
            for (setting, out) in case["outputs"].as_object().unwrap() {
                let d = decoding(&out["generation_config"]);
                let hyps = model.generate(std::slice::from_ref(&input), &d).unwrap();
                let got = as_reference(&model, &hyps, d.beams);
                assert_eq!(got[0], ids(&out["sequence"]), "{name} {} {setting}", case["name"]);
                checked += 1;
            }
            let greedy = &case["outputs"]["greedy"];
            let text = model.run(&[text], &decoding(&greedy["generation_config"]), 1).unwrap();
            assert_eq!(text[0].text, case["greedy_decoded"].as_str().unwrap(), "{name} {}: decoded text", case["name"]);
        }
    }
    assert_eq!(checked, 3 * 6 * 5);
}

#[test]
fn padded_batches_match_transformers() {
    let reference = reference();
    for name in MODELS {
        let model = load(name);
        let batch = &reference["models"][name]["batch"];
        // Unpadded inputs: the model pads and masks them itself.
        let inputs: Vec<Vec<u32>> = batch["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .zip(batch["attention_mask"].as_array().unwrap())
            .map(|(row, mask)| ids(row).into_iter().zip(ids(mask)).filter(|&(_, m)| m == 1).map(|(t, _)| t).collect())
            .collect();
        for (setting, out) in batch["outputs"].as_object().unwrap() {
            let d = decoding(&out["generation_config"]);
            let hyps = model.generate(&inputs, &d).unwrap();
            let expected: Vec<Vec<u32>> = out["sequences"].as_array().unwrap().iter().map(ids).collect();
            assert_eq!(as_reference(&model, &hyps, d.beams), expected, "{name} batch {setting}");
        }
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn logits_and_encoder_states_within_1e4() {
    let reference = reference();
    let tensors = candle_core::safetensors::load(fixtures().join("reference_logits.safetensors"), &Device::Cpu).unwrap();
    for name in MODELS {
        let model = load(name);
        for case in reference["models"][name]["logits"].as_array().unwrap() {
            let input = ids(&case["input_ids"]);
            let logits = model.logits(&input, &ids(&case["decoder_input_ids"])).unwrap();
            let want = &tensors[case["tensor"].as_str().unwrap()];
            assert_eq!(logits.dims(), want.dims());
            let diff = max_diff(&logits, want);
            assert!(diff < 1e-4, "{name} {}: logits differ by {diff}", case["case"]);
            let (states, _) = model.encode(&[input]).unwrap();
            let want = &tensors[case["encoder_tensor"].as_str().unwrap()];
            let diff = max_diff(&states.squeeze(0).unwrap(), want);
            assert!(diff < 1e-4, "{name} {}: encoder states differ by {diff}", case["case"]);
        }
    }
}

#[test]
fn marian_tokenization_matches_on_every_flores_language() {
    let reference = reference();
    let model = load("marian-tiny");
    let tok = model.tokenizer();
    let t = &reference["tokenization"]["marian-tiny"];
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/mt");
    let mut lines_checked = 0;
    for (lang, expected) in t["source"].as_object().unwrap() {
        let text = std::fs::read_to_string(corpus.join(format!("flores200-devtest-1-100.{lang}"))).unwrap();
        for (line, want) in text.lines().zip(expected.as_array().unwrap()) {
            assert_eq!(tok.encode(line).unwrap(), ids(want), "{lang}: {line}");
            lines_checked += 1;
        }
    }
    assert!(lines_checked >= 1000, "{lines_checked}");
    let eng = std::fs::read_to_string(corpus.join("flores200-devtest-1-100.eng_Latn")).unwrap();
    for (line, want) in eng.lines().zip(t["target_eng"].as_array().unwrap()) {
        assert_eq!(tok.encode_target(line).unwrap(), ids(want), "target: {line}");
    }
    for edge in t["edge_source"].as_array().unwrap() {
        assert_eq!(tok.encode(edge["text"].as_str().unwrap()).unwrap(), ids(&edge["ids"]), "edge {:?}", edge["text"]);
    }
    for d in t["decode"].as_array().unwrap() {
        assert_eq!(tok.decode(&ids(&d["ids"])).unwrap(), d["skip_special_tokens"].as_str().unwrap());
    }
}

#[test]
fn t5_tokenization_matches_on_every_flores_language() {
    let reference = reference();
    let t = &reference["tokenization"]["t5"];
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/mt");
    // spiece.model (t5-tiny-relu) and tokenizer.json (t5-tiny) must agree with the reference.
    for name in ["t5-tiny-relu", "t5-tiny"] {
        let model = load(name);
        let tok = model.tokenizer();
        for (lang, expected) in t["ids"].as_object().unwrap() {
            let text = std::fs::read_to_string(corpus.join(format!("flores200-devtest-1-100.{lang}"))).unwrap();
            for (line, want) in text.lines().zip(expected.as_array().unwrap()) {
                assert_eq!(tok.encode(line).unwrap(), ids(want), "{name} {lang}: {line}");
            }
        }
        // Including text with literal special-token strings, which plain SentencePiece would split.
        for edge in t["edge"].as_array().unwrap() {
            assert_eq!(tok.encode(edge["text"].as_str().unwrap()).unwrap(), ids(&edge["transformers"]), "{name} edge {:?}", edge["text"]);
        }
        for d in t["decode"].as_array().unwrap() {
            assert_eq!(tok.decode(&ids(&d["ids"])).unwrap(), d["skip_special_tokens"].as_str().unwrap(), "{name}");
        }
    }
}

fn copy_dir(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !skip.contains(&name.as_str()) {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

#[test]
fn pytorch_bin_checkpoint_gives_the_same_logits() {
    let reference = reference();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("marian-tiny"), dir.path(), &["model.safetensors"]);
    let model = Seq2Seq::load(dir.path(), None).unwrap();
    assert!(model.info.weights_file.ends_with("pytorch_model.bin"));
    let tensors = candle_core::safetensors::load(fixtures().join("reference_logits.safetensors"), &Device::Cpu).unwrap();
    let case = &reference["models"]["marian-tiny"]["logits"][0];
    let logits = model.logits(&ids(&case["input_ids"]), &ids(&case["decoder_input_ids"])).unwrap();
    assert!(max_diff(&logits, &tensors[case["tensor"].as_str().unwrap()]) < 1e-4);
}

#[test]
fn wrong_sha256_is_refused_before_loading() {
    let err = Seq2Seq::load(&fixtures().join("marian-tiny"), Some(&"0".repeat(64))).err().expect("refused");
    let text = err.to_string();
    assert!(matches!(err, MtError::Weights(..)), "{text}");
    assert!(text.contains("sha256") && text.contains(&"0".repeat(64)), "{text}");
    // The right hash loads.
    let sha = docpipe_models::sha256_file(&fixtures().join("marian-tiny/model.safetensors")).unwrap();
    Seq2Seq::load(&fixtures().join("marian-tiny"), Some(&sha)).unwrap();
}

#[test]
fn truncated_or_corrupt_weights_give_errors_not_panics() {
    for (weights, skip) in [("model.safetensors", "pytorch_model.bin"), ("pytorch_model.bin", "model.safetensors")] {
        let src = fixtures().join("marian-tiny");
        let bytes = std::fs::read(src.join(weights)).unwrap();
        for cut in [bytes.len() / 2, 100, 0] {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(&src, dir.path(), &[skip, weights]);
            std::fs::write(dir.path().join(weights), &bytes[..cut]).unwrap();
            let err = Seq2Seq::load(dir.path(), None).err().unwrap_or_else(|| panic!("{weights} cut at {cut} loaded"));
            assert!(matches!(err, MtError::Weights(..)), "{weights} cut at {cut}: {err}");
        }
        // Same length, damaged content: garbage header.
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&src, dir.path(), &[skip, weights]);
        let mut damaged = bytes.clone();
        damaged[..64].fill(0xff);
        std::fs::write(dir.path().join(weights), damaged).unwrap();
        assert!(Seq2Seq::load(dir.path(), None).is_err(), "{weights} with a damaged header loaded");
    }
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("marian-tiny"), dir.path(), &["source.spm"]);
    let err = Seq2Seq::load(dir.path(), None).err().expect("refused").to_string();
    assert!(err.contains("source.spm"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    assert!(Seq2Seq::load(empty.path(), None).err().expect("refused").to_string().contains("config.json"));
}

#[test]
fn token_ids_beyond_the_vocabulary_are_refused_on_load() {
    // Generation indexes logit rows with these ids: past the vocabulary they panicked mid-search.
    let cases = [
        ("marian-tiny", "eos_token_id"),
        ("marian-tiny", "pad_token_id"),
        ("marian-tiny", "decoder_start_token_id"),
        ("marian-tiny", "forced_eos_token_id"),
        ("marian-tiny", "bad_words_ids"),
        ("t5-tiny", "eos_token_id"),
        ("t5-tiny", "pad_token_id"),
        ("t5-tiny", "decoder_start_token_id"),
    ];
    for (model, field) in cases {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&fixtures().join(model), dir.path(), &["pytorch_model.bin"]);
        let path = dir.path().join("config.json");
        let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let vocab = config.get("decoder_vocab_size").and_then(Value::as_u64).or_else(|| config["vocab_size"].as_u64()).unwrap();
        config[field] = if field == "bad_words_ids" { serde_json::json!([[vocab]]) } else { serde_json::json!(vocab) };
        std::fs::write(&path, config.to_string()).unwrap();
        let err = Seq2Seq::load(dir.path(), None).err().unwrap_or_else(|| panic!("{model} with {field} = {vocab} loaded"));
        let text = err.to_string();
        assert!(
            matches!(err, MtError::TokenId { field: f, id, vocab: v, .. } if f == field && u64::from(id) == vocab && v as u64 == vocab),
            "{model} {field}: {text}"
        );
        assert!(text.contains(field) && text.contains(&format!("{vocab} is outside the vocabulary of {vocab} tokens")), "{text}");
    }
}

/// Documents sent from several threads at once through the model's own thread are batched
/// together there, and each gets exactly what running its sentences alone gives.
#[test]
fn documents_batched_across_threads_get_what_they_get_alone() {
    use docpipe_models::mt::SharedSeq2Seq;
    let documents: Vec<Vec<String>> = (0..12)
        .map(|d| (0..3).map(|s| format!("▁doc {d} sentence {s} {}", "word ".repeat(d % 5 + s))).collect())
        .collect();
    let decoding = Decoding { beams: 2, max_new_tokens: 12, ..Decoding::default() };
    let alone = load("marian-tiny");
    let expected: Vec<Vec<(String, Vec<u32>)>> = documents
        .iter()
        .map(|doc| {
            let texts: Vec<&str> = doc.iter().map(String::as_str).collect();
            alone.run(&texts, &decoding, 1).unwrap().into_iter().map(|o| (o.text, o.hypothesis.tokens)).collect()
        })
        .collect();
    let shared = SharedSeq2Seq::start(load("marian-tiny"), 4);
    let got: Vec<Vec<(String, Vec<u32>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = documents
            .iter()
            .map(|doc| {
                let (shared, decoding) = (&shared, &decoding);
                scope.spawn(move || {
                    let texts: Vec<&str> = doc.iter().map(String::as_str).collect();
                    shared.run(&texts, decoding, 8).unwrap().into_iter().map(|o| (o.text, o.hypothesis.tokens)).collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(got, expected);
}
