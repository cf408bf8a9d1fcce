//! Matrix products on the 8-bit block formats (Q8_0 and Q5_0) read as the GGUF file stores them,
//! for one row (a decoding step) or several at once (a batched step, a prompt).
//!
//! Why docpipe has its own: candle 0.11 computes each (row, column) pair on its own for these
//! types, so eight sequences cost eight times one, and it has no SIMD kernel for Q5_0 at all (2.1-2.5
//! GMAC/s). Here each weight block is loaded, and a Q5_0 block unpacked to 32 signed bytes, once for
//! a tile of rows. The weights stay in the file's own blocks: a decoding step reads every weight
//! once and is bound by memory bandwidth, so a Q5_0 block read as its 22 bytes instead of re-packed
//! as 36 bytes of Q8_0 is what a token costs.
//!
//! Dispatched at run time (checked once): AVX-512 with VNNI, else AVX2 with FMA and F16C, else
//! candle's kernel. Both SIMD paths and the portable reference below compute every output with the
//! same operations in the same order (16 lanes: even blocks in lanes 0-7, odd blocks in 8-15, each
//! lane an exact integer sum of four products converted and fused into its own f32 accumulator,
//! lanes summed in a fixed order), so they agree bit for bit, and a row's result never depends on
//! the other rows of the batch.

// The kernels index several tile arrays (accumulators, rows, columns) with one counter each.
#![allow(clippy::needless_range_loop)]

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Result, Tensor};
use std::sync::Arc;

const BLOCK: usize = 32;
/// Columns per parallel task (a multiple of 4).
const TASK_COLUMNS: usize = 64;
/// How far ahead of a block its column's stream is fetched into cache. A tile reads several
/// columns side by side, each a stream of a few hundred bytes, too short for the hardware
/// prefetcher to pick up before it ends: asking for the bytes 2 KiB ahead (in the tiles that
/// follow) made a decoding step 1.4-2x faster here (1,536-4,096 measured alike within noise).
/// The address is only a hint (past the matrix's end it fetches nothing), hence `wrapping_add`.
const PREFETCH: usize = 2048;

/// How a block's 32 values are stored (GGML's layouts, byte for byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// An f16 scale, then 32 i8 values.
    Q8_0,
    /// An f16 scale, 32 high bits (bit j for value j), then 16 bytes of low nibbles (value j in
    /// byte j's low half, value j + 16 in its high half); a value is its five bits minus 16.
    Q5_0,
}

impl Packing {
    fn bytes(self) -> usize {
        match self {
            Self::Q8_0 => 2 + BLOCK,
            Self::Q5_0 => 2 + 4 + BLOCK / 2,
        }
    }
}

