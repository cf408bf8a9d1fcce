//! docpipe's GGUF decoder against candle-transformers' quantized Qwen2 (what a Rust user would
//! pick instead) on the very same prompts: FLORES lines translated into English with greedy
//! decoding, tokens per second for each, and how many outputs are identical. The PyTorch side of
//! the comparison is bench/llm_torch.py, on the same lines.
//!
//!   LLM_BASELINE=1 cargo bench -p docpipe-models --bench llm_baseline   (LLM_EVAL_LINES=10, LLM_EVAL_LANGS=spa_Latn)

use std::path::PathBuf;
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_qwen2::ModelWeights;
use docpipe_models::llm::{tasks, Llm};

#[derive(Default)]
struct Run {
    prompt_tokens: usize,
    prompt_secs: f64,
    tokens: usize,
    gen_secs: f64,
    outputs: Vec<Vec<u32>>,
}

fn candle_greedy(model: &mut ModelWeights, prompt: &[u32], cap: usize, stops: &[u32]) -> (Vec<u32>, f64, f64) {
    let device = Device::Cpu;
    let started = Instant::now();
    let input = Tensor::new(prompt, &device).unwrap().unsqueeze(0).unwrap();
    let mut logits = model.forward(&input, 0).unwrap().squeeze(0).unwrap();
    let prompt_secs = started.elapsed().as_secs_f64();
    let mut out = Vec::new();
    for step in 0..cap {
        let token = logits.argmax(0).unwrap().to_scalar::<u32>().unwrap();
        if stops.contains(&token) {
            break;
        }
        out.push(token);
        let input = Tensor::new(&[token], &device).unwrap().unsqueeze(0).unwrap();
        logits = model.forward(&input, prompt.len() + step).unwrap().squeeze(0).unwrap();
    }
    (out, prompt_secs, started.elapsed().as_secs_f64() - prompt_secs)
}

fn main() {
    if std::env::var("LLM_BASELINE").is_err() {
        eprintln!("llm_baseline bench: set LLM_BASELINE=1 to run; skipped");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let lines: usize = std::env::var("LLM_EVAL_LINES").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let langs = std::env::var("LLM_EVAL_LANGS").unwrap_or_else(|_| "spa_Latn".into());
    let path = root.join("var/models/qwen2.5-coder-0.5b-instruct/model.gguf");
    let llm = Llm::load(&path, None, 4096).expect("model installed by scripts/install-models.sh");
    let mut file = std::fs::File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut candle = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();

    let mut requests = Vec::new();
    for code in langs.split(',') {
        let text = std::fs::read_to_string(root.join(format!("tests/data/mt/flores200-devtest-1-100.{code}"))).unwrap();
        let name = tasks::language_name(code.split('_').next().unwrap());
        for line in text.lines().take(lines) {
            requests.push((tasks::translate_request(&llm, line, name, "English", 256).unwrap(), line.to_owned()));
        }
    }
    let (mut ours, mut theirs) = (Run::default(), Run::default());
    for (request, line) in &requests {
        let cap = &request.cap;
        let c = llm.chat(&request.prompt(line), *cap).unwrap();
        ours.prompt_tokens += c.prompt_tokens;
        ours.prompt_secs += c.prompt_secs;
        ours.tokens += c.tokens;
        ours.gen_secs += c.generate_secs;
        ours.outputs.push(llm.tokenizer().encode(c.text.as_str(), false).unwrap().get_ids().to_vec());

        let prompt = llm.prompt_ids(&request.prompt(line)).unwrap();
        let (out, prompt_secs, gen_secs) = candle_greedy(&mut candle, &prompt, *cap, llm.stop_ids());
        theirs.prompt_tokens += prompt.len();
        theirs.prompt_secs += prompt_secs;
        theirs.tokens += out.len();
        theirs.gen_secs += gen_secs;
        let text = llm.tokenizer().decode(&out, true).unwrap();
        theirs.outputs.push(llm.tokenizer().encode(text.trim(), false).unwrap().get_ids().to_vec());
    }
    let same = ours.outputs.iter().zip(&theirs.outputs).filter(|(a, b)| a == b).count();
    let rate = |r: &Run| (r.prompt_tokens as f64 / r.prompt_secs, r.tokens as f64 / r.gen_secs);
    let (op, og) = rate(&ours);
    let (tp, tg) = rate(&theirs);
    println!("docpipe decoder:                prompt {op:.1} tok/s, generation {og:.1} tok/s ({} tokens)", ours.tokens);
    println!("candle-transformers qwen2:      prompt {tp:.1} tok/s, generation {tg:.1} tok/s ({} tokens)", theirs.tokens);
    println!("ratio (docpipe / candle):       prompt {:.1}x, generation {:.1}x", op / tp, og / tg);
    println!("identical outputs: {same} of {}", requests.len());
    for (i, (a, b)) in ours.outputs.iter().zip(&theirs.outputs).enumerate().filter(|(_, (a, b))| a != b) {
        let shared = a.iter().zip(b).take_while(|(x, y)| x == y).count();
        println!("  line {}: same first {shared} tokens of {}/{}", i + 1, a.len(), b.len());
        println!("    docpipe: {}", llm.tokenizer().decode(a, true).unwrap());
        println!("    candle:  {}", llm.tokenizer().decode(b, true).unwrap());
    }
    println!(
        "RESULT {{\"lines\":{},\"ours_prompt\":{op:.1},\"ours_gen\":{og:.1},\"candle_prompt\":{tp:.1},\"candle_gen\":{tg:.1},\"identical\":{same}}}",
        requests.len()
    );
}
