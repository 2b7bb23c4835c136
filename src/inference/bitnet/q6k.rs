//! Q6_K rows, llama.cpp's 6-bit format, in which bitnet.cpp's 2026 files hold the token
//! embedding (`llama-quantize --token-embedding-type Q6_K`). A block of [`BLOCK`] values takes
//! [`BLOCK_BYTES`]: the low 4 bits of every value (128 bytes), their high 2 bits (64), one
//! signed scale per 16 values (16), and an f16 block scale `d`; value `i` is
//! `d · scale[i / 16] · (q − 32)` with `q` in `0..=63`. Within each half of a block, byte `j`
//! of the low bits carries values `j` (low nibble) and `j + 64` (high nibble), byte `j + 32`
//! values `j + 32` and `j + 96`, and high-bit byte `j` carries bits 4–5 of values `j`, `j + 32`,
//! `j + 64` and `j + 96` in its bit pairs 0–1, 2–3, 4–5 and 6–7.

/// Values per block.
pub const BLOCK: usize = 256;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 210;
/// Where the high bits, the 16 scales and `d` start in a block.
pub const HIGH_BITS: usize = 128;
pub const SCALES: usize = 192;
pub const BLOCK_SCALE: usize = 208;
/// The offset every 6-bit value carries.
pub const OFFSET: i32 = 32;

#[derive(Debug, thiserror::Error)]
pub enum Q6kError {
    #[error(
        "Q6_K rows hold whole blocks of {BLOCK} values; this table has {0} columns (a hidden size that is a multiple of {BLOCK} is needed)"
    )]
    PartialBlock(usize),
    #[error("llama.cpp's Q6_K quantizer wrote {written} bytes where {expected} were expected")]
    Quantizer { written: usize, expected: usize },
}

/// Bytes of `values` values held as Q6_K (whole blocks).
pub fn bytes_for(values: usize) -> usize {
    values / BLOCK * BLOCK_BYTES
}

/// The 6-bit value (`0..=63`) of value `i` of `block`.
#[inline]
pub fn code(block: &[u8], i: usize) -> u8 {
    let (half, within) = (i / 128, i % 128);
    let (quarter, j) = (within / 32, within % 32);
    let low_byte = block[half * 64 + (quarter & 1) * 32 + j];
    let low = if quarter < 2 {
        low_byte & 0x0F
    } else {
        low_byte >> 4
    };
    let high = (block[HIGH_BITS + half * 32 + j] >> (2 * quarter)) & 3;
    low | (high << 4)
}

/// The block scale `d` of `block`, as f32.
#[inline]
pub fn block_scale(block: &[u8]) -> f32 {
    half::f16::from_le_bytes([block[BLOCK_SCALE], block[BLOCK_SCALE + 1]]).to_f32()
}

/// The signed scale of the 16 values `16 · sub..16 · sub + 16` of `block`.
#[inline]
pub fn sub_scale(block: &[u8], sub: usize) -> i8 {
    block[SCALES + sub] as i8
}

/// One row of whole blocks as f32 into `out`, rounded as llama.cpp's own dequantizer rounds:
/// `(d · scale) · (q − 32)`.
pub fn dequantize_row(row: &[u8], out: &mut [f32]) {
    for (block, values) in row
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        let d = block_scale(block);
        for (i, v) in values.iter_mut().enumerate() {
            let scaled = d * f32::from(sub_scale(block, i / 16));
            *v = scaled * (i32::from(code(block, i)) - OFFSET) as f32;
        }
    }
}

/// `[rows, cols]` f32 values as Q6_K rows, by llama.cpp's own quantizer (the one bitnet.cpp's
/// `llama-quantize` runs, so a table quantized here matches theirs), rows in parallel.
///
/// # Errors
/// `cols` is not a whole number of blocks.
pub fn quantize_rows(values: &[f32], cols: usize) -> Result<Vec<u8>, Q6kError> {
    quantize_rows_with(values.len() / cols.max(1), cols, |row, out| {
        out.copy_from_slice(&values[row * cols..][..cols]);
    })
}

