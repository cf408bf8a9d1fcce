//! One decoder for the Qwen2 and Llama GGUF layouts (RMSNorm, rotary attention with grouped KV
//! heads, SwiGLU). Matrices stay quantized as stored: Q8_0, Q5_0, Q4_K and Q6_K run on docpipe's
//! kernel (`int8`), the other K-quants on candle's; the other 32-value block types (Q5_1, Q4_1,
//! Q8_1) are re-quantized to Q8_0 on load (prompts included: a second rounding of their values,
//! which none of the GGUF files docpipe installs has). Only where neither fast kernel applies (a
//! CPU without AVX2, or Q4_0) does reading a prompt use an f32 copy of the matrix, within
//! `[llm] prompt_f32_mib`.

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};

use super::attention::{self, Cached, Heads, Rope, Rotary, Rows};
use super::int8::Int8Matrix;
use candle_core::{DType, Device, Module, Result, Tensor};
use std::sync::Arc;

/// Prompts of at least this many tokens use the f32 weights, when kept.
const F32_ROWS: usize = 8;

/// The quantized product: docpipe's kernel for the 8-bit block formats where it applies (see
/// `int8`), else candle's.
enum Product {
    Candle(QMatMul),
    Int8(Int8Matrix),
}

/// The token embedding table. Kept as stored (quantized) and dequantized a row at a time on
/// lookup, with candle's own dequantization, so the values are the ones a whole f32 table holds
/// without its memory (545 MiB for the 0.5B model's Q5_0 table, which takes 74 MiB as stored).
enum Embedding {
    Dense(Tensor),
    Quantized { dtype: GgmlDType, data: Arc<Vec<u8>>, row_bytes: usize, width: usize },
}

impl Embedding {
    fn new(table: &QTensor, device: &Device) -> Result<Self> {
        let (_, width) = table.shape().dims2()?;
        let dtype = table.dtype();
        if !device.is_cpu() || matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16) || width % dtype.block_size() != 0 {
            return Ok(Self::Dense(table.dequantize(device)?));
        }
        Ok(Self::stored(dtype, Arc::new(table.data()?.into_owned()), width))
    }

    /// The table in the bytes of the output matrix it also is (a model with tied embeddings, such
    /// as the qwen2-tiny test model), not a second copy of them.
    fn shared(m: &Int8Matrix) -> Result<Self> {
        let Some(bytes) = m.bytes() else { candle_core::bail!("the token table's matrix was re-laid") };
        Ok(Self::stored(m.dtype(), bytes.clone(), m.k()))
    }

    /// Rows of `width` values in `dtype`'s blocks, one after the other.
    fn stored(dtype: GgmlDType, data: Arc<Vec<u8>>, width: usize) -> Self {
        Self::Quantized { dtype, data, row_bytes: width / dtype.block_size() * dtype.type_size(), width }
    }

    /// (ids, width) f32.
    fn lookup(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        match self {
            Self::Dense(table) => table.index_select(&Tensor::new(ids, device)?, 0),
            Self::Quantized { dtype, data, row_bytes, width } => {
                let rows = ids
                    .iter()
                    .map(|&id| {
                        let start = id as usize * row_bytes;
                        let Some(raw) = data.get(start..start + row_bytes) else {
                            candle_core::bail!("token {id} is outside the vocabulary");
                        };
                        candle_core::quantized::ggml_file::qtensor_from_ggml(*dtype, raw, vec![1, *width], device)?.dequantize(device)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&rows, 0)
            }
        }
    }
}

struct Linear {
    quantized: Product,
    /// (out, in) f32, for prompts.
    dense: Option<Tensor>,
    bias: Option<Tensor>,
}

impl Linear {
    /// `dense`: use the f32 copy when there is one. Quantized products are computed row by row
    /// (each row's activations quantized on their own, one dot product per output), so a row's
    /// result does not depend on the other rows: what makes batched decoding token-identical.
    fn forward(&self, x: &Tensor, dense: bool) -> Result<Tensor> {
        let y = match &self.dense {
            Some(w) if dense => x.broadcast_matmul(&w.t()?)?,
            _ => match &self.quantized {
                Product::Int8(m) => m.forward(x)?,
                Product::Candle(m) => m.forward(x)?,
            },
        };
        self.with_bias(y)
    }

