//! Matrix products on 8-bit values unpacked from GGUF's block formats (Q8_0, Q5_0, Q4_K and Q6_K)
//! as the file stores them, for one row (a decoding step) or several at once (a batched step, a
//! prompt).
//!
//! Why docpipe has its own: candle 0.11 computes each (row, column) pair on its own for these
//! types, so eight sequences cost eight times one, and it has no SIMD kernel for Q5_0 at all (2.1-2.5
//! GMAC/s). Here each weight block is loaded, and a Q5_0 block unpacked to 32 signed bytes, once for
//! a tile of rows. The weights stay in the file's own blocks: a decoding step reads every weight
//! once and is bound by memory bandwidth, so a Q5_0 block read as its 22 bytes instead of re-packed
//! as 36 bytes of Q8_0 is what a token costs.
//!
//! The K-quants (most of a Q4_K_M file's weights from 1.5B parameters up) run here too: candle
//! re-packs them at load into tiles of 6 (Q4_K) and 10 (Q6_K) bits per weight kept beside the
//! file's copy, which made the 1.5B model's peak twice the file (three times on an AVX-512 CPU).
//! Here they are re-laid once, in about as many bits as the file's 4.5 and 6.6, into tiles of
//! sixteen outputs (`tiles`) that replace the file's copy (a matrix of other shapes stays in the
//! file's order, Q4_K's packed scales unpacked per tile). Q5_0 (most of a 0.5B Q4_K_M file, whose
//! rows of 896 are no whole number of superblocks) is re-laid the same way, in its own 5.5 bits:
//! its prompt products ran 2.5-3x faster in tiles. Q8_0 stays in the file's order (a model's
//! output matrix, read for one row a sequence; a token table's bytes are shared with lookups).
//!
//! Dispatched at run time (checked once; `PIN` can name a slower path): AVX-512 with VNNI, else
//! AVX2 with FMA and F16C, else candle's kernel. The SIMD paths and the portable reference below
//! compute every output with the same operations in the same order (in the file's order, 16 lanes:
//! even blocks in lanes 0-7, odd blocks in 8-15, each lane an exact integer sum of four products
//! converted and fused into its own f32 accumulator, lanes summed in a fixed order; the K-quants'
//! lanes in the file's order are described at `reference_k`, the tiles' at `tiles::reference`), so
//! each layout's paths agree bit for bit, and a row's result never depends on the other rows of the
//! batch.

// The kernels index several tile arrays (accumulators, rows, columns) with one counter each.
#![allow(clippy::needless_range_loop)]

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Result, Tensor};
use std::sync::Arc;

mod tiles;

const BLOCK: usize = 32;
/// Columns per parallel task (a multiple of 4).
const TASK_COLUMNS: usize = 64;
const _: () = assert!(TASK_COLUMNS % tiles::WIDTH == 0);
/// How far ahead of a block its column's stream is fetched into cache. A tile reads several
/// columns side by side, each a stream of a few hundred bytes, too short for the hardware
/// prefetcher to pick up before it ends: asking for the bytes 2 KiB ahead (in the tiles that
/// follow) made a decoding step 1.4-2x faster here (1,536-4,096 measured alike within noise).
/// The address is only a hint (past the matrix's end it fetches nothing), hence `wrapping_add`.
const PREFETCH: usize = 2048;
/// The same for K-quant superblocks (144 and 210 bytes), each of whose cache lines is asked for:
/// with the 32-value blocks' 2 KiB and two lines per superblock the loads of a superblock's first
/// bytes were a one-row product's hottest instructions (perf annotate). 1.5B model, one sequence,
/// six alternating runs: 11.1 tokens/s with those, 12.1-12.8 with 8 KiB and every line, 12.2 with
/// 16 KiB; the 32-value blocks measured best at 2 KiB again (0.5B model, 4 to 16 KiB alike or
/// slower). In blocks that is 39 (Q6_K) to 93 (Q5_0) ahead.
const SUPERBLOCK_PREFETCH: usize = 8192;

/// How a block's 32 values are stored (GGML's layouts, byte for byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// An f16 scale, then 32 i8 values.
    Q8_0,
    /// An f16 scale, 32 high bits (bit j for value j), then 16 bytes of low nibbles (value j in
    /// byte j's low half, value j + 16 in its high half); a value is its five bits minus 16.
    Q5_0,
    /// Superblocks of eight blocks (256 values): an f16 scale d and an f16 d_min, twelve bytes
    /// packing each block's 6-bit scale and 6-bit min (see `scales_mins`), then 128 bytes of nibbles
    /// (per 64 values, byte j holds value j in its low half and value j + 32 in its high half); a
    /// value is d × scale × nibble − d_min × min.
    Q4K,
    /// Superblocks of 256 values: 128 bytes of low nibbles, 64 bytes of high bit pairs, sixteen
    /// i8 scales (one per 16 values), then an f16 scale d; a value is d × scale × (six bits − 32).
    /// Per 128 values: value j (of 32) of quarter q has its low four bits in byte (q % 2) × 32 + j,
    /// the low half for quarters 0 and 1, the high half for 2 and 3, and its top two in bits
    /// 2q, 2q + 1 of high byte j.
    Q6K,
}

const SUPERBLOCK: usize = 256;

impl Packing {
    /// Bytes of one stored block.
    fn bytes(self) -> usize {
        match self {
            Self::Q8_0 => 2 + BLOCK,
            Self::Q5_0 => 2 + 4 + BLOCK / 2,
            Self::Q4K => 2 + 2 + 12 + SUPERBLOCK / 2,
            Self::Q6K => SUPERBLOCK / 2 + SUPERBLOCK / 4 + SUPERBLOCK / 16 + 2,
        }
    }

    /// Values in one stored block, and the span of activations the kernel multiplies it with (one
    /// scale per span): K-quants come in superblocks of 256.
    fn span(self) -> usize {
        match self {
            Self::Q8_0 | Self::Q5_0 => BLOCK,
            Self::Q4K | Self::Q6K => SUPERBLOCK,
        }
    }
}

