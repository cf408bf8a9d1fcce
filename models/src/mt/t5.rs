//! T5 family (t5, flan-t5, mT5) as Hugging Face's `T5ForConditionalGeneration` lays it out:
//! pre-norm RMS layers, relative position buckets, unscaled attention, relu or gated-gelu.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::{Linear, RmsNorm, VarBuilder};
use serde::Deserialize;

use super::layers::{causal_bias, linear, padding_bias, Activation, Attention, Cache};

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_decoder_layers: Option<usize>,
    pub num_heads: usize,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_ffn")]
    pub feed_forward_proj: String,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// transformers 5 writes this next to `tie_word_embeddings`; when present it decides.
    pub scale_decoder_outputs: Option<bool>,
    #[serde(default)]
    pub pad_token_id: u32,
    #[serde(default = "default_eos")]
    pub eos_token_id: u32,
    pub decoder_start_token_id: Option<u32>,
}

fn default_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_eps() -> f64 {
    1e-6
}
fn default_ffn() -> String {
    "relu".into()
}
fn default_true() -> bool {
    true
}
fn default_eos() -> u32 {
    1
}

impl Config {
    /// `(gated, activation)` from `feed_forward_proj` ("relu", "gated-gelu", ...).
    fn feed_forward(&self) -> Result<(bool, Activation)> {
        let (gated, name) = match self.feed_forward_proj.strip_prefix("gated-") {
            Some(name) => (true, name),
            None => (false, self.feed_forward_proj.as_str()),
        };
        let act = match (gated, name) {
            // transformers maps "gated-gelu" to the tanh approximation.
            (true, "gelu") | (_, "gelu_new") => Activation::GeluNew,
            (false, "gelu") => Activation::Gelu,
            (_, "relu") => Activation::Relu,
            (_, "silu" | "swish") => Activation::Swish,
            _ => candle_core::bail!("unsupported feed_forward_proj {:?}", self.feed_forward_proj),
        };
        Ok((gated, act))
    }
}

enum FeedForward {
    Plain { wi: Linear, wo: Linear, act: Activation },
    Gated { wi_0: Linear, wi_1: Linear, wo: Linear, act: Activation },
}

impl FeedForward {
    fn load(vb: &VarBuilder, c: &Config) -> Result<Self> {
        let (gated, act) = c.feed_forward()?;
        let wo = linear(vb, "wo", c.d_ff, c.d_model, false)?;
        Ok(if gated {
            Self::Gated { wi_0: linear(vb, "wi_0", c.d_model, c.d_ff, false)?, wi_1: linear(vb, "wi_1", c.d_model, c.d_ff, false)?, wo, act }
        } else {
            Self::Plain { wi: linear(vb, "wi", c.d_model, c.d_ff, false)?, wo, act }
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Plain { wi, wo, act } => wo.forward(&act.apply(&wi.forward(x)?)?),
            Self::Gated { wi_0, wi_1, wo, act } => wo.forward(&(act.apply(&wi_0.forward(x)?)? * wi_1.forward(x)?)?),
        }
    }
}

struct Block {
    attn: Attention,
    attn_norm: RmsNorm,
    cross: Option<(Attention, RmsNorm)>,
    ffn: FeedForward,
    ffn_norm: RmsNorm,
}

const PROJ: [&str; 4] = ["q", "k", "v", "o"];

fn rms_norm(vb: &VarBuilder, size: usize, eps: f64) -> Result<RmsNorm> {
    Ok(RmsNorm::new(vb.get(size, "weight")?, eps))
}

impl Block {
    fn load(vb: &VarBuilder, c: &Config, decoder: bool) -> Result<Self> {
        let layer = |i: usize| vb.pp(format!("layer.{i}"));
        let attention = |vb: &VarBuilder| Attention::load(vb, PROJ, c.d_model, c.num_heads, c.d_kv, false, false);
        let cross = if decoder {
            Some((attention(&layer(1).pp("EncDecAttention"))?, rms_norm(&layer(1).pp("layer_norm"), c.d_model, c.layer_norm_epsilon)?))
        } else {
            None
        };
        let ffn_at = if decoder { 2 } else { 1 };
        Ok(Self {
            attn: attention(&layer(0).pp("SelfAttention"))?,
            attn_norm: rms_norm(&layer(0).pp("layer_norm"), c.d_model, c.layer_norm_epsilon)?,
            cross,
            ffn: FeedForward::load(&layer(ffn_at).pp("DenseReluDense"), c)?,
            ffn_norm: rms_norm(&layer(ffn_at).pp("layer_norm"), c.d_model, c.layer_norm_epsilon)?,
        })
    }
}

struct Stack {
    blocks: Vec<Block>,
    /// `[buckets, heads]`, held by the first block and shared by all.
    relative_bias: Tensor,
    final_norm: RmsNorm,
}

impl Stack {
    fn load(vb: VarBuilder, c: &Config, layers: usize, decoder: bool) -> Result<Self> {
        let blocks = (0..layers).map(|i| Block::load(&vb.pp(format!("block.{i}")), c, decoder)).collect::<Result<Vec<_>>>()?;
        let relative_bias = vb.get((c.relative_attention_num_buckets, c.num_heads), "block.0.layer.0.SelfAttention.relative_attention_bias.weight")?;
        let final_norm = rms_norm(&vb.pp("final_layer_norm"), c.d_model, c.layer_norm_epsilon)?;
        Ok(Self { blocks, relative_bias, final_norm })
    }
}

pub struct T5 {
    pub config: Config,
    shared: Tensor,
    lm_head: Tensor,
    encoder: Stack,
    decoder: Stack,
}

impl T5 {
    pub fn load(config: Config, vb: VarBuilder) -> Result<Self> {
        let c = &config;
        let shared = vb.get((c.vocab_size, c.d_model), "shared.weight")?;
        let lm_head = if vb.contains_tensor("lm_head.weight") {
            vb.get((c.vocab_size, c.d_model), "lm_head.weight")?
        } else {
            shared.clone()
        };
        let encoder = Stack::load(vb.pp("encoder"), c, c.num_layers, false)?;
        let decoder = Stack::load(vb.pp("decoder"), c, c.num_decoder_layers.unwrap_or(c.num_layers), true)?;
        Ok(Self { config, shared, lm_head, encoder, decoder })
    }

