//! Matrix-product speed of a GGUF model's tensors on this CPU, as the decoder would run them:
//! `cargo run --release -p docpipe-models --example qbench -- MODEL.gguf [quantized|requantized|f32]`.
//! Shows why the decoder re-quantizes Q5_0 to Q8_0 and reads prompts on f32 copies.

use std::time::Instant;

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: qbench MODEL.gguf [quantized|requantized|f32]")?;
    let mode = args.next().unwrap_or_else(|| "quantized".into());
    let cpu = Device::Cpu;
    let mut file = std::fs::File::open(&path)?;
    let content = gguf_file::Content::read(&mut file)?;
    for name in ["blk.0.attn_q.weight", "blk.0.ffn_gate.weight", "blk.0.ffn_down.weight", "output.weight"] {
        let Ok(tensor) = content.tensor(&mut file, name, &cpu) else { continue };
        let (n, k) = tensor.shape().dims2()?;
        let stored = tensor.dtype();
        let product = match mode.as_str() {
            "f32" => QMatMul::Tensor(tensor.dequantize(&cpu)?),
            "requantized" if k % 32 == 0 => QMatMul::from_qtensor(QTensor::quantize(&tensor.dequantize(&cpu)?, GgmlDType::Q8_0)?)?,
            _ => QMatMul::from_qtensor(tensor)?,
        };
        for rows in [1usize, 64] {
            let x = Tensor::randn(0f32, 1.0, (1, rows, k), &cpu)?;
            product.forward(&x)?;
            let reps = if rows == 1 { 50 } else { 5 };
            let started = Instant::now();
            for _ in 0..reps {
                product.forward(&x)?;
            }
            let secs = started.elapsed().as_secs_f64() / reps as f64;
            println!("{name} stored {stored:?} ({mode}) {n}x{k}, {rows} rows: {:.3} ms, {:.1} GMAC/s", secs * 1e3, (rows * n * k) as f64 / secs / 1e9);
        }
    }
    Ok(())
}
