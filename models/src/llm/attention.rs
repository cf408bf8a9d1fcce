//! Rotary embedding and attention over each sequence's cached keys and values, on plain slices.
//!
//! As candle tensor operations this was a dozen small operations per sequence and layer (split,
//! rotate, concatenate the whole cache onto the new row, transpose, two matrix products, a mask, a
//! softmax), each allocating, and the concatenation copying every cached position on every step;
//! here a sequence's cache grows in place and each (sequence, head) pair is one task of the worker
//! pool. A sequence's result is computed the same way whatever else is in the batch.

/// How the rotary embedding pairs dimensions: llama.cpp permutes Llama's q/k rows so that pairs
/// are adjacent; Qwen2 keeps the two halves of the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rope {
    Adjacent,
    Halves,
}

/// Head counts and width.
#[derive(Debug, Clone, Copy)]
pub(super) struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub dim: usize,
}

/// cos and sin of every position's angles, (context, dim / 2) each.
pub(super) struct Rotary {
    rope: Rope,
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
}

impl Rotary {
    /// `factors`: Llama 3.1's stored per-pair divisors of the frequencies.
    pub fn new(rope: Rope, dim: usize, base: f32, factors: Option<&[f32]>, context: usize) -> Self {
        let half = dim / 2;
        let inverse: Vec<f32> = (0..half)
            .map(|i| {
                let f = 1.0 / base.powf(2.0 * i as f32 / dim as f32);
                f / factors.and_then(|s| s.get(i)).copied().unwrap_or(1.0)
            })
            .collect();
        let angles: Vec<f32> = (0..context).flat_map(|p| inverse.iter().map(move |f| p as f32 * f)).collect();
        Self { rope, cos: angles.iter().map(|a| a.cos()).collect(), sin: angles.iter().map(|a| a.sin()).collect(), half }
    }

    /// Positions the tables cover.
    pub fn context(&self) -> usize {
        self.cos.len() / self.half.max(1)
    }

    /// Rotates one head's vector as at `position`.
    fn apply(&self, x: &mut [f32], position: usize) {
        let at = position * self.half;
        let (cos, sin) = (&self.cos[at..at + self.half], &self.sin[at..at + self.half]);
        for i in 0..self.half {
            let (a, b) = match self.rope {
                Rope::Halves => (i, i + self.half),
                Rope::Adjacent => (2 * i, 2 * i + 1),
            };
            let (x1, x2) = (x[a], x[b]);
            x[a] = x1 * cos[i] - x2 * sin[i];
            x[b] = x1 * sin[i] + x2 * cos[i];
        }
    }
}

/// One layer's keys and values of one sequence, position after position, each position's kv heads
/// side by side (the rows the k and v products give).
#[derive(Clone, Default)]
pub(super) struct Cached {
    keys: Vec<f32>,
    values: Vec<f32>,
}

impl Cached {
    /// Drops what lies past `positions` (rows `width` wide): what a step that failed after this
    /// layer appended to it left behind.
    pub fn keep(&mut self, positions: usize, width: usize) {
        self.keys.truncate(positions * width);
        self.values.truncate(positions * width);
    }
}

/// One sequence in a layer's attention: the position its new rows start at, and its layer cache.
pub(super) struct Rows<'a> {
    pub position: usize,
    pub cache: &'a mut Cached,
}