    pub fn decoder_layers(&self) -> usize {
        self.decoder.blocks.len()
    }

    /// `[1, heads, queries, keys]` bias for query positions `from..from + q` over keys `0..k`.
    fn position_bias(&self, stack: &Stack, from: usize, q: usize, k: usize, bidirectional: bool, device: &Device) -> Result<Tensor> {
        let c = &self.config;
        let buckets: Vec<u32> = (0..q)
            .flat_map(|i| (0..k).map(move |j| (i, j)))
            .map(|(i, j)| bucket(j as i64 - (from + i) as i64, bidirectional, c.relative_attention_num_buckets, c.relative_attention_max_distance))
            .collect();
        let buckets = Tensor::from_vec(buckets, q * k, device)?;
        let heads = c.num_heads;
        stack.relative_bias.embedding(&buckets)?.reshape((q, k, heads))?.permute((2, 0, 1))?.unsqueeze(0)?.contiguous()
    }

    pub fn encode(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (_, s) = ids.dims2()?;
        let bias = self.position_bias(&self.encoder, 0, s, s, true, ids.device())?.broadcast_add(&padding_bias(mask)?)?;
        let mut x = self.shared.embedding(&ids.flatten_all()?)?.reshape((ids.dim(0)?, s, ()))?;
        for block in &self.encoder.blocks {
            x = (&x + block.attn.self_attend(&block.attn_norm.forward(&x)?, Some(&bias), None)?)?;
            x = (&x + block.ffn.forward(&block.ffn_norm.forward(&x)?)?)?;
        }
        self.encoder.final_norm.forward(&x)
    }

    /// Output layer (T5 has no output bias).
    pub fn output(&self) -> (&Tensor, Option<&Tensor>) {
        (&self.lm_head, None)
    }

    /// Final decoder states, scaled for the output layer where the checkpoint asks for it.
    pub fn decode_hidden(&self, ids: &Tensor, memory: &Tensor, memory_mask: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let past = cache.past;
        let mut bias = self.position_bias(&self.decoder, past, t, past + t, false, ids.device())?;
        if t > 1 {
            bias = bias.broadcast_add(&causal_bias(past, t, ids.device())?)?;
        }
        let cross_bias = padding_bias(memory_mask)?;
        let mut x = self.shared.embedding(&ids.flatten_all()?)?.reshape((b, t, ()))?;
        for (block, slot) in self.decoder.blocks.iter().zip(cache.layers.iter_mut()) {
            x = (&x + block.attn.self_attend(&block.attn_norm.forward(&x)?, Some(&bias), Some(&mut slot.self_kv))?)?;
            let (cross, norm) = block.cross.as_ref().expect("decoder blocks have cross-attention");
            x = (&x + cross.cross_attend(&norm.forward(&x)?, memory, Some(&cross_bias), &mut slot.cross_kv)?)?;
            x = (&x + block.ffn.forward(&block.ffn_norm.forward(&x)?)?)?;
        }
        cache.past += t;
        let mut x = self.decoder.final_norm.forward(&x)?;
        if self.config.scale_decoder_outputs.unwrap_or(self.config.tie_word_embeddings) {
            // Tied (v1.0) checkpoints rescale before reusing the input table as output layer.
            x = (x * (self.config.d_model as f64).powf(-0.5))?;
        }
        Ok(x)
    }
}

/// T5's relative position bucket for `relative = key - query`.
fn bucket(relative: i64, bidirectional: bool, buckets: usize, max_distance: usize) -> u32 {
    let mut buckets = buckets as i64;
    let mut result = 0i64;
    let distance = if bidirectional {
        buckets /= 2;
        if relative > 0 {
            result += buckets;
        }
        relative.abs()
    } else {
        (-relative).max(0)
    };
    let max_exact = buckets / 2;
    if distance < max_exact {
        result += distance;
    } else {
        // Computed in f32 as the reference does, so boundaries fall in the same bucket.
        let scaled = (distance as f32 / max_exact as f32).ln() / (max_distance as f32 / max_exact as f32).ln() * (buckets - max_exact) as f32;
        result += (max_exact + scaled as i64).min(buckets - 1);
    }
    result as u32
}

#[cfg(test)]
mod tests {
    use super::bucket;

    #[test]
    fn buckets_match_reference_values() {
        // Worked by hand from the bucket formula (32 buckets, distance 128); fixtures cover the rest.
        assert_eq!(bucket(0, true, 32, 128), 0);
        assert_eq!(bucket(3, true, 32, 128), 19);
        assert_eq!(bucket(-3, true, 32, 128), 3);
        assert_eq!(bucket(-200, true, 32, 128), 15);
        assert_eq!(bucket(5, false, 32, 128), 0);
        assert_eq!(bucket(-5, false, 32, 128), 5);
        assert_eq!(bucket(-100, false, 32, 128), 30);
    }
}
