//! K-quant and Q5_0 matrices re-laid in tiles of sixteen outputs side by side, one per 32-bit lane
//! (of one AVX-512 vector, or two AVX2 ones).
//!
//! In the file's order (one output's superblocks after another) each product ends in lanes that
//! must be summed across, and every block's integer scale costs an instruction per row. Here a
//! tile holds sixteen outputs' values for one superblock, four consecutive values of each output
//! in one lane: one VNNI instruction multiplies them by four activations broadcast to every lane
//! and adds into sixteen outputs at once, and a block's scales are one vector for sixteen outputs.
//! `qbench`, 1.5B model, layer 0, 100 rows: the file-order kernel ran Q4_K at 0.41-0.47x candle's
//! re-packed tiles (which keep a second, larger copy beside the file's). The re-laid tiles replace
//! the file's copy and are about as small (Q4_K 4.625 bits per weight against 4.5, Q6_K 6.5625 as
//! stored).
//!
//! Each output's float steps are fixed (see `reference`): per block (Q4_K) or 16 values (Q6_K) an
//! exact integer dot product times d × its scale, fused into the superblock's sum, which is fused
//! times the activations' scale into the output; the offsets (Q4_K's mins, Q6_K's 32) are exact
//! integer sums per superblock, taken off at the end. Both SIMD paths and the portable reference
//! agree bit for bit, and no output depends on the other rows of the batch. On AVX2 (no VNNI) the
//! multiplies cost what they did in the file's order, but each superblock's float steps, the
//! scales and the offsets are done for eight outputs at once: 1.5B model, AVX2 path on a Xeon,
//! step_bench alternating: prompt 60.9-62.3 -> 103.6-106.4 tokens/s, eight sequences 48.6-50.5 ->
//! 60.6-61.1, two alike, one 18.4-19.0 -> 17.8-18.1.
//!
//! Q5_0 tiles hold sixteen outputs × one block of 32 values, as five-bit unsigned values (the
//! file's value plus 16) with the scales beside: `qbench`, 0.5B model, layer 0, against the
//! file-order kernels of the same CPU (AVX-512): ffn_gate 4864 × 896, 100 rows 6.7 -> 2.3-2.7 ms,
//! 8 rows 0.81 -> 0.18-0.21, one 0.20 -> 0.06 (from cache; a decoding step is bound by memory).

use super::{Activations, Int8Matrix, Packing, BLOCK, SUPERBLOCK};

/// Outputs per tile: one per 32-bit lane of a 512-bit vector.
pub(super) const WIDTH: usize = 16;

/// The most rows a kernel takes at once.
#[cfg(target_arch = "x86_64")]
const ROWS: usize = 8;

/// Where a tile's parts start (bytes), and its size. Q4_K: d and d_min (f16 per output), the eight
/// blocks' scales ([block][output], u8), their mins by pairs of blocks ([pair][output][2], u8), then
/// the nibbles. Q6_K: d, the sixteen scales by pairs of 16-value groups ([pair][output][2], i8), the
/// low four bits, then the top two. Q5_0 (one block of 32 values): the scales, the low four bits of
/// each value, then the fifth bits.
mod at {
    pub const D: usize = 0;
    pub const DMIN: usize = 32;
    pub const Q4K_SCALES: usize = 64;
    pub const Q4K_MINS: usize = 192;
    pub const Q4K_NIBBLES: usize = 320;
    pub const Q4K_SIZE: usize = 320 + 2048;
    pub const Q6K_SCALES: usize = 32;
    pub const Q6K_LOW: usize = 288;
    pub const Q6K_HIGH: usize = 288 + 2048;
    pub const Q6K_SIZE: usize = 288 + 2048 + 1024;
    pub const Q5_NIBBLES: usize = 32;
    pub const Q5_HIGH: usize = 32 + 256;
    pub const Q5_SIZE: usize = 32 + 256 + 64;
}

/// Bytes of one tile (sixteen outputs, one superblock or, Q5_0, one block).
pub(super) fn tile_bytes(packing: Packing) -> usize {
    match packing {
        Packing::Q4K => at::Q4K_SIZE,
        Packing::Q6K => at::Q6K_SIZE,
        Packing::Q5_0 => at::Q5_SIZE,
        Packing::Q8_0 => unreachable!("Q8_0 is not re-laid"),
    }
}

/// Where tile (t, s) starts: a tile column's spans (superblocks, or Q5_0's blocks) one after
/// another, so that a task reads one stream.
fn tile(k: usize, packing: Packing, t: usize, s: usize) -> usize {
    (t * (k / packing.span()) + s) * tile_bytes(packing)
}

