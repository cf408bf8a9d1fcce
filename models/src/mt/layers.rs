//! Pieces shared by the Marian and T5 stacks: multi-head attention with a key/value cache,
//! masks, and the per-layer cache that beam search reorders.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

/// Additive mask value; finite so a row can never become NaN.
pub const MASKED: f32 = -1e9;

pub fn linear(vb: &VarBuilder, name: &str, inp: usize, out: usize, bias: bool) -> Result<Linear> {
    let vb = vb.pp(name);
    let weight = vb.get((out, inp), "weight")?;
    let bias = if bias { Some(vb.get(out, "bias")?) } else { None };
    Ok(Linear::new(weight, bias))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    #[serde(alias = "silu")]
    Swish,
    Relu,
    #[serde(alias = "gelu_python")]
    Gelu,
    #[serde(alias = "gelu_fast", alias = "gelu_pytorch_tanh")]
    GeluNew,
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Swish => candle_nn::ops::silu(x),
            Self::Relu => x.relu(),
            Self::Gelu => x.gelu_erf(),
            Self::GeluNew => x.gelu(),
        }
    }
}

/// Keys and values kept between decoding steps, `[batch, heads, time, head_dim]`.
#[derive(Default, Clone)]
pub struct LayerCache {
    pub self_kv: Option<(Tensor, Tensor)>,
    pub cross_kv: Option<(Tensor, Tensor)>,
}

#[derive(Default, Clone)]
pub struct Cache {
    pub layers: Vec<LayerCache>,
    /// Decoder positions already seen.
    pub past: usize,
}

impl Cache {
    pub fn new(layers: usize) -> Self {
        Self { layers: vec![LayerCache::default(); layers], past: 0 }
    }

    /// Keep rows `index` of the self-attention cache (beam search picks its parents).
    /// Cross-attention rows are equal within one input's beams, so they stay.
    pub fn reorder(&mut self, index: &Tensor) -> Result<()> {
        for layer in &mut self.layers {
            if let Some((k, v)) = &layer.self_kv {
                layer.self_kv = Some((k.index_select(index, 0)?, v.index_select(index, 0)?));
            }
        }
        Ok(())
    }
}

/// Multi-head attention. Marian scales queries and has biases; T5 does neither.
pub struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    head_dim: usize,
    scale: Option<f64>,
}

impl Attention {
    pub fn load(vb: &VarBuilder, names: [&str; 4], d_model: usize, heads: usize, head_dim: usize, bias: bool, scale: bool) -> Result<Self> {
        let inner = heads * head_dim;
        Ok(Self {
            q: linear(vb, names[0], d_model, inner, bias)?,
            k: linear(vb, names[1], d_model, inner, bias)?,
            v: linear(vb, names[2], d_model, inner, bias)?,
            o: linear(vb, names[3], inner, d_model, bias)?,
            heads,
            head_dim,
            scale: scale.then(|| (head_dim as f64).powf(-0.5)),
        })
    }

    fn split(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        x.reshape((b, t, self.heads, self.head_dim))?.transpose(1, 2)?.contiguous()
    }

    fn project_kv(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((self.split(&self.k.forward(x)?)?, self.split(&self.v.forward(x)?)?))
    }

    /// Self-attention over `x`, appending its keys/values to `cache` when given.
    pub fn self_attend(&self, x: &Tensor, bias: Option<&Tensor>, cache: Option<&mut Option<(Tensor, Tensor)>>) -> Result<Tensor> {
        let (k, v) = self.project_kv(x)?;
        let (k, v) = match cache {
            Some(slot) => {
                let kv = match slot.take() {
                    Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                    None => (k, v),
                };
                *slot = Some(kv.clone());
                kv
            }
            None => (k, v),
        };
        self.attend(x, &k, &v, bias)
    }

    /// Attention from `x` to the encoder output, projecting it once per generation.
    pub fn cross_attend(&self, x: &Tensor, memory: &Tensor, bias: Option<&Tensor>, cache: &mut Option<(Tensor, Tensor)>) -> Result<Tensor> {
        if cache.is_none() {
            *cache = Some(self.project_kv(memory)?);
        }
        let (k, v) = cache.as_ref().expect("set above");
        self.attend(x, k, v, bias)
    }

    fn attend(&self, x: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let mut q = self.split(&self.q.forward(x)?)?;
        if let Some(scale) = self.scale {
            q = (q * scale)?;
        }
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(bias) = bias {
            scores = scores.broadcast_add(bias)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs.matmul(v)?.transpose(1, 2)?.reshape((b, t, self.heads * self.head_dim))?;
        self.o.forward(&out)
    }
}

/// `[batch, 1, 1, src]` additive mask from a 0/1 attention mask `[batch, src]`.
pub fn padding_bias(mask: &Tensor) -> Result<Tensor> {
    let (b, s) = mask.dims2()?;
    let mask = mask.to_dtype(DType::F32)?;
    ((mask - 1.0)? * f64::from(-MASKED))?.reshape((b, 1, 1, s))
}

/// `[1, 1, new, past + new]` additive causal mask for `new` queries after `past` positions.
pub fn causal_bias(past: usize, new: usize, device: &Device) -> Result<Tensor> {
    let total = past + new;
    let data: Vec<f32> = (0..new).flat_map(|i| (0..total).map(move |j| if j > past + i { MASKED } else { 0.0 })).collect();
    Tensor::from_vec(data, (1, 1, new, total), device)
}
