//! One decoder for the Qwen2 and Llama GGUF layouts (RMSNorm, rotary attention with grouped KV
//! heads, SwiGLU). It picks the matrix product per call: a single decoding step is memory-bound and
//! runs on the quantized weights; reading a prompt is compute-bound and runs on an f32 copy where
//! candle's f32 GEMM beats its quantized kernel (Q8_0, Q4_0: about four times on AVX2). Quantized
//! types candle has no SIMD kernel for (Q5_0, Q5_1, Q4_1, Q8_1) are re-quantized to Q8_0 on load.

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};

/// Prompts of at least this many tokens use the f32 weights, when kept.
const F32_ROWS: usize = 8;

/// How the rotary embedding pairs dimensions: llama.cpp permutes Llama's q/k rows so that pairs
/// are adjacent; Qwen2 keeps the two halves of the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rope {
    Adjacent,
    Halves,
}

struct Linear {
    quantized: QMatMul,
    /// (out, in) f32, for prompts.
    dense: Option<Tensor>,
    bias: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let rows = x.dims()[..x.rank() - 1].iter().product::<usize>();
        let y = match &self.dense {
            Some(w) if rows >= F32_ROWS => x.broadcast_matmul(&w.t()?)?,
            _ => self.quantized.forward(x)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

struct Layer {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
    cache: Option<(Tensor, Tensor)>,
}

/// Keys and values of every layer for the positions read so far (see [`Decoder::snapshot`]).
#[derive(Clone)]
pub struct KvSnapshot(Vec<Option<(Tensor, Tensor)>>);

pub struct Decoder {
    embedding: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    output: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f64,
    rope: Rope,
    cos: Tensor,
    sin: Tensor,
    /// Bytes of f32 weight copies kept for prompt reading.
    pub dense_bytes: usize,
}

/// Loader state: reads tensors, re-quantizes slow types, keeps f32 copies while the budget lasts.
struct Reader<'a, R> {
    content: &'a gguf_file::Content,
    file: &'a mut R,
    device: &'a Device,
    dense_budget: usize,
    dense_bytes: usize,
}

impl<R: std::io::Read + std::io::Seek> Reader<'_, R> {
    fn tensor(&mut self, name: &str) -> Result<QTensor> {
        self.content.tensor(self.file, name, self.device)
    }

    fn optional(&mut self, name: &str) -> Result<Option<QTensor>> {
        if self.content.tensor_infos.contains_key(name) {
            self.tensor(name).map(Some)
        } else {
            Ok(None)
        }
    }

    fn vector(&mut self, name: &str) -> Result<Tensor> {
        self.tensor(name)?.dequantize(self.device)
    }

    fn linear_from(&mut self, weight: QTensor, bias: Option<Tensor>) -> Result<Linear> {
        let (_, k) = weight.shape().dims2()?;
        let slow = matches!(weight.dtype(), GgmlDType::Q5_0 | GgmlDType::Q5_1 | GgmlDType::Q4_1 | GgmlDType::Q8_1);
        let requantize = slow && k % 32 == 0;
        // K-quant kernels beat the f32 GEMM on prompts too (Q4K 179, Q6K 113-153 GMAC/s against
        // 47-76 here); the 32-block ones do not (about 15). F32, F16 and BF16 matrices are f32 in
        // QMatMul already, so a copy would only double them.
        let dense_helps = requantize || matches!(weight.dtype(), GgmlDType::Q4_0 | GgmlDType::Q8_0);
        let dense_size = weight.shape().elem_count() * 4;
        let keep_dense = dense_helps && self.dense_bytes + dense_size <= self.dense_budget;
        // The f32 copy holds the stored values exactly, not the re-quantized ones.
        let values = if keep_dense || requantize { Some(weight.dequantize(self.device)?) } else { None };
        let weight = match &values {
            Some(v) if requantize => QTensor::quantize(v, GgmlDType::Q8_0)?,
            _ => weight,
        };
        let dense = if keep_dense {
            self.dense_bytes += dense_size;
            values
        } else {
            None
        };
        Ok(Linear { quantized: QMatMul::from_qtensor(weight)?, dense, bias })
    }