/// The four bits (Q4_K) or six bits (Q6_K) of each value, 256 per superblock, as the file stores
/// them (for Q6_K 32 more than the value they stand for), and each block's two integer scales (of
/// its first and second 16 values; Q4_K's are one scale twice).
fn stored_values(m: &Int8Matrix, column: usize, s: usize) -> ([u8; SUPERBLOCK], [[i32; 2]; 8]) {
    let mut values = [0u8; SUPERBLOCK];
    let mut scales = [[0; 2]; 8];
    for (j, scale) in scales.iter_mut().enumerate() {
        let (block, block_scales) = m.sub_block(column, s, j);
        for (v, &b) in values[j * BLOCK..][..BLOCK].iter_mut().zip(&block) {
            *v = b as u8;
        }
        *scale = block_scales;
    }
    (values, scales)
}

/// Byte j of lane (g, c) for a run of eight values: value j in the low half, j + 4 in the high.
fn nibble_pairs(values: &[u8], out: &mut [u8]) {
    for j in 0..4 {
        out[j] = (values[j] & 0x0F) | (values[j + 4] & 0x0F) << 4;
    }
}

/// The tiles of a K-quant or Q5_0 matrix `m` in the file's order (its n a multiple of `WIDTH`).
pub(super) fn relay(m: &Int8Matrix) -> Vec<u8> {
    let (n, k, packing) = (m.n, m.k, m.packing);
    let spans = k / packing.span();
    let mut out = vec![0u8; n / WIDTH * spans * tile_bytes(packing)];
    for t in 0..n / WIDTH {
        for s in 0..spans {
            let tile = &mut out[self::tile(k, packing, t, s)..][..tile_bytes(packing)];
            for c in 0..WIDTH {
                let column = t * WIDTH + c;
                if packing == Packing::Q5_0 {
                    relay_block(m, column, s, c, tile);
                    continue;
                }
                let (values, scales) = stored_values(m, column, s);
                let (d, dmin, mins) = m.superblock_scales(column, s);
                tile[at::D + 2 * c..][..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
                match packing {
                    Packing::Q4K => {
                        tile[at::DMIN + 2 * c..][..2].copy_from_slice(&half::f16::from_f32(dmin).to_le_bytes());
                        for j in 0..8 {
                            tile[at::Q4K_SCALES + j * WIDTH + c] = scales[j][0] as u8;
                            tile[at::Q4K_MINS + (j / 2) * 2 * WIDTH + 2 * c + j % 2] = mins[j] as u8;
                        }
                        for g in 0..SUPERBLOCK / 8 {
                            nibble_pairs(&values[8 * g..], &mut tile[at::Q4K_NIBBLES + (g * WIDTH + c) * 4..][..4]);
                        }
                    }
                    Packing::Q6K => {
                        for (j, scales) in scales.iter().enumerate() {
                            // Groups 2j and 2j + 1 are pair j.
                            tile[at::Q6K_SCALES + j * 2 * WIDTH + 2 * c] = scales[0] as i8 as u8;
                            tile[at::Q6K_SCALES + j * 2 * WIDTH + 2 * c + 1] = scales[1] as i8 as u8;
                        }
                        for g in 0..SUPERBLOCK / 8 {
                            nibble_pairs(&values[8 * g..], &mut tile[at::Q6K_LOW + (g * WIDTH + c) * 4..][..4]);
                        }
                        // Per 16 values h: byte j holds the top two bits of values 16h + 4q + j in
                        // its bits 2q and 2q + 1.
                        for h in 0..SUPERBLOCK / 16 {
                            for j in 0..4 {
                                let byte = (0..4).fold(0u8, |b, q| b | (values[16 * h + 4 * q + j] >> 4) << (2 * q));
                                tile[at::Q6K_HIGH + (h * WIDTH + c) * 4 + j] = byte;
                            }
                        }
                    }
                    Packing::Q8_0 | Packing::Q5_0 => unreachable!("laid out above, or not re-laid"),
                }
            }
        }
    }
    out
}

/// Q5_0 block b of output `column` into lane c of its tile: the scale; the five bits of each value
/// (the value plus 16, 0-31), the low four in nibble runs of eight values as the K-quants', the
/// fifth of value 4v + j in bit v of byte j of the lane (v = 0-7): one 16-bit shift brings run v's
/// fifth bits to bit 4 of every byte at once.
fn relay_block(m: &Int8Matrix, column: usize, b: usize, c: usize, tile: &mut [u8]) {
    let (scale, values) = m.values(column, b);
    tile[at::D + 2 * c..][..2].copy_from_slice(&half::f16::from_f32(scale).to_le_bytes());
    let five: [u8; BLOCK] = std::array::from_fn(|i| (values[i] + 16) as u8);
    for g in 0..BLOCK / 8 {
        nibble_pairs(&five[8 * g..], &mut tile[at::Q5_NIBBLES + (g * WIDTH + c) * 4..][..4]);
    }
    for j in 0..4 {
        tile[at::Q5_HIGH + 4 * c + j] = (0..8).fold(0u8, |byte, v| byte | (five[4 * v + j] >> 4) << v);
    }
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Value i (0-255, Q5_0 0-31) of lane c in a tile, read back from its nibbles (and top bits).
fn value(packing: Packing, tile: &[u8], c: usize, i: usize) -> i32 {
    let (g, j) = (i / 8, i % 8);
    let base = match packing {
        Packing::Q4K => at::Q4K_NIBBLES,
        Packing::Q5_0 => at::Q5_NIBBLES,
        _ => at::Q6K_LOW,
    };
    let byte = tile[base + (g * WIDTH + c) * 4 + j % 4];
    let low = if j < 4 { byte & 0x0F } else { byte >> 4 };
    match packing {
        Packing::Q4K => return low as i32,
        Packing::Q5_0 => return (low | ((tile[at::Q5_HIGH + 4 * c + i % 4] >> (i / 4)) & 1) << 4) as i32,
        _ => {}
    }
    let (h, q, j) = (i / 16, (i % 16) / 4, i % 4);
    let top = (tile[at::Q6K_HIGH + (h * WIDTH + c) * 4 + j] >> (2 * q)) & 3;
    (low | top << 4) as i32
}

/// One output the portable way, in the SIMD path's order of operations.
pub(super) fn reference(m: &Int8Matrix, column: usize, x: &Activations, row: usize) -> f32 {
    let (k, packing) = (m.k, m.packing);
    if packing == Packing::Q5_0 {
        return reference_blocks(m, column, x, row);
    }
    let supers = k / SUPERBLOCK;
    let (t, c) = (column / WIDTH, column % WIDTH);
    let (mut sum, mut offset) = (0f32, 0f32);
    for s in 0..supers {
        let tile = &m.data[tile(k, packing, t, s)..][..tile_bytes(packing)];
        let xv = &x.values[row * k + s * SUPERBLOCK..][..SUPERBLOCK];
        let at_x = row * supers + s;
        let xs = x.scales[at_x];
        let d = f16_at(tile, at::D + 2 * c);
        let dot = |from: usize, len: usize| (from..from + len).map(|i| value(packing, tile, c, i) * xv[i] as i32).sum::<i32>();
        let mut superblock = 0f32;
        let taken = match packing {
            Packing::Q4K => {
                for b in 0..8 {
                    let scale = d * tile[at::Q4K_SCALES + b * WIDTH + c] as f32;
                    superblock = (dot(b * BLOCK, BLOCK) as f32).mul_add(scale, superblock);
                }
                let mins: i32 = (0..8).map(|b| tile[at::Q4K_MINS + (b / 2) * 2 * WIDTH + 2 * c + b % 2] as i32 * x.block_sums[at_x * 8 + b] as i32).sum();
                (mins as f32, f16_at(tile, at::DMIN + 2 * c))
            }
            _ => {
                let scale = |g: usize| tile[at::Q6K_SCALES + (g / 2) * 2 * WIDTH + 2 * c + g % 2] as i8 as i32;
                for g in 0..16 {
                    superblock = (dot(g * 16, 16) as f32).mul_add(d * scale(g) as f32, superblock);
                }
                let sums: i32 = (0..16).map(|g| scale(g) * x.half_sums[at_x * 16 + g] as i32).sum();
                ((32 * sums) as f32, d)
            }
        };
        sum = superblock.mul_add(xs, sum);
        offset = taken.0.mul_add(taken.1 * xs, offset);
    }
    sum - offset
}

/// A Q5_0 output: per block, the exact integer dot product of the five-bit values with the
/// activations, less 16 times the activations' sum (the values' offset), fused times the weights'
/// scale times the activations' into the output.
fn reference_blocks(m: &Int8Matrix, column: usize, x: &Activations, row: usize) -> f32 {
    let (k, packing) = (m.k, m.packing);
    let blocks = k / BLOCK;
    let (t, c) = (column / WIDTH, column % WIDTH);
    let mut sum = 0f32;
    for b in 0..blocks {
        let tile = &m.data[tile(k, packing, t, b)..][..tile_bytes(packing)];
        let xv = &x.values[row * k + b * BLOCK..][..BLOCK];
        let at_x = row * blocks + b;
        let dot = (0..BLOCK).map(|i| value(packing, tile, c, i) * xv[i] as i32).sum::<i32>() - 16 * x.block_sums[at_x] as i32;
        sum = (dot as f32).mul_add(f16_at(tile, at::D + 2 * c) * x.scales[at_x], sum);
    }
    sum
}

/// Outputs first..first + count (whole tiles) for every row, into out[(c - first) * rows + r],
/// with AVX-512 VNNI when `WIDE`, else with AVX2 (eight outputs at a time; the same bits).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C, and with `WIDE` AVX-512 F, BW and VNNI too; `m` is in tiles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn columns<const WIDE: bool>(m: &Int8Matrix, first: usize, count: usize, x: &Activations, rows: usize, out: &mut [f32]) {
    debug_assert!(first % WIDTH == 0 && count % WIDTH == 0);
    for t in 0..count / WIDTH {
        let tiles = Tiles { m, t: first / WIDTH + t, x };
        let mut r = 0;
        while r < rows {
            let mut sums = [[0f32; WIDTH]; ROWS];
            // Tiles of 8, 4, 2 or 1 rows (8: Q5_0 with VNNI, whose registers hold them).
            let most = if WIDE && m.packing == Packing::Q5_0 { 8 } else { 4 };
            let done = [8, 4, 2, 1].into_iter().find(|&n| n <= most && n <= rows - r).expect("a row is left");
            match (m.packing, done, WIDE) {
                (Packing::Q5_0, 8, true) => tiles.blocks::<8>(r, &mut sums),
                (Packing::Q5_0, 4, true) => tiles.blocks::<4>(r, &mut sums),
                (Packing::Q5_0, 2, true) => tiles.blocks::<2>(r, &mut sums),
                (Packing::Q5_0, _, true) => tiles.blocks::<1>(r, &mut sums),
                (Packing::Q5_0, 4, false) => tiles.narrow_blocks::<4>(r, &mut sums),
                (Packing::Q5_0, 2, false) => tiles.narrow_blocks::<2>(r, &mut sums),
                (Packing::Q5_0, _, false) => tiles.narrow_blocks::<1>(r, &mut sums),
                (Packing::Q4K, 4, true) => tiles.run::<false, 4>(r, &mut sums),
                (Packing::Q4K, 2, true) => tiles.run::<false, 2>(r, &mut sums),
                (Packing::Q4K, _, true) => tiles.run::<false, 1>(r, &mut sums),
                (_, 4, true) => tiles.run::<true, 4>(r, &mut sums),
                (_, 2, true) => tiles.run::<true, 2>(r, &mut sums),
                (_, _, true) => tiles.run::<true, 1>(r, &mut sums),
                (Packing::Q4K, 4, false) => tiles.narrow::<false, 4>(r, &mut sums),
                (Packing::Q4K, 2, false) => tiles.narrow::<false, 2>(r, &mut sums),
                (Packing::Q4K, _, false) => tiles.narrow::<false, 1>(r, &mut sums),
                (_, 4, false) => tiles.narrow::<true, 4>(r, &mut sums),
                (_, 2, false) => tiles.narrow::<true, 2>(r, &mut sums),
                (_, _, false) => tiles.narrow::<true, 1>(r, &mut sums),
            }
            for (i, row) in sums.iter().take(done).enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    out[(t * WIDTH + c) * rows + r + i] = v;
                }
            }
            r += done;
        }
    }
}

