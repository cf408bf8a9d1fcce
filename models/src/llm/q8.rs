//! Q8_0 matrix products for several rows at once, the product a batched decoding step needs.
//! candle's Q8_0 kernel computes each (row, column) pair on its own, so eight sequences cost eight
//! times one; this one loads each weight block once for a tile of rows. Most of the 0.5B model is
//! Q8_0 (its Q5_0 matrices are re-quantized on load), so this is where batching pays.
//!
//! Dispatched at run time (checked once): AVX-512 with VNNI, else AVX2 with FMA, else candle's
//! kernel. Both SIMD paths and the portable reference below compute every output with the same
//! operations in the same order (16 lanes: even blocks in lanes 0-7, odd blocks in 8-15, each
//! lane an exact integer sum of four products converted and fused into its own f32 accumulator,
//! lanes summed in a fixed order), so they agree bit for bit, and a row's result never depends on
//! the other rows of the batch.

// The kernels index several tile arrays (accumulators, rows, columns) with one counter each.
#![allow(clippy::needless_range_loop)]

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

/// The instruction set the kernel runs with on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Avx512Vnni,
    Avx2,
}

/// The fastest path this CPU has, if any.
pub fn level() -> Option<Level> {
    #[cfg(target_arch = "x86_64")]
    {
        static LEVEL: std::sync::OnceLock<Option<Level>> = std::sync::OnceLock::new();
        *LEVEL.get_or_init(|| {
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vnni") {
                Some(Level::Avx512Vnni)
            } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                Some(Level::Avx2)
            } else {
                None
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// Whether this CPU runs one of the fast paths.
pub fn available() -> bool {
    level().is_some()
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
        let tasks = self.n.div_ceil(TASK_COLUMNS);
        let base = by_column.as_mut_ptr() as usize;
        // candle's own worker pool, which its kernels in the same step use: a second pool would
        // have two sets of threads spinning against each other on the same cores.
        candle_core::utils::barrier_pool().execute_chunked(tasks, |range| {
            for task in range {
                let first = task * TASK_COLUMNS;
                let columns = TASK_COLUMNS.min(self.n - first);
                // SAFETY: each task owns columns first..first+columns, a range of `by_column` no
                // other task touches, and `by_column` outlives the pool call.
                let out = unsafe { std::slice::from_raw_parts_mut((base as *mut f32).add(first * rows), columns * rows) };
                self.columns(first, columns, &xq, &xs, rows, out);
            }
        });
        if rows == 1 {
            return Tensor::from_vec(by_column, (1, self.n), &Device::Cpu);
        }
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
        match level() {
            // SAFETY: the CPU has the instructions each path is compiled for (checked by `level`).
            Some(Level::Avx512Vnni) => return unsafe { avx512::columns(self, first, count, xq, xs, rows, out) },
            Some(Level::Avx2) => return unsafe { avx2::columns(self, first, count, xq, xs, rows, out) },
            None => {}
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
        let mut lanes = [0f32; 16];
        for b in 0..blocks {
            let w = &self.quants[column * self.k + b * BLOCK..][..BLOCK];
            let x = &xq[row * self.k + b * BLOCK..][..BLOCK];
            let scale = self.scales[column * blocks + b] * xs[row * blocks + b];
            let half = &mut lanes[(b % 2) * 8..][..8];
            for (lane, acc) in half.iter_mut().enumerate() {
                let sum: i32 = (0..4).map(|i| w[lane * 4 + i] as i32 * x[lane * 4 + i] as i32).sum();
                *acc = (sum as f32).mul_add(scale, *acc);
            }
        }
        sum_lanes(&lanes)
    }
}

/// The fixed order lanes are added in, on every path: odd blocks' lanes onto even blocks', then
/// pairwise.
fn sum_lanes(l: &[f32; 16]) -> f32 {
    let h: [f32; 8] = std::array::from_fn(|i| l[i] + l[i + 8]);
    ((h[0] + h[4]) + (h[2] + h[6])) + ((h[1] + h[5]) + (h[3] + h[7]))
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

    /// Two columns against two rows at a time, even and odd blocks in their own accumulators:
    /// each weight block is loaded once for both rows (and from cache for the next pair).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn columns(m: &Q8Matrix, first: usize, count: usize, xq: &[i8], xs: &[f32], rows: usize, out: &mut [f32]) {
        let blocks = m.k / BLOCK;
        let ones = _mm256_set1_epi16(1);
        let mut c = 0;
        while c < count {
            let cols = (count - c).min(2);
            let mut r = 0;
            while r < rows {
                let pair = (rows - r).min(2);
                // [row][column][even, odd]
                let mut acc = [[[_mm256_setzero_ps(); 2]; 2]; 2];
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
                            let a = &mut acc[i][j][b % 2];
                            *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, *a);
                        }
                    }
                }
                for i in 0..pair {
                    for j in 0..cols {
                        let mut lanes = [0f32; 16];
                        _mm256_storeu_ps(lanes.as_mut_ptr(), acc[i][j][0]);
                        _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[i][j][1]);
                        out[(c + j) * rows + r + i] = sum_lanes(&lanes);
                    }
                }
                r += pair;
            }
            c += cols;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{sum_lanes, Q8Matrix, BLOCK};
    use std::arch::x86_64::*;

    const COLS: usize = 4;
    const ROWS: usize = 4;

    /// Two scales in one vector: `a` in lanes 0-7, `b` in 8-15.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn scales(a: f32, b: f32) -> __m512 {
        _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(a), _mm512_set1_ps(b))
    }

    /// Four columns against up to four rows at a time, two blocks (64 bytes) per instruction:
    /// VNNI multiplies and sums four byte pairs per lane in one step. The sign of each weight moves
    /// to its activation (|w| · ±x), as u8 × i8 products need.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn columns(m: &Q8Matrix, first: usize, count: usize, xq: &[i8], xs: &[f32], rows: usize, out: &mut [f32]) {
        let mut c = 0;
        while c < count {
            let cols = (count - c).min(COLS);
            let mut r = 0;
            while r < rows {
                let tile = (rows - r).min(ROWS);
                // Fixed tile sizes let the accumulators live in registers.
                let at = Tile { m, col: first + c, row: r, xq, xs };
                let sums: [[f32; COLS]; ROWS] = match (tile, cols) {
                    (4, 4) => at.run::<4, 4>(),
                    (3, 4) => at.run::<3, 4>(),
                    (2, 4) => at.run::<2, 4>(),
                    (1, 4) => at.run::<1, 4>(),
                    _ => at.each(tile, cols),
                };
                for i in 0..tile {
                    for j in 0..cols {
                        out[(c + j) * rows + r + i] = sums[i][j];
                    }
                }
                r += tile;
            }
            c += cols;
        }
    }

    struct Tile<'a> {
        m: &'a Q8Matrix,
        col: usize,
        row: usize,
        xq: &'a [i8],
        xs: &'a [f32],
    }

    impl Tile<'_> {
        /// Any tile shape, one output at a time through the 1×1 kernel.
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        unsafe fn each(&self, tile: usize, cols: usize) -> [[f32; COLS]; ROWS] {
            let mut sums = [[0f32; COLS]; ROWS];
            for i in 0..tile {
                for j in 0..cols {
                    let one = Tile { col: self.col + j, row: self.row + i, ..*self };
                    sums[i][j] = one.run::<1, 1>()[0][0];
                }
            }
            sums
        }

        /// R rows × C columns starting at (row, col).
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        unsafe fn run<const R: usize, const C: usize>(&self) -> [[f32; COLS]; ROWS] {
            let m = self.m;
            let (xq, xs) = (self.xq, self.xs);
            let blocks = m.k / BLOCK;
            let zero = _mm512_setzero_si512();
            let mut acc = [[_mm512_setzero_ps(); C]; R];
            for p in 0..blocks / 2 {
                let b = 2 * p;
                let mut xv = [zero; R];
                let mut xsv = [_mm512_setzero_ps(); R];
                for i in 0..R {
                    xv[i] = _mm512_loadu_si512(xq.as_ptr().add((self.row + i) * m.k + b * BLOCK) as *const __m512i);
                    let s = xs.as_ptr().add((self.row + i) * blocks + b);
                    xsv[i] = scales(*s, *s.add(1));
                }
                for j in 0..C {
                    let col = self.col + j;
                    let w = _mm512_loadu_si512(m.quants.as_ptr().add(col * m.k + b * BLOCK) as *const __m512i);
                    let negative = _mm512_movepi8_mask(w);
                    let aw = _mm512_abs_epi8(w);
                    let s = m.scales.as_ptr().add(col * blocks + b);
                    let wsv = scales(*s, *s.add(1));
                    for i in 0..R {
                        let sx = _mm512_mask_sub_epi8(xv[i], negative, zero, xv[i]);
                        let sums = _mm512_dpbusd_epi32(zero, aw, sx);
                        acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_mul_ps(wsv, xsv[i]), acc[i][j]);
                    }
                }
            }
            if blocks % 2 == 1 {
                // The last block alone, into lanes 0-7 only.
                let b = blocks - 1;
                for j in 0..C {
                    let col = self.col + j;
                    let w = _mm512_zextsi256_si512(_mm256_loadu_si256(m.quants.as_ptr().add(col * m.k + b * BLOCK) as *const __m256i));
                    let negative = _mm512_movepi8_mask(w);
                    let aw = _mm512_abs_epi8(w);
                    let ws = *m.scales.get_unchecked(col * blocks + b);
                    for i in 0..R {
                        let x = _mm512_zextsi256_si512(_mm256_loadu_si256(xq.as_ptr().add((self.row + i) * m.k + b * BLOCK) as *const __m256i));
                        let sx = _mm512_mask_sub_epi8(x, negative, zero, x);
                        let sums = _mm512_dpbusd_epi32(zero, aw, sx);
                        let scale = _mm512_set1_ps(ws * *xs.get_unchecked((self.row + i) * blocks + b));
                        acc[i][j] = _mm512_mask3_fmadd_ps(_mm512_cvtepi32_ps(sums), scale, acc[i][j], 0x00FF);
                    }
                }
            }
            let mut sums = [[0f32; COLS]; ROWS];
            for i in 0..R {
                for j in 0..C {
                    let mut lanes = [0f32; 16];
                    _mm512_storeu_ps(lanes.as_mut_ptr(), acc[i][j]);
                    sums[i][j] = sum_lanes(&lanes);
                }
            }
            sums
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
        // 96 columns: three blocks, so the odd last block is read on its own too.
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
        // The AVX2 path too, where the CPU has it (machines with AVX-512 dispatch past it).
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            let mut out = vec![0f32; 70 * 5];
            // SAFETY: checked just above.
            unsafe { avx2::columns(&m, 0, 70, &xq, &xs, 5, &mut out) };
            for (i, v) in out.iter().enumerate() {
                assert_eq!(v.to_bits(), m.reference(i / 5, &xq, &xs, i % 5).to_bits(), "AVX2, output {i}");
            }
        }
        let exact = x.matmul(&q.dequantize(&Device::Cpu).unwrap().t().unwrap()).unwrap().to_vec2::<f32>().unwrap().concat();
        let candle = candle_core::quantized::QMatMul::from_qtensor(q).unwrap();
        let theirs = candle_core::Module::forward(&candle, &x).unwrap().to_vec2::<f32>().unwrap().concat();
        let worst = |got: &[f32]| got.iter().zip(&exact).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let (ours, candles) = (worst(&fast.concat()), worst(&theirs));
        eprintln!("path: {:?}; max error {ours} here, {candles} candle", level());
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
