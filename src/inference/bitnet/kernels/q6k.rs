//! A Q6_K row (see `bitnet::q6k`) against int8 activation rows. Per block the sum is exact in
//! i32: `S = Σ_j scale_j · (Σ_{i∈j} q_i·x_i − 32 · Σ_{i∈j} x_i)`, with the sums of 16
//! activations given by the caller (computed once per activation row, not once per weight row).
//! Blocks are then added as `Σ d · S` in f32, in block order, by every family alike, so the
//! result is the same bit for bit on every ISA.

use super::Isa;
use crate::inference::bitnet::q6k::{self, BLOCK, BLOCK_BYTES};

/// `Σ w · x` of one Q6_K row against `T` int8 activation rows (each within ±127), given the
/// sums of every 16 activations of each (`sums[t][k] = Σ xs[t][16k..16k + 16]`).
pub fn q6k_dots<const T: usize>(
    isa: Isa,
    row: &[u8],
    xs: &[&[i8]; T],
    sums: &[&[i16]; T],
) -> [f32; T] {
    assert!(
        row.len().is_multiple_of(BLOCK_BYTES),
        "rows are whole blocks"
    );
    let cols = row.len() / BLOCK_BYTES * BLOCK;
    for (x, s) in xs.iter().zip(sums) {
        assert!(
            x.len() >= cols && s.len() >= cols / 16,
            "activations cover the row"
        );
    }
    let mut totals = [0f32; T];
    for (b, block) in row.chunks_exact(BLOCK_BYTES).enumerate() {
        let exact = block_sums(isa, block, b, xs, sums);
        let d = q6k::block_scale(block);
        for (total, s) in totals.iter_mut().zip(exact) {
            *total += d * s as f32;
        }
    }
    totals
}

fn block_sums<const T: usize>(
    isa: Isa,
    block: &[u8],
    b: usize,
    xs: &[&[i8]; T],
    sums: &[&[i16]; T],
) -> [i32; T] {
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 {
        // SAFETY: an `Isa` from AVX2 up is only produced when the CPU has AVX2 (see
        // `Isa::all_available`); `q6k_dots` checked that every row covers block `b`.
        return unsafe { avx2::block_sums(block, b, xs, sums) };
    }
    let _ = isa;
    portable_block_sums(block, b, xs, sums)
}