    fn with_bias(&self, y: Tensor) -> Result<Tensor> {
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// Which products can run as one: docpipe's kernel on any of its types, candle's on one type.
#[derive(PartialEq)]
enum Kind {
    Int8,
    Candle(GgmlDType),
    Alone,
}

impl Linear {
    fn kind(&self, dense: bool) -> Kind {
        match &self.quantized {
            _ if dense && self.dense.is_some() => Kind::Alone,
            Product::Int8(_) => Kind::Int8,
            // Steps only: on prompts candle's separate products may take paths its fused one has
            // not (AMX tiles for 32 rows and more).
            Product::Candle(QMatMul::QTensor(t)) if !dense => Kind::Candle(t.dtype()),
            Product::Candle(_) => Kind::Alone,
        }
    }

    /// The products of one input with several matrices (q, k and v; gate and up). Matrices of one
    /// kind run in one parallel region with the input quantized once (a decoding step of one
    /// sequence waits at the end of every region); each output is computed as `forward` computes it.
    fn forward_all(linears: &[&Linear], x: &Tensor, dense: bool) -> Result<Vec<Tensor>> {
        let mut outputs: Vec<Option<Tensor>> = vec![None; linears.len()];
        for (i, linear) in linears.iter().enumerate() {
            if outputs[i].is_some() {
                continue;
            }
            let kind = linear.kind(dense);
            let group: Vec<usize> = if kind == Kind::Alone { vec![i] } else { (i..linears.len()).filter(|&j| linears[j].kind(dense) == kind).collect() };
            let fused = match &kind {
                _ if group.len() == 1 => None,
                Kind::Int8 => {
                    let matrices: Vec<&Int8Matrix> = group.iter().filter_map(|&j| if let Product::Int8(m) = &linears[j].quantized { Some(m) } else { None }).collect();
                    Some(Int8Matrix::forward_many(&matrices, x)?)
                }
                Kind::Candle(_) => {
                    let tensors: Vec<&QTensor> = group.iter().filter_map(|&j| if let Product::Candle(QMatMul::QTensor(t)) = &linears[j].quantized { Some(t.as_ref()) } else { None }).collect();
                    // None where candle has no fused path for this type, row count or CPU.
                    QTensor::gemv_fused_shared_lhs(&tensors, x)?
                }
                Kind::Alone => None,
            };
            match fused {
                Some(ys) => {
                    for (&j, y) in group.iter().zip(ys) {
                        outputs[j] = Some(linears[j].with_bias(y)?);
                    }
                }
                None => {
                    for &j in &group {
                        outputs[j] = Some(linears[j].forward(x, dense)?);
                    }
                }
            }
        }
        Ok(outputs.into_iter().map(|y| y.expect("every product computed")).collect())
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
}

/// One sequence's keys and values, every layer, for the positions read so far. A clone (a prompt
/// head's cache, copied for each segment that continues from it) is a copy: about 24 KiB per
/// position for the 0.5B model, 56 KiB for the 1.5B.
#[derive(Clone, Default)]
pub struct KvCache {
    layers: Vec<Cached>,
    len: usize,
}

impl KvCache {
    /// Positions read so far: where the next token goes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

pub struct Decoder {
    embedding: Embedding,
    device: Device,
    layers: Vec<Layer>,
    norm: Tensor,
    output: Linear,
    heads: Heads,
    eps: f64,
    rotary: Rotary,
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

    /// A matrix docpipe's kernel runs here, read from the file straight into its blocks. Through
    /// candle's reading (a byte buffer, then candle's block array, then the kernel's copy of that)
    /// the 0.5B model's peak was 90 MiB higher (step_bench: 741 against 649 MiB).
    fn kernel_matrix(&mut self, name: &str) -> Result<Option<Int8Matrix>> {
        let Some(info) = self.content.tensor_infos.get(name) else { return Ok(None) };
        let dtype = info.ggml_dtype;
        let Ok((n, k)) = info.shape.dims2() else { return Ok(None) };
        if !self.kernel_runs(dtype) || k % dtype.block_size() != 0 {
            return Ok(None);
        }
        let start = self.content.tensor_data_offset.saturating_add(info.offset);
        // A damaged header must be an error before anything is allocated for it.
        let size = n.checked_mul(k).map(|values| values / dtype.block_size() * dtype.type_size());
        let remaining = self.file.seek(std::io::SeekFrom::End(0))?.saturating_sub(start);
        let Some(size) = size.filter(|&size| size as u64 <= remaining) else {
            candle_core::bail!("tensor {name} of {n} x {k} {dtype:?} values does not fit in the file ({remaining} bytes from offset {start})");
        };
        let mut data = vec![0u8; size];
        self.file.seek(std::io::SeekFrom::Start(start))?;
        self.file.read_exact(&mut data)?;
        Int8Matrix::from_bytes(dtype, n, k, data)
    }

    fn vector(&mut self, name: &str) -> Result<Tensor> {
        self.tensor(name)?.dequantize(self.device)
    }

    fn linear_from(&mut self, weight: QTensor, bias: Option<Tensor>) -> Result<Linear> {
        let (_, k) = weight.shape().dims2()?;
        let dtype = weight.dtype();
        // Q8_0, Q5_0, Q4_K and Q6_K run on docpipe's kernel as stored; other 32-value block types
        // candle has no SIMD kernel for are re-quantized to Q8_0 (for docpipe's kernel, or
        // candle's where the CPU has no path of docpipe's).
        let own = self.kernel_runs(dtype);
        let slow = matches!(dtype, GgmlDType::Q5_1 | GgmlDType::Q4_1 | GgmlDType::Q8_1) || (!own && dtype == GgmlDType::Q5_0);
        let requantize = slow && k % 32 == 0;
        // An f32 copy pays only where the product would otherwise be candle's 32-value block
        // kernel (about 15 GMAC/s on prompts against 47-76 for the f32 GEMM). docpipe's kernel reads
        // prompts as fast as the copies did (0.5B model, 100-token prompt: 136-154 against 139-160
        // tokens/s) without their 966 MiB; K-quant kernels beat the f32 GEMM (Q4K 179, Q6K 113-153
        // GMAC/s); F32, F16 and BF16 matrices are f32 in QMatMul already.
        let on_own_kernel = own || (requantize && self.kernel_runs(GgmlDType::Q8_0));
        let dense_helps = !on_own_kernel && (requantize || matches!(dtype, GgmlDType::Q4_0 | GgmlDType::Q8_0));
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
        let quantized = match self.kernel_runs(weight.dtype()).then(|| Int8Matrix::from_qtensor(&weight)).transpose()?.flatten() {
            Some(m) => Product::Int8(m.relaid()),
            None => Product::Candle(QMatMul::from_qtensor(weight)?),
        };
        Ok(Linear { quantized, dense, bias })
    }

    /// Whether docpipe's kernel runs matrices of this type here (CPU tensors, a CPU it has a
    /// path for).
    fn kernel_runs(&self, dtype: GgmlDType) -> bool {
        self.device.is_cpu() && Int8Matrix::runs(dtype)
    }

    fn linear(&mut self, name: &str) -> Result<Linear> {
        let bias = self.optional(&format!("{name}.bias"))?.map(|b| b.dequantize(self.device)).transpose()?;
        if let Some(m) = self.kernel_matrix(&format!("{name}.weight"))? {
            return Ok(Linear { quantized: Product::Int8(m.relaid()), dense: None, bias });
        }
        let weight = self.tensor(&format!("{name}.weight"))?;
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
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            candle_core::bail!("{heads} attention heads cannot share {kv_heads} key/value heads");
        }
        let head_dim = metadata_u32(content, &format!("{arch}.attention.key_length"))?.unwrap_or(hidden / heads);
        let eps = content.metadata.get(&format!("{arch}.attention.layer_norm_rms_epsilon")).map(|v| v.to_f32()).transpose()?.unwrap_or(1e-6) as f64;
        let base = content.metadata.get(&format!("{arch}.rope.freq_base")).map(|v| v.to_f32()).transpose()?.unwrap_or(10_000.0);

        let mut reader = Reader { content, file, device, dense_budget, dense_bytes: 0 };
        // Llama 3.1 and later scale the rotary frequencies by a stored per-pair factor.
        let factors = reader.optional("rope_freqs.weight")?.map(|t| t.dequantize(device)?.to_vec1::<f32>()).transpose()?;
        let rotary = Rotary::new(rope, head_dim, base, factors.as_deref(), context);
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
            });
        }
        let norm = reader.vector("output_norm.weight")?;
        // The prompt's logits are computed for its last position only: one row, quantized.
        reader.dense_budget = 0;
        // Tied embeddings: the output matrix is the token table, whose bytes the lookup then shares
        // where docpipe's kernel holds them as stored (not re-quantized: the lookup reads the
        // file's values).
        let tied = !content.tensor_infos.contains_key("output.weight");
        let (output, embedding) = if tied {
            let bias = reader.optional("token_embd.bias")?.map(|b| b.dequantize(device)).transpose()?;
            match reader.kernel_matrix("token_embd.weight")? {
                Some(m) => {
                    let embedding = Embedding::shared(&m)?;
                    (Linear { quantized: Product::Int8(m), dense: None, bias }, embedding)
                }
                // One read of the table for both (the output product may re-quantize its copy).
                None => {
                    let table = reader.tensor("token_embd.weight")?;
                    let embedding = Embedding::new(&table, device)?;
                    (reader.linear_from(table, bias)?, embedding)
                }
            }
        } else {
            (reader.linear("output")?, Embedding::new(&reader.tensor("token_embd.weight")?, device)?)
        };
        let dense_bytes = reader.dense_bytes;
        let heads = Heads { heads, kv_heads, dim: head_dim };
        Ok(Self { embedding, device: device.clone(), layers, norm, output, heads, eps, rotary, dense_bytes })
    }