/// A matrix (n outputs × k inputs) in its file's blocks: per output, k / 32 blocks in a row. The
/// bytes are shared: a model whose output matrix is its token table looks tokens up in them.
pub struct Int8Matrix {
    n: usize,
    k: usize,
    packing: Packing,
    data: Arc<Vec<u8>>,
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
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
            // The AVX-512 path loads and unpacks blocks with the AVX2 code.
            if avx2 && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vnni") {
                Some(Level::Avx512Vnni)
            } else if avx2 {
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

impl Int8Matrix {
    /// The matrix of a Q8_0 or Q5_0 tensor (n, k); None for other types or shapes.
    pub fn from_qtensor(t: &QTensor) -> Result<Option<Self>> {
        let (n, k) = t.shape().dims2()?;
        Self::from_bytes(t.dtype(), n, k, t.data()?.into_owned())
    }

    /// The matrix (n, k) of `data`, a tensor's bytes as a GGUF file stores them; None for other
    /// types or shapes.
    pub fn from_bytes(dtype: GgmlDType, n: usize, k: usize, data: Vec<u8>) -> Result<Option<Self>> {
        let packing = match dtype {
            GgmlDType::Q8_0 => Packing::Q8_0,
            GgmlDType::Q5_0 => Packing::Q5_0,
            _ => return Ok(None),
        };
        if k % BLOCK != 0 {
            return Ok(None);
        }
        let blocks = n * k / BLOCK;
        if data.len() != blocks * packing.bytes() {
            candle_core::bail!("{packing:?} data of {} bytes for {blocks} blocks", data.len());
        }
        Ok(Some(Self { n, k, packing, data: Arc::new(data) }))
    }

    /// Whether matrices of this type run on this kernel on this CPU.
    pub fn runs(dtype: GgmlDType) -> bool {
        available() && matches!(dtype, GgmlDType::Q8_0 | GgmlDType::Q5_0)
    }

    /// The stored bytes (per output, k / 32 blocks in a row).
    pub fn bytes(&self) -> &Arc<Vec<u8>> {
        &self.data
    }

    /// Inputs per output.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The block type the bytes are in.
    pub fn dtype(&self) -> GgmlDType {
        match self.packing {
            Packing::Q8_0 => GgmlDType::Q8_0,
            Packing::Q5_0 => GgmlDType::Q5_0,
        }
    }

    /// x (rows, k) times the matrix transposed: (rows, n).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(Self::forward_many(&[self], x)?.pop().expect("one product"))
    }

    /// x (rows, k) times each matrix transposed, in one parallel region: the rows are quantized
    /// once, and the small matrices of a layer (a 0.5B model's k and v have two tasks each) share
    /// the threads with the others instead of each ending on a wait for its slowest task. Every
    /// output is computed exactly as `forward` computes it.
    pub fn forward_many(matrices: &[&Self], x: &Tensor) -> Result<Vec<Tensor>> {
        let (rows, k) = x.dims2()?;
        if let Some(m) = matrices.iter().find(|m| m.k != k) {
            candle_core::bail!("{:?} product: input of {k} columns for a matrix of {}", m.packing, m.k);
        }
        if rows == 0 {
            return matrices.iter().map(|m| Tensor::zeros((0, m.n), candle_core::DType::F32, &Device::Cpu)).collect();
        }
        let (xq, xs) = quantize_rows(&x.flatten_all()?.to_vec1::<f32>()?, k);
        let flipped = if level() == Some(Level::Avx512Vnni) && rows > PANEL_ROWS { Flipped::new(&xq, &xs, rows, k) } else { Flipped::default() };
        let mut outputs: Vec<Vec<f32>> = matrices.iter().map(|m| vec![0f32; rows * m.n]).collect();
        let bases: Vec<usize> = outputs.iter_mut().map(|o| o.as_mut_ptr() as usize).collect();
        // Task t belongs to the last matrix whose first task is at or before t.
        let mut tasks = 0;
        let firsts: Vec<usize> = matrices
            .iter()
            .map(|m| {
                let first = tasks;
                tasks += m.n.div_ceil(TASK_COLUMNS);
                first
            })
            .collect();
        // candle's own worker pool, which its kernels in the same step use: a second pool would
        // have two sets of threads spinning against each other on the same cores.
        candle_core::utils::barrier_pool().execute_chunked(tasks, |range| {
            // A task computes its columns column-major and places them row-major itself: done
            // after the parallel region, that transposition was 7 % of reading a prompt, on one
            // thread while the other waited.
            let mut by_column = Vec::new();
            for task in range {
                let i = firsts.partition_point(|&f| f <= task) - 1;
                let m = matrices[i];
                let first = (task - firsts[i]) * TASK_COLUMNS;
                let columns = TASK_COLUMNS.min(m.n - first);
                let base = bases[i] as *mut f32;
                if rows == 1 {
                    // SAFETY: each task owns columns first..first+columns of its matrix's output, a
                    // range no other task touches, and `outputs` outlives the pool call.
                    let out = unsafe { std::slice::from_raw_parts_mut(base.add(first), columns) };
                    m.columns(first, columns, &xq, &xs, &flipped, rows, out);
                    continue;
                }
                by_column.clear();
                by_column.resize(columns * rows, 0f32);
                m.columns(first, columns, &xq, &xs, &flipped, rows, &mut by_column);
                for (c, column) in by_column.chunks_exact(rows).enumerate() {
                    for (r, &v) in column.iter().enumerate() {
                        // SAFETY: as above, (r, first + c) is this task's alone and in bounds.
                        unsafe { *base.add(r * m.n + first + c) = v };
                    }
                }
            }
        });
        outputs.into_iter().zip(matrices).map(|(out, m)| Tensor::from_vec(out, (rows, m.n), &Device::Cpu)).collect()
    }

    /// Outputs of columns first..first+count for every row, into out[(c - first) * rows + r].
    fn columns(&self, first: usize, count: usize, xq: &[i8], xs: &[f32], flipped: &Flipped, rows: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        match level() {
            // SAFETY: the CPU has the instructions each path is compiled for (checked by `level`).
            Some(Level::Avx512Vnni) => return unsafe { avx512::columns(self, first, count, xq, xs, flipped, rows, out) },
            Some(Level::Avx2) => return unsafe { avx2::columns(self, first, count, xq, xs, rows, out) },
            None => {}
        }
        for c in 0..count {
            for r in 0..rows {
                out[c * rows + r] = self.reference(first + c, xq, xs, r);
            }
        }
    }

    /// Where block b of output `column` starts in `data`.
    fn block(&self, column: usize, b: usize) -> usize {
        (column * (self.k / BLOCK) + b) * self.packing.bytes()
    }

    /// A block's scale and its 32 values, the portable way.
    fn values(&self, column: usize, b: usize) -> (f32, [i8; BLOCK]) {
        let p = &self.data[self.block(column, b)..][..self.packing.bytes()];
        let scale = half::f16::from_le_bytes([p[0], p[1]]).to_f32();
        let values = match self.packing {
            Packing::Q8_0 => std::array::from_fn(|j| p[2 + j] as i8),
            Packing::Q5_0 => {
                let high = u32::from_le_bytes([p[2], p[3], p[4], p[5]]);
                std::array::from_fn(|j| {
                    let low = if j < 16 { p[6 + j] & 0x0F } else { p[6 + j - 16] >> 4 };
                    (low as i8) + (((high >> j) & 1) as i8) * 16 - 16
                })
            }
        };
        (scale, values)
    }

    /// One output computed the portable way, with the fast paths' order of operations.
    fn reference(&self, column: usize, xq: &[i8], xs: &[f32], row: usize) -> f32 {
        let blocks = self.k / BLOCK;
        let mut lanes = [0f32; 16];
        for b in 0..blocks {
            let (ws, w) = self.values(column, b);
            let x = &xq[row * self.k + b * BLOCK..][..BLOCK];
            let scale = ws * xs[row * blocks + b];
            let half = &mut lanes[(b % 2) * 8..][..8];
            for (lane, acc) in half.iter_mut().enumerate() {
                let sum: i32 = (0..4).map(|i| w[lane * 4 + i] as i32 * x[lane * 4 + i] as i32).sum();
                *acc = (sum as f32).mul_add(scale, *acc);
            }
        }
        sum_lanes(&lanes)
    }
}

