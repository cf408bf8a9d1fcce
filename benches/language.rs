//! Language identification and summarization speed, and memory, on real text.
//! Run: `cargo bench --bench language` (needs var/models/lid.176.ftz: scripts/install-models.sh).

use std::path::Path;
use std::time::Instant;

use docpipe_models::eval::peak_rss_mib;
use docpipe_models::langid::{LanguageId, LID176_SHA256};
use docpipe_models::segment::sentences;
use docpipe_models::summarize::{summarize, Input, Options};

fn data(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(path)).unwrap()
}

fn main() {
    let base = peak_rss_mib();
    let model = LanguageId::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("var/models/lid.176.ftz"), Some(LID176_SHA256)).unwrap();
    let after_model = peak_rss_mib();
    let tsv = data("langid/tatoeba-sample.tsv");
    let sents: Vec<&str> = tsv.lines().filter_map(|l| l.split_once('\t')).map(|(_, s)| s).collect();
    let rounds = 10;
    let started = Instant::now();
    let mut und = 0;
    for _ in 0..rounds {
        for s in &sents {
            und += (model.detect(s).code == "und") as usize;
        }
    }
    let per_sec = (sents.len() * rounds) as f64 / started.elapsed().as_secs_f64();
    println!("| language identification (one thread) | {per_sec:.0} sentences/s | model {:.1} MiB | und {:.2} % |", after_model - base, 100.0 * und as f64 / (sents.len() * rounds) as f64);

    let eng: Vec<String> = data("mt/flores200-devtest-1-100.eng_Latn").lines().map(String::from).collect();
    let one_k = eng[..45].join(" ");
    let mut twenty_k = String::new();
    for lang in ["eng_Latn", "deu_Latn", "fra_Latn", "spa_Latn", "rus_Cyrl", "tur_Latn", "vie_Latn", "pes_Arab", "arb_Arab"] {
        twenty_k.push_str(&data(&format!("mt/flores200-devtest-1-100.{lang}")).lines().collect::<Vec<_>>().join(" "));
        twenty_k.push_str("\n\n");
    }
    for (name, text) in [("1,000-word", &one_k), ("20,000-word", &twenty_k)] {
        let words = text.split_whitespace().count();
        let before = peak_rss_mib();
        let runs = if words > 5000 { 5 } else { 50 };
        let started = Instant::now();
        for _ in 0..runs {
            let found = sentences(text);
            let pages = vec![1; found.len()];
            let summary = summarize(&Input { sentences: &found, pages: &pages }, &Options::default());
            assert_eq!(summary.sentences.len(), 5);
        }
        let secs = started.elapsed().as_secs_f64() / runs as f64;
        println!("| summarize {name} document ({words} words, segmentation included) | {:.1} documents/s | {:.1} ms each | peak +{:.1} MiB |", 1.0 / secs, secs * 1000.0, peak_rss_mib() - before);
    }
}
