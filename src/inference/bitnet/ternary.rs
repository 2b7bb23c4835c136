//! Ternary weight matrices and the int8 activations they multiply, with BitNet b1.58's two
//! quantizers as the reference defines them (transformers' `WeightQuant` and `ActQuant`):
//! weights `round(w / mean|w|)` clamped to {-1, 0, +1} with the scale `mean|w|`; activations
//! `round(x · 127 / max|x|)` per token. Rounding is half-to-even, as torch's `round`.

use super::{
    kernels::{code_dots, ternary_rows_dot, Isa, BLOCK, BLOCK_BYTES},
    pages::AlignedBytes,
    team::{Split, Team},
};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TernaryError {
    #[error("{name}: expected {expected} values for a {rows}x{cols} matrix, found {found}")]
    Shape {
        name: String,
        rows: usize,
        cols: usize,
        expected: usize,
        found: usize,
    },
    #[error(
        "{name}: packed weights hold the code 3, which no ternary value packs to (a damaged file)"
    )]
    BadCode { name: String },
    #[error("{name}: weight scale {scale} is not a positive finite number")]
    BadScale { name: String, scale: f32 },
    #[error("{name}: an I2_S {rows}x{cols} matrix needs {rows}·{cols} divisible by 128 and {expected} bytes, found {found}")]
    I2sSize {
        name: String,
        rows: usize,
        cols: usize,
        expected: usize,
        found: usize,
    },
    #[error("cannot stack matrices with {0} and {1} columns")]
    StackColumns(usize, usize),
}

/// Rows of ternary weights, packed 2 bits each (layout in [`super::kernels`]); stacked
/// projections (q, k and v) keep one scale per part.
#[derive(Clone, Debug)]
pub struct TernaryMatrix {
    rows: usize,
    cols: usize,
    row_bytes: usize,
    codes: AlignedBytes,
    /// `(end row, scale)` per stacked part, in row order.
    parts: Vec<(usize, f32)>,
}

fn padded(cols: usize) -> usize {
    cols.div_ceil(BLOCK) * BLOCK
}

fn check_scale(name: &str, scale: f32) -> Result<f32, TernaryError> {
    if scale.is_finite() && scale > 0.0 {
        Ok(scale)
    } else {
        Err(TernaryError::BadScale {
            name: name.to_string(),
            scale,
        })
    }
}

impl TernaryMatrix {
    /// An all-zero matrix, every code `1`, including the padding columns.
    fn zeros(rows: usize, cols: usize, scale: f32) -> Self {
        let row_bytes = padded(cols) / 4;
        Self {
            rows,
            cols,
            row_bytes,
            codes: AlignedBytes::filled(rows * row_bytes, 0b01_01_01_01),
            parts: vec![(rows, scale)],
        }
    }

    fn set_code(&mut self, row: usize, col: usize, code: u8) {
        let byte = row * self.row_bytes + col / BLOCK * BLOCK_BYTES + col % BLOCK_BYTES;
        let shift = 2 * (col % BLOCK / BLOCK_BYTES);
        self.codes[byte] = (self.codes[byte] & !(3 << shift)) | (code << shift);
    }

    fn code(&self, row: usize, col: usize) -> u8 {
        let byte = row * self.row_bytes + col / BLOCK * BLOCK_BYTES + col % BLOCK_BYTES;
        (self.codes[byte] >> (2 * (col % BLOCK / BLOCK_BYTES))) & 3
    }

    /// From ternary values (row-major, each -1, 0 or 1) and their scale.
    pub fn from_ternary(
        name: &str,
        rows: usize,
        cols: usize,
        values: &[i8],
        scale: f32,
    ) -> Result<Self, TernaryError> {
        check_len(name, rows, cols, values.len())?;
        let mut matrix = Self::zeros(rows, cols, check_scale(name, scale)?);
        for (index, &value) in values.iter().enumerate() {
            matrix.set_code(index / cols, index % cols, (value.clamp(-1, 1) + 1) as u8);
        }
        Ok(matrix)
    }

