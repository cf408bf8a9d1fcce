//! Q8_0 matrix products for several rows at once, the product a batched decoding step needs.
//! candle's Q8_0 kernel computes each (row, column) pair on its own, so eight sequences cost eight
//! times one; this one loads each weight block once for a tile of rows. Most of the 0.5B model is
//! Q8_0 (its Q5_0 matrices are re-quantized on load), so this is where batching pays.
//!
//! Dispatched at run time: AVX2 with FMA where the CPU has them (checked once), else candle's
//! kernel. The AVX2 path and the portable reference below compute every output with the same
//! operations in the same order (8 integer lanes per block, each lane's sum converted and fused
//! into its own f32 accumulator, lanes summed in a fixed order), so they agree bit for bit, and a
//! row's result never depends on the other rows of the batch.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Result, Tensor};

const BLOCK: usize = 32;
/// Columns per parallel task (a multiple of 4).
const TASK_COLUMNS: usize = 64;

/// A Q8_0 matrix (n outputs × k inputs) in the layout the kernel reads: per output, its i8 values
/// and one f32 scale per block of 32.
pub struct Q8Matrix {
    n: usize,
    k: usize,
    quants: Vec<i8>,
    scales: Vec<f32>,
}

/// Whether this CPU runs the fast path (AVX2 and FMA).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static FAST: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *FAST.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl Q8Matrix {
    /// The matrix of a Q8_0 tensor (n, k); None for other types or shapes.
    pub fn from_qtensor(t: &QTensor) -> Result<Option<Self>> {
        let (n, k) = t.shape().dims2()?;
        if t.dtype() != GgmlDType::Q8_0 || k % BLOCK != 0 {
            return Ok(None);
        }
        let data = t.data()?;
        let blocks = n * k / BLOCK;
        // GGML's block_q8_0: an f16 scale, then 32 i8 values.
        const BYTES: usize = 2 + BLOCK;
        if data.len() != blocks * BYTES {
            candle_core::bail!("Q8_0 data of {} bytes for {blocks} blocks", data.len());
        }
        let mut quants = Vec::with_capacity(n * k);
        let mut scales = Vec::with_capacity(blocks);
        for block in data.chunks_exact(BYTES) {
            scales.push(half::f16::from_le_bytes([block[0], block[1]]).to_f32());
            quants.extend(block[2..].iter().map(|&b| b as i8));
        }
        Ok(Some(Self { n, k, quants, scales }))
    }

    /// x (rows, k) times the matrix transposed: (rows, n).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (rows, k) = x.dims2()?;
        if k != self.k {
            candle_core::bail!("Q8_0 product: input of {k} columns for a matrix of {}", self.k);
        }
        let (xq, xs) = quantize_rows(&x.to_vec2::<f32>()?.concat(), k);
        // Column-major while computing (each task owns whole columns), row-major after.
        let mut by_column = vec![0f32; self.n * rows];
        use rayon::prelude::*;
        by_column.par_chunks_mut(TASK_COLUMNS * rows).enumerate().for_each(|(task, out)| {
            let first = task * TASK_COLUMNS;
            let columns = out.len() / rows;
            self.columns(first, columns, &xq, &xs, rows, out);
        });
        let mut out = vec![0f32; rows * self.n];
        for (c, column) in by_column.chunks_exact(rows).enumerate() {
            for (r, &v) in column.iter().enumerate() {
                out[r * self.n + c] = v;
            }
        }
        Tensor::from_vec(out, (rows, self.n), &Device::Cpu)
    }

    /// Outputs of columns first..first+count for every row, into out[(c - first) * rows + r].
    fn columns(&self, first: usize, count: usize, xq: &[i8], xs: &[f32], rows: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if available() {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            unsafe { avx2::columns(self, first, count, xq, xs, rows, out) };
            return;
        }
        for c in 0..count {
            for r in 0..rows {
                out[c * rows + r] = self.reference(first + c, xq, xs, r);
            }
        }
    }

    /// One output computed the portable way, with the fast path's order of operations.
    fn reference(&self, column: usize, xq: &[i8], xs: &[f32], row: usize) -> f32 {
        let blocks = self.k / BLOCK;
        let mut lanes = [0f32; 8];
        for b in 0..blocks {
            let w = &self.quants[column * self.k + b * BLOCK..][..BLOCK];
            let x = &xq[row * self.k + b * BLOCK..][..BLOCK];
            let scale = self.scales[column * blocks + b] * xs[row * blocks + b];
            for (lane, acc) in lanes.iter_mut().enumerate() {
                let sum: i32 = (0..4).map(|i| w[lane * 4 + i] as i32 * x[lane * 4 + i] as i32).sum();
                *acc = (sum as f32).mul_add(scale, *acc);
            }
        }
        sum_lanes(&lanes)
    }
}

