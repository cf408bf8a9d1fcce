//! Local sequence-to-sequence models on candle: Marian (OPUS-MT) and the T5 family, loaded from
//! a Hugging Face model directory (`config.json`, `model.safetensors` or `pytorch_model.bin`,
//! SentencePiece files), decoded with greedy or beam search.

pub mod generate;
mod layers;
pub mod marian;
mod shared;
pub mod t5;
pub mod tokenizer;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

pub use generate::{Decoding, Hypothesis};
pub use shared::SharedSeq2Seq;
use generate::{Special, Step};
pub use layers::Cache;
use tokenizer::Tokenizer;

#[derive(Debug, thiserror::Error)]
pub enum MtError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: {1}")]
    Config(String, String),
    #[error("{0}: no weights (model.safetensors or pytorch_model.bin)")]
    NoWeights(String),
    #[error("{0}: weights unreadable: {1}")]
    Weights(String, String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{model}: {field} {id} is outside the vocabulary of {vocab} tokens")]
    TokenId { model: String, field: &'static str, id: u32, vocab: usize },
    #[error("input of {0} tokens is longer than the model's {1} positions")]
    TooLong(usize, usize),
    #[error("inference failed: {0}")]
    Inference(#[from] candle_core::Error),
    #[error("translation model thread: {0}")]
    Stopped(String),
}

/// What a loaded model is, for provenance.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub dir: PathBuf,
    pub weights_file: PathBuf,
    pub weights_sha256: String,
    pub max_positions: Option<usize>,
}

enum Network {
    Marian(marian::Marian),
    T5(t5::T5),
}

pub struct Seq2Seq {
    pub info: ModelInfo,
    net: Network,
    tokenizer: Tokenizer,
    special: Special,
    device: Device,
}

/// One generated output.
#[derive(Debug, Clone)]
pub struct Output {
    pub text: String,
    pub hypothesis: Hypothesis,
    pub input_tokens: usize,
}

fn weights_file(dir: &Path) -> Result<PathBuf, MtError> {
    ["model.safetensors", "pytorch_model.bin"].iter().map(|n| dir.join(n)).find(|p| p.exists()).ok_or_else(|| MtError::NoWeights(dir.display().to_string()))
}

/// The first CUDA device when built with the `cuda` feature and one is present, else the CPU.
pub fn device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(device) = Device::new_cuda(0) {
        return device;
    }
    Device::Cpu
}