/// As [`quantize_rows`], with row `r` written as f32 into a buffer by `row(r, buffer)`: a table
/// held in another type (bf16) is widened a few rows at a time, never whole.
///
/// # Errors
/// `cols` is not a whole number of blocks.
pub fn quantize_rows_with(
    rows: usize,
    cols: usize,
    row: impl Fn(usize, &mut [f32]) + Sync,
) -> Result<Vec<u8>, Q6kError> {
    use rayon::prelude::*;
    if cols == 0 || !cols.is_multiple_of(BLOCK) {
        return Err(Q6kError::PartialBlock(cols));
    }
    let row_bytes = bytes_for(cols);
    let mut out = vec![0u8; rows * row_bytes];
    const ROWS_PER_TASK: usize = 64;
    out.par_chunks_mut(ROWS_PER_TASK * row_bytes)
        .enumerate()
        .try_for_each(|(task, target)| {
            let count = target.len() / row_bytes;
            let mut source = vec![0f32; count * cols];
            for (i, values) in source.chunks_exact_mut(cols).enumerate() {
                row(task * ROWS_PER_TASK + i, values);
            }
            // SAFETY: `source` holds `count` rows of `cols` f32 and `target` the
            // `count * row_bytes` bytes Q6_K takes for them; Q6_K needs no importance matrix.
            let written = unsafe {
                llama_cpp_sys_2::ggml_quantize_chunk(
                    llama_cpp_sys_2::GGML_TYPE_Q6_K,
                    source.as_ptr(),
                    target.as_mut_ptr().cast(),
                    0,
                    count as i64,
                    cols as i64,
                    std::ptr::null(),
                )
            };
            if written == target.len() {
                Ok(())
            } else {
                Err(Q6kError::Quantizer {
                    written,
                    expected: target.len(),
                })
            }
        })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(count: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..count)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let unit = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                // Rows of different magnitude, and an outlier now and then.
                unit * (1.0 + (i / 512) as f32) * if i % 97 == 0 { 8.0 } else { 1.0 }
            })
            .collect()
    }

    /// llama.cpp's own Q6_K dequantizer, through the library we link.
    fn ggml_dequantize(row: &[u8], count: usize) -> Vec<f32> {
        let mut out = vec![0f32; count];
        // SAFETY: the traits of a built-in type are static; `row` holds `count / 256` blocks.
        unsafe {
            let traits = llama_cpp_sys_2::ggml_get_type_traits(llama_cpp_sys_2::GGML_TYPE_Q6_K);
            let to_float = (*traits).to_float.expect("Q6_K has a dequantizer");
            to_float(row.as_ptr().cast(), out.as_mut_ptr(), count as i64);
        }
        out
    }

    #[test]
    fn rows_read_back_exactly_as_llama_cpp_reads_them() {
        let cols = 2 * BLOCK;
        let source = values(3 * cols, 11);
        let rows = quantize_rows(&source, cols).unwrap();
        assert_eq!(rows.len(), 3 * 2 * BLOCK_BYTES);
        let mut ours = vec![0f32; source.len()];
        for (row, out) in rows
            .chunks_exact(bytes_for(cols))
            .zip(ours.chunks_exact_mut(cols))
        {
            dequantize_row(row, out);
        }
        let theirs = ggml_dequantize(&rows, source.len());
        assert_eq!(
            ours.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            theirs.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        // And the quantization itself is close: 6 bits keep about 1.5% of each block's range.
        let worst = source
            .iter()
            .zip(&ours)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let range = source.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(worst < range * 0.02, "worst error {worst} of {range}");
    }

    #[test]
    fn a_partial_block_is_refused_with_the_reason() {
        let err = quantize_rows(&[0.0; 192], 192).unwrap_err();
        assert!(err.to_string().contains("multiple of 256"), "{err}");
    }
}