    fn linear(&mut self, name: &str) -> Result<Linear> {
        let weight = self.tensor(&format!("{name}.weight"))?;
        let bias = self.optional(&format!("{name}.bias"))?.map(|b| b.dequantize(self.device)).transpose()?;
        self.linear_from(weight, bias)
    }
}

fn metadata_u32(content: &gguf_file::Content, key: &str) -> Result<Option<usize>> {
    content.metadata.get(key).map(|v| v.to_u32().map(|n| n as usize)).transpose()
}

impl Decoder {
    /// `dense_budget` bounds the f32 copies (bytes); 0 keeps the model quantized only.
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(content: &gguf_file::Content, file: &mut R, device: &Device, context: usize, dense_budget: usize) -> Result<Self> {
        let arch = content.metadata.get("general.architecture").map(|v| v.to_string().cloned()).transpose()?.unwrap_or_default();
        let rope = match arch.as_str() {
            "llama" => Rope::Adjacent,
            "qwen2" => Rope::Halves,
            other => candle_core::bail!("architecture {other:?} is not supported"),
        };
        let need = |key: &str| metadata_u32(content, &format!("{arch}.{key}"))?.ok_or_else(|| candle_core::Error::Msg(format!("metadata has no {arch}.{key}")));
        let layers_n = need("block_count")?;
        let heads = need("attention.head_count")?;
        let kv_heads = metadata_u32(content, &format!("{arch}.attention.head_count_kv"))?.unwrap_or(heads);
        let hidden = need("embedding_length")?;
        let head_dim = metadata_u32(content, &format!("{arch}.attention.key_length"))?.unwrap_or(hidden / heads);
        let eps = content.metadata.get(&format!("{arch}.attention.layer_norm_rms_epsilon")).map(|v| v.to_f32()).transpose()?.unwrap_or(1e-6) as f64;
        let base = content.metadata.get(&format!("{arch}.rope.freq_base")).map(|v| v.to_f32()).transpose()?.unwrap_or(10_000.0);

        let mut reader = Reader { content, file, device, dense_budget, dense_bytes: 0 };
        let embedding_q = reader.tensor("token_embd.weight")?;
        let embedding = embedding_q.dequantize(device)?;
        // Llama 3.1 and later scale the rotary frequencies by a stored per-pair factor.
        let factors = reader.optional("rope_freqs.weight")?.map(|t| t.dequantize(device)?.to_vec1::<f32>()).transpose()?;
        let (cos, sin) = rotary_tables(head_dim, base, factors.as_deref(), context, device)?;
        let mut layers = Vec::with_capacity(layers_n);
        for i in 0..layers_n {
            let p = format!("blk.{i}");
            layers.push(Layer {
                attn_norm: reader.vector(&format!("{p}.attn_norm.weight"))?,
                q: reader.linear(&format!("{p}.attn_q"))?,
                k: reader.linear(&format!("{p}.attn_k"))?,
                v: reader.linear(&format!("{p}.attn_v"))?,
                o: reader.linear(&format!("{p}.attn_output"))?,
                ffn_norm: reader.vector(&format!("{p}.ffn_norm.weight"))?,
                gate: reader.linear(&format!("{p}.ffn_gate"))?,
                up: reader.linear(&format!("{p}.ffn_up"))?,
                down: reader.linear(&format!("{p}.ffn_down"))?,
                cache: None,
            });
        }
        let norm = reader.vector("output_norm.weight")?;
        // The prompt's logits are computed for its last position only: one row, quantized.
        reader.dense_budget = 0;
        let output = match reader.optional("output.weight")? {
            Some(w) => reader.linear_from(w, None)?,
            None => reader.linear_from(embedding_q, None)?,
        };
        let dense_bytes = reader.dense_bytes;
        Ok(Self { embedding, layers, norm, output, heads, kv_heads, head_dim, eps, rope, cos, sin, dense_bytes })
    }

    /// The KV cache as it stands: cheap (tensors are shared, and the cache only ever grows by new
    /// tensors, so a snapshot stays valid while decoding goes on).
    pub fn snapshot(&self) -> KvSnapshot {
        KvSnapshot(self.layers.iter().map(|l| l.cache.clone()).collect())
    }

    /// Back to a snapshot: the next `forward` continues after the positions it holds.
    pub fn restore(&mut self, snapshot: &KvSnapshot) {
        for (layer, cache) in self.layers.iter_mut().zip(&snapshot.0) {
            layer.cache = cache.clone();
        }
    }