fn portable_block_sums<const T: usize>(
    block: &[u8],
    b: usize,
    xs: &[&[i8]; T],
    sums: &[&[i16]; T],
) -> [i32; T] {
    std::array::from_fn(|t| {
        let x = &xs[t][b * BLOCK..][..BLOCK];
        (0..BLOCK / 16)
            .map(|sub| {
                let products: i32 = (16 * sub..16 * sub + 16)
                    .map(|i| i32::from(q6k::code(block, i)) * i32::from(x[i]))
                    .sum();
                let offset = q6k::OFFSET * i32::from(sums[t][b * 16 + sub]);
                i32::from(q6k::sub_scale(block, sub)) * (products - offset)
            })
            .sum()
    })
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::BLOCK;
    use crate::inference::bitnet::{
        kernels::avx2::sum_i32,
        q6k::{BLOCK_BYTES, HIGH_BITS, SCALES},
    };

    /// Byte shuffles that spread the i16 scales of sub-blocks `2k` (low lane) and `2k + 1`
    /// (high lane) of one half over the 8 i16 products of their 16 values.
    const fn spread(k: usize) -> [i8; 32] {
        let mut mask = [0i8; 32];
        let mut i = 0;
        while i < 32 {
            let sub = 2 * k + i / 16;
            mask[i] = (2 * sub + i % 2) as i8;
            i += 1;
        }
        mask
    }
    const SPREAD: [[i8; 32]; 4] = [spread(0), spread(1), spread(2), spread(3)];

    /// As `portable_block_sums`. Each value's 6 bits are rebuilt 32 at a time (low nibble, high
    /// pair shifted to bits 4–5); `maddubs` multiplies them, unsigned (0..=63), with the signed
    /// activations (pairs at most 2·63·127, no saturation), and `madd` applies the sub-block
    /// scales.
    #[target_feature(enable = "avx2")]
    #[allow(clippy::needless_range_loop)] // rows of activations and their accumulators in lockstep
    pub unsafe fn block_sums<const T: usize>(
        block: &[u8],
        b: usize,
        xs: &[&[i8]; T],
        sums: &[&[i16]; T],
    ) -> [i32; T] {
        debug_assert_eq!(block.len(), BLOCK_BYTES);
        let p = block.as_ptr();
        let low_nibble = _mm256_set1_epi8(0x0F);
        let high_pair = _mm256_set1_epi8(0x30);
        let scales8 = _mm_loadu_si128(p.add(SCALES).cast());
        let scales16 = _mm256_cvtepi8_epi16(scales8);
        let mut acc = [_mm256_setzero_si256(); T];
        for half in 0..2 {
            let low_a = _mm256_loadu_si256(p.add(half * 64).cast());
            let low_b = _mm256_loadu_si256(p.add(half * 64 + 32).cast());
            let high = _mm256_loadu_si256(p.add(HIGH_BITS + half * 32).cast());
            let codes = [
                _mm256_or_si256(
                    _mm256_and_si256(low_a, low_nibble),
                    _mm256_and_si256(_mm256_slli_epi16(high, 4), high_pair),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(low_b, low_nibble),
                    _mm256_and_si256(_mm256_slli_epi16(high, 2), high_pair),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(low_a, 4), low_nibble),
                    _mm256_and_si256(high, high_pair),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(low_b, 4), low_nibble),
                    _mm256_and_si256(_mm256_srli_epi16(high, 2), high_pair),
                ),
            ];
            // The 8 i16 scales of this half, in both lanes.
            let half_scales = if half == 0 {
                _mm256_castsi256_si128(scales16)
            } else {
                _mm256_extracti128_si256(scales16, 1)
            };
            let both = _mm256_broadcastsi128_si256(half_scales);
            for (k, code) in codes.iter().enumerate() {
                let scale =
                    _mm256_shuffle_epi8(both, _mm256_loadu_si256(SPREAD[k].as_ptr().cast()));
                let column = b * BLOCK + half * 128 + k * 32;
                for t in 0..T {
                    let x = _mm256_loadu_si256(xs[t].as_ptr().add(column).cast());
                    let products = _mm256_maddubs_epi16(*code, x);
                    acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(products, scale));
                }
            }
        }
        std::array::from_fn(|t| {
            let sixteen = _mm256_loadu_si256(sums[t].as_ptr().add(b * 16).cast());
            let offset = _mm256_slli_epi32(_mm256_madd_epi16(sixteen, scales16), 5);
            sum_i32(_mm256_sub_epi32(acc[t], offset))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::bitnet::q6k::{dequantize_row, quantize_rows};

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    }

    fn sums_of(x: &[i8]) -> Vec<i16> {
        x.chunks_exact(16)
            .map(|c| c.iter().map(|&v| i16::from(v)).sum())
            .collect()
    }

    #[test]
    fn every_isa_gives_the_portable_sums_bit_for_bit_and_the_dequantized_dot() {
        let mut seed = 3u64;
        let cols = 3 * BLOCK;
        let weights: Vec<f32> = (0..cols)
            .map(|_| (lcg(&mut seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let row = quantize_rows(&weights, cols).unwrap();
        let mut dequantized = vec![0f32; cols];
        dequantize_row(&row, &mut dequantized);
        // Extremes (±127 everywhere) and random activations.
        let top = vec![127i8; cols];
        let bottom = vec![-127i8; cols];
        let mixed: Vec<i8> = (0..cols)
            .map(|_| ((lcg(&mut seed) % 255) as i32 - 127) as i8)
            .collect();
        let xs = [&top[..], &bottom[..], &mixed[..], &mixed[..]];
        let sums: Vec<Vec<i16>> = xs.iter().map(|x| sums_of(x)).collect();
        let sums = [&sums[0][..], &sums[1][..], &sums[2][..], &sums[3][..]];
        let portable = q6k_dots(Isa::Portable, &row, &xs, &sums);
        for isa in Isa::all_available() {
            let got = q6k_dots(isa, &row, &xs, &sums);
            assert_eq!(
                got.map(f32::to_bits),
                portable.map(f32::to_bits),
                "{}",
                isa.label()
            );
            let one = q6k_dots(isa, &row, &[&mixed[..]], &[sums[2]]);
            assert_eq!(one[0].to_bits(), portable[2].to_bits(), "{}", isa.label());
            eprintln!("Q6_K head kernel checked on {}", isa.label());
        }
        for (t, x) in xs.iter().enumerate() {
            let reference: f64 = dequantized
                .iter()
                .zip(x.iter())
                .map(|(w, &v)| f64::from(*w) * f64::from(v))
                .sum();
            let scale: f64 = dequantized
                .iter()
                .zip(x.iter())
                .map(|(w, &v)| (f64::from(*w) * f64::from(v)).abs())
                .sum();
            assert!(
                (f64::from(portable[t]) - reference).abs() <= scale * 1e-5,
                "row {t}: {} against {reference}",
                portable[t]
            );
        }
    }
}