/// Attention for every sequence's new rows. `q`, `k` and `v` hold `rows` rows per sequence, in the
/// order of `sequences`; q and k are rotated in place, k and v appended to each cache. Returns
/// (sequences × rows, heads × dim): each row attends to its cache, the rows before it and itself.
/// `heads` must be a multiple of `kv_heads` (the decoder checks on load).
pub(super) fn attend(heads: Heads, rotary: &Rotary, sequences: &mut [Rows], rows: usize, q: &mut [f32], k: &mut [f32], v: &[f32]) -> Vec<f32> {
    let Heads { heads: h_n, kv_heads, dim } = heads;
    let (q_width, kv_width) = (h_n * dim, kv_heads * dim);
    for (s, seq) in sequences.iter_mut().enumerate() {
        for i in 0..rows {
            let row = s * rows + i;
            for head in q[row * q_width..(row + 1) * q_width].chunks_exact_mut(dim) {
                rotary.apply(head, seq.position + i);
            }
            for head in k[row * kv_width..(row + 1) * kv_width].chunks_exact_mut(dim) {
                rotary.apply(head, seq.position + i);
            }
        }
        seq.cache.keys.extend_from_slice(&k[s * rows * kv_width..(s + 1) * rows * kv_width]);
        seq.cache.values.extend_from_slice(&v[s * rows * kv_width..(s + 1) * rows * kv_width]);
    }
    let mut out = vec![0f32; sequences.len() * rows * q_width];
    let base = out.as_mut_ptr() as usize;
    let group = h_n / kv_heads;
    let scale = 1.0 / (dim as f32).sqrt();
    let (sequences, q) = (&*sequences, &*q);
    candle_core::utils::barrier_pool().execute_chunked(sequences.len() * h_n, |tasks| {
        let mut scores = Vec::new();
        let mut sum = vec![0f32; dim];
        for task in tasks {
            let (s, head) = (task / h_n, task % h_n);
            let (seq, g) = (&sequences[s], head / group);
            for i in 0..rows {
                let row = s * rows + i;
                let query = &q[row * q_width + head * dim..][..dim];
                let seen = seq.position + i + 1;
                scores.clear();
                scores.extend((0..seen).map(|t| dot(query, &seq.cache.keys[t * kv_width + g * dim..][..dim]) * scale));
                let max = scores.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                let mut total = 0f32;
                sum.fill(0.0);
                for (t, score) in scores.iter().enumerate() {
                    let w = (score - max).exp();
                    total += w;
                    for (acc, &x) in sum.iter_mut().zip(&seq.cache.values[t * kv_width + g * dim..][..dim]) {
                        *acc += w * x;
                    }
                }
                // SAFETY: task (s, head) alone writes the head's dim values of its sequence's rows;
                // `out` outlives the pool call.
                let dst = unsafe { std::slice::from_raw_parts_mut((base as *mut f32).add(row * q_width + head * dim), dim) };
                for (d, acc) in dst.iter_mut().zip(&sum) {
                    *d = acc / total;
                }
            }
        }
    });
    out
}