/// Rows the AVX-512 path reads straight from the matrix; with more it unpacks a panel.
const PANEL_ROWS: usize = 4;

/// The rows' activations as the AVX-512 panel path reads them, made once per product (not once per
/// task of 64 columns: the output matrix has 2,374 tasks): sign bits flipped (x + 128 as unsigned
/// bytes) and each pair of blocks' two scales spread over 16 lanes.
#[derive(Default)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Flipped {
    values: Vec<i8>,
    scales: Vec<[f32; 16]>,
}

impl Flipped {
    fn new(xq: &[i8], xs: &[f32], rows: usize, k: usize) -> Self {
        let blocks = k / BLOCK;
        let values = xq.iter().map(|&x| x ^ i8::MIN).collect();
        let scales = (0..rows).flat_map(|r| (0..blocks / 2).map(move |q| std::array::from_fn(|lane| xs[r * blocks + 2 * q + lane / 8]))).collect();
        Self { values, scales }
    }
}

/// The fixed order lanes are added in, on every path: odd blocks' lanes onto even blocks', then
/// pairwise.
fn sum_lanes(l: &[f32; 16]) -> f32 {
    let h: [f32; 8] = std::array::from_fn(|i| l[i] + l[i + 8]);
    ((h[0] + h[4]) + (h[2] + h[6])) + ((h[1] + h[5]) + (h[3] + h[7]))
}

/// Each row cut into blocks of 32 quantized to i8 with one scale (max |x| / 127), as GGML's Q8_0
/// (whose scale is an f16; here an f32).
fn quantize_rows(x: &[f32], k: usize) -> (Vec<i8>, Vec<f32>) {
    let mut quants = Vec::with_capacity(x.len());
    let mut scales = Vec::with_capacity(x.len() / BLOCK);
    for block in x.chunks_exact(BLOCK) {
        let max = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = max / 127.0;
        let inverse = if d > 0.0 { 1.0 / d } else { 0.0 };
        scales.push(d);
        quants.extend(block.iter().map(|v| quantize(v * inverse)));
    }
    debug_assert_eq!(quants.len() % k, 0);
    (quants, scales)
}

/// `x` rounded half away from zero, within ±127. Clamped first: a block of subnormal values has an
/// inverse too large to round to within ±127, and -128 would be negated wrongly by the AVX2 path's
/// sign trick. The same as `x.round().clamp(-127.0, 127.0) as i8` (test below) without `round`,
/// which x86-64's baseline has no instruction for: a libm call per value was 1 % of a batched step.
#[inline]
fn quantize(x: f32) -> i8 {
    let x = x.clamp(-127.0, 127.0);
    // Toward zero (NaN gives 0), then the fraction, exact for |x| ≤ 127, decides the rounding.
    let t = x as i32;
    let fraction = x - t as f32;
    (t + (fraction >= 0.5) as i32 - (fraction <= -0.5) as i32) as i8
}

/// Block loading shared by both SIMD paths: the scale and the 32 values as signed bytes.
#[cfg(target_arch = "x86_64")]
mod load {
    use super::Int8Matrix;
    use std::arch::x86_64::*;