/// The eight blocks' 6-bit scales, then their eight mins, from a Q4_K superblock's twelve packed
/// bytes: blocks 0-3 in the low six bits of bytes 0-3 (scales) and 4-7 (mins); blocks 4-7 with
/// their low four bits in bytes 8-11 (scale in the low nibble, min in the high) and their top two
/// in the top bits of bytes 0-3 (scales) and 4-7 (mins). Four bytes at a time, as u32 lanes.
#[inline]
fn scales_mins(packed: &[u8]) -> [u8; 16] {
    let word = |i: usize| u32::from_le_bytes([packed[4 * i], packed[4 * i + 1], packed[4 * i + 2], packed[4 * i + 3]]);
    let (a, b, c) = (word(0), word(1), word(2));
    let (six, four, two) = (0x3F3F_3F3Fu32, 0x0F0F_0F0Fu32, 0x0303_0303u32);
    let parts = [a & six, (c & four) | ((a >> 6) & two) << 4, b & six, ((c >> 4) & four) | ((b >> 6) & two) << 4];
    let mut out = [0u8; 16];
    for (i, part) in parts.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&part.to_le_bytes());
    }
    out
}

/// A matrix (n outputs × k inputs) in its file's blocks, each output's in a row, or (K-quants,
/// `relaid`) in tiles. The file's bytes can be shared: a model whose output matrix is its token
/// table looks tokens up in them (`bytes`).
pub struct Int8Matrix {
    n: usize,
    k: usize,
    packing: Packing,
    layout: Layout,
    data: Arc<Vec<u8>>,
}

/// The order of the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// The file's: each output's blocks in a row.
    File,
    /// K-quants and Q5_0 in tiles of sixteen outputs (`tiles`).
    Tiles,
}

/// The instruction set the kernel runs with on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Avx512Vnni,
    Avx2,
}

/// The environment variable that pins a slower path than the CPU's fastest: `avx2` (on a CPU with
/// AVX-512 VNNI), or `candle` (candle's kernels for every type).
pub const PIN: &str = "DOCPIPE_KERNELS";

