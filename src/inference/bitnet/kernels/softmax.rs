//! The softmax of one row of attention scores. Scaling, the maximum, `exp` and the sum run eight
//! lanes at a time from AVX2 up: `exp` is a polynomial (Cephes' `expf`, within 2 ulp of the
//! true value) instead of one libm call per score, which had become the larger part of
//! attention once the dot products shared their reads.
//!
//! A row's result depends only on the row, never on the rows computed beside it, so a token's
//! attention is the same alone, in a batch and in prefill.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::Isa;

/// Scores below this give `exp` = 0 in f32 terms; the clamp keeps `2^n` a normal number.
const EXP_FLOOR: f32 = -87.336_55;
const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// Weights below this become exactly 0. Such a weight moves an output by under 1e-30 of a
/// value, but products with it are subnormal, and Intel cores take a microcode assist (~100x
/// slower) on every FMA that meets one: on a Xeon that made the weighted sums 11% of decode
/// time with peaked attention, where most weights of a long row are tiny.
const NEGLIGIBLE_WEIGHT: f32 = 1e-30;
/// ln 2 split in two (Cephes): `n · LN2_HI` is exact for the `n` that occur.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes' minimax polynomial for `(exp(r) - 1 - r) / r²` on |r| ≤ ln 2 / 2, highest first.
const POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_2e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5, // Cephes: 5.0000001e-1, which is 0.5 in f32
];

/// `row ← softmax(row · scale)`.
pub fn softmax(isa: Isa, row: &mut [f32], scale: f32) {
    if row.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        // SAFETY: every family from AVX2 up has AVX2 and FMA (see `Isa::all_available`).
        return unsafe { softmax_avx2(row, scale) };
    }
    let mut max = f32::NEG_INFINITY;
    for score in row.iter_mut() {
        *score *= scale;
        max = max.max(*score);
    }
    let mut total = 0.0;
    for score in row.iter_mut() {
        *score = (*score - max).exp();
        total += *score;
    }
    for score in row.iter_mut() {
        *score = drop_negligible(*score / total);
    }
}

fn drop_negligible(weight: f32) -> f32 {
    if weight < NEGLIGIBLE_WEIGHT {
        0.0
    } else {
        weight
    }
}