    /// The f16 scale at `p`, as f32 (exact).
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn scale(p: *const u8) -> f32 {
        let bits = (p as *const u16).read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// The 32 values of the block at `p`: Q5_0 when `FIVE`, else Q8_0 (a parameter of the
    /// kernels, so that each packing gets its own compiled loop).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn values<const FIVE: bool>(p: *const u8) -> __m256i {
        match FIVE {
            false => _mm256_loadu_si256(p.add(2) as *const __m256i),
            true => {
                let nibbles = _mm_loadu_si128(p.add(6) as *const __m128i);
                let mask = _mm_set1_epi8(0x0F);
                let low = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(nibbles, 4), mask), _mm_and_si128(nibbles, mask));
                // Byte j gets the high-bit byte holding bit j (bytes 0-7 byte 0, ... 24-31 byte
                // 3), then keeps only bit j % 8 of it.
                let high = (p.add(2) as *const u32).read_unaligned();
                let spread = _mm256_shuffle_epi8(_mm256_set1_epi32(high as i32), _mm256_set_epi64x(0x0303_0303_0303_0303, 0x0202_0202_0202_0202, 0x0101_0101_0101_0101, 0));
                let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
                let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
                // value = five bits - 16: with the high bit clear that is the nibble with the top
                // four bits of the byte set (two's complement), with it set the nibble itself.
                _mm256_or_si256(low, _mm256_andnot_si256(set, _mm256_set1_epi8(0xF0u8 as i8)))
            }
        }
    }

    /// Block b of output `column`.
    #[inline]
    pub(super) unsafe fn at(m: &Int8Matrix, column: usize, b: usize) -> *const u8 {
        m.data.as_ptr().add(m.block(column, b))
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{load, sum_lanes, Int8Matrix, Packing, BLOCK};
    use std::arch::x86_64::*;

    /// Two columns against two rows at a time, even and odd blocks in their own accumulators:
    /// each weight block is loaded once for both rows (and from cache for the next pair).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn columns(m: &Int8Matrix, first: usize, count: usize, xq: &[i8], xs: &[f32], rows: usize, out: &mut [f32]) {
        match m.packing {
            Packing::Q8_0 => columns_of::<false>(m, first, count, xq, xs, rows, out),
            Packing::Q5_0 => columns_of::<true>(m, first, count, xq, xs, rows, out),
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn columns_of<const FIVE: bool>(m: &Int8Matrix, first: usize, count: usize, xq: &[i8], xs: &[f32], rows: usize, out: &mut [f32]) {
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
                        let p = load::at(m, first + c + j, b);
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(super::PREFETCH) as *const i8);
                        let w = load::values::<FIVE>(p);
                        let ws = load::scale(p);
                        let aw = _mm256_sign_epi8(w, w);
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
    use super::{load, sum_lanes, Flipped, Int8Matrix, Packing, BLOCK, PANEL_ROWS as ROWS};
    use std::arch::x86_64::*;

    const COLS: usize = 4;

    /// Two scales in one vector: `a` in lanes 0-7, `b` in 8-15.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn scales(a: f32, b: f32) -> __m512 {
        _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(a), _mm512_set1_ps(b))
    }

    /// -128 times the sum of each lane's four weights: what x + 128 adds to an exact product.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn offset(w: __m512i) -> __m512i {
        let zero = _mm512_setzero_si512();
        _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, _mm512_set1_epi8(-128), w))
    }

    /// Two consecutive blocks' values (the even block in bytes 0-31) and scales (lanes 0-7, 8-15).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2,f16c")]
    unsafe fn pair_of<const FIVE: bool>(even: *const u8, odd: *const u8) -> (__m512i, __m512) {
        let w = if FIVE {
            let nibbles = _mm256_set_m128i(_mm_loadu_si128(odd.add(6) as *const __m128i), _mm_loadu_si128(even.add(6) as *const __m128i));
            let mask = _mm256_set1_epi8(0x0F);
            let low = _mm256_and_si256(nibbles, mask);
            let high = _mm256_and_si256(_mm256_srli_epi16(nibbles, 4), mask);
            // Quarters [even 0-15, odd 0-15, even 16-31, odd 16-31] into block order.
            let w = _mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1);
            let w = _mm512_shuffle_i64x2(w, w, 0b11_01_10_00);
            // The 64 high bits are a byte mask as they are: a value whose bit is clear is its
            // nibble minus 16.
            let bits = (even.add(2) as *const u32).read_unaligned() as u64 | ((odd.add(2) as *const u32).read_unaligned() as u64) << 32;
            _mm512_mask_sub_epi8(w, !bits, w, _mm512_set1_epi8(16))
        } else {
            _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(even.add(2) as *const __m256i)), _mm256_loadu_si256(odd.add(2) as *const __m256i), 1)
        };
        let halves = (even as *const u16).read_unaligned() as u32 | ((odd as *const u16).read_unaligned() as u32) << 16;
        let two = _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(halves as i32)));
        (w, _mm512_permutexvar_ps(_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0), two))
    }

    /// Four columns against up to four rows at a time, two blocks (64 values) per instruction:
    /// VNNI multiplies and sums four byte pairs per lane in one step. It multiplies unsigned by
    /// signed bytes, so each activation goes in as x + 128 (its sign bit flipped) and 128 times
    /// the sum of each lane's four weights is taken off again: an exact integer product.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,f16c")]
    pub(super) unsafe fn columns(m: &Int8Matrix, first: usize, count: usize, xq: &[i8], xs: &[f32], flipped: &Flipped, rows: usize, out: &mut [f32]) {
        match m.packing {
            Packing::Q8_0 => columns_of::<false>(m, first, count, xq, xs, flipped, rows, out),
            Packing::Q5_0 => columns_of::<true>(m, first, count, xq, xs, flipped, rows, out),
        }
    }

    /// With more rows than one tile holds (a prompt, a batched step), four columns' blocks are
    /// unpacked once into a panel that every row tile then reads; with fewer (a decoding step),
    /// read straight from the matrix.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,f16c")]
    unsafe fn columns_of<const FIVE: bool>(m: &Int8Matrix, first: usize, count: usize, xq: &[i8], xs: &[f32], flipped: &Flipped, rows: usize, out: &mut [f32]) {
        let blocks = m.k / BLOCK;
        let use_panel = rows > ROWS;
        let pairs = blocks / 2;
        let size = |n: usize| if use_panel { n } else { 0 };
        let mut panel = Panel {
            values: vec![0i8; size(COLS * m.k)],
            scales: vec![0f32; size(COLS * blocks)],
            pair_scales: vec![_mm512_setzero_ps(); size(COLS * pairs)],
            offsets: vec![_mm512_setzero_si512(); size(COLS * pairs)],
        };
        let prepared = Prepared { flipped: &flipped.values, scales: &flipped.scales };
        let mut c = 0;
        while c < count {
            let cols = (count - c).min(COLS);
            if use_panel {
                panel.fill::<FIVE>(m, first + c, cols);
            }
            let mut r = 0;
            while r < rows {
                let tile = (rows - r).min(ROWS);
                // Fixed tile sizes let the accumulators live in registers.
                let at = Tile { m, panel: &panel, prepared, col: first + c, offset: 0, row: r, xq, xs };
                let sums: [[f32; COLS]; ROWS] = match (tile, cols, use_panel) {
                    (4, 4, true) => at.run::<4, 4, FIVE, true>(),
                    (3, 4, true) => at.run::<3, 4, FIVE, true>(),
                    (2, 4, true) => at.run::<2, 4, FIVE, true>(),
                    (1, 4, true) => at.run::<1, 4, FIVE, true>(),
                    (4, 4, false) => at.run::<4, 4, FIVE, false>(),
                    (1, 4, false) => at.run::<1, 4, FIVE, false>(),
                    (2, 4, false) => at.run::<2, 4, FIVE, false>(),
                    (3, 4, false) => at.run::<3, 4, FIVE, false>(),
                    (_, _, true) => at.each::<FIVE, true>(tile, cols),
                    (_, _, false) => at.each::<FIVE, false>(tile, cols),
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

    /// Up to four columns' values (k each, as i8) and block scales (as f32); per pair of blocks,
    /// the two scales spread over the lanes and -128 times each lane's weight sum.
    struct Panel {
        values: Vec<i8>,
        scales: Vec<f32>,
        pair_scales: Vec<__m512>,
        offsets: Vec<__m512i>,
    }

    /// The rows' activations as the panel path reads them (see `columns_of`).
    #[derive(Clone, Copy)]
    struct Prepared<'a> {
        flipped: &'a [i8],
        scales: &'a [[f32; 16]],
    }

    impl Panel {
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,f16c")]
        unsafe fn fill<const FIVE: bool>(&mut self, m: &Int8Matrix, first: usize, cols: usize) {
            let blocks = m.k / BLOCK;
            for j in 0..cols {
                for b in (0..blocks).step_by(2) {
                    let p = load::at(m, first + j, b);
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(super::PREFETCH) as *const i8);
                    if b + 1 < blocks {
                        let (w, wsv) = pair_of::<FIVE>(p, load::at(m, first + j, b + 1));
                        _mm512_storeu_si512(self.values.as_mut_ptr().add(j * m.k + b * BLOCK) as *mut __m512i, w);
                        let q = j * (blocks / 2) + b / 2;
                        self.pair_scales[q] = wsv;
                        self.offsets[q] = offset(w);
                    } else {
                        _mm256_storeu_si256(self.values.as_mut_ptr().add(j * m.k + b * BLOCK) as *mut __m256i, load::values::<FIVE>(p));
                    }
                }
                for b in 0..blocks {
                    *self.scales.get_unchecked_mut(j * blocks + b) = load::scale(load::at(m, first + j, b));
                }
            }
        }
    }

    struct Tile<'a> {
        m: &'a Int8Matrix,
        panel: &'a Panel,
        prepared: Prepared<'a>,
        /// The tile's first column in the matrix, and in the panel.
        col: usize,
        offset: usize,
        row: usize,
        xq: &'a [i8],
        xs: &'a [f32],
    }

    impl Tile<'_> {
        /// Any tile shape, one output at a time through the 1×1 kernel.
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,f16c")]
        unsafe fn each<const FIVE: bool, const PANEL: bool>(&self, tile: usize, cols: usize) -> [[f32; COLS]; ROWS] {
            let mut sums = [[0f32; COLS]; ROWS];
            for i in 0..tile {
                for j in 0..cols {
                    let one = Tile { col: self.col + j, offset: self.offset + j, row: self.row + i, ..*self };
                    sums[i][j] = one.run::<1, 1, FIVE, PANEL>()[0][0];
                }
            }
            sums
        }

        /// Blocks b and b + 1 of the tile's column j: values (even block in the low half), scales
        /// and offset.
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,f16c")]
        unsafe fn pair<const FIVE: bool, const PANEL: bool>(&self, j: usize, b: usize) -> (__m512i, __m512, __m512i) {
            if PANEL {
                let k = self.m.k;
                let w = _mm512_loadu_si512(self.panel.values.as_ptr().add((self.offset + j) * k + b * BLOCK) as *const __m512i);
                let q = (self.offset + j) * (k / BLOCK / 2) + b / 2;
                (w, *self.panel.pair_scales.get_unchecked(q), *self.panel.offsets.get_unchecked(q))
            } else {
                let even = load::at(self.m, self.col + j, b);
                _mm_prefetch::<_MM_HINT_T0>(even.wrapping_add(super::PREFETCH) as *const i8);
                let (w, wsv) = pair_of::<FIVE>(even, load::at(self.m, self.col + j, b + 1));
                (w, wsv, offset(w))
            }
        }

        /// Block b of the tile's column j alone.
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,f16c")]
        unsafe fn single<const FIVE: bool, const PANEL: bool>(&self, j: usize, b: usize) -> (__m256i, f32) {
            if PANEL {
                let (k, blocks) = (self.m.k, self.m.k / BLOCK);
                let w = _mm256_loadu_si256(self.panel.values.as_ptr().add((self.offset + j) * k + b * BLOCK) as *const __m256i);
                (w, *self.panel.scales.get_unchecked((self.offset + j) * blocks + b))
            } else {
                let p = load::at(self.m, self.col + j, b);
                (load::values::<FIVE>(p), load::scale(p))
            }
        }

        /// R rows × C columns starting at (row, col).
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,f16c")]
        unsafe fn run<const R: usize, const C: usize, const FIVE: bool, const PANEL: bool>(&self) -> [[f32; COLS]; ROWS] {
            let m = self.m;
            let (xq, xs) = (self.xq, self.xs);
            let blocks = m.k / BLOCK;
            let zero = _mm512_setzero_si512();
            let flip = _mm512_set1_epi8(-128);
            let mut acc = [[_mm512_setzero_ps(); C]; R];
            for pair in 0..blocks / 2 {
                let b = 2 * pair;
                let mut xv = [zero; R];
                let mut xsv = [_mm512_setzero_ps(); R];
                for i in 0..R {
                    let at = (self.row + i) * m.k + b * BLOCK;
                    if PANEL {
                        xv[i] = _mm512_loadu_si512(self.prepared.flipped.as_ptr().add(at) as *const __m512i);
                        xsv[i] = _mm512_loadu_ps(self.prepared.scales.get_unchecked((self.row + i) * (blocks / 2) + pair).as_ptr());
                    } else {
                        // x + 128 as an unsigned byte: x with its sign bit flipped.
                        xv[i] = _mm512_xor_si512(_mm512_loadu_si512(xq.as_ptr().add(at) as *const __m512i), flip);
                        let s = xs.as_ptr().add((self.row + i) * blocks + b);
                        xsv[i] = scales(*s, *s.add(1));
                    }
                }
                for j in 0..C {
                    let (w, wsv, offset) = self.pair::<FIVE, PANEL>(j, b);
                    for i in 0..R {
                        let sums = _mm512_dpbusd_epi32(offset, xv[i], w);
                        acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_mul_ps(wsv, xsv[i]), acc[i][j]);
                    }
                }
            }
            if blocks % 2 == 1 {
                // The last block alone, into lanes 0-7 only.
                let b = blocks - 1;
                for j in 0..C {
                    let (w, ws) = self.single::<FIVE, PANEL>(j, b);
                    let w = _mm512_zextsi256_si512(w);
                    let offset = offset(w);
                    for i in 0..R {
                        let x = _mm512_zextsi256_si512(_mm256_loadu_si256(xq.as_ptr().add((self.row + i) * m.k + b * BLOCK) as *const __m256i));
                        let sums = _mm512_dpbusd_epi32(offset, _mm512_xor_si512(x, flip), w);
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

    fn matrix(n: usize, k: usize, dtype: GgmlDType) -> QTensor {
        let values: Vec<f32> = (0..n * k).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i % 13) as f32)).collect();
        QTensor::quantize(&Tensor::from_vec(values, (n, k), &Device::Cpu).unwrap(), dtype).unwrap()
    }

    fn input(rows: usize, k: usize, seed: usize) -> Tensor {
        let values: Vec<f32> = (0..rows * k).map(|i| (((i + seed) * 104729 % 2000) as f32 / 1000.0 - 1.0) * 3.0).collect();
        Tensor::from_vec(values, (rows, k), &Device::Cpu).unwrap()
    }

    /// Each block's values and scale, read the portable way, are what candle's dequantization
    /// gives: the layouts are read right.
    #[test]
    fn blocks_hold_the_stored_values() {
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q5_0] {
            let q = matrix(3, 96, dtype);
            let m = Int8Matrix::from_qtensor(&q).unwrap().unwrap();
            let stored = q.dequantize(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
            for (c, row) in stored.iter().enumerate() {
                for b in 0..3 {
                    let (scale, values) = m.values(c, b);
                    for j in 0..BLOCK {
                        assert_eq!(values[j] as f32 * scale, row[b * BLOCK + j], "{dtype:?} column {c} value {}", b * BLOCK + j);
                    }
                }
            }
        }
    }

    /// The dispatched path (AVX-512 or AVX2, whichever the CPU has) and the AVX2 path equal the
    /// portable reference bit for bit, and are as close to the exact product of the stored weights
    /// as candle's kernel (both quantize the activations; GGML keeps their block scales as f16,
    /// this kernel as f32).
    #[test]
    fn dispatched_and_portable_paths_agree_and_match_candle() {
        // 3 rows are read straight from the matrix, 5 through an unpacked panel; 96 inputs are
        // three blocks, so the odd last block is read on its own too (candle's Q5_0 product takes
        // an even number of blocks only, so it is compared on 128).
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q5_0] {
            for (rows, k) in [(1, 96), (3, 96), (5, 96), (9, 96), (2, 128), (4, 128), (8, 128), (1, 32), (6, 32)] {
                check_paths(dtype, rows, k);
            }
        }
    }

    fn check_paths(dtype: GgmlDType, rows: usize, k: usize) {
        {
            let q = matrix(70, k, dtype);
            let m = Int8Matrix::from_qtensor(&q).unwrap().unwrap();
            let x = input(rows, k, 3);
            let fast = m.forward(&x).unwrap().to_vec2::<f32>().unwrap();
            let (xq, xs) = quantize_rows(&x.to_vec2::<f32>().unwrap().concat(), k);
            for (r, row) in fast.iter().enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    assert_eq!(v.to_bits(), m.reference(c, &xq, &xs, r).to_bits(), "{dtype:?} row {r} column {c}");
                }
            }
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
                let mut out = vec![0f32; 70 * rows];
                // SAFETY: checked just above.
                unsafe { avx2::columns(&m, 0, 70, &xq, &xs, rows, &mut out) };
                for (i, v) in out.iter().enumerate() {
                    assert_eq!(v.to_bits(), m.reference(i / rows, &xq, &xs, i % rows).to_bits(), "{dtype:?} AVX2, output {i}");
                }
            }
            if dtype == GgmlDType::Q5_0 && (k / BLOCK) % 2 == 1 {
                return;
            }
            let exact = x.matmul(&q.dequantize(&Device::Cpu).unwrap().t().unwrap()).unwrap().to_vec2::<f32>().unwrap().concat();
            let candle = candle_core::quantized::QMatMul::from_qtensor(q).unwrap();
            let theirs = candle_core::Module::forward(&candle, &x).unwrap().to_vec2::<f32>().unwrap().concat();
            let worst = |got: &[f32]| got.iter().zip(&exact).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            let (ours, candles) = (worst(&fast.concat()), worst(&theirs));
            eprintln!("{dtype:?}, {rows} rows of {k}, path {:?}: max error {ours} here, {candles} candle", level());
            assert!(ours <= candles * 1.5 + 1e-3, "{dtype:?}: {ours} against {candles}");
        }
    }

    /// Weights of -128 (which Q8_0 can store) and a block of subnormal activations go through every
    /// path alike.
    #[test]
    fn extreme_values_agree_on_every_path() {
        let (n, k) = (9, 64);
        let mut raw = Vec::new();
        for i in 0..n * k / BLOCK {
            raw.extend(half::f16::from_f32(0.5 + i as f32 / 7.0).to_le_bytes());
            raw.extend((0..BLOCK).map(|j| if (i + j) % 3 == 0 { 0x80u8 } else { (j * 37 + i) as u8 }));
        }
        let q = candle_core::quantized::ggml_file::qtensor_from_ggml(GgmlDType::Q8_0, &raw, vec![n, k], &Device::Cpu).unwrap();
        let m = Int8Matrix::from_qtensor(&q).unwrap().unwrap();
        assert!(m.values(0, 0).1.contains(&-128));
        let mut x = input(6, k, 5).to_vec2::<f32>().unwrap();
        for v in &mut x[2][..BLOCK] {
            *v *= 1e-39;
        }
        let x = Tensor::new(x, &Device::Cpu).unwrap();
        let fast = m.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        let (xq, xs) = quantize_rows(&x.to_vec2::<f32>().unwrap().concat(), k);
        assert!(xq.iter().all(|&v| v != i8::MIN));
        for (r, row) in fast.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                assert_eq!(v.to_bits(), m.reference(c, &xq, &xs, r).to_bits(), "row {r} column {c}");
            }
        }
        #[cfg(target_arch = "x86_64")]
        if level().is_some() {
            let mut out = vec![0f32; n * 6];
            // SAFETY: `level` found AVX2, FMA and F16C (the AVX-512 path requires them too).
            unsafe { avx2::columns(&m, 0, n, &xq, &xs, 6, &mut out) };
            for (i, v) in out.iter().enumerate() {
                assert_eq!(v.to_bits(), m.reference(i / 6, &xq, &xs, i % 6).to_bits(), "AVX2, output {i}");
            }
        }
    }

    #[test]
    fn quantizing_rounds_half_away_from_zero_within_127() {
        let mut values = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1e30, -1e30, 127.5, -127.5, 126.5, -126.5, 0.49999997, -0.49999997];
        values.extend((-13_000..=13_000).map(|i| i as f32 * 0.01));
        values.extend((-2_600..=2_600).map(|i| i as f32 * 0.05 + 0.5f32.powi(20)));
        for x in values {
            assert_eq!(super::quantize(x), x.round().clamp(-127.0, 127.0) as i8, "{x}");
        }
    }

    #[test]
    fn products_in_one_region_equal_products_alone() {
        let matrices = [(130, GgmlDType::Q5_0), (64, GgmlDType::Q8_0), (200, GgmlDType::Q5_0)].map(|(n, dtype)| Int8Matrix::from_qtensor(&matrix(n, 96, dtype)).unwrap().unwrap());
        let refs: Vec<&Int8Matrix> = matrices.iter().collect();
        for rows in [1, 7] {
            let x = input(rows, 96, 5);
            let together = Int8Matrix::forward_many(&refs, &x).unwrap();
            assert_eq!(together.len(), 3);
            for (m, y) in matrices.iter().zip(&together) {
                assert_eq!(y.to_vec2::<f32>().unwrap(), m.forward(&x).unwrap().to_vec2::<f32>().unwrap(), "{rows} rows, {} outputs", m.n);
            }
        }
        let wrong = input(1, 64, 5);
        assert!(Int8Matrix::forward_many(&refs, &wrong).is_err());
    }

    /// A row gives the same bits alone, in a pair, or among seven.
    #[test]
    fn a_rows_result_does_not_depend_on_the_batch() {
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q5_0] {
            let m = Int8Matrix::from_qtensor(&matrix(130, 64, dtype)).unwrap().unwrap();
            let x = input(7, 64, 11);
            let all = m.forward(&x).unwrap().to_vec2::<f32>().unwrap();
            for r in 0..7 {
                let alone = m.forward(&x.narrow(0, r, 1).unwrap()).unwrap().to_vec2::<f32>().unwrap();
                assert_eq!(alone[0], all[r], "{dtype:?} row {r}");
            }
        }
    }
}