    /// Logits (vocabulary) for the last of `ids`, read after the positions `cache` holds.
    pub fn forward(&self, cache: &mut KvCache, ids: &[u32]) -> Result<Tensor> {
        if ids.is_empty() {
            candle_core::bail!("nothing to read");
        }
        self.run(&mut [cache], ids, ids.len())?.reshape(((),))
    }

    /// One decoding step for several sequences at once: `tokens[i]` is read after `caches[i]`.
    /// Every weight matrix is read once for all of them (decoding is bound by reading weights);
    /// the rows are computed exactly as `forward` computes one token, so each sequence's logits
    /// are the ones it would get alone. Returns (sequences, vocabulary).
    pub fn step(&self, caches: &mut [&mut KvCache], tokens: &[u32]) -> Result<Tensor> {
        if caches.len() != tokens.len() || tokens.is_empty() {
            candle_core::bail!("{} caches for {} tokens", caches.len(), tokens.len());
        }
        self.run(caches, tokens, 1)
    }

    /// `ids` holds `rows` new tokens of each sequence in turn; logits of each sequence's last.
    fn run(&self, caches: &mut [&mut KvCache], ids: &[u32], rows: usize) -> Result<Tensor> {
        let device = self.device.clone();
        let n = caches.len();
        // f32 copies pay on prompts; a decoding step (one row per sequence) stays quantized,
        // whatever the number of sequences, so that batching never changes a result.
        let dense = rows >= F32_ROWS;
        let kv_width = self.heads.kv_heads * self.heads.dim;
        for cache in caches.iter_mut() {
            if cache.layers.is_empty() {
                cache.layers = vec![Cached::default(); self.layers.len()];
            }
            // A step that failed part-way left rows in the layers it passed; `len` never counted them.
            for layer in &mut cache.layers {
                layer.keep(cache.len, kv_width);
            }
            if cache.len + rows > self.rotary.context() {
                candle_core::bail!("position {} is past the {}-token context", cache.len + rows, self.rotary.context());
            }
        }
        let mut x = self.embedding.lookup(ids, &device)?;
        let eps = self.eps;
        let width = self.heads.heads * self.heads.dim;
        for (l, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps as f32)?;
            let [q, k, v]: [Tensor; 3] = Linear::forward_all(&[&layer.q, &layer.k, &layer.v], &h, dense)?.try_into().expect("three products");
            let (mut q, mut k, v) = (q.flatten_all()?.to_vec1::<f32>()?, k.flatten_all()?.to_vec1::<f32>()?, v.flatten_all()?.to_vec1::<f32>()?);
            let mut sequences: Vec<Rows> = caches.iter_mut().map(|c| Rows { position: c.len, cache: &mut c.layers[l] }).collect();
            let attn = attention::attend(self.heads, &self.rotary, &mut sequences, rows, &mut q, &mut k, &v);
            let attn = Tensor::from_vec(attn, (n * rows, width), &device)?;
            x = (x + layer.o.forward(&attn, dense)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps as f32)?;
            let [gate, up]: [Tensor; 2] = Linear::forward_all(&[&layer.gate, &layer.up], &h, dense)?.try_into().expect("two products");
            let ff = (candle_nn::ops::silu(&gate)? * up)?;
            x = (x + layer.down.forward(&ff, dense)?)?;
        }
        for cache in caches.iter_mut() {
            cache.len += rows;
        }
        let last: Vec<u32> = (0..n).map(|s| (s * rows + rows - 1) as u32).collect();
        let last = x.index_select(&Tensor::new(last.as_slice(), &device)?, 0)?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, self.eps as f32)?;
        self.output.forward(&last, false)?.to_dtype(DType::F32)
    }
}