/// Refuses token ids a configuration names beyond the vocabulary (`vocab` rows of the embedding
/// or output matrix): generation indexes logit rows with them, so they must fail here, at load.
fn check_token_ids(model: &str, vocab: usize, ids: &[(&'static str, Option<u32>)]) -> Result<(), MtError> {
    match ids.iter().find_map(|&(field, id)| id.filter(|&id| id as usize >= vocab).map(|id| (field, id))) {
        Some((field, id)) => Err(MtError::TokenId { model: model.to_owned(), field, id, vocab }),
        None => Ok(()),
    }
}

impl Seq2Seq {
    /// Loads a model directory. A wrong `expected_sha256` is refused before anything is parsed.
    pub fn load(dir: &Path, expected_sha256: Option<&str>) -> Result<Self, MtError> {
        let name = dir.display().to_string();
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| MtError::Io(config_path.display().to_string(), e))?;
        let raw: serde_json::Value = serde_json::from_str(&text).map_err(|e| MtError::Config(name.clone(), e.to_string()))?;
        let model_type = raw.get("model_type").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let weights = weights_file(dir)?;
        let wname = weights.display().to_string();
        let pickle = weights.extension().is_some_and(|e| e == "bin");
        // safetensors are read into memory once and hashed there, so the bytes checked are the
        // bytes loaded (a file mapped instead could change under us: config paths point anywhere).
        // The buffer lives only until the network has copied its tensors out of it.
        let (buffer, weights_sha256) = if pickle {
            (None, crate::sha256_file(&weights).map_err(|e| MtError::Io(wname.clone(), e))?)
        } else {
            let bytes = std::fs::read(&weights).map_err(|e| MtError::Io(wname.clone(), e))?;
            let sha256 = crate::sha256_bytes(&bytes);
            (Some(bytes), sha256)
        };
        if let Some(expected) = expected_sha256 {
            if !expected.eq_ignore_ascii_case(&weights_sha256) {
                return Err(MtError::Weights(wname, format!("sha256 is {weights_sha256}, the registry expects {expected}")));
            }
        }
        let device = device();
        // Malformed pickles or tensors must become an error, never a dead worker.
        let vb = std::panic::catch_unwind(AssertUnwindSafe(|| -> candle_core::Result<VarBuilder<'static>> {
            match buffer {
                Some(bytes) => VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device),
                // candle reads pickles only from a path: this file is hashed and then read again.
                None => VarBuilder::from_pth(&weights, DType::F32, &device),
            }
        }))
        .map_err(|_| MtError::Weights(wname.clone(), "the reader panicked".into()))?
        .map_err(|e| MtError::Weights(wname.clone(), e.to_string()))?;
        let config_err = |e: serde_json::Error| MtError::Config(name.clone(), e.to_string());
        let load = std::panic::catch_unwind(AssertUnwindSafe(|| -> Result<(Network, Tokenizer, Special, Option<usize>), MtError> {
            let weights_err = |e: candle_core::Error| MtError::Weights(wname.clone(), e.to_string());
            match model_type.as_str() {
                "marian" => {
                    let config: marian::Config = serde_json::from_value(raw.clone()).map_err(config_err)?;
                    let start = config.decoder_start_token_id.unwrap_or(config.pad_token_id);
                    let mut banned: Vec<u32> = config.bad_words_ids.iter().flatten().filter(|w| w.len() == 1).map(|w| w[0]).collect();
                    if banned.is_empty() {
                        banned.push(config.pad_token_id);
                    }
                    let mut ids = vec![
                        ("decoder_start_token_id", config.decoder_start_token_id),
                        ("eos_token_id", Some(config.eos_token_id)),
                        ("pad_token_id", Some(config.pad_token_id)),
                        ("forced_eos_token_id", config.forced_eos_token_id),
                    ];
                    ids.extend(banned.iter().map(|&id| ("bad_words_ids", Some(id))));
                    check_token_ids(&name, config.decoder_vocab_size.unwrap_or(config.vocab_size), &ids)?;
                    // The encoder reads two of them too: the tokenizer appends the end token, batches pad with the pad token.
                    check_token_ids(&name, config.vocab_size, &ids[1..3])?;
                    let special = Special { start, eos: config.eos_token_id, pad: config.pad_token_id, banned, forced_eos: config.forced_eos_token_id.is_some() };
                    let tokenizer = Tokenizer::marian(dir, config.eos_token_id, config.pad_token_id)?;
                    let max = Some(config.max_position_embeddings);
                    Ok((Network::Marian(marian::Marian::load(config, vb).map_err(weights_err)?), tokenizer, special, max))
                }
                "t5" | "mt5" => {
                    let config: t5::Config = serde_json::from_value(raw.clone()).map_err(config_err)?;
                    let ids = [
                        ("decoder_start_token_id", config.decoder_start_token_id),
                        ("eos_token_id", Some(config.eos_token_id)),
                        ("pad_token_id", Some(config.pad_token_id)),
                    ];
                    check_token_ids(&name, config.vocab_size, &ids)?;
                    let start = config.decoder_start_token_id.unwrap_or(config.pad_token_id);
                    let special = Special { start, eos: config.eos_token_id, pad: config.pad_token_id, banned: Vec::new(), forced_eos: false };
                    let tokenizer = Tokenizer::t5(dir, config.eos_token_id)?;
                    Ok((Network::T5(t5::T5::load(config, vb).map_err(weights_err)?), tokenizer, special, None))
                }
                other => Err(MtError::Config(name.clone(), format!("model_type {other:?} is not supported (marian, t5, mt5)"))),
            }
        }))
        .map_err(|_| MtError::Weights(wname.clone(), "loading panicked".into()))?;
        let (net, tokenizer, special, max_positions) = load?;
        let info = ModelInfo { dir: dir.to_owned(), weights_file: weights, weights_sha256, max_positions };
        Ok(Self { info, net, tokenizer, special, device })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn layers(&self) -> usize {
        match &self.net {
            Network::Marian(m) => m.decoder_layers(),
            Network::T5(t) => t.decoder_layers(),
        }
    }

    /// Right-padded id matrix and its 0/1 mask.
    fn batch(&self, inputs: &[Vec<u32>]) -> Result<(Tensor, Tensor), MtError> {
        let width = inputs.iter().map(Vec::len).max().unwrap_or(1).max(1);
        if let Some(max) = self.info.max_positions {
            if width > max {
                return Err(MtError::TooLong(width, max));
            }
        }
        let mut ids = Vec::with_capacity(inputs.len() * width);
        let mut mask = Vec::with_capacity(inputs.len() * width);
        for input in inputs {
            for i in 0..width {
                ids.push(input.get(i).copied().unwrap_or(self.special.pad));
                mask.push(if i < input.len() { 1f32 } else { 0.0 });
            }
        }
        Ok((Tensor::from_vec(ids, (inputs.len(), width), &self.device)?, Tensor::from_vec(mask, (inputs.len(), width), &self.device)?))
    }

    /// Encoder states for a batch of inputs.
    pub fn encode(&self, inputs: &[Vec<u32>]) -> Result<(Tensor, Tensor), MtError> {
        let (ids, mask) = self.batch(inputs)?;
        let states = match &self.net {
            Network::Marian(m) => m.encode(&ids, &mask)?,
            Network::T5(t) => t.encode(&ids, &mask)?,
        };
        Ok((states, mask))
    }

    /// Teacher-forced logits `[positions, vocab]` of one input (for checking against the reference).
    pub fn logits(&self, input: &[u32], decoder_input: &[u32]) -> Result<Tensor, MtError> {
        let (memory, mask) = self.encode(&[input.to_vec()])?;
        let ids = Tensor::new(decoder_input, &self.device)?.unsqueeze(0)?;
        let mut cache = Cache::new(self.layers());
        let logits = self.decode(&ids, &memory, &mask, &mut cache)?;
        Ok(logits.squeeze(0)?)
    }

    fn decode_hidden(&self, ids: &Tensor, memory: &Tensor, mask: &Tensor, cache: &mut Cache) -> candle_core::Result<Tensor> {
        match &self.net {
            Network::Marian(m) => m.decode_hidden(ids, memory, mask, cache),
            Network::T5(t) => t.decode_hidden(ids, memory, mask, cache),
        }
    }

    fn output(&self) -> (&Tensor, Option<&Tensor>) {
        match &self.net {
            Network::Marian(m) => m.output(),
            Network::T5(t) => t.output(),
        }
    }

    /// Logits `[batch, new, vocab]`.
    fn decode(&self, ids: &Tensor, memory: &Tensor, mask: &Tensor, cache: &mut Cache) -> candle_core::Result<Tensor> {
        let x = self.decode_hidden(ids, memory, mask, cache)?;
        let (b, t, d) = x.dims3()?;
        let (weight, bias) = self.output();
        let mut logits = x.reshape((b * t, d))?.matmul(&weight.t()?)?;
        if let Some(bias) = bias {
            logits = logits.broadcast_add(bias)?;
        }
        logits.reshape((b, t, ()))
    }

    /// Generates for a batch of tokenized inputs; every batch starts from an empty cache.
    pub fn generate(&self, inputs: &[Vec<u32>], decoding: &Decoding) -> Result<Vec<Hypothesis>, MtError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let (memory, mask) = self.encode(inputs)?;
        let beams = decoding.beams.max(1);
        // Each input's encoder rows repeated once per beam.
        let (memory, mask) = if beams > 1 {
            let index: Vec<u32> = (0..inputs.len() as u32).flat_map(|i| std::iter::repeat_n(i, beams)).collect();
            let index = Tensor::new(index.as_slice(), &self.device)?;
            (memory.index_select(&index, 0)?, mask.index_select(&index, 0)?)
        } else {
            (memory, mask)
        };
        // The output bias is the same every step: copy it to the host once per batch.
        let bias = self.output().1.map(|b| b.to_vec1::<f32>()).transpose()?;
        let step = Stepper { model: self, memory, mask, bias };
        Ok(generate::generate(&step, Cache::new(self.layers()), inputs.len(), decoding, &self.special)?)
    }

    /// Tokenizes, generates in batches of `batch` (inputs sorted by length to pad little) and
    /// decodes. Outputs are in input order.
    pub fn run(&self, texts: &[&str], decoding: &Decoding, batch: usize) -> Result<Vec<Output>, MtError> {
        let inputs = texts.iter().map(|t| self.tokenizer.encode(t)).collect::<Result<Vec<_>, _>>()?;
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by_key(|&i| inputs[i].len());
        let mut outputs: Vec<Option<Output>> = vec![None; inputs.len()];
        for chunk in order.chunks(batch.max(1)) {
            let group: Vec<Vec<u32>> = chunk.iter().map(|&i| inputs[i].clone()).collect();
            for (&i, hypothesis) in chunk.iter().zip(self.generate(&group, decoding)?) {
                let text = self.tokenizer.decode(&hypothesis.tokens)?;
                outputs[i] = Some(Output { text, hypothesis, input_tokens: inputs[i].len() });
            }
        }
        Ok(outputs.into_iter().map(|o| o.expect("every input generated")).collect())
    }

    /// Start, end and pad token ids.
    pub fn special(&self) -> (u32, u32, u32) {
        (self.special.start, self.special.eos, self.special.pad)
    }
}