#[cfg(target_arch = "x86_64")]
struct Tiles<'a> {
    m: &'a Int8Matrix,
    /// The tile column (outputs 16 t..16 t + 15).
    t: usize,
    x: &'a Activations,
}

#[cfg(target_arch = "x86_64")]
impl Tiles<'_> {
    /// R rows from `r` against the tile column's sixteen outputs (Q6_K when `SIX`), into sums[i].
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn run<const SIX: bool, const R: usize>(&self, r: usize, sums: &mut [[f32; WIDTH]; ROWS]) {
        use std::arch::x86_64::*;
        let (m, x) = (self.m, self.x);
        let (k, packing) = (m.k, m.packing);
        let supers = k / SUPERBLOCK;
        let low = _mm512_set1_epi8(0x0F);
        let mut sum = [_mm512_setzero_ps(); R];
        let mut offset = [_mm512_setzero_ps(); R];
        for s in 0..supers {
            let p = m.data.as_ptr().add(tile(k, packing, self.t, s));
            // Every line of the tile 8 KiB ahead (2.4-3.5 tiles). 1.5B model, step_bench, alternating
            // with one line per tile: one sequence 18.0-18.2 -> 19.5-21.1 tokens/s, four 39.5-39.7
            // -> 57.7-57.8, eight 61.1-61.4 -> 77.7-78.7; the prompt alike.
            for line in 0..tile_bytes(packing).div_ceil(64) {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(super::SUPERBLOCK_PREFETCH + 64 * line) as *const i8);
            }
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(p.add(at::D) as *const __m256i));
            // Four activations of row i from value `from`, in every lane.
            let four = |i: usize, from: usize| _mm512_set1_epi32((x.values.as_ptr().add((r + i) * k + s * SUPERBLOCK + from) as *const i32).read_unaligned());
            let mut superblock = [_mm512_setzero_ps(); R];
            let mut taken = [_mm512_setzero_si512(); R];
            if SIX {
                let high_base = p.add(at::Q6K_HIGH);
                for pair in 0..8 {
                    // Groups 2 pair and 2 pair + 1: their scales (one lane's two i8 as i16), and each
                    // alone as f32 times d.
                    let scales = _mm512_cvtepi8_epi16(_mm256_loadu_si256(p.add(at::Q6K_SCALES + pair * 2 * WIDTH) as *const __m256i));
                    let even = _mm512_srai_epi32(_mm512_slli_epi32(scales, 16), 16);
                    let odd = _mm512_srai_epi32(scales, 16);
                    for (h, group_scale) in [(2 * pair, even), (2 * pair + 1, odd)] {
                        let scale = _mm512_mul_ps(d, _mm512_cvtepi32_ps(group_scale));
                        let high = _mm512_loadu_si512(high_base.add(h * WIDTH * 4) as *const __m512i);
                        let mut dot = [_mm512_setzero_si512(); R];
                        // Values 16h .. 16h + 15: low bits in nibble runs 2h (j < 4: low halves, then
                        // high halves) and 2h + 1.
                        for half in 0..2 {
                            let g = 2 * h + half;
                            let bits = _mm512_loadu_si512(p.add(at::Q6K_LOW + g * WIDTH * 4) as *const __m512i);
                            for part in 0..2 {
                                let q = 2 * half + part;
                                let nibbles = if part == 0 { _mm512_and_si512(bits, low) } else { _mm512_and_si512(_mm512_srli_epi16(bits, 4), low) };
                                // Bits 2q and 2q + 1 of each high byte to bits 4 and 5.
                                let top = match q {
                                    0 => _mm512_slli_epi16(high, 4),
                                    1 => _mm512_slli_epi16(high, 2),
                                    2 => high,
                                    _ => _mm512_srli_epi16(high, 2),
                                };
                                let w = _mm512_or_si512(nibbles, _mm512_and_si512(top, _mm512_set1_epi8(0x30)));
                                for i in 0..R {
                                    dot[i] = _mm512_dpbusd_epi32(dot[i], w, four(i, 16 * h + 4 * q));
                                }
                            }
                        }
                        for i in 0..R {
                            superblock[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[i]), scale, superblock[i]);
                        }
                    }
                    // Σ scale × (its 16 activations' sum), two groups per lane and instruction.
                    for i in 0..R {
                        let pair_sums = (x.half_sums.as_ptr().add(((r + i) * supers + s) * 16 + 2 * pair) as *const i32).read_unaligned();
                        taken[i] = _mm512_dpwssd_epi32(taken[i], scales, _mm512_set1_epi32(pair_sums));
                    }
                }
            } else {
                for b in 0..8 {
                    let scale = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(p.add(at::Q4K_SCALES + b * WIDTH) as *const __m128i))));
                    let mut dot = [_mm512_setzero_si512(); R];
                    for g in 4 * b..4 * b + 4 {
                        let bits = _mm512_loadu_si512(p.add(at::Q4K_NIBBLES + g * WIDTH * 4) as *const __m512i);
                        let (first, second) = (_mm512_and_si512(bits, low), _mm512_and_si512(_mm512_srli_epi16(bits, 4), low));
                        for i in 0..R {
                            dot[i] = _mm512_dpbusd_epi32(dot[i], first, four(i, 8 * g));
                            dot[i] = _mm512_dpbusd_epi32(dot[i], second, four(i, 8 * g + 4));
                        }
                    }
                    for i in 0..R {
                        superblock[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[i]), scale, superblock[i]);
                    }
                }
                // Σ min × (its block's activation sum), two blocks per lane and instruction.
                for pair in 0..4 {
                    let mins = _mm512_cvtepu8_epi16(_mm256_loadu_si256(p.add(at::Q4K_MINS + pair * 2 * WIDTH) as *const __m256i));
                    for i in 0..R {
                        let pair_sums = (x.block_sums.as_ptr().add(((r + i) * supers + s) * 8 + 2 * pair) as *const i32).read_unaligned();
                        taken[i] = _mm512_dpwssd_epi32(taken[i], mins, _mm512_set1_epi32(pair_sums));
                    }
                }
            }
            let taken_scale = if SIX { d } else { _mm512_cvtph_ps(_mm256_loadu_si256(p.add(at::DMIN) as *const __m256i)) };
            for i in 0..R {
                let xs = _mm512_set1_ps(*x.scales.get_unchecked((r + i) * supers + s));
                sum[i] = _mm512_fmadd_ps(superblock[i], xs, sum[i]);
                let taken = if SIX { _mm512_slli_epi32(taken[i], 5) } else { taken[i] };
                offset[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(taken), _mm512_mul_ps(taken_scale, xs), offset[i]);
            }
        }
        for i in 0..R {
            _mm512_storeu_ps(sums[i].as_mut_ptr(), _mm512_sub_ps(sum[i], offset[i]));
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Tiles<'_> {
    /// `run` with AVX2: each half of the tile (outputs 0-7, then 8-15) in eight 32-bit lanes, and
    /// VNNI's four-product step as a multiply-add of byte pairs into 16 bits (unsigned weights by
    /// signed activations: at most 2 × 63 × 127, no saturation), several of those added in 16 bits
    /// while they cannot overflow (a Q4_K block's eight: 8 × 2 × 15 × 127 = 30,480; Q6_K's two),
    /// then pairs of them into 32 bits. Every integer is the same as on the AVX-512 path, and so are
    /// the float steps.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn narrow<const SIX: bool, const R: usize>(&self, r: usize, sums: &mut [[f32; WIDTH]; ROWS]) {
        use std::arch::x86_64::*;
        let (m, x) = (self.m, self.x);
        let (k, packing) = (m.k, m.packing);
        let supers = k / SUPERBLOCK;
        let low = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut sum = [[_mm256_setzero_ps(); R]; 2];
        let mut offset = [[_mm256_setzero_ps(); R]; 2];
        for s in 0..supers {
            let p = m.data.as_ptr().add(tile(k, packing, self.t, s));
            for line in 0..tile_bytes(packing).div_ceil(64) {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(super::SUPERBLOCK_PREFETCH + 64 * line) as *const i8);
            }
            // Both halves of a tile before the next, so that it is read from memory once. A half's
            // bytes in a part laid [..][16 outputs][n bytes] start n × 8 further on.
            for half in 0..2 {
                let (sum, offset) = (&mut sum[half], &mut offset[half]);
                let d = _mm256_cvtph_ps(_mm_loadu_si128(p.add(at::D + 16 * half) as *const __m128i));
                let four = |i: usize, from: usize| _mm256_set1_epi32((x.values.as_ptr().add((r + i) * k + s * SUPERBLOCK + from) as *const i32).read_unaligned());
                let mut superblock = [_mm256_setzero_ps(); R];
                let mut taken = [_mm256_setzero_si256(); R];
                if SIX {
                    for pair in 0..8 {
                        let scales = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(at::Q6K_SCALES + pair * 2 * WIDTH + 16 * half) as *const __m128i));
                        let even = _mm256_srai_epi32(_mm256_slli_epi32(scales, 16), 16);
                        let odd = _mm256_srai_epi32(scales, 16);
                        for (h, group_scale) in [(2 * pair, even), (2 * pair + 1, odd)] {
                            let scale = _mm256_mul_ps(d, _mm256_cvtepi32_ps(group_scale));
                            let high = _mm256_loadu_si256(p.add(at::Q6K_HIGH + h * WIDTH * 4 + 32 * half) as *const __m256i);
                            let mut dot = [_mm256_setzero_si256(); R];
                            for run in 0..2 {
                                let g = 2 * h + run;
                                let bits = _mm256_loadu_si256(p.add(at::Q6K_LOW + g * WIDTH * 4 + 32 * half) as *const __m256i);
                                let mut pairs = [_mm256_setzero_si256(); R];
                                for part in 0..2 {
                                    let q = 2 * run + part;
                                    let nibbles = if part == 0 { _mm256_and_si256(bits, low) } else { _mm256_and_si256(_mm256_srli_epi16(bits, 4), low) };
                                    let top = match q {
                                        0 => _mm256_slli_epi16(high, 4),
                                        1 => _mm256_slli_epi16(high, 2),
                                        2 => high,
                                        _ => _mm256_srli_epi16(high, 2),
                                    };
                                    let w = _mm256_or_si256(nibbles, _mm256_and_si256(top, _mm256_set1_epi8(0x30)));
                                    for i in 0..R {
                                        pairs[i] = _mm256_add_epi16(pairs[i], _mm256_maddubs_epi16(w, four(i, 16 * h + 4 * q)));
                                    }
                                }
                                for i in 0..R {
                                    dot[i] = _mm256_add_epi32(dot[i], _mm256_madd_epi16(pairs[i], ones));
                                }
                            }
                            for i in 0..R {
                                superblock[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[i]), scale, superblock[i]);
                            }
                        }
                        for i in 0..R {
                            let pair_sums = (x.half_sums.as_ptr().add(((r + i) * supers + s) * 16 + 2 * pair) as *const i32).read_unaligned();
                            taken[i] = _mm256_add_epi32(taken[i], _mm256_madd_epi16(scales, _mm256_set1_epi32(pair_sums)));
                        }
                    }
                } else {
                    for b in 0..8 {
                        let scales = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(at::Q4K_SCALES + b * WIDTH + 8 * half) as *const __m128i));
                        let scale = _mm256_mul_ps(d, _mm256_cvtepi32_ps(scales));
                        let mut pairs = [_mm256_setzero_si256(); R];
                        for g in 4 * b..4 * b + 4 {
                            let bits = _mm256_loadu_si256(p.add(at::Q4K_NIBBLES + g * WIDTH * 4 + 32 * half) as *const __m256i);
                            let (first, second) = (_mm256_and_si256(bits, low), _mm256_and_si256(_mm256_srli_epi16(bits, 4), low));
                            for i in 0..R {
                                pairs[i] = _mm256_add_epi16(pairs[i], _mm256_maddubs_epi16(first, four(i, 8 * g)));
                                pairs[i] = _mm256_add_epi16(pairs[i], _mm256_maddubs_epi16(second, four(i, 8 * g + 4)));
                            }
                        }
                        for i in 0..R {
                            let dot = _mm256_madd_epi16(pairs[i], ones);
                            superblock[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, superblock[i]);
                        }
                    }
                    for pair in 0..4 {
                        let mins = _mm256_cvtepu8_epi16(_mm_loadu_si128(p.add(at::Q4K_MINS + pair * 2 * WIDTH + 16 * half) as *const __m128i));
                        for i in 0..R {
                            let pair_sums = (x.block_sums.as_ptr().add(((r + i) * supers + s) * 8 + 2 * pair) as *const i32).read_unaligned();
                            taken[i] = _mm256_add_epi32(taken[i], _mm256_madd_epi16(mins, _mm256_set1_epi32(pair_sums)));
                        }
                    }
                }
                let taken_scale = if SIX { d } else { _mm256_cvtph_ps(_mm_loadu_si128(p.add(at::DMIN + 16 * half) as *const __m128i)) };
                for i in 0..R {
                    let xs = _mm256_set1_ps(*x.scales.get_unchecked((r + i) * supers + s));
                    sum[i] = _mm256_fmadd_ps(superblock[i], xs, sum[i]);
                    let taken = if SIX { _mm256_slli_epi32(taken[i], 5) } else { taken[i] };
                    offset[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(taken), _mm256_mul_ps(taken_scale, xs), offset[i]);
                }
            }
        }
        for half in 0..2 {
            for i in 0..R {
                _mm256_storeu_ps(sums[i].as_mut_ptr().add(8 * half), _mm256_sub_ps(sum[half][i], offset[half][i]));
            }
        }
    }
}