/// A dot product in eight lanes (which the compiler keeps in vector registers), added in a fixed
/// order.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let split = a.len() - a.len() % 8;
    for (x, y) in a[..split].chunks_exact(8).zip(b[..split].chunks_exact(8)) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    let tail: f32 = a[split..].iter().zip(&b[split..]).map(|(x, y)| x * y).sum();
    super::int8::sum_eight(&lanes) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention written out with candle's tensor operations, as the decoder computed it before.
    fn with_tensors(heads: Heads, q: &[f32], keys: &[f32], values: &[f32], rows: usize, position: usize) -> Vec<f32> {
        use candle_core::{Device, Tensor};
        let Heads { heads: h_n, kv_heads, dim } = heads;
        let total = position + rows;
        let d = &Device::Cpu;
        let q = Tensor::from_slice(q, (1, rows, h_n, dim), d).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
        let k = Tensor::from_slice(keys, (1, total, kv_heads, dim), d).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
        let v = Tensor::from_slice(values, (1, total, kv_heads, dim), d).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
        let group = h_n / kv_heads;
        let q = q.reshape((1, kv_heads, group * rows, dim)).unwrap();
        let scores = (q.matmul(&k.t().unwrap()).unwrap() / (dim as f64).sqrt()).unwrap();
        let mask: Vec<f32> = (0..rows).flat_map(|i| (0..total).map(move |j| if j > position + i { f32::NEG_INFINITY } else { 0.0 })).collect();
        let mask = Tensor::from_vec(mask, (rows, total), d).unwrap();
        let scores = scores.reshape((1, kv_heads, group, rows, total)).unwrap().broadcast_add(&mask).unwrap().reshape((1, kv_heads, group * rows, total)).unwrap();
        let attn = candle_nn::ops::softmax_last_dim(&scores).unwrap().matmul(&v).unwrap();
        attn.reshape((1, h_n, rows, dim)).unwrap().transpose(1, 2).unwrap().reshape((rows * h_n * dim,)).unwrap().to_vec1().unwrap()
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0).collect()
    }

    #[test]
    fn attention_on_slices_equals_the_tensor_operations() {
        for (heads, position, rows) in [(Heads { heads: 4, kv_heads: 2, dim: 16 }, 0, 5), (Heads { heads: 6, kv_heads: 2, dim: 12 }, 7, 1), (Heads { heads: 2, kv_heads: 2, dim: 8 }, 3, 4)] {
            let (q_width, kv_width) = (heads.heads * heads.dim, heads.kv_heads * heads.dim);
            let total = position + rows;
            let (q, keys, vals) = (values(rows * q_width, 1), values(total * kv_width, 2), values(total * kv_width, 3));
            let rotary = Rotary::new(Rope::Halves, heads.dim, 10_000.0, None, 64);
            // The cache holds rotated keys; rotate the earlier positions as the decoder would have.
            let mut cache = Cached::default();
            let mut rotated = keys.clone();
            for (p, row) in rotated.chunks_exact_mut(kv_width).enumerate() {
                for head in row.chunks_exact_mut(heads.dim) {
                    rotary.apply(head, p);
                }
            }
            cache.keys.extend_from_slice(&rotated[..position * kv_width]);
            cache.values.extend_from_slice(&vals[..position * kv_width]);
            let mut q_new = q.clone();
            let mut k_new = keys[position * kv_width..].to_vec();
            let got = attend(heads, &rotary, &mut [Rows { position, cache: &mut cache }], rows, &mut q_new, &mut k_new, &vals[position * kv_width..]);
            assert_eq!(cache.keys, rotated, "the new keys are cached rotated");
            let mut q_rot = q.clone();
            for (i, row) in q_rot.chunks_exact_mut(q_width).enumerate() {
                for head in row.chunks_exact_mut(heads.dim) {
                    rotary.apply(head, position + i);
                }
            }
            let want = with_tensors(heads, &q_rot, &rotated, &vals, rows, position);
            assert_eq!(got.len(), want.len());
            assert!(got.iter().all(|v| v.is_finite()), "{heads:?} at {position}");
            let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-5, "{heads:?} at {position}: {diff}");
        }
    }

    #[test]
    fn each_sequence_of_a_batch_gets_what_it_gets_alone() {
        let heads = Heads { heads: 4, kv_heads: 2, dim: 8 };
        let (q_width, kv_width) = (heads.heads * heads.dim, heads.kv_heads * heads.dim);
        let rotary = Rotary::new(Rope::Adjacent, heads.dim, 10_000.0, None, 32);
        // Two sequences at different positions (3 and 9 cached), two new rows each.
        let caches: Vec<Cached> = [3, 9].iter().map(|&n| Cached { keys: values(n * kv_width, n as u32), values: values(n * kv_width, 10 + n as u32) }).collect();
        let (q, k, v) = (values(4 * q_width, 5), values(4 * kv_width, 6), values(4 * kv_width, 7));
        let mut batched = caches.clone();
        let (mut q_all, mut k_all) = (q.clone(), k.clone());
        let mut rows: Vec<Rows> = batched.iter_mut().zip([3, 9]).map(|(cache, position)| Rows { position, cache }).collect();
        let together = attend(heads, &rotary, &mut rows, 2, &mut q_all, &mut k_all, &v);
        for (s, position) in [3usize, 9].into_iter().enumerate() {
            let mut cache = caches[s].clone();
            let (mut q1, mut k1) = (q[2 * s * q_width..2 * (s + 1) * q_width].to_vec(), k[2 * s * kv_width..2 * (s + 1) * kv_width].to_vec());
            let alone = attend(heads, &rotary, &mut [Rows { position, cache: &mut cache }], 2, &mut q1, &mut k1, &v[2 * s * kv_width..2 * (s + 1) * kv_width]);
            assert_eq!(&together[2 * s * q_width..2 * (s + 1) * q_width], &alone[..], "sequence {s}");
            assert_eq!(batched[s].keys, cache.keys);
        }
    }

    #[test]
    fn rotation_matches_candles_for_both_pairings() {
        use candle_core::{Device, Tensor};
        let dim = 8;
        let x = values(3 * dim, 9);
        for rope in [Rope::Halves, Rope::Adjacent] {
            let rotary = Rotary::new(rope, dim, 10_000.0, None, 3);
            let mut got = x.clone();
            for (p, head) in got.chunks_exact_mut(dim).enumerate() {
                rotary.apply(head, p);
            }
            let t = Tensor::from_slice(&x, (1, 1, 3, dim), &Device::Cpu).unwrap();
            let cos = Tensor::from_slice(&rotary.cos, (3, dim / 2), &Device::Cpu).unwrap();
            let sin = Tensor::from_slice(&rotary.sin, (3, dim / 2), &Device::Cpu).unwrap();
            let want = match rope {
                Rope::Halves => candle_nn::rotary_emb::rope(&t, &cos, &sin),
                Rope::Adjacent => candle_nn::rotary_emb::rope_i(&t, &cos, &sin),
            };
            assert_eq!(got, want.unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), "{rope:?}");
        }
    }
}