struct Stepper<'a> {
    model: &'a Seq2Seq,
    memory: Tensor,
    mask: Tensor,
    bias: Option<Vec<f32>>,
}

impl Step for Stepper<'_> {
    fn device(&self) -> &Device {
        &self.model.device
    }

    fn step(&self, tokens: &[u32], cache: &mut Cache) -> candle_core::Result<Vec<Vec<f32>>> {
        let ids = Tensor::new(tokens, &self.model.device)?.unsqueeze(1)?;
        let hidden = self.model.decode_hidden(&ids, &self.memory, &self.mask, cache)?.squeeze(1)?;
        let rows = tokens.len();
        let (weight, _) = self.model.output();
        let mut out = if (2..=32).contains(&rows) {
            // Weights on the left: candle's matmul then streams the large output matrix once
            // instead of repacking it for every step (measured: 2x faster at 4-16 rows).
            let vocab_major = weight.matmul(&hidden.t()?.contiguous()?)?.flatten_all()?.to_vec1::<f32>()?;
            let vocab = vocab_major.len() / rows;
            let mut out = vec![Vec::with_capacity(vocab); rows];
            for chunk in vocab_major.chunks_exact(rows) {
                for (row, &v) in out.iter_mut().zip(chunk) {
                    row.push(v);
                }
            }
            out
        } else {
            hidden.matmul(&weight.t()?)?.to_vec2::<f32>()?
        };
        if let Some(bias) = &self.bias {
            for row in &mut out {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
        }
        Ok(out)
    }
}
