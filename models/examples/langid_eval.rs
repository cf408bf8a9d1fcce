//! Accuracy and speed of language identification on a Tatoeba-style `label<TAB>sentence` file,
//! with the anchor's macro-code mapping. `cargo run --release -p docpipe-models --example
//! langid_eval -- var/models/lid.176.ftz tests/data/langid/tatoeba-sample.tsv`
use std::collections::BTreeMap;
use std::time::Instant;

use docpipe_models::langid::LanguageId;

/// Gold labels folded like the anchor: Arabic dialects → ara, Chinese varieties → zho, pes → fas.
pub fn gold(label: &str) -> String {
    let base = label.split('_').next().unwrap_or(label);
    match base {
        "acm" | "afb" | "apc" | "arz" | "ary" | "arq" | "aeb" | "ajp" => "ara".into(),
        "cmn" | "cjy" | "yue" | "wuu" | "nan" | "hak" | "gan" => "zho".into(),
        "pes" | "prs" => "fas".into(),
        other => other.to_owned(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = LanguageId::load(std::path::Path::new(&args[1]), None).expect("model");
    let data = std::fs::read_to_string(&args[2]).expect("data");
    let rows: Vec<(String, &str)> = data.lines().filter_map(|l| l.split_once('\t')).map(|(l, s)| (gold(l), s)).collect();
    let started = Instant::now();
    let guesses: Vec<_> = rows.iter().map(|(_, s)| model.detect(s)).collect();
    let secs = started.elapsed().as_secs_f64();
    let mut per: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let (mut ok, mut short_ok, mut short, mut und) = (0, 0, 0, 0);
    let mut confusions: BTreeMap<(String, String), usize> = BTreeMap::new();
    for ((gold, sentence), guess) in rows.iter().zip(&guesses) {
        let hit = &guess.code == gold;
        let e = per.entry(gold.as_str()).or_default();
        e.1 += 1;
        if hit {
            e.0 += 1;
            ok += 1;
        } else {
            *confusions.entry((gold.clone(), guess.code.clone())).or_default() += 1;
        }
        if guess.code == "und" {
            und += 1;
        }
        if sentence.chars().count() <= 50 {
            short += 1;
            if hit {
                short_ok += 1;
            }
        }
    }
    println!("overall {:.2} % ({ok}/{}), <=50 chars {:.2} % ({short_ok}/{short}), und {:.2} %, {:.0} sentences/s", 100.0 * ok as f64 / rows.len() as f64, rows.len(), 100.0 * short_ok as f64 / short as f64, 100.0 * und as f64 / rows.len() as f64, rows.len() as f64 / secs);
    for (lang, (hit, n)) in &per {
        println!("{lang}\t{:.1} %\t{n}", 100.0 * *hit as f64 / *n as f64);
    }
    let mut c: Vec<_> = confusions.into_iter().collect();
    c.sort_by_key(|b| std::cmp::Reverse(b.1));
    for ((g, p), n) in c.iter().take(15) {
        println!("confusion {g} -> {p}: {n}");
    }
}
