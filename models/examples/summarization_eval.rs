//! ROUGE of the extractive summarizer against LEAD-3, same segmentation, same scorer.
//! `cargo run --release -p docpipe-models --example summarization_eval -- tests/data/summarization/set.jsonl`
use docpipe_models::rouge::{rouge_l, rouge_n};
use docpipe_models::segment::sentences;
use docpipe_models::summarize::{lead, summarize, Input, Length, Options};

fn main() {
    let path = std::env::args().nth(1).expect("JSONL file with text and summary");
    let data = std::fs::read_to_string(&path).expect("read set");
    let systems = [("docpipe LexRank+MMR alone (position_weight 0)", 0.0f32), ("docpipe default (position_weight 0.3)", 0.3), ("docpipe position_weight 0.7", 0.7)];
    let mut totals = [[0.0f64; 3]; 4];
    let mut n = 0usize;
    for line in data.lines().filter(|l| !l.trim().is_empty()) {
        let item: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        let (text, reference) = (item["text"].as_str().unwrap_or(""), item["summary"].as_str().unwrap_or(""));
        let found = sentences(text);
        let pages = vec![1; found.len()];
        let input = Input { sentences: &found, pages: &pages };
        let mut candidates: Vec<String> = systems
            .iter()
            .map(|(_, weight)| {
                let options = Options { length: Length::Sentences(3), position_weight: *weight, ..Options::default() };
                let summary = summarize(&input, &options);
                summary.sentences.iter().map(|p| found[p.index].clean.as_str()).collect::<Vec<_>>().join(" ")
            })
            .collect();
        candidates.push(lead(&input, 3).into_iter().map(|i| found[i].clean.as_str()).collect::<Vec<_>>().join(" "));
        for (k, candidate) in candidates.iter().enumerate() {
            totals[k][0] += rouge_n(candidate, reference, 1);
            totals[k][1] += rouge_n(candidate, reference, 2);
            totals[k][2] += rouge_l(candidate, reference);
        }
        n += 1;
    }
    println!("{n} documents from {path}\n");
    println!("| system | ROUGE-1 F1 | ROUGE-2 F1 | ROUGE-L F1 |");
    println!("|---|---|---|---|");
    let names = [systems[0].0, systems[1].0, systems[2].0, "LEAD-3 (same segmentation)"];
    for (name, t) in names.iter().zip(totals) {
        println!("| {name} | {:.2} | {:.2} | {:.2} |", 100.0 * t[0] / n as f64, 100.0 * t[1] / n as f64, 100.0 * t[2] / n as f64);
    }
}
