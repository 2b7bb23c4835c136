//! The `[vocab, hidden]` tables of a BitNet model: the token embedding and the output head (the
//! same table when tied, as in 2B4T). Decode reads the whole head once per token, so with bf16
//! it is more than half the bytes a token costs; int8 rows (one f32 scale per row, symmetric
//! round-to-nearest, like llama.cpp's Q8_0 with a row for a block) halve that, and Q6_K rows
//! (llama.cpp's 6-bit blocks, as bitnet.cpp's 2026 files hold the embedding) take 0.82 bytes per
//! weight. When the head is tied, the embedding lookup reads the same rows, so one copy stays
//! resident.

use serde::{Deserialize, Serialize};

use super::{
    kernels::{bf16_dots, bf16_to_f32, i8_dots, i8_rows_dot, q6k_dots, Isa, I8_LIMIT},
    pages,
    q6k::{self, Q6kError},
    team::Team,
};

/// How the output head (and a tied embedding) is held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadPrecision {
    /// The checkpoint's bf16 rows, unchanged.
    Bf16,
    /// int8 rows with a scale each: half the bytes, measured by `quantlab bench --bitnet`.
    #[default]
    Int8,
    /// llama.cpp's Q6_K blocks (6.56 bits per weight), read as bitnet.cpp's files store them
    /// or quantized at load by llama.cpp's own quantizer.
    #[serde(rename = "q6_k", alias = "q6k")]
    Q6K,
}

impl HeadPrecision {
    pub fn label(self) -> &'static str {
        match self {
            HeadPrecision::Bf16 => "bf16",
            HeadPrecision::Int8 => "int8",
            HeadPrecision::Q6K => "q6_k",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "bf16" => Some(HeadPrecision::Bf16),
            "int8" | "i8" | "q8" => Some(HeadPrecision::Int8),
            "q6_k" | "q6k" => Some(HeadPrecision::Q6K),
            _ => None,
        }
    }
}

/// A `[rows, cols]` table in one precision.
#[derive(Clone, Debug)]
pub enum Table {
    /// bf16 bits, row-major.
    Bf16(Vec<u16>),
    /// `w ≈ values · scales[row]`, every value within ±[`I8_LIMIT`].
    Int8 { values: Vec<i8>, scales: Vec<f32> },
    /// Q6_K blocks (see `super::q6k`), row-major, each row whole blocks.
    Q6K(Vec<u8>),
}

impl Table {
    pub fn precision(&self) -> HeadPrecision {
        match self {
            Table::Bf16(_) => HeadPrecision::Bf16,
            Table::Int8 { .. } => HeadPrecision::Int8,
            Table::Q6K(_) => HeadPrecision::Q6K,
        }
    }

    /// Weights held (rows × columns).
    pub fn values(&self) -> usize {
        match self {
            Table::Bf16(bits) => bits.len(),
            Table::Int8 { values, .. } => values.len(),
            Table::Q6K(blocks) => blocks.len() / q6k::BLOCK_BYTES * q6k::BLOCK,
        }
    }

    /// Bytes held in memory.
    pub fn bytes(&self) -> usize {
        match self {
            Table::Bf16(bits) => 2 * bits.len(),
            Table::Int8 { values, scales } => values.len() + 4 * scales.len(),
            Table::Q6K(blocks) => blocks.len(),
        }
    }

    /// Row `row` as f32 into `out` (`cols` values).
    pub fn row_into(&self, row: usize, out: &mut [f32]) {
        let cols = out.len();
        match self {
            Table::Bf16(bits) => {
                for (v, &b) in out.iter_mut().zip(&bits[row * cols..][..cols]) {
                    *v = bf16_to_f32(b);
                }
            }
            Table::Int8 { values, scales } => {
                let scale = scales[row];
                for (v, &q) in out.iter_mut().zip(&values[row * cols..][..cols]) {
                    *v = f32::from(q) * scale;
                }
            }
            Table::Q6K(blocks) => {
                let width = q6k::bytes_for(cols);
                q6k::dequantize_row(&blocks[row * width..][..width], out);
            }
        }
    }

    /// This table in `precision`. Only bf16 rows change: a table stored quantized (int8 here,
    /// or Q6_K as bitnet.cpp's files hold it) stays as it is, since widening it would only
    /// pretend to restore what rounding lost, and quantizing it again would add to the loss.
    ///
    /// # Errors
    /// Q6_K is asked for a table whose rows are not whole blocks of 256.
    pub fn into_precision(self, precision: HeadPrecision, cols: usize) -> Result<Table, Q6kError> {
        match (&self, precision) {
            (Table::Bf16(_), HeadPrecision::Int8 | HeadPrecision::Q6K) => {
                self.to_precision(precision, cols)
            }
            _ => Ok(self),
        }
    }

