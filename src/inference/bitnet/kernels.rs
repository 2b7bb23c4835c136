//! The BitNet engine's inner loops: ternary weights against int8 activations, and bf16 rows
//! (the tied embedding used as the output head) against f32 activations. Each has an AVX2
//! version, chosen by runtime feature detection, and a portable one that defines the result.
//!
//! Ternary layout: a weight `t ∈ {-1, 0, +1}` is stored as the 2-bit code `t + 1`. A row is cut
//! into blocks of [`BLOCK`] columns held in [`BLOCK_BYTES`] bytes; byte `j` of a block carries
//! columns `j`, `j + 32`, `j + 64` and `j + 96` in bits 0–1, 2–3, 4–5 and 6–7, so one shift and
//! one mask turn 32 bytes into 32 consecutive codes. The kernels return `Σ code · x`; since
//! `code = t + 1`, the ternary dot product is that minus `Σ x`, which callers keep per row of
//! activations. Codes (0..=2) are the unsigned operand of `maddubs`: a pair of products is at
//! most 2·2·128 = 512 in magnitude, far from i16 saturation.

/// Columns per packed block.
pub const BLOCK: usize = 128;
/// Bytes per packed block.
pub const BLOCK_BYTES: usize = BLOCK / 4;

/// The instruction set a kernel runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Portable,
    Avx2,
}

impl Isa {
    /// The fastest kernels this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            return Isa::Avx2;
        }
        Isa::Portable
    }

    /// Every kernel family this CPU can run (for tests and benchmarks).
    pub fn all_available() -> Vec<Isa> {
        let mut all = vec![Isa::Portable];
        if Isa::detect() == Isa::Avx2 {
            all.push(Isa::Avx2);
        }
        all
    }

    pub fn label(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "AVX2",
        }
    }
}

/// `Σ code · x` of one packed row against `T` activation rows at once (the weights are read
/// once for all of them). Every `xs[t]` holds at least `row.len() * 4` values.
pub fn code_dots<const T: usize>(isa: Isa, row: &[u8], xs: &[&[i8]; T]) -> [i32; T] {
    assert!(
        row.len().is_multiple_of(BLOCK_BYTES),
        "rows are whole blocks"
    );
    for x in xs {
        assert!(x.len() >= row.len() * 4, "activations cover the row");
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only produced when the CPU reports AVX2 (see `Isa::detect`),
        // and the lengths were checked above.
        Isa::Avx2 => unsafe { avx2::code_dots(row, xs) },
        _ => portable_code_dots(row, xs),
    }
}

fn portable_code_dots<const T: usize>(row: &[u8], xs: &[&[i8]; T]) -> [i32; T] {
    let mut sums = [0i32; T];
    for (block, bytes) in row.chunks_exact(BLOCK_BYTES).enumerate() {
        for (j, &byte) in bytes.iter().enumerate() {
            for lane in 0..4 {
                let code = i32::from((byte >> (2 * lane)) & 3);
                let column = block * BLOCK + lane * BLOCK_BYTES + j;
                for (sum, x) in sums.iter_mut().zip(xs) {
                    *sum += code * i32::from(x[column]);
                }
            }
        }
    }
    sums
}

/// `Σ bf16(w) · x` of one row of bf16 bits against `T` f32 activation rows.
pub fn bf16_dots<const T: usize>(isa: Isa, row: &[u16], xs: &[&[f32]; T]) -> [f32; T] {
    for x in xs {
        assert!(x.len() >= row.len(), "activations cover the row");
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `code_dots`; `Isa::Avx2` also implies FMA.
        Isa::Avx2 => unsafe { avx2::bf16_dots(row, xs) },
        _ => portable_bf16_dots(row, xs),
    }
}

fn portable_bf16_dots<const T: usize>(row: &[u16], xs: &[&[f32]; T]) -> [f32; T] {
    let mut sums = [0f32; T];
    for (i, &w) in row.iter().enumerate() {
        let w = bf16_to_f32(w);
        for (sum, x) in sums.iter_mut().zip(xs) {
            *sum += w * x[i];
        }
    }
    sums
}

/// `Σ k · q` of an f16 row (a cached key) against f32 `q` of the same length.
pub fn f16_dot(isa: Isa, k: &[half::f16], q: &[f32]) -> f32 {
    assert_eq!(k.len(), q.len(), "same length");
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` implies AVX2, FMA and F16C (see `Isa::detect`).
        Isa::Avx2 => unsafe { avx2::f16_dot(k, q) },
        _ => k.iter().zip(q).map(|(a, b)| a.to_f32() * b).sum(),
    }
}

/// `out += weight · v` for an f16 row (a cached value).
pub fn f16_axpy(isa: Isa, weight: f32, v: &[half::f16], out: &mut [f32]) {
    assert_eq!(v.len(), out.len(), "same length");
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `f16_dot`.
        Isa::Avx2 => unsafe { avx2::f16_axpy(weight, v, out) },
        _ => {
            for (o, x) in out.iter_mut().zip(v) {
                *o += weight * x.to_f32();
            }
        }
    }
}

pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{bf16_to_f32, BLOCK, BLOCK_BYTES};

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn sum_i32(v: __m256i) -> i32 {
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
                    acc[t][lane] =
                        _mm256_fmadd_ps(*w, _mm256_loadu_ps(x.add(8 * lane)), acc[t][lane]);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    }

    #[test]
    fn packed_codes_follow_the_documented_layout() {
        // Column 0 in bits 0-1 of byte 0, column 32 in bits 2-3, column 97 in bits 6-7 of byte 1.
        let mut row = vec![0b01_01_01_01u8; BLOCK_BYTES];
        row[0] = 0b01_01_10_00; // col 0 code 0 (-1), col 32 code 2 (+1)
        row[1] = 0b10_01_01_01; // col 97 code 2 (+1)
        let mut x = vec![0i8; BLOCK];
        x[0] = 5;
        x[32] = 7;
        x[97] = 11;
        for isa in Isa::all_available() {
            // Σ code·x = 0·5 + 2·7 + 2·11 = 36.
            assert_eq!(code_dots(isa, &row, &[&x]), [36], "{isa:?}");
        }
    }

    #[test]
    fn every_isa_agrees_with_the_portable_kernels_on_extreme_values() {
        let mut seed = 7u64;
        let blocks = 20; // more than one widening group
        let row: Vec<u8> = (0..blocks * BLOCK_BYTES)
            .map(|_| {
                // codes 0..=2 only
                (0..4).fold(0u8, |b, lane| {
                    b | (((lcg(&mut seed) % 3) as u8) << (2 * lane))
                })
            })
            .collect();
        let extreme = vec![-128i8; blocks * BLOCK];
        let mixed: Vec<i8> = (0..blocks * BLOCK)
            .map(|_| (lcg(&mut seed) % 256) as u8 as i8)
            .collect();
        let all_two = vec![0b10_10_10_10u8; blocks * BLOCK_BYTES];
        let top = vec![127i8; blocks * BLOCK];
        for isa in Isa::all_available() {
            assert_eq!(
                code_dots(isa, &row, &[&extreme, &mixed]),
                portable_code_dots(&row, &[&extreme, &mixed])
            );
            assert_eq!(
                code_dots(isa, &all_two, &[&top]),
                [(blocks * BLOCK) as i32 * 2 * 127]
            );
        }
    }
}
