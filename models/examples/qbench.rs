//! Matrix-product speed on a GGUF model's tensors, candle's kernel against docpipe's (`int8`), in
//! alternating rounds (this machine's speed drifts within minutes, so the two are timed side by
//! side and each one's best round kept):
//!   cargo run --release -p docpipe-models --example qbench -- MODEL.gguf [layer]
//! One row is a decoding step, 8 a batched step, 100 a prompt.

use std::time::Instant;

use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{Device, Module, Tensor};
use docpipe_models::llm::Int8Matrix;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    docpipe_models::threads::settle();
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: qbench MODEL.gguf [layer]")?;
    let layer: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let cpu = Device::Cpu;
    let mut file = std::fs::File::open(&path)?;
    let content = gguf_file::Content::read(&mut file)?;
    println!("| tensor | type | n × k | rows | candle ms | docpipe ms | candle / docpipe |");
    println!("|---|---|---|---|---|---|---|");
    for part in ["attn_q", "attn_v", "attn_output", "ffn_gate", "ffn_down"] {
        let name = format!("blk.{layer}.{part}.weight");
        let Ok(tensor) = content.tensor(&mut file, &name, &cpu) else { continue };
        let (n, k) = tensor.shape().dims2()?;
        let dtype = tensor.dtype();
        let Some(ours) = Int8Matrix::from_qtensor(&tensor)?.map(Int8Matrix::relaid) else {
            println!("| {name} | {dtype:?} | {n} × {k} | | | not on docpipe's kernel | |");
            continue;
        };
        let theirs = QMatMul::from_qtensor(tensor)?;
        for rows in [1usize, 8, 100] {
            let x = Tensor::randn(0f32, 1.0, (rows, k), &cpu)?;
            let reps = if rows == 1 { 40 } else if rows == 8 { 10 } else { 3 };
            let (mut best_candle, mut best_ours) = (f64::MAX, f64::MAX);
            for _ in 0..5 {
                let started = Instant::now();
                for _ in 0..reps {
                    theirs.forward(&x)?;
                }
                best_candle = best_candle.min(started.elapsed().as_secs_f64() / reps as f64);
                let started = Instant::now();
                for _ in 0..reps {
                    ours.forward(&x)?;
                }
                best_ours = best_ours.min(started.elapsed().as_secs_f64() / reps as f64);
            }
            println!("| {part} | {dtype:?} | {n} × {k} | {rows} | {:.3} | {:.3} | {:.2}x |", best_candle * 1e3, best_ours * 1e3, best_candle / best_ours);
        }
    }
    Ok(())
}
