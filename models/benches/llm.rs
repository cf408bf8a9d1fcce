//! GGUF translation quality and speed on FLORES-200: translates lines 1..N of nine languages into
//! English with the installed model, writes the hypotheses for `bench/llm_score.py` (chrF and
//! BLEU with sacreBLEU) and prints prompt and generation tokens per second and peak RSS.
//!
//!   LLM_EVAL=1 cargo bench -p docpipe-models --bench llm      (LLM_EVAL_LINES=100 by default)
//!
//! LLM_MODEL names another installed model directory (default qwen2.5-coder-0.5b-instruct);
//! its hypotheses go to bench/results/llm/<model>/. LLM_PROMPT_F32_MIB bounds the f32 copies (as
//! `[llm] prompt_f32_mib`).

use std::path::PathBuf;
use std::time::Instant;

use docpipe_models::eval::peak_rss_mib;
use docpipe_models::llm::{tasks, Batching, Llm, DEFAULT_PROMPT_F32_BYTES};

const LANGS: [(&str, &str); 9] = [
    ("zho_Hans", "Chinese"), ("rus_Cyrl", "Russian"), ("arb_Arab", "Arabic"), ("spa_Latn", "Spanish"), ("fra_Latn", "French"),
    ("deu_Latn", "German"), ("pes_Arab", "Persian"), ("tur_Latn", "Turkish"), ("vie_Latn", "Vietnamese"),
];

fn main() {
    docpipe_models::threads::settle();
    if std::env::var("LLM_EVAL").is_err() {
        eprintln!("llm bench: set LLM_EVAL=1 to run (about 30 minutes for 100 lines x 9 languages with the 0.5B model on 2 cores); skipped");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let lines: usize = std::env::var("LLM_EVAL_LINES").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let only = std::env::var("LLM_EVAL_LANGS").unwrap_or_default();
    let model = std::env::var("LLM_MODEL").unwrap_or_else(|_| "qwen2.5-coder-0.5b-instruct".into());
    let out = root.join("bench/results/llm").join(&model);
    std::fs::create_dir_all(&out).unwrap();
    let started = Instant::now();
    let prompt_f32 = std::env::var("LLM_PROMPT_F32_MIB").ok().and_then(|v| v.parse::<usize>().ok()).map_or(DEFAULT_PROMPT_F32_BYTES, |mib| mib << 20);
    let llm = Llm::load_with(&root.join("var/models").join(&model).join("model.gguf"), None, 4096, prompt_f32, Batching::default()).expect("model installed (scripts/install-models.sh, docpipe models install)");
    println!("load {:.2} s, rss {:.0} MiB, f32 copies {} MiB", started.elapsed().as_secs_f64(), peak_rss_mib(), llm.info.prompt_f32_bytes >> 20);
    let (mut prompt_tokens, mut prompt_secs, mut tokens, mut gen_secs) = (0usize, 0f64, 0usize, 0f64);
    for (code, name) in LANGS.iter().filter(|(c, _)| only.is_empty() || only.split(',').any(|o| o == *c)) {
        let text = std::fs::read_to_string(root.join(format!("tests/data/mt/flores200-devtest-1-100.{code}"))).unwrap();
        let mut hyps = Vec::new();
        let t = Instant::now();
        for line in text.lines().take(lines) {
            let c = tasks::translate(&llm, line, name, "English", 256).expect("translates");
            prompt_tokens += c.prompt_tokens;
            prompt_secs += c.prompt_secs;
            tokens += c.tokens;
            gen_secs += c.generate_secs;
            hyps.push(c.text.replace('\n', " "));
        }
        std::fs::write(out.join(format!("{code}.hyp")), hyps.join("\n") + "\n").unwrap();
        println!("{code}: {} lines in {:.0} s", hyps.len(), t.elapsed().as_secs_f64());
    }
    println!(
        "RESULT {{\"prompt_tok_per_s\":{:.1},\"gen_tok_per_s\":{:.1},\"prompt_tokens\":{prompt_tokens},\"tokens\":{tokens},\"peak_rss_mib\":{:.0},\"lines\":{lines}}}",
        prompt_tokens as f64 / prompt_secs,
        tokens as f64 / gen_secs,
        peak_rss_mib()
    );
}
