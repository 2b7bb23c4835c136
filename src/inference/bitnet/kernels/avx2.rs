//! AVX2 (with FMA and F16C) kernels: 256-bit integer `maddubs` for ternary and int8 rows, FMA
//! for bf16 and f16 rows.

// Loop counters here index several arrays of registers in lockstep (rows, halves, lanes).
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::{bf16_to_f32, BLOCK, BLOCK_BYTES};

#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn sum_i32(v: __m256i) -> i32 {
    let pair = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let quad = _mm_add_epi32(pair, _mm_shuffle_epi32(pair, 0b01_00_11_10));
    let one = _mm_add_epi32(quad, _mm_shuffle_epi32(quad, 0b10_11_00_01));
    _mm_cvtsi128_si32(one)
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn sum_f32(v: __m256) -> f32 {
    let pair = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let quad = _mm_add_ps(pair, _mm_movehl_ps(pair, pair));
    let one = _mm_add_ss(quad, _mm_shuffle_ps(quad, quad, 1));
    _mm_cvtss_f32(one)
}

/// Blocks between widenings of the i16 partial sums: one block adds at most 4·512 = 2048
/// per lane, so 8 blocks stay below i16::MAX.
const BLOCKS_PER_WIDEN: usize = 8;

#[target_feature(enable = "avx2")]
pub unsafe fn code_dots<const T: usize>(row: &[u8], xs: &[&[i8]; T]) -> [i32; T] {
    let mask = _mm256_set1_epi8(3);
    let ones = _mm256_set1_epi16(1);
    let mut wide = [_mm256_setzero_si256(); T];
    let blocks = row.len() / BLOCK_BYTES;
    let mut block = 0;
    while block < blocks {
        let end = (block + BLOCKS_PER_WIDEN).min(blocks);
        let mut narrow = [_mm256_setzero_si256(); T];
        while block < end {
            let w = _mm256_loadu_si256(row.as_ptr().add(block * BLOCK_BYTES).cast());
            let codes = [
                _mm256_and_si256(w, mask),
                _mm256_and_si256(_mm256_srli_epi16(w, 2), mask),
                _mm256_and_si256(_mm256_srli_epi16(w, 4), mask),
                _mm256_and_si256(_mm256_srli_epi16(w, 6), mask),
            ];
            for t in 0..T {
                let x = xs[t].as_ptr().add(block * BLOCK);
                let p0 = _mm256_maddubs_epi16(codes[0], _mm256_loadu_si256(x.cast()));
                let p1 = _mm256_maddubs_epi16(codes[1], _mm256_loadu_si256(x.add(32).cast()));
                let p2 = _mm256_maddubs_epi16(codes[2], _mm256_loadu_si256(x.add(64).cast()));
                let p3 = _mm256_maddubs_epi16(codes[3], _mm256_loadu_si256(x.add(96).cast()));
                let block_sum =
                    _mm256_add_epi16(_mm256_add_epi16(p0, p1), _mm256_add_epi16(p2, p3));
                narrow[t] = _mm256_add_epi16(narrow[t], block_sum);
            }
            block += 1;
        }
        for t in 0..T {
            wide[t] = _mm256_add_epi32(wide[t], _mm256_madd_epi16(narrow[t], ones));
        }
    }
    let mut out = [0i32; T];
    for t in 0..T {
        out[t] = sum_i32(wide[t]);
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_dot(k: &[half::f16], q: &[f32]) -> f32 {
    let full = k.len() / 8 * 8;
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i < full {
        let kv = _mm256_cvtph_ps(_mm_loadu_si128(k.as_ptr().add(i).cast()));
        acc = _mm256_fmadd_ps(kv, _mm256_loadu_ps(q.as_ptr().add(i)), acc);
        i += 8;
    }
    let mut sum = sum_f32(acc);
    for j in full..k.len() {
        sum += k[j].to_f32() * q[j];
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_axpy(weight: f32, v: &[half::f16], out: &mut [f32]) {
    let full = v.len() / 8 * 8;
    let w = _mm256_set1_ps(weight);
    let mut i = 0;
    while i < full {
        let vv = _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(i).cast()));
        let o = out.as_mut_ptr().add(i);
        _mm256_storeu_ps(o, _mm256_fmadd_ps(w, vv, _mm256_loadu_ps(o)));
        i += 8;
    }
    for j in full..v.len() {
        out[j] += weight * v[j].to_f32();
    }
}

/// `scores[t · stride + p] = k_p · qs[t]` for the key rows `first..end` of `keys`, `P` of them
/// at a time: each f16 chunk is widened once for all `T` heads, and `P · T` independent
/// accumulators hide the FMA latency that bounds a lone [`f16_dot`]. Every dot still adds its
/// products in `f16_dot`'s order, so the scores are its own bit for bit.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_dots<const T: usize, const P: usize>(
    keys: &[half::f16],
    qs: &[&[f32]; T],
    (first, end): (usize, usize),
    scores: &mut [f32],
    stride: usize,
) {
    let size = qs[0].len();
    let full = size / 8 * 8;
    let mut p = first;
    while p + P <= end {
        let mut acc = [[_mm256_setzero_ps(); T]; P];
        let mut i = 0;
        while i < full {
            let mut k = [_mm256_setzero_ps(); P];
            for j in 0..P {
                k[j] = _mm256_cvtph_ps(_mm_loadu_si128(
                    keys.as_ptr().add((p + j) * size + i).cast(),
                ));
            }
            for t in 0..T {
                let q = _mm256_loadu_ps(qs[t].as_ptr().add(i));
                for j in 0..P {
                    acc[j][t] = _mm256_fmadd_ps(k[j], q, acc[j][t]);
                }
            }
            i += 8;
        }
        for j in 0..P {
            let key = &keys[(p + j) * size..][..size];
            for t in 0..T {
                let mut sum = sum_f32(acc[j][t]);
                for d in full..size {
                    sum += key[d].to_f32() * qs[t][d];
                }
                scores[t * stride + p + j] = sum;
            }
        }
        p += P;
    }
}

/// `outs[t] += Σ_p weights[t · stride + p] · v_p` over every value row of `values`, for the
/// columns `first..end` (whole chunks of 8), `C` chunks at a time: each f16 chunk is widened once
/// for all `T` heads. Positions are added in order with one FMA each, as repeated
/// [`f16_axpy`] calls add them, so every output is `f16_axpy`'s bit for bit.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_weighted_sums<const T: usize, const C: usize>(
    values: &[half::f16],
    weights: &[f32],
    stride: usize,
    outs: &mut [f32],
    (first, end): (usize, usize),
) {
    let size = outs.len() / T;
    let positions = values.len() / size;
    let mut i = first;
    while i + 8 * C <= end {
        let mut acc = [[_mm256_setzero_ps(); C]; T];
        for t in 0..T {
            for c in 0..C {
                acc[t][c] = _mm256_loadu_ps(outs.as_ptr().add(t * size + i + 8 * c));
            }
        }
        for p in 0..positions {
            let mut v = [_mm256_setzero_ps(); C];
            for c in 0..C {
                v[c] = _mm256_cvtph_ps(_mm_loadu_si128(
                    values.as_ptr().add(p * size + i + 8 * c).cast(),
                ));
            }
            for t in 0..T {
                let w = _mm256_broadcast_ss(&weights[t * stride + p]);
                for c in 0..C {
                    acc[t][c] = _mm256_fmadd_ps(w, v[c], acc[t][c]);
                }
            }
        }
        for t in 0..T {
            for c in 0..C {
                _mm256_storeu_ps(outs.as_mut_ptr().add(t * size + i + 8 * c), acc[t][c]);
            }
        }
        i += 8 * C;
    }
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn widen_bf16(p: *const u16) -> __m256 {
    _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast())),
        16,
    ))
}

