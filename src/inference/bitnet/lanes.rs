//! Element-wise helpers written so the compiler turns loops over them into vector code:
//! between the parallel products of a decode step the caller runs the norms, quantization and
//! gate alone while the other threads wait, so their latency is the whole team's. (The norm's
//! sum of squares stays a serial sum: the reference forward pass sums in that order, and the
//! tests hold the engine to it within 1e-4.)

const LANES: usize = 16;

/// `max |x|` (0 for an empty slice); exact, as the order of a max does not matter.
pub fn max_abs(x: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            // Not `f32::max`: its NaN rule keeps the compiler from vectorizing.
            let a = v.abs();
            *lane = if a > *lane { a } else { *lane };
        }
    }
    let tail = chunks.remainder().iter().fold(0f32, |m, v| m.max(v.abs()));
    lanes.iter().fold(tail, |m, &v| m.max(v))
}

/// `1.5 · 2²³`: added to a float of magnitude below 2²², it leaves the nearest integer (ties
/// to even) in the low bits of the mantissa.
const ROUNDER: f32 = 12_582_912.0;

/// `v` rounded to the nearest integer, ties to even, for `|v| < 2²²`. The same value as
/// `v.round_ties_even() as i32`, but only float adds and bit moves: the saturating `as` cast
/// keeps the compiler from vectorizing a loop (it became one scalar conversion per value).
#[inline]
pub fn round_small(v: f32) -> i32 {
    (v + ROUNDER).to_bits() as i32 - ROUNDER.to_bits() as i32
}

/// `e^x` within 3e-7 relative of the exact value (a few f32 roundings) for |x| ≤ 87 (0 below,
/// `e^88` above), with no branch, call or saturating cast, so a loop over it becomes vector
/// code: `x = n·ln2 + r`, `|r| ≤ ln2/2`, `e^r` by its Taylor series to r⁶, and `2^n` written
/// into the exponent bits.
#[inline]
pub fn exp(x: f32) -> f32 {
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUNDER;
    let n = shifted - ROUNDER;
    let power = shifted.to_bits() as i32 - ROUNDER.to_bits() as i32;
    let r = x - n * LN2_HIGH - n * LN2_LOW;
    let p = 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    p * f32::from_bits(((power + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 37.0)
            .collect()
    }

    #[test]
    fn exp_is_within_3e_7_of_the_exact_value() {
        let mut worst = 0f64;
        for i in -870_000..=870_000 {
            let x = i as f32 / 10_000.0;
            let exact = f64::from(x).exp();
            worst = worst.max((f64::from(exp(x)) - exact).abs() / exact);
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp(-1000.0), exp(-87.3));
        assert!(exp(-1000.0) < 1e-37);
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn round_small_rounds_ties_to_even_as_the_cast_does() {
        for i in -4_000_000..=4_000_000 {
            let v = i as f32 / 1000.0 * 1.0009;
            assert_eq!(round_small(v), v.round_ties_even() as i32, "{v}");
        }
        for v in [
            0.5f32,
            1.5,
            2.5,
            -0.5,
            -1.5,
            -2.5,
            127.49,
            -128.0,
            4_194_303.0,
        ] {
            assert_eq!(round_small(v), v.round_ties_even() as i32, "{v}");
        }
    }

    #[test]
    fn max_abs_is_exact_wherever_the_largest_value_sits() {
        for n in [0, 1, 15, 16, 17, 100, 2560, 6913] {
            let mut x = values(n);
            assert_eq!(max_abs(&x), x.iter().fold(0f32, |m, v| m.max(v.abs())));
            if n > 0 {
                x[n - 1] = -1e6;
                assert_eq!(max_abs(&x), 1e6, "{n}: largest in the tail");
                x[n / 2] = 2e6;
                assert_eq!(max_abs(&x), 2e6, "{n}: largest in the middle");
            }
        }
    }
}
