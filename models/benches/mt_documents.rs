//! Many short documents through one Marian model from the translate stage's threads: each thread
//! running the model on its own document (as before), against every thread sending its document
//! to the model's own thread, which batches what is waiting across documents (`SharedSeq2Seq`).
//! 100 documents of 3 Chinese FLORES lines each, 8 threads, greedy, batch 16, 32 new tokens.
//!
//!   cargo bench -p docpipe-models --bench mt_documents [-- MODEL_DIR]
//!
//! MODEL_DIR defaults to the tiny random-weight Marian test fixture, whose figures show the
//! batching and scheduling, not what a full-size model costs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use docpipe_models::mt::{Decoding, Seq2Seq, SharedSeq2Seq};

const DOCUMENTS: usize = 100;
const LINES: usize = 3;
const THREADS: usize = 8;
const BATCH: usize = 16;

fn main() {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model_dir = std::env::args().skip(1).find(|a| !a.starts_with("--")).map(PathBuf::from).unwrap_or_else(|| here.join("tests/fixtures/mt/marian-tiny"));
    let text = std::fs::read_to_string(here.join("../tests/data/mt/flores200-devtest-1-100.zho_Hans")).expect("FLORES Chinese lines");
    let lines: Vec<&str> = text.lines().collect();
    let documents: Vec<Vec<&str>> = (0..DOCUMENTS).map(|d| (0..LINES).map(|l| lines[(d * LINES + l) % lines.len()]).collect()).collect();
    let decoding = Decoding { beams: 1, max_new_tokens: 32, min_new_tokens: 32, ..Decoding::default() };

    let each_alone = Seq2Seq::load(&model_dir, None).expect("model loads");
    let shared = SharedSeq2Seq::start(Seq2Seq::load(&model_dir, None).expect("model loads"), 64);
    for round in 0..3 {
        let alone = time(&documents, |doc| {
            each_alone.run(doc, &decoding, BATCH).expect("translates");
        });
        let together = time(&documents, |doc| {
            shared.run(doc, &decoding, BATCH).expect("translates");
        });
        println!(
            "RESULT {{\"round\":{round},\"documents\":{DOCUMENTS},\"threads\":{THREADS},\"each_thread_runs_the_model_docs_per_s\":{:.1},\"one_model_thread_batching_docs_per_s\":{:.1},\"ratio\":{:.2}}}",
            DOCUMENTS as f64 / alone,
            DOCUMENTS as f64 / together,
            alone / together
        );
    }
}

/// Seconds for `THREADS` threads to take every document from a shared queue and translate it.
fn time(documents: &[Vec<&str>], translate: impl Fn(&[&str]) + Sync) -> f64 {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                while let Some(doc) = documents.get(next.fetch_add(1, Ordering::Relaxed)) {
                    translate(doc);
                }
            });
        }
    });
    started.elapsed().as_secs_f64()
}
