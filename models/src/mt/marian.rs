//! Marian (OPUS-MT) encoder-decoder as Hugging Face's `MarianMTModel` lays it out: post-norm
//! layers, static sinusoidal positions, scaled embeddings, `final_logits_bias`.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use super::layers::{causal_bias, linear, padding_bias, Activation, Attention, Cache};

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub decoder_vocab_size: Option<usize>,
    pub d_model: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub encoder_attention_heads: usize,
    pub decoder_attention_heads: usize,
    pub encoder_ffn_dim: usize,
    pub decoder_ffn_dim: usize,
    pub activation_function: Activation,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub scale_embedding: bool,
    #[serde(default)]
    pub normalize_before: bool,
    pub pad_token_id: u32,
    pub eos_token_id: u32,
    pub decoder_start_token_id: Option<u32>,
    pub forced_eos_token_id: Option<u32>,
    #[serde(default)]
    pub bad_words_ids: Option<Vec<Vec<u32>>>,
}

fn default_max_positions() -> usize {
    512
}

const LN_EPS: f64 = 1e-5;

fn layer_norm(vb: &VarBuilder, name: &str, size: usize) -> Result<LayerNorm> {
    let vb = vb.pp(name);
    Ok(LayerNorm::new(vb.get(size, "weight")?, vb.get(size, "bias")?, LN_EPS))
}

struct FeedForward {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl FeedForward {
    fn load(vb: &VarBuilder, d_model: usize, ffn: usize, act: Activation) -> Result<Self> {
        Ok(Self { fc1: linear(vb, "fc1", d_model, ffn, true)?, fc2: linear(vb, "fc2", ffn, d_model, true)?, act })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.act.apply(&self.fc1.forward(x)?)?)
    }
}

/// `x + f(x)` with the layer norm after (Marian) or before (pre-norm variants).
fn residual(x: &Tensor, norm: &LayerNorm, before: bool, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    if before {
        x + f(&norm.forward(x)?)?
    } else {
        norm.forward(&(x + f(x)?)?)
    }
}

struct EncoderLayer {
    attn: Attention,
    attn_norm: LayerNorm,
    ffn: FeedForward,
    ffn_norm: LayerNorm,
}

struct DecoderLayer {
    attn: Attention,
    attn_norm: LayerNorm,
    cross: Attention,
    cross_norm: LayerNorm,
    ffn: FeedForward,
    ffn_norm: LayerNorm,
}

const PROJ: [&str; 4] = ["q_proj", "k_proj", "v_proj", "out_proj"];

pub struct Marian {
    pub config: Config,
    encoder_embed: Tensor,
    decoder_embed: Tensor,
    lm_head: Tensor,
    logits_bias: Tensor,
    positions: Tensor,
    encoder: Vec<EncoderLayer>,
    decoder: Vec<DecoderLayer>,
    /// Pre-norm checkpoints end each stack with a layer norm.
    final_norms: Option<(LayerNorm, LayerNorm)>,
    embed_scale: f64,
}

