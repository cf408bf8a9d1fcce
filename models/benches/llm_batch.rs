//! Translation throughput of the GGUF decoder: FLORES-200 lines into English one at a time (what
//! docpipe did before batching, and still does with `slots = 1`) and all at once through the
//! model thread's continuous batching, on the same prompts. Checks that both give the same tokens,
//! writes the hypotheses of both for chrF (bench/llm_score.py) and the prompt ids for the llama.cpp anchor
//! (bench/llama_anchor.py), and prints one RESULT line per language.
//!
//!   LLM_BATCH=1 cargo bench -p docpipe-models --bench llm_batch
//!
//! LLM_MODEL (default qwen2.5-coder-0.5b-instruct), LLM_BATCH_LINES (100), LLM_BATCH_LANGS
//! (zho_Hans,rus_Cyrl), LLM_SLOTS (8), LLM_PROMPT_F32_MIB (as `[llm] prompt_f32_mib`),
//! LLM_BATCH_SINGLE=0 skips the one-at-a-time pass. Output: bench/results/llm-batch/<model>/.

use std::path::PathBuf;
use std::time::Instant;

use docpipe_models::eval::peak_rss_mib;
use docpipe_models::llm::{tasks, Batching, Completion, Llm, DEFAULT_PROMPT_F32_BYTES};
use serde_json::json;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    docpipe_models::threads::settle();
    if std::env::var("LLM_BATCH").is_err() {
        eprintln!("llm_batch bench: set LLM_BATCH=1 to run (about 10 minutes with the 0.5B model on 2 cores); skipped");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = std::env::var("LLM_MODEL").unwrap_or_else(|_| "qwen2.5-coder-0.5b-instruct".into());
    let lines: usize = env_or("LLM_BATCH_LINES", 100);
    let langs = std::env::var("LLM_BATCH_LANGS").unwrap_or_else(|_| "zho_Hans,rus_Cyrl".into());
    let slots: usize = env_or("LLM_SLOTS", Batching::default().slots);
    let single = std::env::var("LLM_BATCH_SINGLE").map_or(true, |v| v != "0");
    let prompt_f32 = std::env::var("LLM_PROMPT_F32_MIB").ok().and_then(|v| v.parse::<usize>().ok()).map_or(DEFAULT_PROMPT_F32_BYTES, |mib| mib << 20);
    let out = root.join("bench/results/llm-batch").join(&model);
    std::fs::create_dir_all(&out).unwrap();
    let started = Instant::now();
    let batching = Batching { slots, queue: Batching::default().queue.max(slots) };
    let llm = Llm::load_with(&root.join("var/models").join(&model).join("model.gguf"), None, 4096, prompt_f32, batching).expect("model installed (docpipe models install)");
    println!("{model}: load {:.2} s, f32 copies {} MiB, slots {slots}", started.elapsed().as_secs_f64(), llm.info.prompt_f32_bytes >> 20);
    for code in langs.split(',') {
        let name = match code {
            "zho_Hans" => "Chinese",
            "rus_Cyrl" => "Russian",
            "spa_Latn" => "Spanish",
            other => panic!("add a name for {other}"),
        };
        let text = std::fs::read_to_string(root.join(format!("tests/data/mt/flores200-devtest-1-100.{code}"))).unwrap();
        let sources: Vec<&str> = text.lines().take(lines).collect();
        let requests: Vec<_> = sources.iter().map(|s| tasks::translate_request(&llm, s, name, "English", 256).unwrap()).collect();
        // The very prompts, as ids, for the llama.cpp anchor.
        let prompts: Vec<String> = sources
            .iter()
            .zip(&requests)
            .map(|(s, r)| {
                let (head, rest) = llm.prompt_parts(&r.prompt(s)).unwrap();
                json!({ "head": head, "rest": rest, "cap": r.cap, "stops": llm.stop_ids() }).to_string()
            })
            .collect();
        std::fs::write(out.join(format!("{code}.prompts.jsonl")), prompts.join("\n") + "\n").unwrap();

        // Prompt reading alone, whole prompts (no head reuse), as llama.cpp is measured.
        let t = Instant::now();
        let mut prompt_tokens = 0;
        for (s, r) in sources.iter().zip(&requests).take(20) {
            let ids = llm.prompt_ids(&r.prompt(s)).unwrap();
            prompt_tokens += ids.len();
            llm.complete(&ids, 1).unwrap();
        }
        let prompt_tok_s = prompt_tokens as f64 / t.elapsed().as_secs_f64();

        let alone: Option<(Vec<Completion>, f64)> = single.then(|| {
            let t = Instant::now();
            let c: Vec<Completion> = sources.iter().zip(&requests).map(|(s, r)| llm.chat(&r.prompt(s), r.cap).unwrap()).collect();
            (c, t.elapsed().as_secs_f64())
        });
        let t = Instant::now();
        let segments: Vec<(&str, &str)> = sources.iter().map(|s| (*s, name)).collect();
        let together: Vec<Completion> = tasks::translate_all(&llm, &segments, "English", 256).into_iter().map(Result::unwrap).collect();
        let together_secs = t.elapsed().as_secs_f64();
        std::fs::write(out.join(format!("{code}.hyp")), together.iter().map(|c| c.text.replace('\n', " ")).collect::<Vec<_>>().join("\n") + "\n").unwrap();
        let tokens: usize = together.iter().map(|c| c.tokens).sum();
        let mut result = json!({
            "model": model, "lang": code, "lines": sources.len(), "slots": slots,
            "prompt_tok_per_s": (prompt_tok_s * 10.0).round() / 10.0,
            "batched_sentences_per_s": (sources.len() as f64 / together_secs * 1000.0).round() / 1000.0,
            "batched_gen_tok_per_s": (tokens as f64 / together_secs * 10.0).round() / 10.0,
            "tokens": tokens,
        });
        if let Some((alone, secs)) = alone {
            let gen_tokens: usize = alone.iter().map(|c| c.tokens).sum();
            let gen_secs: f64 = alone.iter().map(|c| c.generate_secs).sum();
            let identical = alone.iter().zip(&together).filter(|(a, b)| a.ids == b.ids).count();
            result["single_sentences_per_s"] = json!((sources.len() as f64 / secs * 1000.0).round() / 1000.0);
            result["single_gen_tok_per_s"] = json!((gen_tokens as f64 / gen_secs * 10.0).round() / 10.0);
            result["identical"] = json!(identical);
            std::fs::write(out.join(format!("{code}.single.hyp")), alone.iter().map(|c| c.text.replace('\n', " ")).collect::<Vec<_>>().join("\n") + "\n").unwrap();
        }
        result["peak_rss_mib"] = json!(peak_rss_mib().round());
        println!("RESULT {result}");
    }
}
