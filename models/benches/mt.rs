//! Marian speed on candle, measured like ../shared/bench/marian-anchor measures PyTorch and
//! CTranslate2: the same OPUS-MT-base-shaped checkpoint, the first 32 Chinese FLORES lines,
//! 64 forced output tokens, greedy and beam 4, batch 1 and 16, one warm-up pass then the median
//! of three; every cell in a fresh process so its peak RSS is its own.
//!
//!   MT_BENCH_MODEL=/tmp/mtanchor/opus-mt-base-random cargo bench -p docpipe-models --bench mt
//!
//! Threads: candle's CPU pool (RAYON_NUM_THREADS, default all cores). Prints one JSON line per
//! cell (prefix `RESULT`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use docpipe_models::eval::peak_rss_mib;
use docpipe_models::mt::{Decoding, Seq2Seq};

const NEW_TOKENS: usize = 64;
const SENTENCES: usize = 32;
const RUNS: usize = 3;

fn corpus() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = here.join("../../shared/corpus/mt/flores200-devtest-1-100.zho_Hans");
    if shared.exists() {
        shared
    } else {
        here.join("../tests/data/mt/flores200-devtest-1-100.zho_Hans")
    }
}

fn cell(model_dir: &str, beams: usize, batch: usize) {
    let started = Instant::now();
    let model = Seq2Seq::load(model_dir.as_ref(), None).expect("model loads");
    let load_s = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(corpus()).expect("FLORES Chinese lines");
    let inputs: Vec<Vec<u32>> = text.lines().take(SENTENCES).map(|l| model.tokenizer().encode(l).expect("tokenizes")).collect();
    let decoding = Decoding { beams, length_penalty: 1.0, max_new_tokens: NEW_TOKENS, min_new_tokens: NEW_TOKENS, no_repeat_ngram: 0, early_stopping: false };
    let pass = || -> usize {
        inputs.chunks(batch).map(|c| model.generate(c, &decoding).expect("generates").iter().map(|h| h.tokens.len()).sum::<usize>()).sum()
    };
    let warm = Instant::now();
    let n = pass();
    let warmup_s = warm.elapsed().as_secs_f64();
    assert_eq!(n, SENTENCES * NEW_TOKENS, "every sentence must get exactly {NEW_TOKENS} tokens");
    let mut rates: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            let n = pass();
            n as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    println!(
        "RESULT {{\"backend\":\"candle-fp32\",\"beam\":{beams},\"batch\":{batch},\"tok_per_s\":{:.1},\"tok_per_s_runs\":{rates:?},\"load_s\":{load_s:.3},\"warmup_s\":{warmup_s:.2},\"peak_rss_mib\":{:.0}}}",
        rates[RUNS / 2],
        peak_rss_mib()
    );
}

fn main() {
    let Ok(model_dir) = std::env::var("MT_BENCH_MODEL") else {
        eprintln!("mt bench: set MT_BENCH_MODEL to an OPUS-MT-shaped model directory (see bench/mt.sh); skipped");
        return;
    };
    if let Ok(spec) = std::env::var("MT_BENCH_CELL") {
        let (beams, batch) = spec.split_once(',').expect("beam,batch");
        cell(&model_dir, beams.parse().expect("beam"), batch.parse().expect("batch"));
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    for (beams, batch) in [(1, 1), (1, 16), (4, 1), (4, 16)] {
        let status = Command::new(&exe).env("MT_BENCH_CELL", format!("{beams},{batch}")).status().expect("cell runs");
        assert!(status.success(), "cell beam {beams} batch {batch} failed");
    }
}