/// The fastest path this CPU has, if any, unless `PIN` names a slower one. docpipe's two paths give
/// the same bits for each of their four types; candle's kernels do not (and pick their own SIMD
/// level at run time, so theirs can differ between CPUs too). `candle` runs the models as a CPU
/// without AVX2 does; `avx2` measures that path on an AVX-512 machine. Another value is ignored,
/// with a warning.
pub fn level() -> Option<Level> {
    #[cfg(target_arch = "x86_64")]
    {
        static LEVEL: std::sync::OnceLock<Option<Level>> = std::sync::OnceLock::new();
        *LEVEL.get_or_init(|| {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
            // The AVX-512 path loads and unpacks blocks with the AVX2 code.
            let avx512 = avx2 && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vnni");
            let pin = std::env::var(PIN).ok();
            if let Some(other) = pin.as_deref().filter(|v| !["avx2", "candle"].contains(v)) {
                tracing::warn!(variable = PIN, value = other, "unknown kernel pin ignored (avx2, candle)");
            }
            match pin.as_deref() {
                Some("candle") => None,
                Some("avx2") if avx2 => Some(Level::Avx2),
                _ if avx512 => Some(Level::Avx512Vnni),
                _ if avx2 => Some(Level::Avx2),
                _ => None,
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

/// The path Q8_0, Q5_0, Q4_K and Q6_K products run on (on the CPU; other types and GPUs run on
/// candle), as provenance records it: `avx512-vnni`, `avx2` or `candle`.
pub fn path() -> &'static str {
    match level() {
        Some(Level::Avx512Vnni) => "avx512-vnni",
        Some(Level::Avx2) => "avx2",
        None => "candle",
    }
}

impl Int8Matrix {
    /// The matrix of a Q8_0, Q5_0, Q4_K or Q6_K tensor (n, k); None for other types or shapes.
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
            GgmlDType::Q4K => Packing::Q4K,
            GgmlDType::Q6K => Packing::Q6K,
            _ => return Ok(None),
        };
        if k % packing.span() != 0 {
            return Ok(None);
        }
        let blocks = n * k / packing.span();
        if data.len() != blocks * packing.bytes() {
            candle_core::bail!("{packing:?} data of {} bytes for {blocks} blocks", data.len());
        }
        Ok(Some(Self { n, k, packing, layout: Layout::File, data: Arc::new(data) }))
    }

    /// The matrix in the order docpipe's paths read fastest: K-quants and Q5_0 in tiles of sixteen outputs
    /// where the CPU has one of them (the file's copy is dropped, not kept beside), everything else
    /// as it is. Not for a matrix whose bytes a token table shares (`bytes`).
    pub fn relaid(self) -> Self {
        if level().is_some() {
            self.tiled()
        } else {
            self
        }
    }

    /// K-quants and Q5_0 with a whole number of tiles in tiles, whatever the CPU (the portable
    /// reference reads them too); other matrices as they are.
    fn tiled(self) -> Self {
        if self.packing == Packing::Q8_0 || self.n % tiles::WIDTH != 0 || self.layout == Layout::Tiles {
            return self;
        }
        let data = tiles::relay(&self);
        Self { layout: Layout::Tiles, data: Arc::new(data), ..self }
    }

    /// Whether the decoder runs matrices of this type on this kernel on this CPU (on every CPU with
    /// one of its paths: with AVX-512 VNNI, K-quants in tiles were measured faster than candle's
    /// re-packed VNNI kernels, README).
    pub fn runs(dtype: GgmlDType) -> bool {
        match dtype {
            GgmlDType::Q8_0 | GgmlDType::Q5_0 | GgmlDType::Q4K | GgmlDType::Q6K => available(),
            _ => false,
        }
    }

    /// The stored bytes in the file's order (per output, its blocks in a row); None once re-laid.
    pub fn bytes(&self) -> Option<&Arc<Vec<u8>>> {
        (self.layout == Layout::File).then_some(&self.data)
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
            Packing::Q4K => GgmlDType::Q4K,
            Packing::Q6K => GgmlDType::Q6K,
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
        // Each family of kernels gets the activations quantized its way (both when the matrices mix).
        let values = x.flatten_all()?.to_vec1::<f32>()?;
        let quantized = |span: usize| {
            if matrices.iter().any(|m| m.packing.span() == span) {
                quantize_rows(&values, span)
            } else {
                Activations::default()
            }
        };
        let (by_block, by_superblock) = (quantized(BLOCK), quantized(SUPERBLOCK));
        let panel = level() == Some(Level::Avx512Vnni) && rows > PANEL_ROWS && matrices.iter().any(|m| m.packing.span() == BLOCK && m.layout == Layout::File);
        let flipped = if panel { Flipped::new(&by_block.values, &by_block.scales, rows, k) } else { Flipped::default() };
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
                let x = if m.packing.span() == BLOCK { &by_block } else { &by_superblock };
                if rows == 1 {
                    // SAFETY: each task owns columns first..first+columns of its matrix's output, a
                    // range no other task touches, and `outputs` outlives the pool call.
                    let out = unsafe { std::slice::from_raw_parts_mut(base.add(first), columns) };
                    m.columns(first, columns, x, &flipped, rows, out);
                    continue;
                }
                by_column.clear();
                by_column.resize(columns * rows, 0f32);
                m.columns(first, columns, x, &flipped, rows, &mut by_column);
                // Row by row, so that the writes run along the output's lines (column by column
                // each wrote one value to a different line: 4.5 % of reading a prompt).
                for r in 0..rows {
                    // SAFETY: as above, row r's columns first..first+columns are this task's alone
                    // and in bounds.
                    let line = unsafe { std::slice::from_raw_parts_mut(base.add(r * m.n + first), columns) };
                    for (c, v) in line.iter_mut().enumerate() {
                        *v = by_column[c * rows + r];
                    }
                }
            }
        });
        outputs.into_iter().zip(matrices).map(|(out, m)| Tensor::from_vec(out, (rows, m.n), &Device::Cpu)).collect()
    }

    /// Outputs of columns first..first+count for every row, into out[(c - first) * rows + r].
    /// `x`: the rows quantized as this matrix's kernel takes them (spans of `Packing::span`).
    fn columns(&self, first: usize, count: usize, x: &Activations, flipped: &Flipped, rows: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        match level() {
            // SAFETY: as below; whole tiles, as every task's columns start at a multiple of
            // TASK_COLUMNS (of 16) and n is a multiple of 16 in tiles.
            Some(Level::Avx512Vnni) if self.layout == Layout::Tiles => return unsafe { tiles::columns::<true>(self, first, count, x, rows, out) },
            Some(Level::Avx2) if self.layout == Layout::Tiles => return unsafe { tiles::columns::<false>(self, first, count, x, rows, out) },
            // SAFETY: the CPU has the instructions each path is compiled for (checked by `level`;
            // an AVX-512 CPU has AVX2, FMA and F16C too).
            Some(Level::Avx512Vnni) if self.packing.span() == BLOCK && rows > AVX2_ROWS => return unsafe { avx512::columns(self, first, count, &x.values, &x.scales, flipped, rows, out) },
            Some(_) => return unsafe { avx2::columns(self, first, count, x, rows, out) },
            None => {}
        }
        for c in 0..count {
            for r in 0..rows {
                out[c * rows + r] = self.reference(first + c, x, r);
            }
        }
    }

    /// Where stored block b of output `column` starts in `data` (for Q4_K, superblock b).
    fn block(&self, column: usize, b: usize) -> usize {
        (column * (self.k / self.packing.span()) + b) * self.packing.bytes()
    }

    /// Block b's scale and its 32 values, the portable way (Q8_0 and Q5_0).
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
            Packing::Q4K | Packing::Q6K => unreachable!("superblocks are read by `sub_block`"),
        };
        (scale, values)
    }

    /// Block j (of eight, 32 values each) of superblock s of output `column`, the portable way: its
    /// values (Q4_K: the nibbles; Q6_K: the six bits, 32 more than the value they stand for) and
    /// the integer scales of its first and second 16 values (Q4_K has one per block, Q6_K one per 16).
    fn sub_block(&self, column: usize, s: usize, j: usize) -> ([i8; BLOCK], [i32; 2]) {
        let p = &self.data[self.block(column, s)..][..self.packing.bytes()];
        match self.packing {
            Packing::Q4K => {
                let scale = scales_mins(&p[4..16])[j];
                let nibbles = &p[16 + (j / 2) * BLOCK..][..BLOCK];
                let shift = if j % 2 == 0 { 0 } else { 4 };
                (std::array::from_fn(|i| ((nibbles[i] >> shift) & 0x0F) as i8), [scale as i32; 2])
            }
            Packing::Q6K => {
                let (half, quarter) = (j / 4, j % 4);
                let low = &p[half * 64 + (quarter % 2) * BLOCK..][..BLOCK];
                let high = &p[128 + half * BLOCK..][..BLOCK];
                let shift = if quarter < 2 { 0 } else { 4 };
                let values = std::array::from_fn(|i| (((low[i] >> shift) & 0x0F) | (((high[i] >> (2 * quarter)) & 3) << 4)) as i8);
                let at = 192 + half * 8 + quarter * 2;
                (values, [p[at] as i8 as i32, p[at + 1] as i8 as i32])
            }
            Packing::Q8_0 | Packing::Q5_0 => unreachable!("blocks of 32 are read by `values`"),
        }
    }

    /// Superblock s's d, and (Q4_K) its d_min and the eight blocks' mins.
    fn superblock_scales(&self, column: usize, s: usize) -> (f32, f32, [i32; 8]) {
        let p = &self.data[self.block(column, s)..][..self.packing.bytes()];
        let f16 = |at: usize| half::f16::from_le_bytes([p[at], p[at + 1]]).to_f32();
        match self.packing {
            Packing::Q4K => (f16(0), f16(2), std::array::from_fn(|j| scales_mins(&p[4..16])[8 + j] as i32)),
            _ => (f16(208), 0.0, [0; 8]),
        }
    }

    /// One output computed the portable way, with the fast paths' order of operations.
    fn reference(&self, column: usize, x: &Activations, row: usize) -> f32 {
        if self.layout == Layout::Tiles {
            return tiles::reference(self, column, x, row);
        }
        if self.packing.span() == SUPERBLOCK {
            return self.reference_k(column, x, row);
        }
        let (xq, xs) = (&x.values, &x.scales);
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

    /// A K-quant output, with the fast path's lanes: per superblock, eight exact integer lanes
    /// (lane l: values 4l to 4l + 3 of every block times their activations and their scale; for
    /// Q6_K less 32 × the scales of 16-value groups 2l and 2l + 1 times those groups' activation
    /// sums), each taken into its float lane with d times the activations' scale; a Q4_K
    /// superblock's mins times the activation blocks' sums in four lanes of their own (blocks 2l
    /// and 2l + 1) with d_min, taken off at the end.
    fn reference_k(&self, column: usize, x: &Activations, row: usize) -> f32 {
        let supers = self.k / SUPERBLOCK;
        let (mut products, mut offsets) = ([0f32; 8], [0f32; 4]);
        for s in 0..supers {
            let mut lanes = [0i32; 8];
            for j in 0..8 {
                let (w, scales) = self.sub_block(column, s, j);
                let xv = &x.values[row * self.k + s * SUPERBLOCK + j * BLOCK..][..BLOCK];
                for (l, lane) in lanes.iter_mut().enumerate() {
                    *lane += scales[l / 4] * (4 * l..4 * l + 4).map(|i| w[i] as i32 * xv[i] as i32).sum::<i32>();
                }
            }
            let at = row * supers + s;
            let (d, dmin, mins) = self.superblock_scales(column, s);
            if self.packing == Packing::Q6K {
                let p = &self.data[self.block(column, s)..][..self.packing.bytes()];
                let group = |g: usize| p[192 + g] as i8 as i32 * x.half_sums[at * 16 + g] as i32;
                for (l, lane) in lanes.iter_mut().enumerate() {
                    *lane -= 32 * (group(2 * l) + group(2 * l + 1));
                }
            }
            let xs = x.scales[at];
            for (product, &lane) in products.iter_mut().zip(&lanes) {
                *product = (lane as f32).mul_add(d * xs, *product);
            }
            if self.packing == Packing::Q4K {
                let block = |j: usize| mins[j] * x.block_sums[at * 8 + j] as i32;
                for (l, offset) in offsets.iter_mut().enumerate() {
                    *offset = ((block(2 * l) + block(2 * l + 1)) as f32).mul_add(dmin * xs, *offset);
                }
            }
        }
        sum_eight(&products) - sum_four(&offsets)
    }
}