    /// A copy of this table in `precision`, leaving it as it is (for measuring one head against
    /// another). bf16 rows are read where they are, never copied whole first.
    ///
    /// # Errors
    /// As [`Self::into_precision`].
    pub fn to_precision(&self, precision: HeadPrecision, cols: usize) -> Result<Table, Q6kError> {
        match (self, precision) {
            (Table::Bf16(bits), HeadPrecision::Int8) => Ok(quantize_rows(bits, cols)),
            (Table::Bf16(bits), HeadPrecision::Q6K) => Ok(Table::Q6K(q6k::quantize_rows_with(
                bits.len() / cols.max(1),
                cols,
                |row, out| {
                    for (v, &b) in out.iter_mut().zip(&bits[row * cols..][..cols]) {
                        *v = bf16_to_f32(b);
                    }
                },
            )?)),
            (table, _) => Ok(table.clone()),
        }
    }

    /// Logits of row `row` against `T` activation rows, given as f32 (for bf16) and as
    /// int8 with `1 / scale` (for int8): whichever this table needs.
    #[inline]
    pub fn dots<const T: usize>(
        &self,
        isa: Isa,
        row: usize,
        cols: usize,
        acts: &HeadActs,
        rows: [usize; T],
    ) -> [f32; T] {
        match self {
            Table::Bf16(bits) => {
                let xs = rows.map(|t| acts.float(t, cols));
                bf16_dots(isa, &bits[row * cols..][..cols], &xs)
            }
            Table::Int8 { values, scales } => {
                let xs = rows.map(|t| acts.int8(t, cols));
                let dots = i8_dots(isa, &values[row * cols..][..cols], &xs);
                let scale = scales[row];
                std::array::from_fn(|k| dots[k] as f32 * scale * acts.inverse[rows[k]])
            }
            Table::Q6K(blocks) => {
                let width = q6k::bytes_for(cols);
                let xs = rows.map(|t| acts.int8(t, cols));
                let sums = rows.map(|t| acts.sums(t, cols));
                let dots = q6k_dots(isa, &blocks[row * width..][..width], &xs, &sums);
                std::array::from_fn(|k| dots[k] * acts.inverse[rows[k]])
            }
        }
    }

    /// The logits of activation rows `rows` (1 to 4, one read of the table for all of them)
    /// against every row of the table, as `[vocab, rows.len()]` in `out`, threads over
    /// vocabulary chunks.
    pub fn logits_of_rows(
        &self,
        isa: Isa,
        team: &mut Team,
        acts: &HeadActs,
        cols: usize,
        rows: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        let first = rows.start;
        match (rows.len(), self) {
            (1, Table::Int8 { values, scales }) => {
                int8_logits_of_one_row(isa, team, values, scales, acts, cols, first, out)
            }
            (1, _) => self.logits_group::<1>(isa, team, acts, cols, first, out),
            (2, _) => self.logits_group::<2>(isa, team, acts, cols, first, out),
            (3, _) => self.logits_group::<3>(isa, team, acts, cols, first, out),
            _ => self.logits_group::<4>(isa, team, acts, cols, first, out),
        }
    }

    fn logits_group<const T: usize>(
        &self,
        isa: Isa,
        team: &mut Team,
        acts: &HeadActs,
        cols: usize,
        first: usize,
        out: &mut [f32],
    ) {
        let rows: [usize; T] = std::array::from_fn(|k| first + k);
        team.chunks_mut(out, HEAD_CHUNK * T, |chunk, block| {
            for (i, values) in block.chunks_exact_mut(T).enumerate() {
                let dots = self.dots(isa, chunk * HEAD_CHUNK + i, cols, acts, rows);
                values.copy_from_slice(&dots);
            }
        });
    }
}

/// Decode through an int8 head: one activation row against every vocabulary row, a chunk of
/// rows per kernel call. The same logits as [`Table::dots`] gives row by row (exact integer
/// products, the same scaling), so a token's logits do not depend on its group.
#[allow(clippy::too_many_arguments)]
fn int8_logits_of_one_row(
    isa: Isa,
    team: &mut Team,
    values: &[i8],
    scales: &[f32],
    acts: &HeadActs,
    cols: usize,
    row: usize,
    out: &mut [f32],
) {
    let (x, inverse) = (acts.int8(row, cols), acts.inverse[row]);
    team.chunks_mut(out, HEAD_CHUNK, |chunk, block| {
        let start = chunk * HEAD_CHUNK;
        let mut dots = [0i32; HEAD_CHUNK];
        let dots = &mut dots[..block.len()];
        i8_rows_dot(isa, &values[start * cols..], cols, x, dots);
        for ((logit, &dot), &scale) in block.iter_mut().zip(&*dots).zip(&scales[start..]) {
            *logit = dot as f32 * scale * inverse;
        }
    });
}