/// Q5_0 tiles (`relay_block`): per block, sixteen outputs' five-bit values, unsigned, multiply the
/// signed activations directly (VNNI's operand order, or AVX2's byte-pair multiply: at most
/// 2 × 31 × 127, no saturation); the values' offset of 16 is one integer per row and block
/// (16 × the activations' sum), taken off before the block's single float step. In the file's order
/// each block's products ended in sixteen lanes of one output, summed across at the end, and an
/// activation's sign cost an instruction per block and row (the AVX2 path's sign trick, the AVX-512
/// path's second VNNI instruction for x + 128).
#[cfg(target_arch = "x86_64")]
impl Tiles<'_> {
    /// R rows from `r` against the tile column's sixteen outputs, with AVX-512 VNNI, into sums[i].
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn blocks<const R: usize>(&self, r: usize, sums: &mut [[f32; WIDTH]; ROWS]) {
        use std::arch::x86_64::*;
        let (m, x) = (self.m, self.x);
        let k = m.k;
        let blocks = k / BLOCK;
        let (low, fifth) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x10));
        let mut sum = [_mm512_setzero_ps(); R];
        for b in 0..blocks {
            let p = m.data.as_ptr().add(tile(k, Packing::Q5_0, self.t, b));
            for line in 0..at::Q5_SIZE.div_ceil(64) {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(super::SUPERBLOCK_PREFETCH + 64 * line) as *const i8);
            }
            let four = |i: usize, from: usize| _mm512_set1_epi32((x.values.as_ptr().add((r + i) * k + b * BLOCK + from) as *const i32).read_unaligned());
            let high = _mm512_loadu_si512(p.add(at::Q5_HIGH) as *const __m512i);
            let mut dot: [__m512i; R] = std::array::from_fn(|i| _mm512_set1_epi32(-16 * *x.block_sums.get_unchecked((r + i) * blocks + b) as i32));
            for g in 0..BLOCK / 8 {
                let bits = _mm512_loadu_si512(p.add(at::Q5_NIBBLES + g * WIDTH * 4) as *const __m512i);
                for part in 0..2 {
                    let v = 2 * g + part;
                    let nibbles = if part == 0 { _mm512_and_si512(bits, low) } else { _mm512_and_si512(_mm512_srli_epi16(bits, 4), low) };
                    // Bit v of each high byte to bit 4.
                    let top = match v {
                        0 => _mm512_slli_epi16(high, 4),
                        1 => _mm512_slli_epi16(high, 3),
                        2 => _mm512_slli_epi16(high, 2),
                        3 => _mm512_slli_epi16(high, 1),
                        4 => high,
                        5 => _mm512_srli_epi16(high, 1),
                        6 => _mm512_srli_epi16(high, 2),
                        _ => _mm512_srli_epi16(high, 3),
                    };
                    let w = _mm512_or_si512(nibbles, _mm512_and_si512(top, fifth));
                    for i in 0..R {
                        dot[i] = _mm512_dpbusd_epi32(dot[i], w, four(i, 4 * v));
                    }
                }
            }
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(p.add(at::D) as *const __m256i));
            for i in 0..R {
                let xs = _mm512_set1_ps(*x.scales.get_unchecked((r + i) * blocks + b));
                sum[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[i]), _mm512_mul_ps(d, xs), sum[i]);
            }
        }
        for i in 0..R {
            _mm512_storeu_ps(sums[i].as_mut_ptr(), sum[i]);
        }
    }

    /// `blocks` with AVX2: each half of the tile column (outputs 0-7, then 8-15) in eight 32-bit
    /// lanes, one half over all blocks before the other (the column's bytes are read from cache the
    /// second time), four runs' byte-pair products added in 16 bits (4 × 2 × 31 × 127 = 31,496),
    /// then into 32 bits. The same integers and float steps as `blocks`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn narrow_blocks<const R: usize>(&self, r: usize, sums: &mut [[f32; WIDTH]; ROWS]) {
        use std::arch::x86_64::*;
        let (m, x) = (self.m, self.x);
        let k = m.k;
        let blocks = k / BLOCK;
        let (low, fifth, ones) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x10), _mm256_set1_epi16(1));
        for half in 0..2 {
            let mut sum = [_mm256_setzero_ps(); R];
            for b in 0..blocks {
                let p = m.data.as_ptr().add(tile(k, Packing::Q5_0, self.t, b));
                if half == 0 {
                    for line in 0..at::Q5_SIZE.div_ceil(64) {
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(super::SUPERBLOCK_PREFETCH + 64 * line) as *const i8);
                    }
                }
                let four = |i: usize, from: usize| _mm256_set1_epi32((x.values.as_ptr().add((r + i) * k + b * BLOCK + from) as *const i32).read_unaligned());
                let high = _mm256_loadu_si256(p.add(at::Q5_HIGH + 32 * half) as *const __m256i);
                let mut dot: [__m256i; R] = std::array::from_fn(|i| _mm256_set1_epi32(-16 * *x.block_sums.get_unchecked((r + i) * blocks + b) as i32));
                for runs in 0..2 {
                    let mut pairs = [_mm256_setzero_si256(); R];
                    for g in 2 * runs..2 * runs + 2 {
                        let bits = _mm256_loadu_si256(p.add(at::Q5_NIBBLES + g * WIDTH * 4 + 32 * half) as *const __m256i);
                        for part in 0..2 {
                            let v = 2 * g + part;
                            let nibbles = if part == 0 { _mm256_and_si256(bits, low) } else { _mm256_and_si256(_mm256_srli_epi16(bits, 4), low) };
                            let top = match v {
                                0 => _mm256_slli_epi16(high, 4),
                                1 => _mm256_slli_epi16(high, 3),
                                2 => _mm256_slli_epi16(high, 2),
                                3 => _mm256_slli_epi16(high, 1),
                                4 => high,
                                5 => _mm256_srli_epi16(high, 1),
                                6 => _mm256_srli_epi16(high, 2),
                                _ => _mm256_srli_epi16(high, 3),
                            };
                            let w = _mm256_or_si256(nibbles, _mm256_and_si256(top, fifth));
                            for i in 0..R {
                                pairs[i] = _mm256_add_epi16(pairs[i], _mm256_maddubs_epi16(w, four(i, 4 * v)));
                            }
                        }
                    }
                    for i in 0..R {
                        dot[i] = _mm256_add_epi32(dot[i], _mm256_madd_epi16(pairs[i], ones));
                    }
                }
                let d = _mm256_cvtph_ps(_mm_loadu_si128(p.add(at::D + 16 * half) as *const __m128i));
                for i in 0..R {
                    let xs = _mm256_set1_ps(*x.scales.get_unchecked((r + i) * blocks + b));
                    sum[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[i]), _mm256_mul_ps(d, xs), sum[i]);
                }
            }
            for i in 0..R {
                _mm256_storeu_ps(sums[i].as_mut_ptr().add(8 * half), sum[i]);
            }
        }
    }
}