    /// From transformers' packed layout: `packed` is `[rows / 4, cols]` bytes, and row
    /// `lane · rows/4 + p` is bits `2·lane` of packed row `p`, stored as `t + 1`.
    pub fn from_hf_packed(
        name: &str,
        packed: &[u8],
        rows: usize,
        cols: usize,
        scale: f32,
    ) -> Result<Self, TernaryError> {
        check_len(name, rows / 4, cols, packed.len())?;
        let mut matrix = Self::zeros(rows, cols, check_scale(name, scale)?);
        let packed_rows = rows / 4;
        for (p, packed_row) in packed.chunks_exact(cols.max(1)).enumerate() {
            for (col, &byte) in packed_row.iter().enumerate() {
                for lane in 0..4 {
                    let code = (byte >> (2 * lane)) & 3;
                    if code == 3 {
                        return Err(TernaryError::BadCode {
                            name: name.to_string(),
                        });
                    }
                    matrix.set_code(lane * packed_rows + p, col, code);
                }
            }
        }
        Ok(matrix)
    }

    /// From bitnet.cpp's `I2_S` (its x86 layout): the matrix flattened row-major into blocks of
    /// 128 values, each block 32 bytes where byte `p` holds values `p`, `32 + p`, `64 + p` and
    /// `96 + p` in bits 7-6, 5-4, 3-2 and 1-0, as codes `t + 1`; after the `rows · cols / 4`
    /// code bytes, one little-endian f32 scale for the whole tensor.
    pub fn from_i2s(
        name: &str,
        data: &[u8],
        rows: usize,
        cols: usize,
    ) -> Result<Self, TernaryError> {
        const I2S_BLOCK: usize = 128;
        let count = rows * cols;
        let code_bytes = count / 4;
        let scale = data
            .get(code_bytes..code_bytes + 4)
            .filter(|_| count.is_multiple_of(I2S_BLOCK))
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| TernaryError::I2sSize {
                name: name.to_string(),
                rows,
                cols,
                expected: code_bytes + 4,
                found: data.len(),
            })?;
        let mut matrix = Self::zeros(rows, cols, check_scale(name, scale)?);
        let codes = &data[..code_bytes];
        if cols.is_multiple_of(I2S_BLOCK) {
            // Every I2_S block is one of our blocks, in the same row and place: our byte holds
            // the same four values with the 2-bit fields in the opposite order. (The general
            // loop below took 7 s for a 2B model; this takes a fraction of one.)
            if codes.iter().any(|&b| b & (b >> 1) & 0b0101_0101 != 0) {
                return Err(TernaryError::BadCode {
                    name: name.to_string(),
                });
            }
            for (ours, &theirs) in matrix.codes.iter_mut().zip(codes) {
                *ours = (theirs >> 6)
                    | ((theirs >> 2) & 0b0000_1100)
                    | ((theirs << 2) & 0b0011_0000)
                    | (theirs << 6);
            }
            return Ok(matrix);
        }
        for (block, bytes) in codes.chunks_exact(I2S_BLOCK / 4).enumerate() {
            for (p, &byte) in bytes.iter().enumerate() {
                for group in 0..4 {
                    let code = (byte >> (6 - 2 * group)) & 3;
                    if code == 3 {
                        return Err(TernaryError::BadCode {
                            name: name.to_string(),
                        });
                    }
                    let index = block * I2S_BLOCK + group * (I2S_BLOCK / 4) + p;
                    matrix.set_code(index / cols, index % cols, code);
                }
            }
        }
        Ok(matrix)
    }

    /// Quantizes full-precision weights as the reference does when it loads a bf16 checkpoint:
    /// `s = 1 / max(mean|w|, 1e-5)`, `t = clamp(round(w·s), -1, 1)`, and the effective weight
    /// `t / s` rounded to bf16 (transformers casts it back to the checkpoint's dtype).
    pub fn quantize(
        name: &str,
        rows: usize,
        cols: usize,
        weights: &[f32],
    ) -> Result<Self, TernaryError> {
        check_len(name, rows, cols, weights.len())?;
        let mean = weights.iter().map(|w| f64::from(w.abs())).sum::<f64>() / weights.len() as f64;
        let s = 1.0 / (mean as f32).max(1e-5);
        let scale = half::bf16::from_f32(1.0 / s).to_f32();
        let mut matrix = Self::zeros(rows, cols, check_scale(name, scale)?);
        for (index, &w) in weights.iter().enumerate() {
            let t = (w * s).round_ties_even().clamp(-1.0, 1.0) as i8;
            matrix.set_code(index / cols, index % cols, (t + 1) as u8);
        }
        Ok(matrix)
    }

    /// Uniformly random ternary values (for benchmarks), drawn from `next`.
    pub fn random(rows: usize, cols: usize, scale: f32, next: &mut impl FnMut() -> u64) -> Self {
        // The 81 bytes whose four codes are all in 0..=2.
        let valid: Vec<u8> = (0..=255u8)
            .filter(|b| (0..4).all(|lane| (b >> (2 * lane)) & 3 != 3))
            .collect();
        let mut matrix = Self::zeros(rows, cols, scale);
        for byte in matrix.codes.iter_mut() {
            *byte = valid[(next() % valid.len() as u64) as usize];
        }
        matrix
    }

    /// One matrix whose rows are `parts`' rows in order, each keeping its scale.
    pub fn stack(parts: Vec<TernaryMatrix>) -> Result<Self, TernaryError> {
        let mut iter = parts.iter();
        let Some(first) = iter.next() else {
            return Ok(Self::zeros(0, 0, 1.0));
        };
        let mut stacked_parts = first.parts.clone();
        let mut rows = first.rows;
        for part in iter {
            if part.cols != first.cols {
                return Err(TernaryError::StackColumns(first.cols, part.cols));
            }
            stacked_parts.extend(part.parts.iter().map(|&(end, scale)| (end + rows, scale)));
            rows += part.rows;
        }
        let codes: Vec<&[u8]> = parts.iter().map(|p| &p.codes[..]).collect();
        Ok(Self {
            rows,
            cols: first.cols,
            row_bytes: first.row_bytes,
            codes: AlignedBytes::concat(&codes),
            parts: stacked_parts,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The ternary value at (row, col).
    pub fn value(&self, row: usize, col: usize) -> i8 {
        self.code(row, col) as i8 - 1
    }

    /// Bytes of packed weights held in memory.
    pub fn bytes(&self) -> usize {
        self.codes.len()
    }

    /// `out[t · rows + r] = scale_r · Σ_c value(r, c) · x_t[c]` for every activation row `t`,
    /// on `team`'s threads split over output rows. The decode case (one row of activations)
    /// allocates nothing.
    pub fn matmul(&self, isa: Isa, team: &mut Team, acts: &QuantizedRows, out: &mut [f32]) {
        assert_eq!(acts.cols_padded, padded(self.cols), "activation width");
        let n = acts.rows;
        assert!(out.len() >= n * self.rows, "output holds every row");
        if n == 1 {
            self.rows_into(isa, team, acts, 0, &mut out[..self.rows]);
            return;
        }
        // Each task owns a range of weight rows and writes that range of every token's output.
        let chunk = row_chunk(self.rows, team.threads());
        let mut tasks: Vec<Vec<&mut [f32]>> = (0..self.rows.div_ceil(chunk))
            .map(|_| Vec::with_capacity(n))
            .collect();
        for token_out in out[..n * self.rows].chunks_mut(self.rows) {
            for (task, part) in tasks.iter_mut().zip(token_out.chunks_mut(chunk)) {
                task.push(part);
            }
        }
        team.chunks_mut(&mut tasks, 1, |index, task| {
            self.rows_against_all(isa, acts, index * chunk, &mut task[0])
        });
    }

    /// Rows `first..first + parts[0].len()` against every activation row `t`, into
    /// `parts[t]`. Tokens go in groups of 4 (one unpacking of a weight row's codes serves the
    /// group), and weight rows in tiles of about 8 KiB: a tile and a group of activation rows
    /// stay in the core's L1 while each meets every other, where row by row the whole
    /// activation matrix would be read again from L2 for every weight row.
    fn rows_against_all(
        &self,
        isa: Isa,
        acts: &QuantizedRows,
        first: usize,
        parts: &mut [&mut [f32]],
    ) {
        let count = parts.first().map_or(0, |p| p.len());
        let tile = (TILE_BYTES / self.row_bytes).max(1);
        let n = acts.rows;
        for tile_start in (0..count).step_by(tile) {
            let tile_rows = tile_start..(tile_start + tile).min(count);
            let mut t = 0;
            while t < n {
                let group = (n - t).min(4);
                for i in tile_rows.clone() {
                    let r = first + i;
                    let row = self.packed_row(r);
                    let scale = self.scale(r);
                    let mut put = |dots: &[i32]| {
                        for (k, &dot) in dots.iter().enumerate() {
                            parts[t + k][i] = (dot - acts.sums[t + k]) as f32
                                * acts.inverse_scales[t + k]
                                * scale;
                        }
                    };
                    // The last 1 to 3 rows in one more pass over the codes (two sequences
                    // decoding together unpack each weight once, not twice).
                    match group {
                        4 => put(&code_dots(
                            isa,
                            row,
                            &[
                                acts.row(t),
                                acts.row(t + 1),
                                acts.row(t + 2),
                                acts.row(t + 3),
                            ],
                        )),
                        3 => put(&code_dots(
                            isa,
                            row,
                            &[acts.row(t), acts.row(t + 1), acts.row(t + 2)],
                        )),
                        2 => put(&code_dots(isa, row, &[acts.row(t), acts.row(t + 1)])),
                        _ => put(&code_dots(isa, row, &[acts.row(t)])),
                    }
                }
                t += group;
            }
        }
    }

    /// Every output row for activation row `t`, in parallel chunks of a guided split, each
    /// one kernel call.
    fn rows_into(
        &self,
        isa: Isa,
        team: &mut Team,
        acts: &QuantizedRows,
        t: usize,
        out: &mut [f32],
    ) {
        let x = acts.row(t);
        let (sum, inverse) = (acts.sums[t], acts.inverse_scales[t]);
        let split = Split::guided(self.rows, team.threads(), MIN_ROW_CHUNK, MAX_ROW_CHUNK);
        team.split_mut(&mut out[..self.rows], &split, |first, outs| {
            let mut dots = [0i32; MAX_ROW_CHUNK];
            let dots = &mut dots[..outs.len()];
            // From this chunk's first row to the end of the matrix: the kernel prefetches on
            // into the rows that follow.
            let rows = &self.codes[first * self.row_bytes..];
            ternary_rows_dot(isa, rows, self.row_bytes, x, dots);
            // A run of rows per stacked part, each run one scale (a loop the compiler
            // vectorizes, where a scale looked up per row kept it scalar).
            let mut done = 0;
            for &(end, scale) in &self.parts {
                let end = end.saturating_sub(first).min(outs.len());
                if end <= done {
                    continue;
                }
                // In the batched product's order, so a token's logits match bit for bit.
                for (slot, &dot) in outs[done..end].iter_mut().zip(&dots[done..end]) {
                    *slot = (dot - sum) as f32 * inverse * scale;
                }
                done = end;
            }
            for (slot, &dot) in outs[done..].iter_mut().zip(&dots[done..]) {
                *slot = (dot - sum) as f32 * inverse;
            }
        });
    }

    fn packed_row(&self, r: usize) -> &[u8] {
        &self.codes[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// The scale of the stacked part that holds `row`.
    #[inline]
    pub fn scale(&self, row: usize) -> f32 {
        // At most three parts: a short scan beats anything clever.
        for &(end, scale) in &self.parts {
            if row < end {
                return scale;
            }
        }
        1.0
    }
}

/// Bytes of packed weight rows a multi-token product keeps in L1 at once.
const TILE_BYTES: usize = 8 << 10;

/// The most output rows one parallel task takes.
const MAX_ROW_CHUNK: usize = 1024;

/// The fewest output rows a task of a decode product takes (10 KiB of 2B4T's codes): the
/// last chunks of a guided split, short so the threads end together (on the Xeon, 2 threads,
/// decode on the I2_S file: 1.015x over eight equal chunks per thread, medians of 9 rounds
/// alternating in one process).
const MIN_ROW_CHUNK: usize = 16;

/// Output rows per parallel task of a multi-token product: eight tasks per thread, enough to
/// balance threads that run at different speeds, few enough that each streams a long run of
/// rows (measured when decode used it too: on the Xeon, 2 threads, decode on the I2_S file,
/// 1.02x faster than sixteen per thread, medians of 11 rounds alternating in one process).
fn row_chunk(rows: usize, threads: usize) -> usize {
    (rows / (8 * threads.max(1))).clamp(16, MAX_ROW_CHUNK)
}

fn check_len(name: &str, rows: usize, cols: usize, found: usize) -> Result<(), TernaryError> {
    let expected = rows * cols;
    if found == expected && rows > 0 && cols > 0 {
        Ok(())
    } else {
        Err(TernaryError::Shape {
            name: name.to_string(),
            rows,
            cols,
            expected,
            found,
        })
    }
}

/// Rows of activations quantized to int8 per row (token), zero-padded to whole blocks, with
/// each row's `Σ q` and `1 / scale`. Buffers are reused between calls.
#[derive(Debug, Default)]
pub struct QuantizedRows {
    rows: usize,
    cols_padded: usize,
    values: Vec<i8>,
    sums: Vec<i32>,
    inverse_scales: Vec<f32>,
}

impl QuantizedRows {
    pub fn with_capacity(rows: usize, cols: usize) -> Self {
        let cols_padded = padded(cols);
        Self {
            rows: 0,
            cols_padded,
            values: Vec::with_capacity(rows * cols_padded),
            sums: Vec::with_capacity(rows),
            inverse_scales: Vec::with_capacity(rows),
        }
    }

    /// Quantizes `x` (rows of `cols` values) as `ActQuant`: `s = 127 / max(max|x|, 1e-5)`,
    /// `q = clamp(round(x·s), -128, 127)`.
    pub fn quantize(&mut self, x: &[f32], cols: usize) {
        let rows = x.len() / cols;
        self.rows = rows;
        self.cols_padded = padded(cols);
        self.values.clear();
        self.values.resize(rows * self.cols_padded, 0);
        self.sums.clear();
        self.inverse_scales.clear();
        for (source, target) in x
            .chunks_exact(cols)
            .zip(self.values.chunks_exact_mut(self.cols_padded))
        {
            let max = super::lanes::max_abs(source).max(1e-5);
            let scale = 127.0 / max;
            let mut sum = 0i32;
            for (q, &v) in target.iter_mut().zip(source) {
                *q = super::lanes::round_small((v * scale).clamp(-128.0, 127.0)) as i8;
                sum += i32::from(*q);
            }
            self.sums.push(sum);
            self.inverse_scales.push(1.0 / scale);
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn row(&self, t: usize) -> &[i8] {
        &self.values[t * self.cols_padded..(t + 1) * self.cols_padded]
    }

    /// The value the quantized activation stands for.
    pub fn dequantized(&self, t: usize, c: usize) -> f32 {
        f32::from(self.row(t)[c]) * self.inverse_scales[t]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_packing_puts_lane_rows_a_quarter_apart() {
        // 8 rows, 1 column: packed row 0 holds rows 0, 2, 4, 6; packed row 1 rows 1, 3, 5, 7.
        let values: [i8; 8] = [1, -1, 0, 1, -1, 0, 1, 1];
        let pack = |p: usize| {
            (0..4).fold(0u8, |b, lane| {
                b | (((values[lane * 2 + p] + 1) as u8) << (2 * lane))
            })
        };
        let matrix = TernaryMatrix::from_hf_packed("w", &[pack(0), pack(1)], 8, 1, 0.5).unwrap();
        for (r, &v) in values.iter().enumerate() {
            assert_eq!(matrix.value(r, 0), v, "row {r}");
        }
        let bad = TernaryMatrix::from_hf_packed("w", &[0xFF, 0x55], 8, 1, 0.5);
        assert!(matches!(bad, Err(TernaryError::BadCode { .. })));
    }

    #[test]
    fn quantization_rounds_half_to_even_like_torch() {
        // mean|w| = 1, so w·s = w: 0.5 -> 0, 1.5 -> 2 -> clamped 1, -0.5 -> -0, -2.5 -> -1.
        let w = [0.5, 1.5, -0.5, -1.5, 0.4, 1.1];
        let mean = w.iter().map(|v: &f32| v.abs()).sum::<f32>() / 6.0;
        let scaled: Vec<f32> = w.iter().map(|v| v / mean).collect();
        let m = TernaryMatrix::quantize("w", 1, 6, &w).unwrap();
        for (c, s) in scaled.iter().enumerate() {
            assert_eq!(
                m.value(0, c),
                s.round_ties_even().clamp(-1.0, 1.0) as i8,
                "{s}"
            );
        }
        let mut acts = QuantizedRows::default();
        acts.quantize(&[127.0, 0.5, 1.5, -2.5], 4);
        assert_eq!(&acts.row(0)[..4], &[127, 0, 2, -2]);
    }

    #[test]
    fn i2s_blocks_interleave_four_runs_of_32_and_keep_one_scale() {
        // 2 rows x 128 columns: two blocks. Value v at flat index i is ((i * 7) % 3) - 1.
        let (rows, cols) = (2, 128);
        let value = |i: usize| ((i * 7) % 3) as i8 - 1;
        let mut data = vec![0u8; rows * cols / 4];
        for i in 0..rows * cols {
            let (block, within) = (i / 128, i % 128);
            let (group, p) = (within / 32, within % 32);
            data[block * 32 + p] |= ((value(i) + 1) as u8) << (6 - 2 * group);
        }
        data.extend_from_slice(&0.25f32.to_le_bytes());
        data.extend_from_slice(&[0u8; 28]);
        let matrix = TernaryMatrix::from_i2s("w", &data, rows, cols).unwrap();
        for i in 0..rows * cols {
            assert_eq!(matrix.value(i / cols, i % cols), value(i), "index {i}");
        }
        assert_eq!(matrix.parts, vec![(rows, 0.25)]);
        // A code 3, a missing scale, a size not in whole blocks, a zero scale: refused.
        let mut bad = data.clone();
        bad[5] |= 0b1100_0000;
        assert!(matches!(
            TernaryMatrix::from_i2s("w", &bad, rows, cols),
            Err(TernaryError::BadCode { .. })
        ));
        assert!(matches!(
            TernaryMatrix::from_i2s("w", &data[..64], rows, cols),
            Err(TernaryError::I2sSize { .. })
        ));
        assert!(matches!(
            TernaryMatrix::from_i2s("w", &data, 1, 96),
            Err(TernaryError::I2sSize { .. })
        ));
        let mut zero = data.clone();
        zero[64..68].copy_from_slice(&0f32.to_le_bytes());
        assert!(matches!(
            TernaryMatrix::from_i2s("w", &zero, rows, cols),
            Err(TernaryError::BadScale { .. })
        ));
        // 128 columns take the block-for-block path; 2 x 192 (blocks straddle rows) the
        // general one: both read the same flat values.
        let straddling = TernaryMatrix::from_i2s("w", &data, 4, 64).unwrap();
        for i in 0..rows * cols {
            assert_eq!(straddling.value(i / 64, i % 64), value(i), "index {i}");
        }
        let mut bad_last = data.clone();
        bad_last[63] |= 0b0000_0011;
        assert!(matches!(
            TernaryMatrix::from_i2s("w", &bad_last, rows, cols),
            Err(TernaryError::BadCode { .. })
        ));
    }
}