/// The fixed order lanes are added in, on both paths.
fn sum_lanes(l: &[f32; 8]) -> f32 {
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

/// Each row cut into blocks of 32 quantized to i8 with one scale (max |x| / 127), as GGML's Q8_0.
fn quantize_rows(x: &[f32], k: usize) -> (Vec<i8>, Vec<f32>) {
    let mut quants = Vec::with_capacity(x.len());
    let mut scales = Vec::with_capacity(x.len() / BLOCK);
    for block in x.chunks_exact(BLOCK) {
        let max = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = max / 127.0;
        let inverse = if d > 0.0 { 1.0 / d } else { 0.0 };
        scales.push(d);
        quants.extend(block.iter().map(|v| (v * inverse).round() as i8));
    }
    debug_assert_eq!(quants.len() % k, 0);
    (quants, scales)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{sum_lanes, Q8Matrix, BLOCK};
    use std::arch::x86_64::*;

    /// Four columns against two rows at a time: each weight block is loaded once for both rows
    /// (and from cache for the next pair).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn columns(m: &Q8Matrix, first: usize, count: usize, xq: &[i8], xs: &[f32], rows: usize, out: &mut [f32]) {
        let blocks = m.k / BLOCK;
        let ones = _mm256_set1_epi16(1);
        let mut c = 0;
        while c < count {
            let cols = (count - c).min(4);
            let mut r = 0;
            while r < rows {
                let pair = (rows - r).min(2);
                let mut acc = [[_mm256_setzero_ps(); 4]; 2];
                for b in 0..blocks {
                    let mut xv = [_mm256_setzero_si256(); 2];
                    for (i, v) in xv.iter_mut().enumerate().take(pair) {
                        *v = _mm256_loadu_si256(xq.as_ptr().add((r + i) * m.k + b * BLOCK) as *const __m256i);
                    }
                    for j in 0..cols {
                        let col = first + c + j;
                        let w = _mm256_loadu_si256(m.quants.as_ptr().add(col * m.k + b * BLOCK) as *const __m256i);
                        let aw = _mm256_sign_epi8(w, w);
                        let ws = *m.scales.get_unchecked(col * blocks + b);
                        for i in 0..pair {
                            let sx = _mm256_sign_epi8(xv[i], w);
                            let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), ones);
                            let scale = _mm256_set1_ps(ws * *xs.get_unchecked((r + i) * blocks + b));
                            acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc[i][j]);
                        }
                    }
                }
                for i in 0..pair {
                    for j in 0..cols {
                        let mut lanes = [0f32; 8];
                        _mm256_storeu_ps(lanes.as_mut_ptr(), acc[i][j]);
                        out[(c + j) * rows + r + i] = sum_lanes(&lanes);
                    }
                }
                r += pair;
            }
            c += cols;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(n: usize, k: usize) -> QTensor {
        let values: Vec<f32> = (0..n * k).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i % 13) as f32)).collect();
        QTensor::quantize(&Tensor::from_vec(values, (n, k), &Device::Cpu).unwrap(), GgmlDType::Q8_0).unwrap()
    }

    fn input(rows: usize, k: usize, seed: usize) -> Tensor {
        let values: Vec<f32> = (0..rows * k).map(|i| (((i + seed) * 104729 % 2000) as f32 / 1000.0 - 1.0) * 3.0).collect();
        Tensor::from_vec(values, (rows, k), &Device::Cpu).unwrap()
    }

    /// The dispatched path (AVX2 here when the CPU has it) equals the portable reference bit for
    /// bit, and is as close to the exact product of the stored weights as candle's Q8_0 kernel
    /// (both quantize the activations; GGML keeps their block scales as f16, this kernel as f32).
    #[test]
    fn dispatched_and_portable_paths_agree_and_match_candle() {
        let q = matrix(70, 96);
        let m = Q8Matrix::from_qtensor(&q).unwrap().unwrap();
        let x = input(5, 96, 3);
        let fast = m.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        let (xq, xs) = quantize_rows(&x.to_vec2::<f32>().unwrap().concat(), 96);
        for (r, row) in fast.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                assert_eq!(v.to_bits(), m.reference(c, &xq, &xs, r).to_bits(), "row {r} column {c}");
            }
        }
        let exact = x.matmul(&q.dequantize(&Device::Cpu).unwrap().t().unwrap()).unwrap().to_vec2::<f32>().unwrap().concat();
        let candle = candle_core::quantized::QMatMul::from_qtensor(q).unwrap();
        let theirs = candle_core::Module::forward(&candle, &x).unwrap().to_vec2::<f32>().unwrap().concat();
        let worst = |got: &[f32]| got.iter().zip(&exact).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let (ours, candles) = (worst(&fast.concat()), worst(&theirs));
        eprintln!("fast path: {}; max error {ours} here, {candles} candle", available());
        assert!(ours <= candles * 1.5 + 1e-3, "{ours} against {candles}");
    }

    /// A row gives the same bits alone, in a pair, or among seven.
    #[test]
    fn a_rows_result_does_not_depend_on_the_batch() {
        let m = Q8Matrix::from_qtensor(&matrix(130, 64)).unwrap().unwrap();
        let x = input(7, 64, 11);
        let all = m.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        for r in 0..7 {
            let alone = m.forward(&x.narrow(0, r, 1).unwrap()).unwrap().to_vec2::<f32>().unwrap();
            assert_eq!(alone[0], all[r], "row {r}");
        }
    }
}