/// Four independent accumulators per activation row: with one or two, the FMA latency
/// (not memory) bounded the output head.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn bf16_dots<const T: usize>(row: &[u16], xs: &[&[f32]; T]) -> [f32; T] {
    let mut acc = [[_mm256_setzero_ps(); 4]; T];
    let full = row.len() / 32 * 32;
    let mut i = 0;
    while i < full {
        let w = [
            widen_bf16(row.as_ptr().add(i)),
            widen_bf16(row.as_ptr().add(i + 8)),
            widen_bf16(row.as_ptr().add(i + 16)),
            widen_bf16(row.as_ptr().add(i + 24)),
        ];
        for t in 0..T {
            let x = xs[t].as_ptr().add(i);
            for (lane, w) in w.iter().enumerate() {
                acc[t][lane] = _mm256_fmadd_ps(*w, _mm256_loadu_ps(x.add(8 * lane)), acc[t][lane]);
            }
        }
        i += 32;
    }
    let mut out = [0f32; T];
    for t in 0..T {
        let [a, b, c, d] = acc[t];
        out[t] = sum_f32(_mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
        for j in full..row.len() {
            out[t] += bf16_to_f32(row[j]) * xs[t][j];
        }
    }
    out
}

/// Columns per step of the 256-bit int8 kernels (AVX2 and AVX-VNNI).
pub(super) const I8_STEP: usize = 64;

/// `Σ w · x` over the whole 64-column steps, as `maddubs(|w|, sign(x, w))`: with both within ±127 a pair of products is at
/// most 2·127·127 = 32258, below i16 saturation, so each 32-byte step widens right away.
#[target_feature(enable = "avx2")]
pub unsafe fn i8_dots<const T: usize>(row: &[i8], xs: &[&[i8]; T]) -> [i32; T] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); 2]; T];
    let full = row.len() / I8_STEP * I8_STEP;
    let mut i = 0;
    while i < full {
        for half in 0..2 {
            let w = _mm256_loadu_si256(row.as_ptr().add(i + 32 * half).cast());
            let magnitude = _mm256_abs_epi8(w);
            for t in 0..T {
                let x = _mm256_loadu_si256(xs[t].as_ptr().add(i + 32 * half).cast());
                let pairs = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(x, w));
                acc[t][half] = _mm256_add_epi32(acc[t][half], _mm256_madd_epi16(pairs, ones));
            }
        }
        i += I8_STEP;
    }
    let mut out = [0i32; T];
    for t in 0..T {
        out[t] = sum_i32(_mm256_add_epi32(acc[t][0], acc[t][1]));
    }
    out
}