/// Rows the AVX-512 path reads straight from the matrix; with more it unpacks a panel.
const PANEL_ROWS: usize = 4;

/// Rows up to which file-order Q8_0 and Q5_0 products take the AVX2 path on an AVX-512 CPU too
/// (the same bits: both paths sum in the same order). With one or two rows the AVX-512 path spends
/// a second VNNI instruction per block pair on the x + 128 correction; the AVX2 one has none. 0.5B
/// model (before its Q5_0 went into tiles), Xeon with AVX-512, step_bench alternating: one sequence
/// 41.1-43.4 -> 49.9-50.5 tokens/s, two 61.2-66.9 -> 77.6-80.5; three or more, and the prompt, alike.
const AVX2_ROWS: usize = 2;

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

/// The fixed order eight lanes are added in: a K-quant product's on every path, and attention's
/// dot products.
pub(super) fn sum_eight(l: &[f32; 8]) -> f32 {
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

/// The fixed order a Q4_K product's four offset lanes are added in, on every path.
fn sum_four(o: &[f32; 4]) -> f32 {
    (o[0] + o[2]) + (o[1] + o[3])
}

/// Rows of activations quantized for one family of kernels.
#[derive(Default)]
struct Activations {
    /// i8, row after row.
    values: Vec<i8>,
    /// One per span of each row.
    scales: Vec<f32>,
    /// Each 32 values' integer sum (what a Q4_K block's min and Q5_0's offset of 16 multiply), and
    /// each 16 values' (what Q6_K's offset of 32 times a scale multiplies); at most 32 × 127, exact
    /// in i16. The second for superblocks only.
    block_sums: Vec<i16>,
    half_sums: Vec<i16>,
}

/// Each row cut into spans of `span` values quantized to i8 with one scale (max |x| / 127): spans
/// of 32 as GGML's Q8_0 (whose scale is an f16; here an f32) for the 32-value formats, of 256 as
/// its Q8_K for the K-quants, whose per-block scales are small integers that fold into exact
/// integer sums over a whole superblock before one float step.
fn quantize_rows(x: &[f32], span: usize) -> Activations {
    let mut values = Vec::with_capacity(x.len());
    let mut scales = Vec::with_capacity(x.len() / span);
    for part in x.chunks_exact(span) {
        let max = part.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = max / 127.0;
        let inverse = if d > 0.0 { 1.0 / d } else { 0.0 };
        scales.push(d);
        values.extend(part.iter().map(|v| quantize(v * inverse)));
    }
    let sums = |size: usize| values.chunks_exact(size).map(|b| b.iter().map(|&q| q as i16).sum()).collect();
    let block_sums = sums(BLOCK);
    let half_sums = if span == SUPERBLOCK { sums(BLOCK / 2) } else { Vec::new() };
    Activations { values, scales, block_sums, half_sums }
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
    use super::{load, sum_eight, sum_four, sum_lanes, Activations, Int8Matrix, Packing, BLOCK, SUPERBLOCK};
    use std::arch::x86_64::*;

    /// Tiles of columns against rows, even and odd blocks in their own accumulators: each weight
    /// block is loaded and unpacked once for the tile's rows (and read from cache for the next).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn columns(m: &Int8Matrix, first: usize, count: usize, x: &Activations, rows: usize, out: &mut [f32]) {
        let (xq, xs) = (&x.values, &x.scales);
        match m.packing {
            Packing::Q8_0 => columns_of::<false>(m, first, count, xq, xs, rows, out),
            Packing::Q5_0 => columns_of::<true>(m, first, count, xq, xs, rows, out),
            Packing::Q4K => superblocks::<false>(m, first, count, x, rows, out),
            Packing::Q6K => superblocks::<true>(m, first, count, x, rows, out),
        }
    }

    /// K-quants (Q6_K when `SIX`, else Q4_K), two columns against up to four rows at a time. The
    /// weights are unsigned (Q4_K's nibbles; Q6_K's six bits, whose offset of 32 is taken off once
    /// per superblock with the activations' sums of 16) and multiply the signed activations
    /// directly; each block's small integer scale is applied by the instruction that sums the
    /// products, so a superblock ends in eight exact i32 lanes, each taken into its float lane.
    /// Q4_K's packed scales and mins are unpacked once per pair of columns, not per row tile.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn superblocks<const SIX: bool>(m: &Int8Matrix, first: usize, count: usize, x: &Activations, rows: usize, out: &mut [f32]) {
        let supers = m.k / SUPERBLOCK;
        // Per column and superblock: the eight blocks' scales, then their mins.
        let mut unpacked = vec![[0i16; 16]; if SIX { 0 } else { 2 * supers }];
        let mut c = 0;
        while c < count {
            let cols = (count - c).min(2);
            if !SIX {
                for j in 0..cols {
                    for s in 0..supers {
                        let packed = std::slice::from_raw_parts(load::at(m, first + c + j, s).add(4), 12);
                        let bytes = _mm_loadu_si128(super::scales_mins(packed).as_ptr() as *const __m128i);
                        _mm256_storeu_si256(unpacked[j * supers + s].as_mut_ptr() as *mut __m256i, _mm256_cvtepu8_epi16(bytes));
                    }
                }
            }
            let tile = SuperblockTile { m, x, unpacked: &unpacked, supers, first: first + c };
            let mut r = 0;
            while r < rows {
                // Each shape its own compiled loop (fixed counts keep the accumulators in registers).
                r += match (rows - r, cols) {
                    (1, 2) => tile.rows::<SIX, 1, 2>(r, c, rows, out),
                    (1, _) => tile.rows::<SIX, 1, 1>(r, c, rows, out),
                    (2 | 3, 2) => tile.rows::<SIX, 2, 2>(r, c, rows, out),
                    (2 | 3, _) => tile.rows::<SIX, 2, 1>(r, c, rows, out),
                    (_, 2) => tile.rows::<SIX, 4, 2>(r, c, rows, out),
                    _ => tile.rows::<SIX, 4, 1>(r, c, rows, out),
                };
            }
            c += cols;
        }
    }

    struct SuperblockTile<'a> {
        m: &'a Int8Matrix,
        x: &'a Activations,
        /// Q4_K: per column and superblock, the eight blocks' scales, then their mins.
        unpacked: &'a [[i16; 16]],
        supers: usize,
        /// The tile's first column in the matrix.
        first: usize,
    }

    impl SuperblockTile<'_> {
        /// R rows from `r` against C columns (the task's columns c..c + C), into
        /// out[(c + j) * rows + r + i]; returns R.
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn rows<const SIX: bool, const R: usize, const C: usize>(&self, r: usize, c: usize, rows: usize, out: &mut [f32]) -> usize {
            let (m, x, supers) = (self.m, self.x, self.supers);
            let lines = m.packing.bytes().div_ceil(64);
            let low = _mm256_set1_epi8(0x0F);
            let mut products = [[_mm256_setzero_ps(); C]; R];
            let mut offsets = [[_mm_setzero_ps(); C]; R];
            for s in 0..supers {
                let xv = |i: usize, at: usize| _mm256_loadu_si256(x.values.as_ptr().add((r + i) * m.k + s * SUPERBLOCK + at) as *const __m256i);
                for j in 0..C {
                    let p = load::at(m, self.first + j, s);
                    for line in 0..lines {
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(super::SUPERBLOCK_PREFETCH + 64 * line) as *const i8);
                    }
                    let mut sums = [_mm256_setzero_si256(); R];
                    let d;
                    if SIX {
                        d = load::scale(p.add(208));
                        let scales = p.add(192) as *const i8;
                        for half in 0..2 {
                            let high = _mm256_loadu_si256(p.add(128 + half * BLOCK) as *const __m256i);
                            for quarter in 0..4 {
                                let bits = _mm256_loadu_si256(p.add(half * 64 + (quarter % 2) * BLOCK) as *const __m256i);
                                let nibbles = if quarter < 2 { _mm256_and_si256(bits, low) } else { _mm256_and_si256(_mm256_srli_epi16(bits, 4), low) };
                                // Bits 2q, 2q + 1 of the high byte moved to bits 4 and 5.
                                let top = match quarter {
                                    0 => _mm256_slli_epi16(high, 4),
                                    1 => _mm256_slli_epi16(high, 2),
                                    2 => high,
                                    _ => _mm256_srli_epi16(high, 2),
                                };
                                let w = _mm256_or_si256(nibbles, _mm256_and_si256(top, _mm256_set1_epi8(0x30)));
                                let at = half * 8 + quarter * 2;
                                let scale = _mm256_set_m128i(_mm_set1_epi16(*scales.add(at + 1) as i16), _mm_set1_epi16(*scales.add(at) as i16));
                                for i in 0..R {
                                    let product = _mm256_maddubs_epi16(w, xv(i, (half * 4 + quarter) * BLOCK));
                                    sums[i] = _mm256_add_epi32(sums[i], _mm256_madd_epi16(product, scale));
                                }
                            }
                        }
                        // 32 × Σ scale × (its 16 activations' sum), off every row's sums.
                        let scales = _mm256_cvtepi8_epi16(_mm_loadu_si128(scales as *const __m128i));
                        for i in 0..R {
                            let half_sums = _mm256_loadu_si256(x.half_sums.as_ptr().add(((r + i) * supers + s) * 16) as *const __m256i);
                            sums[i] = _mm256_sub_epi32(sums[i], _mm256_slli_epi32(_mm256_madd_epi16(scales, half_sums), 5));
                        }
                    } else {
                        d = load::scale(p);
                        let scales = &self.unpacked[j * supers + s];
                        for chunk in 0..4 {
                            let q = _mm256_loadu_si256(p.add(16 + chunk * BLOCK) as *const __m256i);
                            let (lo, hi) = (_mm256_and_si256(q, low), _mm256_and_si256(_mm256_srli_epi16(q, 4), low));
                            let (even, odd) = (_mm256_set1_epi16(scales[2 * chunk]), _mm256_set1_epi16(scales[2 * chunk + 1]));
                            for i in 0..R {
                                let a = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, xv(i, 2 * chunk * BLOCK)), even);
                                let b = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xv(i, (2 * chunk + 1) * BLOCK)), odd);
                                sums[i] = _mm256_add_epi32(sums[i], _mm256_add_epi32(a, b));
                            }
                        }
                        let dmin = load::scale(p.add(2));
                        let mins = _mm_loadu_si128(scales.as_ptr().add(8) as *const __m128i);
                        for i in 0..R {
                            let block_sums = _mm_loadu_si128(x.block_sums.as_ptr().add(((r + i) * supers + s) * 8) as *const __m128i);
                            let taken = _mm_cvtepi32_ps(_mm_madd_epi16(mins, block_sums));
                            let xs = *x.scales.get_unchecked((r + i) * supers + s);
                            offsets[i][j] = _mm_fmadd_ps(taken, _mm_set1_ps(dmin * xs), offsets[i][j]);
                        }
                    }
                    for i in 0..R {
                        let xs = *x.scales.get_unchecked((r + i) * supers + s);
                        products[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[i]), _mm256_set1_ps(d * xs), products[i][j]);
                    }
                }
            }
            for i in 0..R {
                for j in 0..C {
                    let (mut lanes, mut taken) = ([0f32; 8], [0f32; 4]);
                    _mm256_storeu_ps(lanes.as_mut_ptr(), products[i][j]);
                    _mm_storeu_ps(taken.as_mut_ptr(), offsets[i][j]);
                    out[(c + j) * rows + r + i] = sum_eight(&lanes) - sum_four(&taken);
                }
            }
            R
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn columns_of<const FIVE: bool>(m: &Int8Matrix, first: usize, count: usize, xq: &[i8], xs: &[f32], rows: usize, out: &mut [f32]) {
        // Four rows or more (a prompt, a batch): one column against four rows at a time, a block's
        // unpacking shared by four (two columns of four rows would not fit the sixteen registers);
        // fewer: two columns against two rows.
        let mut c = 0;
        while c < count {
            let cols = if rows >= 4 { 1 } else { (count - c).min(2) };
            let tile = BlockTile { m, first: first + c, xq, xs, rows, c };
            let mut r = 0;
            while r < rows {
                r += match (rows - r, cols) {
                    (4.., _) => tile.rows::<FIVE, 4, 1>(r, out),
                    (2..=3, 2) => tile.rows::<FIVE, 2, 2>(r, out),
                    (2..=3, _) => tile.rows::<FIVE, 2, 1>(r, out),
                    (_, 2) => tile.rows::<FIVE, 1, 2>(r, out),
                    _ => tile.rows::<FIVE, 1, 1>(r, out),
                };
            }
            c += cols;
        }
    }

    /// Columns `first`.. (the task's c..) of a Q8_0/Q5_0 matrix against rows of `xq`.
    struct BlockTile<'a> {
        m: &'a Int8Matrix,
        first: usize,
        xq: &'a [i8],
        xs: &'a [f32],
        rows: usize,
        c: usize,
    }

    impl BlockTile<'_> {
        /// R rows from `r` against C columns, into out[(c + j) * rows + r + i]; returns R. Each
        /// output's operations are the same whatever the tile's shape.
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn rows<const FIVE: bool, const R: usize, const C: usize>(&self, r: usize, out: &mut [f32]) -> usize {
            let blocks = self.m.k / BLOCK;
            // [row][column] for even blocks, and for odd ones. Two arrays indexed by constants: with
            // the parity as a run-time index (`b % 2`) the accumulators lived on the stack, each
            // product a load, a fused multiply-add and a store (perf annotate: the stores were the
            // tile's hottest instructions).
            let (mut even, mut odd) = ([[_mm256_setzero_ps(); C]; R], [[_mm256_setzero_ps(); C]; R]);
            let mut b = 0;
            while b + 1 < blocks {
                self.block::<FIVE, R, C>(r, b, &mut even);
                self.block::<FIVE, R, C>(r, b + 1, &mut odd);
                b += 2;
            }
            if b < blocks {
                self.block::<FIVE, R, C>(r, b, &mut even);
            }
            for i in 0..R {
                for j in 0..C {
                    let mut lanes = [0f32; 16];
                    _mm256_storeu_ps(lanes.as_mut_ptr(), even[i][j]);
                    _mm256_storeu_ps(lanes.as_mut_ptr().add(8), odd[i][j]);
                    out[(self.c + j) * self.rows + r + i] = sum_lanes(&lanes);
                }
            }
            R
        }

        /// Block b of the tile's columns against its rows, into `acc` [row][column].
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn block<const FIVE: bool, const R: usize, const C: usize>(&self, r: usize, b: usize, acc: &mut [[__m256; C]; R]) {
            let (m, xq, xs) = (self.m, self.xq, self.xs);
            let blocks = m.k / BLOCK;
            let ones = _mm256_set1_epi16(1);
            let mut xv = [_mm256_setzero_si256(); R];
            for (i, v) in xv.iter_mut().enumerate() {
                *v = _mm256_loadu_si256(xq.as_ptr().add((r + i) * m.k + b * BLOCK) as *const __m256i);
            }
            for j in 0..C {
                let p = load::at(m, self.first + j, b);
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(super::PREFETCH) as *const i8);
                let w = load::values::<FIVE>(p);
                let ws = load::scale(p);
                let aw = _mm256_sign_epi8(w, w);
                for i in 0..R {
                    let sx = _mm256_sign_epi8(xv[i], w);
                    let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), ones);
                    let scale = _mm256_set1_ps(ws * *xs.get_unchecked((r + i) * blocks + b));
                    acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc[i][j]);
                }
            }
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
            Packing::Q4K | Packing::Q6K => unreachable!("K-quants run the tiles or the AVX2 path"),
        }
    }

    /// With more rows than one tile holds (a prompt, a batched step), four columns' blocks are
    /// unpacked once into a panel that every row tile then reads; with fewer (three or four: a
    /// batched decoding step; one or two take the AVX2 path, `AVX2_ROWS`), read straight from the
    /// matrix.
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
        for (dtype, k) in [(GgmlDType::Q8_0, 96), (GgmlDType::Q5_0, 96), (GgmlDType::Q4K, 512), (GgmlDType::Q6K, 512)] {
            let q = matrix(3, k, dtype);
            let m = Int8Matrix::from_qtensor(&q).unwrap().unwrap();
            let stored = q.dequantize(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
            for (c, row) in stored.iter().enumerate() {
                for b in 0..k / BLOCK {
                    let got: Vec<f32> = match dtype {
                        GgmlDType::Q4K | GgmlDType::Q6K => {
                            let (values, scales) = m.sub_block(c, b / 8, b % 8);
                            let (d, dmin, mins) = m.superblock_scales(c, b / 8);
                            // In candle's order: the block's scale times the value, less its offset.
                            let zero = if dtype == GgmlDType::Q6K { 32.0 } else { 0.0 };
                            (0..BLOCK).map(|j| d * scales[j / 16] as f32 * (values[j] as f32 - zero) - dmin * mins[b % 8] as f32).collect()
                        }
                        _ => {
                            let (scale, values) = m.values(c, b);
                            values.iter().map(|&v| v as f32 * scale).collect()
                        }
                    };
                    assert_eq!(got, row[b * BLOCK..][..BLOCK], "{dtype:?} column {c} block {b}");
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
        // On an AVX-512 CPU 1 and 2 rows take the AVX2 path, 3 and 4 are read straight from the
        // matrix, 5 and more through an unpacked panel; 96 inputs are
        // three blocks, so the odd last block is read on its own too (candle's Q5_0 product takes
        // an even number of blocks only, so it is compared on 128).
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q5_0] {
            for (rows, k) in [(1, 96), (3, 96), (5, 96), (9, 96), (2, 128), (4, 128), (8, 128), (1, 32), (6, 32)] {
                check_paths(dtype, rows, k);
            }
        }
        for dtype in [GgmlDType::Q4K, GgmlDType::Q6K] {
            for (rows, k) in [(1, 256), (3, 512), (5, 256), (9, 768)] {
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
            let xq = quantize_rows(&x.to_vec2::<f32>().unwrap().concat(), m.packing.span());
            for (r, row) in fast.iter().enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    assert_eq!(v.to_bits(), m.reference(c, &xq, r).to_bits(), "{dtype:?} row {r} column {c}");
                }
            }
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
                let mut out = vec![0f32; 70 * rows];
                // SAFETY: checked just above.
                unsafe { avx2::columns(&m, 0, 70, &xq, rows, &mut out) };
                for (i, v) in out.iter().enumerate() {
                    assert_eq!(v.to_bits(), m.reference(i / rows, &xq, i % rows).to_bits(), "{dtype:?} AVX2, output {i}");
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
        let xq = quantize_rows(&x.to_vec2::<f32>().unwrap().concat(), BLOCK);
        assert!(xq.values.iter().all(|&v| v != i8::MIN));
        for (r, row) in fast.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                assert_eq!(v.to_bits(), m.reference(c, &xq, r).to_bits(), "row {r} column {c}");
            }
        }
        #[cfg(target_arch = "x86_64")]
        if level().is_some() {
            let mut out = vec![0f32; n * 6];
            // SAFETY: `level` found AVX2, FMA and F16C (the AVX-512 path requires them too).
            unsafe { avx2::columns(&m, 0, n, &xq, 6, &mut out) };
            for (i, v) in out.iter().enumerate() {
                assert_eq!(v.to_bits(), m.reference(i / 6, &xq, i % 6).to_bits(), "AVX2, output {i}");
            }
        }
    }

    /// K-quant superblocks of arbitrary bytes (every scale, min and value pattern, negative Q6_K
    /// scales of -128 among them) give the same bits on every path, within rounding of the exact
    /// product of their dequantized values.
    #[test]
    fn arbitrary_superblocks_agree_on_every_path() {
        for dtype in [GgmlDType::Q4K, GgmlDType::Q6K] {
            let q = arbitrary_superblocks(dtype, 5, 512);
            let m = Int8Matrix::from_qtensor(&q).unwrap().unwrap();
            // One row (a decoding step's tiles) and three.
            check_against_reference_and_exact(&m, &q, &[1, 3]);
        }
    }

    /// The same in tiles of sixteen outputs (both SIMD paths; where the CPU has neither, the
    /// reference computes them): the tiles hold the file's values, and every row count gives the
    /// reference's bits. Q5_0 blocks of arbitrary bytes too (every value and fifth-bit pattern).
    #[test]
    fn tiles_agree_with_the_reference_and_the_exact_product() {
        for dtype in [GgmlDType::Q4K, GgmlDType::Q6K, GgmlDType::Q5_0] {
            let q = arbitrary_superblocks(dtype, 48, 768);
            let m = Int8Matrix::from_qtensor(&q).unwrap().unwrap().tiled();
            assert_eq!(m.layout, Layout::Tiles);
            assert!(m.bytes().is_none(), "a re-laid matrix offers no file bytes to a token table");
            check_against_reference_and_exact(&m, &q, &[1, 2, 3, 4, 5, 9]);
            // The AVX2 path on its own (the dispatched one above is AVX-512 where the CPU has it).
            #[cfg(target_arch = "x86_64")]
            if level().is_some() {
                for rows in [1, 2, 3, 4, 5, 9] {
                    let x = input(rows, 768, 7);
                    let xq = quantize_rows(&x.to_vec2::<f32>().unwrap().concat(), m.packing.span());
                    let mut out = vec![0f32; 48 * rows];
                    // SAFETY: `level` found AVX2, FMA and F16C; the matrix is in tiles.
                    unsafe { tiles::columns::<false>(&m, 0, 48, &xq, rows, &mut out) };
                    for (i, v) in out.iter().enumerate() {
                        assert_eq!(v.to_bits(), m.reference(i / rows, &xq, i % rows).to_bits(), "{dtype:?} AVX2 tiles, {rows} rows, output {i}");
                    }
                }
            }
            // A row's result is the same alone as among nine.
            let x = input(9, 768, 2);
            let all = m.forward(&x).unwrap().to_vec2::<f32>().unwrap();
            for r in [0, 4, 8] {
                let alone = m.forward(&x.narrow(0, r, 1).unwrap()).unwrap().to_vec2::<f32>().unwrap();
                assert_eq!(alone[0], all[r], "{dtype:?} row {r}");
            }
        }
        // Q8_0, and a matrix whose outputs are no whole number of tiles, stay as they are.
        assert_eq!(Int8Matrix::from_qtensor(&matrix(32, 64, GgmlDType::Q8_0)).unwrap().unwrap().tiled().layout, Layout::File);
        assert_eq!(Int8Matrix::from_qtensor(&arbitrary_superblocks(GgmlDType::Q4K, 5, 256)).unwrap().unwrap().tiled().layout, Layout::File);
        assert_eq!(Int8Matrix::from_qtensor(&arbitrary_superblocks(GgmlDType::Q5_0, 24, 64)).unwrap().unwrap().tiled().layout, Layout::File);
    }

    /// An n × k K-quant (or Q5_0) tensor of arbitrary bytes (every scale, min and value pattern,
    /// negative Q6_K scales of -128 among them) with finite superblock (block) scales.
    fn arbitrary_superblocks(dtype: GgmlDType, n: usize, k: usize) -> QTensor {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut byte = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        };
        let size = dtype.type_size();
        let mut raw: Vec<u8> = (0..n * k / dtype.block_size() * size).map(|_| byte()).collect();
        for (i, block) in raw.chunks_exact_mut(size).enumerate() {
            // Finite scales: d (and Q4_K's d_min) where each type keeps them.
            let scale = half::f16::from_f32(0.01 + i as f32 / 300.0).to_le_bytes();
            let at = if dtype == GgmlDType::Q6K { size - 2 } else { 0 };
            block[at..at + 2].copy_from_slice(&scale);
            if dtype == GgmlDType::Q4K {
                block[2..4].copy_from_slice(&half::f16::from_f32(0.003 * i as f32).to_le_bytes());
            }
            if dtype == GgmlDType::Q6K && i == 0 {
                block[192] = 0x80;
            }
        }
        candle_core::quantized::ggml_file::qtensor_from_ggml(dtype, &raw, vec![n, k], &Device::Cpu).unwrap()
    }

    /// `m` (holding `q`'s values) on each row count: the reference's bits, within rounding of the
    /// exact product of the dequantized values.
    fn check_against_reference_and_exact(m: &Int8Matrix, q: &QTensor, row_counts: &[usize]) {
        let k = m.k;
        let weights = q.dequantize(&Device::Cpu).unwrap();
        // Rounding each activation to within half its span's step (max |x| / 254) moves an
        // output by at most that times the column's sum of |weights|.
        let weight_sums = weights.abs().unwrap().sum(1).unwrap().to_vec1::<f32>().unwrap();
        for &rows in row_counts {
            let x = input(rows, k, 7);
            let fast = m.forward(&x).unwrap().to_vec2::<f32>().unwrap();
            let xq = quantize_rows(&x.to_vec2::<f32>().unwrap().concat(), m.packing.span());
            let exact = x.matmul(&weights.t().unwrap()).unwrap().to_vec2::<f32>().unwrap();
            let largest = x.abs().unwrap().max(1).unwrap().to_vec1::<f32>().unwrap();
            for (r, row) in fast.iter().enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    assert_eq!(v.to_bits(), m.reference(c, &xq, r).to_bits(), "{:?} {:?}, {rows} rows: row {r} column {c}", m.packing, m.layout);
                    let bound = weight_sums[c] * largest[r] / 254.0 * 1.01 + 1e-3;
                    assert!((v - exact[r][c]).abs() <= bound, "{:?} {:?} row {r} column {c}: {v} against {}, bound {bound}", m.packing, m.layout, exact[r][c]);
                }
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
        let matrices = [(130, GgmlDType::Q5_0), (64, GgmlDType::Q8_0), (200, GgmlDType::Q4K), (70, GgmlDType::Q6K), (30, GgmlDType::Q5_0)].map(|(n, dtype)| Int8Matrix::from_qtensor(&matrix(n, 256, dtype)).unwrap().unwrap());
        let refs: Vec<&Int8Matrix> = matrices.iter().collect();
        for rows in [1, 7] {
            let x = input(rows, 256, 5);
            let together = Int8Matrix::forward_many(&refs, &x).unwrap();
            assert_eq!(together.len(), 5);
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
        for (dtype, k) in [(GgmlDType::Q8_0, 64), (GgmlDType::Q5_0, 64), (GgmlDType::Q4K, 256), (GgmlDType::Q6K, 256)] {
            let m = Int8Matrix::from_qtensor(&matrix(130, k, dtype)).unwrap().unwrap();
            let x = input(7, k, 11);
            let all = m.forward(&x).unwrap().to_vec2::<f32>().unwrap();
            for r in 0..7 {
                let alone = m.forward(&x.narrow(0, r, 1).unwrap()).unwrap().to_vec2::<f32>().unwrap();
                assert_eq!(alone[0], all[r], "{dtype:?} row {r}");
            }
        }
    }
}
