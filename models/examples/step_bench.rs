//! Decoding-step time by number of sequences (the batched step), on an installed GGUF model:
//!   cargo run --release -p docpipe-models --example step_bench -- MODEL.gguf [prompt tokens] [counts] [f32 MiB]
//! Prints the prompt's reading speed, then ms per step and generated tokens/s for 1, 2, 4, 8 and 16
//! sequences (or the comma-separated counts); f32 MiB is `[llm] prompt_f32_mib` (default 8192).

use candle_core::quantized::gguf_file;
use candle_core::Device;
use docpipe_models::llm::{Decoder, KvCache};

fn main() -> candle_core::Result<()> {
    docpipe_models::threads::settle();
    let path = std::env::args().nth(1).expect("MODEL.gguf");
    let prompt: usize = std::env::args().nth(2).and_then(|v| v.parse().ok()).unwrap_or(100);
    let mut file = std::fs::File::open(&path)?;
    let content = gguf_file::Content::read(&mut file)?;
    let f32_budget = std::env::args().nth(4).and_then(|v| v.parse::<usize>().ok()).map_or(docpipe_models::llm::DEFAULT_PROMPT_F32_BYTES, |mib| mib << 20);
    let decoder = Decoder::from_gguf(&content, &mut file, &Device::Cpu, 4096, f32_budget)?;
    let ids: Vec<u32> = (0..prompt as u32).map(|i| 1000 + i * 7).collect();
    let mut head = KvCache::default();
    decoder.forward(&mut KvCache::default(), &ids)?;
    let started = std::time::Instant::now();
    decoder.forward(&mut head, &ids)?;
    let secs = started.elapsed().as_secs_f64();
    println!("prompt of {prompt}: {:.1} tokens/s ({} MiB of f32 copies)", prompt as f64 / secs, decoder.dense_bytes >> 20);
    let counts: Vec<usize> = std::env::args().nth(3).map_or(vec![1, 2, 4, 8, 16], |v| v.split(',').filter_map(|n| n.parse().ok()).collect());
    for n in counts {
        let mut caches: Vec<KvCache> = (0..n).map(|_| head.clone()).collect();
        let steps = 32;
        let started = std::time::Instant::now();
        for s in 0..steps {
            let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
            let tokens: Vec<u32> = (0..n as u32).map(|i| 2000 + i + s as u32).collect();
            decoder.step(&mut refs, &tokens)?;
        }
        let secs = started.elapsed().as_secs_f64();
        println!("{n:>2} sequences: {:.1} ms per step, {:.1} tokens/s", secs * 1000.0 / steps as f64, (n * steps) as f64 / secs);
    }
    Ok(())
}