    /// Logits (vocabulary) for the last of `ids`, which start at `position`; position 0 starts a
    /// fresh cache.
    pub fn forward(&mut self, ids: &[u32], position: usize) -> Result<Tensor> {
        let device = self.embedding.device().clone();
        let seq = ids.len();
        let mut x = self.embedding.index_select(&Tensor::new(ids, &device)?, 0)?.unsqueeze(0)?;
        let cos = self.cos.narrow(0, position, seq)?;
        let sin = self.sin.narrow(0, position, seq)?;
        let mask = if seq > 1 { Some(causal_mask(seq, position, &device)?) } else { None };
        let (heads, kv_heads, head_dim, eps, rope) = (self.heads, self.kv_heads, self.head_dim, self.eps, self.rope);
        for layer in &mut self.layers {
            if position == 0 {
                layer.cache = None;
            }
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps as f32)?;
            let split = |t: Tensor, n: usize| t.reshape((1, seq, n, head_dim))?.transpose(1, 2)?.contiguous();
            let q = apply_rope(&split(layer.q.forward(&h)?, heads)?, &cos, &sin, rope)?;
            let k = apply_rope(&split(layer.k.forward(&h)?, kv_heads)?, &cos, &sin, rope)?;
            let v = split(layer.v.forward(&h)?, kv_heads)?;
            let (k, v) = match layer.cache.take() {
                Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                None => (k, v),
            };
            layer.cache = Some((k.clone(), v.clone()));
            // Grouped heads: each KV head serves heads / kv_heads query heads, folded into rows.
            let group = heads / kv_heads;
            let q = q.reshape((1, kv_heads, group * seq, head_dim))?;
            let mut scores = (q.matmul(&k.t()?)? / (head_dim as f64).sqrt())?;
            if let Some(m) = &mask {
                let total = k.dim(2)?;
                scores = scores.reshape((1, kv_heads, group, seq, total))?.broadcast_add(m)?.reshape((1, kv_heads, group * seq, total))?;
            }
            let attn = candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v)?;
            let attn = attn.reshape((1, heads, seq, head_dim))?.transpose(1, 2)?.reshape((1, seq, heads * head_dim))?;
            x = (x + layer.o.forward(&attn)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps as f32)?;
            let ff = (candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?;
            x = (x + layer.down.forward(&ff)?)?;
        }
        let last = x.i((.., seq - 1..seq, ..))?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, self.eps as f32)?;
        self.output.forward(&last)?.reshape(((),))?.to_dtype(DType::F32)
    }
}

fn rotary_tables(head_dim: usize, base: f32, factors: Option<&[f32]>, context: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let inv: Vec<f32> = (0..head_dim / 2)
        .map(|i| {
            let f = 1.0 / base.powf(2.0 * i as f32 / head_dim as f32);
            f / factors.and_then(|s| s.get(i)).copied().unwrap_or(1.0)
        })
        .collect();
    let inv = Tensor::new(inv.as_slice(), device)?.reshape((1, head_dim / 2))?;
    let positions = Tensor::arange(0u32, context as u32, device)?.to_dtype(DType::F32)?.reshape((context, 1))?;
    let angles = positions.broadcast_mul(&inv)?;
    Ok((angles.cos()?, angles.sin()?))
}

fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor, rope: Rope) -> Result<Tensor> {
    match rope {
        Rope::Adjacent => candle_nn::rotary_emb::rope_i(x, cos, sin),
        Rope::Halves => candle_nn::rotary_emb::rope(x, cos, sin),
    }
}

/// (seq, position + seq) additive mask: row i sees columns up to position + i.
fn causal_mask(seq: usize, position: usize, device: &Device) -> Result<Tensor> {
    let total = position + seq;
    let values: Vec<f32> = (0..seq).flat_map(|i| (0..total).map(move |j| if j > position + i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(values, (seq, total), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_lets_each_row_see_the_cache_and_itself() {
        let m = causal_mask(2, 3, &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(m[0].iter().filter(|v| v.is_finite()).count(), 4);
        assert_eq!(m[1].iter().filter(|v| v.is_finite()).count(), 5);
    }
}