/// Vocabulary rows per parallel task of the output head.
const HEAD_CHUNK: usize = 256;

/// Per row: `scale = max|w| / 127`, `q = round(w / scale)`, ties to even.
fn quantize_rows(bits: &[u16], cols: usize) -> Table {
    let limit = f32::from(I8_LIMIT);
    let mut values = pages::with_capacity(bits.len());
    let mut scales = Vec::with_capacity(bits.len() / cols.max(1));
    for row in bits.chunks_exact(cols) {
        let max = row.iter().fold(0f32, |m, &b| m.max(bf16_to_f32(b).abs()));
        let scale = if max > 0.0 { max / limit } else { 1.0 };
        values.extend(row.iter().map(|&b| {
            (bf16_to_f32(b) / scale)
                .round_ties_even()
                .clamp(-limit, limit) as i8
        }));
        scales.push(scale);
    }
    Table::Int8 { values, scales }
}

/// The normed rows the head multiplies: as f32 for a bf16 head, as int8 (±127 per row) with
/// `1 / scale` for an int8 or Q6_K one, and for Q6_K the sums of every 16 int8 values. Sized
/// once, so decode allocates nothing.
#[derive(Debug)]
pub struct HeadActs {
    float: Vec<f32>,
    int8: Vec<i8>,
    inverse: Vec<f32>,
    sixteens: Vec<i16>,
}

impl HeadActs {
    pub fn with_capacity(rows: usize, cols: usize) -> Self {
        Self {
            float: vec![0.0; rows * cols],
            int8: vec![0; rows * cols],
            inverse: vec![0.0; rows],
            sixteens: vec![0; rows * cols / 16],
        }
    }

    /// Takes `x` (whole rows of `cols`) in the form `precision` reads.
    pub fn load(&mut self, x: &[f32], cols: usize, precision: HeadPrecision) {
        if precision == HeadPrecision::Bf16 {
            self.float[..x.len()].copy_from_slice(x);
            return;
        }
        let limit = f32::from(I8_LIMIT);
        for (t, source) in x.chunks_exact(cols).enumerate() {
            let max = super::lanes::max_abs(source).max(1e-12);
            let scale = limit / max;
            for (q, &v) in self.int8[t * cols..][..cols].iter_mut().zip(source) {
                *q = super::lanes::round_small((v * scale).clamp(-limit, limit)) as i8;
            }
            self.inverse[t] = 1.0 / scale;
        }
        if precision == HeadPrecision::Q6K {
            let values = &self.int8[..x.len()];
            for (sum, chunk) in self.sixteens.iter_mut().zip(values.chunks_exact(16)) {
                *sum = chunk.iter().map(|&v| i16::from(v)).sum();
            }
        }
    }

    fn float(&self, t: usize, cols: usize) -> &[f32] {
        &self.float[t * cols..][..cols]
    }

    fn int8(&self, t: usize, cols: usize) -> &[i8] {
        &self.int8[t * cols..][..cols]
    }

    fn sums(&self, t: usize, cols: usize) -> &[i16] {
        &self.sixteens[t * cols / 16..][..cols / 16]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_rows_round_to_a_scale_per_row() {
        let row = |values: &[f32]| -> Vec<u16> {
            values
                .iter()
                .map(|&v| half::bf16::from_f32(v).to_bits())
                .collect()
        };
        let bits = [row(&[1.0, -0.5, 0.25, 0.0]), row(&[0.0; 4])].concat();
        let Table::Int8 { values, scales } = quantize_rows(&bits, 4) else {
            panic!("int8 expected");
        };
        // max 1.0 -> scale 1/127: 127, -63.5 -> -64 (ties to even), 31.75 -> 32, 0.
        assert_eq!(&values[..4], &[127, -64, 32, 0]);
        assert!((scales[0] - 1.0 / 127.0).abs() < 1e-9);
        // An all-zero row keeps a usable scale and zeros.
        assert_eq!(&values[4..], &[0; 4]);
        assert_eq!(scales[1], 1.0);
        let table = Table::Int8 { values, scales };
        let mut out = [0f32; 4];
        table.row_into(0, &mut out);
        assert!((out[1] + 64.0 / 127.0).abs() < 1e-6);
        assert_eq!(table.bytes(), 8 + 8);
    }

    #[test]
    fn head_precisions_parse_as_written_in_models_toml() {
        assert_eq!(HeadPrecision::parse("INT8"), Some(HeadPrecision::Int8));
        assert_eq!(HeadPrecision::parse("bf16"), Some(HeadPrecision::Bf16));
        assert_eq!(HeadPrecision::parse("Q6_K"), Some(HeadPrecision::Q6K));
        assert_eq!(HeadPrecision::parse("q4_k"), None);
    }
}
