//! What signing and verifying cost: per result (µs) for real results, against the time docpipe
//! took to produce each (from its own provenance timestamps), and for a 10,000-result batch
//! (sign every result, write and sign the manifest, verify everything) in seconds.
//!
//! `cargo bench --bench evidence --profile dev -- [results.jsonl]` (default: `make sample`'s
//! out/sample/results.jsonl).

use std::time::Instant;

use docpipe::evidence::manifest::{Entry, Manifest};
use docpipe::evidence::verify::{verify, Inputs};
use docpipe::evidence::{check_value, sign_result, Signer, TrustedKeys};
use docpipe::schema::JobResult;

fn main() {
    let path = std::env::args().skip(1).find(|a| !a.starts_with('-')).unwrap_or_else(|| "out/sample/results.jsonl".into());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e} (run `make sample` first)"));
    let results: Vec<JobResult> = text.split('\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).expect("a result")).collect();
    let signer = Signer::new(ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]));
    let mut trusted = TrustedKeys::default();
    trusted.add(signer.public());

    println!("| document | result bytes | processing (s) | sign (µs) | verify (µs) | sign / processing |");
    println!("|---|---:|---:|---:|---:|---:|");
    for result in &results {
        let rounds = 50;
        let mut signed = result.clone();
        let started = Instant::now();
        for _ in 0..rounds {
            sign_result(&mut signed, &signer);
        }
        let sign_us = started.elapsed().as_secs_f64() * 1e6 / rounds as f64;
        let line = serde_json::to_string(&signed).unwrap();
        let started = Instant::now();
        for _ in 0..rounds {
            // What a verifier does with a line: parse it, canonicalize, check.
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert!(check_value(&value, &trusted).is_valid());
        }
        let verify_us = started.elapsed().as_secs_f64() * 1e6 / rounds as f64;
        let processing = processing_seconds(result);
        let name = std::path::Path::new(&result.document.filename).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let share = processing.filter(|p| *p > 0.0).map(|p| format!("{:.3} %", sign_us / 1e6 / p * 100.0)).unwrap_or_else(|| "-".into());
        println!(
            "| {name} | {} | {} | {sign_us:.0} | {verify_us:.0} | {share} |",
            line.len(),
            processing.map(|p| format!("{p:.2}")).unwrap_or_else(|| "-".into()),
        );
    }

    // Where signing's time goes, on the largest result.
    let largest = results.iter().max_by_key(|r| serde_json::to_vec(r).unwrap().len()).unwrap();
    let rounds = 200;
    let mut times = [0f64; 3];
    for _ in 0..rounds {
        let t = Instant::now();
        let bytes = docpipe::evidence::jcs_serializer::to_canonical(largest).unwrap();
        times[0] += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let digest: [u8; 32] = sha2::Digest::finalize(sha2::Digest::chain_update(<sha2::Sha256 as sha2::Digest>::new(), &bytes)).into();
        times[1] += t.elapsed().as_secs_f64();
        let t = Instant::now();
        std::hint::black_box(signer.sign(&digest));
        times[2] += t.elapsed().as_secs_f64();
    }
    let us = |i: usize| times[i] * 1e6 / rounds as f64;
    println!();
    println!(
        "signing {} ({} bytes), µs: canonical form {:.0}, SHA-256 {:.0}, Ed25519 {:.0}",
        largest.document.filename,
        serde_json::to_vec(largest).unwrap().len(),
        us(0),
        us(1),
        us(2)
    );

    // A batch of 10,000: the real results over and over, each with its own job id.
    let n = 10_000;
    let started = Instant::now();
    let mut jsonl = String::new();
    for i in 0..n {
        let mut result = results[i % results.len()].clone();
        result.job_id = uuid::Uuid::from_u128(i as u128 + 1);
        sign_result(&mut result, &signer);
        jsonl.push_str(&serde_json::to_string(&result).unwrap());
        jsonl.push('\n');
    }
    let signing = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let entries: Vec<Entry> = jsonl.split('\n').filter(|l| !l.is_empty()).filter_map(|l| Entry::of(&serde_json::from_str(l).unwrap())).collect();
    let manifest = Manifest::build("bench", "bench", true, entries, Some(&signer));
    let manifest_text = serde_json::to_string(&manifest).unwrap();
    let manifesting = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let report = verify(Inputs {
        results: &jsonl,
        manifest: Some(&manifest_text),
        trusted: &trusted,
        originals: None,
        without_manifest: false,
        incomplete: false,
    });
    let verifying = started.elapsed().as_secs_f64();
    // Children are not listed by parents here (ids were rewritten): count signatures only.
    assert!(report.documents.iter().all(|d| d.signature.is_valid()));
    assert!(report.missing.is_empty());
    println!();
    println!(
        "10,000 results ({:.1} MB): sign {signing:.2} s, manifest {manifesting:.2} s, verify (signatures, manifest) {verifying:.2} s",
        jsonl.len() as f64 / 1e6
    );
}

/// From the first stage's start to the last stage's end, as the result's provenance records them
/// (millisecond resolution: documents read in under a millisecond show 0).
fn processing_seconds(result: &JobResult) -> Option<f64> {
    let start = result.annotations.iter().map(|a| a.provenance.started_at).min()?;
    let end = result.annotations.iter().map(|a| a.provenance.finished_at).max()?;
    Some((end - start).num_milliseconds() as f64 / 1e3)
}