/// The polynomial `exp` of the AVX2 path, one value at a time with the same operations (for
/// the columns after the last whole 8, and for tests).
fn exp_poly(x: f32) -> f32 {
    let x = x.max(EXP_FLOOR);
    let n = (x * LOG2_E).round_ties_even();
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let p = POLY[1..].iter().fold(POLY[0], |p, &c| p.mul_add(r, c));
    let y = p.mul_add(r * r, r) + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_avx2(x: __m256) -> __m256 {
    let x = _mm256_max_ps(x, _mm256_set1_ps(EXP_FLOOR));
    let n = _mm256_round_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(LOG2_E)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
    );
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    let mut p = _mm256_set1_ps(POLY[0]);
    for &c in &POLY[1..] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let y = _mm256_add_ps(
        _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
        _mm256_set1_ps(1.0),
    );
    let exponent = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(exponent, 23)))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_avx2(row: &mut [f32], scale: f32) {
    let full = row.len() / 8 * 8;
    let ptr = row.as_mut_ptr();
    let scale_v = _mm256_set1_ps(scale);
    let mut max_v = _mm256_set1_ps(f32::NEG_INFINITY);
    for i in (0..full).step_by(8) {
        let v = _mm256_mul_ps(_mm256_loadu_ps(ptr.add(i)), scale_v);
        _mm256_storeu_ps(ptr.add(i), v);
        max_v = _mm256_max_ps(max_v, v);
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), max_v);
    // The maximum is exact whatever the order, so lanes and tail may meet in any order.
    let mut max = lanes.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for score in &mut row[full..] {
        *score *= scale;
        max = max.max(*score);
    }
    let max_v = _mm256_set1_ps(max);
    let mut total_v = _mm256_setzero_ps();
    for i in (0..full).step_by(8) {
        let e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(ptr.add(i)), max_v));
        _mm256_storeu_ps(ptr.add(i), e);
        total_v = _mm256_add_ps(total_v, e);
    }
    _mm256_storeu_ps(lanes.as_mut_ptr(), total_v);
    let mut total = lanes.iter().sum::<f32>();
    for score in &mut row[full..] {
        *score = exp_poly(*score - max);
        total += *score;
    }
    let total_v = _mm256_set1_ps(total);
    let negligible_v = _mm256_set1_ps(NEGLIGIBLE_WEIGHT);
    for i in (0..full).step_by(8) {
        let weight = _mm256_div_ps(_mm256_loadu_ps(ptr.add(i)), total_v);
        let kept = _mm256_cmp_ps::<_CMP_GE_OQ>(weight, negligible_v);
        _mm256_storeu_ps(ptr.add(i), _mm256_and_ps(weight, kept));
    }
    for score in &mut row[full..] {
        *score = drop_negligible(*score / total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_polynomial_exp_is_within_two_ulp_where_attention_uses_it() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let want = (x as f64).exp();
            let got = exp_poly(x) as f64;
            let ulp = (want as f32).abs() * f32::EPSILON;
            worst = worst.max((got - want).abs() / ulp as f64);
            x += 0.001_7;
        }
        assert!(worst <= 2.0, "worst error {worst:.2} ulp");
        assert_eq!(
            exp_poly(0.0),
            1.0,
            "the largest score weighs exactly 1 before the sum"
        );
        assert!(
            exp_poly(-1000.0) < 1e-37,
            "far below the maximum is as good as 0"
        );
    }

    #[test]
    fn every_isa_gives_a_distribution_close_to_the_libm_one() {
        let families = Isa::all_available();
        eprintln!("softmax: kernels exercised: {families:?}");
        for len in [1usize, 7, 8, 9, 64, 333] {
            let scores: Vec<f32> = (0..len)
                .map(|i| ((i * 7919) % 97) as f32 * 0.37 - 12.0)
                .collect();
            let mut want = scores.clone();
            softmax(Isa::Portable, &mut want, 0.125);
            for &isa in &families {
                let mut got = scores.clone();
                softmax(isa, &mut got, 0.125);
                let sum: f32 = got.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "{isa:?} {len}: sums to {sum}");
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-6 + 1e-5 * w,
                        "{isa:?} {len}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_peaked_row_has_no_subnormal_weights_on_any_isa() {
        // Scores spread over 200 units: most weights are far below 1e-30 of the largest.
        let scores: Vec<f32> = (0..77).map(|i| -(i as f32) * 2.6).collect();
        for isa in Isa::all_available() {
            let mut row = scores.clone();
            softmax(isa, &mut row, 1.0);
            assert!(
                row.iter().all(|w| *w == 0.0 || w.is_normal()),
                "{isa:?}: a subnormal weight"
            );
            assert!(row[0] > 0.9 && row[76] == 0.0, "{isa:?}: {row:?}");
        }
    }

    /// The columns after the last whole 8 use the scalar `exp_poly`; it must be the vector
    /// `exp` bit for bit, or a score's weight would depend on where the row ends.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_scalar_polynomial_is_the_vector_one_bit_for_bit() {
        if !Isa::all_available().contains(&Isa::Avx2) {
            eprintln!("softmax: no AVX2 on this CPU, only the portable path ran");
            return;
        }
        let mut x = -90.0f32;
        while x <= 0.0 {
            let xs = [
                x,
                x * 0.5,
                x * 0.25,
                x * 0.125,
                x - 0.3,
                x * 0.9,
                -0.0,
                x * 0.01,
            ];
            let mut out = [0f32; 8];
            // SAFETY: AVX2 and FMA were detected above.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), exp_avx2(_mm256_loadu_ps(xs.as_ptr()))) };
            for (o, &x) in out.iter().zip(&xs) {
                assert_eq!(o.to_bits(), exp_poly(x).to_bits(), "exp({x})");
            }
            x += 0.013;
        }
    }
}