impl Marian {
    pub fn load(config: Config, vb: VarBuilder) -> Result<Self> {
        let c = &config;
        let d = c.d_model;
        let m = vb.pp("model");
        // transformers 5 stores only the shared table when embeddings are tied.
        let table = |name: &str, rows: usize| -> Result<Tensor> {
            if m.contains_tensor(name) {
                m.get((rows, d), name)
            } else {
                m.get((c.vocab_size, d), "shared.weight")
            }
        };
        let encoder_embed = table("encoder.embed_tokens.weight", c.vocab_size)?;
        let decoder_rows = c.decoder_vocab_size.unwrap_or(c.vocab_size);
        let decoder_embed = table("decoder.embed_tokens.weight", decoder_rows)?;
        let lm_head = if vb.contains_tensor("lm_head.weight") { vb.get((decoder_rows, d), "lm_head.weight")? } else { decoder_embed.clone() };
        let logits_bias = if vb.contains_tensor("final_logits_bias") {
            vb.get((1, decoder_rows), "final_logits_bias")?.reshape(decoder_rows)?
        } else {
            Tensor::zeros(decoder_rows, candle_core::DType::F32, vb.device())?
        };
        let encoder = (0..c.encoder_layers)
            .map(|i| {
                let l = m.pp(format!("encoder.layers.{i}"));
                Ok(EncoderLayer {
                    attn: Attention::load(&l.pp("self_attn"), PROJ, d, c.encoder_attention_heads, d / c.encoder_attention_heads, true, true)?,
                    attn_norm: layer_norm(&l, "self_attn_layer_norm", d)?,
                    ffn: FeedForward::load(&l, d, c.encoder_ffn_dim, c.activation_function)?,
                    ffn_norm: layer_norm(&l, "final_layer_norm", d)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let decoder = (0..c.decoder_layers)
            .map(|i| {
                let l = m.pp(format!("decoder.layers.{i}"));
                let heads = c.decoder_attention_heads;
                Ok(DecoderLayer {
                    attn: Attention::load(&l.pp("self_attn"), PROJ, d, heads, d / heads, true, true)?,
                    attn_norm: layer_norm(&l, "self_attn_layer_norm", d)?,
                    cross: Attention::load(&l.pp("encoder_attn"), PROJ, d, heads, d / heads, true, true)?,
                    cross_norm: layer_norm(&l, "encoder_attn_layer_norm", d)?,
                    ffn: FeedForward::load(&l, d, c.decoder_ffn_dim, c.activation_function)?,
                    ffn_norm: layer_norm(&l, "final_layer_norm", d)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_norms = if c.normalize_before {
            Some((layer_norm(&m, "encoder.layer_norm", d)?, layer_norm(&m, "decoder.layer_norm", d)?))
        } else {
            None
        };
        let positions = sinusoids(c.max_position_embeddings, d, vb.device())?;
        let embed_scale = if c.scale_embedding { (d as f64).sqrt() } else { 1.0 };
        Ok(Self { config, encoder_embed, decoder_embed, lm_head, logits_bias, positions, encoder, decoder, final_norms, embed_scale })
    }

    pub fn decoder_layers(&self) -> usize {
        self.decoder.len()
    }

    fn embed(&self, table: &Tensor, ids: &Tensor, offset: usize) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if offset + t > self.config.max_position_embeddings {
            candle_core::bail!("{} positions exceed the model's {}", offset + t, self.config.max_position_embeddings);
        }
        let x = (table.embedding(&ids.flatten_all()?)?.reshape((b, t, ()))? * self.embed_scale)?;
        x.broadcast_add(&self.positions.narrow(0, offset, t)?)
    }

    /// Encoder states `[batch, src, d_model]` for token ids and their 0/1 mask.
    pub fn encode(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let bias = padding_bias(mask)?;
        let before = self.config.normalize_before;
        let mut x = self.embed(&self.encoder_embed, ids, 0)?;
        for layer in &self.encoder {
            x = residual(&x, &layer.attn_norm, before, |h| layer.attn.self_attend(h, Some(&bias), None))?;
            x = residual(&x, &layer.ffn_norm, before, |h| layer.ffn.forward(h))?;
        }
        match &self.final_norms {
            Some((norm, _)) => norm.forward(&x),
            None => Ok(x),
        }
    }

    /// Output layer and bias.
    pub fn output(&self) -> (&Tensor, Option<&Tensor>) {
        (&self.lm_head, Some(&self.logits_bias))
    }

    /// Final decoder states `[batch, new, d_model]` for `new` tokens after what `cache` holds.
    pub fn decode_hidden(&self, ids: &Tensor, memory: &Tensor, memory_mask: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        let before = self.config.normalize_before;
        let self_bias = if t > 1 { Some(causal_bias(cache.past, t, ids.device())?) } else { None };
        let cross_bias = padding_bias(memory_mask)?;
        let mut x = self.embed(&self.decoder_embed, ids, cache.past)?;
        for (layer, slot) in self.decoder.iter().zip(cache.layers.iter_mut()) {
            x = residual(&x, &layer.attn_norm, before, |h| layer.attn.self_attend(h, self_bias.as_ref(), Some(&mut slot.self_kv)))?;
            x = residual(&x, &layer.cross_norm, before, |h| layer.cross.cross_attend(h, memory, Some(&cross_bias), &mut slot.cross_kv))?;
            x = residual(&x, &layer.ffn_norm, before, |h| layer.ffn.forward(h))?;
        }
        if let Some((_, norm)) = &self.final_norms {
            x = norm.forward(&x)?;
        }
        cache.past += t;
        Ok(x)
    }
}

/// Marian's static positions: sines in the first half of each row, cosines in the second.
fn sinusoids(positions: usize, dim: usize, device: &Device) -> Result<Tensor> {
    let half = dim.div_ceil(2);
    let mut data = vec![0f32; positions * dim];
    for pos in 0..positions {
        let row = &mut data[pos * dim..(pos + 1) * dim];
        for j in 0..dim {
            // Column j of the reference table uses exponent 2 * (j / 2) / dim; sines take even j.
            let angle = pos as f64 / 10000f64.powf((2 * (j / 2)) as f64 / dim as f64);
            if j % 2 == 0 {
                row[j / 2] = angle.sin() as f32;
            } else {
                row[half + j / 2] = angle.cos() as f32;
            }
        }
    }
    Tensor::from_vec(data, (positions, dim), device)
}
