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

/// The instruction set a kernel runs on, slowest first. Every family implies the ones before it
/// on the CPUs that have it (checked at detection, not assumed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Portable,
    /// 256-bit `maddubs`, with FMA and F16C.
    Avx2,
    /// AVX2 plus the VEX-encoded `vpdpbusd` (Intel Alder Lake and later, AMD Zen 5).
    AvxVnni,
    /// 512-bit `vpdpbusd` (Intel Xeon since Cascade Lake, AMD Zen 4 and 5).
    Avx512Vnni,
    /// 512-bit `vpdpbusd` with GFNI's `gf2p8affineqb` unpacking the ternary codes (Intel Xeon
    /// since Ice Lake, AMD Zen 4 and 5); otherwise the kernels of [`Isa::Avx512Vnni`].
    Avx512VnniGfni,
}

impl Isa {
    /// Every family, slowest first.
    pub const ALL: [Isa; 5] = [
        Isa::Portable,
        Isa::Avx2,
        Isa::AvxVnni,
        Isa::Avx512Vnni,
        Isa::Avx512VnniGfni,
    ];

    /// The most capable kernels this CPU runs, unless `QUANTLAB_BITNET_ISA` names a slower
    /// one this CPU also runs (for comparisons). The engine times the candidates at load
    /// instead (`Model::choose_fastest_isa`).
    pub fn detect() -> Self {
        Self::requested().unwrap_or_else(Self::best)
    }

    /// The most capable family this CPU runs (not always the fastest: see
    /// `Model::choose_fastest_isa`).
    pub fn best() -> Self {
        Self::all_available()
            .into_iter()
            .max()
            .unwrap_or(Isa::Portable)
    }

    /// The family `QUANTLAB_BITNET_ISA` names, if this CPU runs it.
    pub fn requested() -> Option<Self> {
        let name = std::env::var("QUANTLAB_BITNET_ISA").ok()?;
        let best = Self::best();
        match Self::from_label(&name) {
            Some(chosen) if chosen <= best => Some(chosen),
            _ => {
                tracing::warn!(
                    requested = %name,
                    using = best.label(),
                    "QUANTLAB_BITNET_ISA names no kernel family this CPU runs"
                );
                None
            }
        }
    }

    /// Every kernel family this CPU can run (for tests and benchmarks), slowest first.
    pub fn all_available() -> Vec<Isa> {
        let mut all = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") && has!("f16c") {
                all.push(Isa::Avx2);
                if has!("avxvnni") {
                    all.push(Isa::AvxVnni);
                }
                if has!("avx512f") && has!("avx512bw") && has!("avx512vnni") {
                    all.push(Isa::Avx512Vnni);
                    if has!("gfni") {
                        all.push(Isa::Avx512VnniGfni);
                    }
                }
            }
        }
        all
    }

    pub fn label(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "AVX2",
            Isa::AvxVnni => "AVX-VNNI",
            Isa::Avx512Vnni => "AVX-512 VNNI",
            Isa::Avx512VnniGfni => "AVX-512 VNNI+GFNI",
        }
    }

    /// The family a label (as printed, or lower-case without punctuation) names.
    pub fn from_label(label: &str) -> Option<Self> {
        let key: String = label
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase();
        Isa::ALL.into_iter().find(|isa| {
            isa.label()
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
                .eq_ignore_ascii_case(&key)
        })
    }

    /// Whether the float kernels (bf16, f16) may use AVX2 and FMA.
    fn has_avx2(self) -> bool {
        self >= Isa::Avx2
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
        // SAFETY (every arm): an `Isa` above `Portable` is only produced when the CPU reports
        // its features (see `Isa::all_available`), and the lengths were checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512VnniGfni => unsafe { vnni::code_dots_512_gfni(row, xs) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { vnni::code_dots_512(row, xs) },
        #[cfg(target_arch = "x86_64")]
        Isa::AvxVnni => unsafe { vnni::code_dots_256(row, xs) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::code_dots(row, xs) },
        _ => portable_code_dots(row, xs),
    }
}

/// Asks the CPU to start fetching `bytes` into its caches, one request per 64-byte line, so a
/// loop reading rows one after another finds the next ones arriving instead of waiting for
/// them: decode reads every weight once per token, and the hardware prefetcher alone left a
/// quarter of the decode speed on the table on a Xeon (the output head, one long run of bytes,
/// gained nothing measurable and does without).
#[inline]
pub fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch never faults, and the address is inside `bytes` anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// `out[r] = Σ code · x` for the first `out.len()` rows of `rows` (packed rows of `row_bytes`
/// each) against one activation row: the decode case, where one activation row meets every
/// weight row. Exactly what [`code_dots`] gives row by row. `rows` may run on past those rows
/// (to the end of the matrix): the kernels fetch what follows into the caches meanwhile.
pub fn ternary_rows_dot(isa: Isa, rows: &[u8], row_bytes: usize, x: &[i8], out: &mut [i32]) {
    assert!(
        row_bytes.is_multiple_of(BLOCK_BYTES) && rows.len() >= out.len() * row_bytes,
        "rows of whole blocks cover the output"
    );
    assert!(x.len() >= row_bytes * 4, "activations cover the rows");
    match isa {
        // SAFETY: as in `code_dots`; the lengths were checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512VnniGfni => unsafe { vnni::ternary_rows_dot_512_gfni(rows, row_bytes, x, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { vnni::ternary_rows_dot_512(rows, row_bytes, x, out) },
        _ => {
            // Each row's product after asking for the row four ahead, so the requests spread
            // over the work.
            for (r, dot) in out.iter_mut().enumerate() {
                let ahead = (r + 4) * row_bytes;
                prefetch(rows.get(ahead..ahead + row_bytes).unwrap_or_default());
                [*dot] = code_dots(isa, &rows[r * row_bytes..][..row_bytes], &[x]);
            }
        }
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
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        // SAFETY: as in `code_dots`; every family from AVX2 up also has FMA.
        return unsafe { avx2::bf16_dots(row, xs) };
    }
    portable_bf16_dots(row, xs)
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

/// The largest magnitude an int8 row or activation may hold for [`i8_dots`]: symmetric, so
/// that `|w|` fits the unsigned operand and `±x` never overflows.
pub const I8_LIMIT: i8 = 127;

/// `Σ w · x` of one int8 row against `T` int8 activation rows, exact in i32. Every value must
/// lie in `-I8_LIMIT..=I8_LIMIT` (the int8 head's quantizers guarantee it) and every `xs[t]`
/// holds at least `row.len()` values.
pub fn i8_dots<const T: usize>(isa: Isa, row: &[i8], xs: &[&[i8]; T]) -> [i32; T] {
    for x in xs {
        assert!(x.len() >= row.len(), "activations cover the row");
    }
    debug_assert!(row.iter().all(|&w| w != i8::MIN), "row within ±I8_LIMIT");
    // Each SIMD kernel covers whole steps of `step` columns; the rest is added here.
    let whole = |step: usize| row.len() / step * step;
    let (mut sums, covered) = match isa {
        // SAFETY: as in `code_dots`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni | Isa::Avx512VnniGfni => unsafe {
            (vnni::i8_dots_512(row, xs), whole(vnni::I8_STEP_512))
        },
        #[cfg(target_arch = "x86_64")]
        Isa::AvxVnni => unsafe { (vnni::i8_dots_256(row, xs), whole(avx2::I8_STEP)) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { (avx2::i8_dots(row, xs), whole(avx2::I8_STEP)) },
        _ => ([0; T], 0),
    };
    add_i8_tail(row, xs, covered, &mut sums);
    sums
}

/// `out[r] = Σ w · x` for every int8 row `r` of `rows` (`cols` values each, `out.len()` rows)
/// against one activation row: the output head in decode, where one activation row meets
/// every vocabulary row. Exactly what [`i8_dots`] gives row by row, under the same limits.
pub fn i8_rows_dot(isa: Isa, rows: &[i8], cols: usize, x: &[i8], out: &mut [i32]) {
    assert!(
        rows.len() >= out.len() * cols && x.len() >= cols,
        "rows and activations cover the output"
    );
    let whole = |step: usize| cols / step * step;
    let covered = match isa {
        // SAFETY: as in `code_dots`; the lengths were checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni | Isa::Avx512VnniGfni => unsafe {
            vnni::i8_rows_dot_512(rows, cols, x, out);
            whole(vnni::I8_ROWS_STEP_512)
        },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::AvxVnni => unsafe {
            vnni::i8_rows_dot_256(rows, cols, x, out);
            whole(vnni::I8_STEP_256)
        },
        _ => {
            for (r, dot) in out.iter_mut().enumerate() {
                [*dot] = i8_dots(isa, &rows[r * cols..][..cols], &[x]);
            }
            return;
        }
    };
    if covered < cols {
        for (r, dot) in out.iter_mut().enumerate() {
            let mut sums = [*dot];
            add_i8_tail(&rows[r * cols..][..cols], &[x], covered, &mut sums);
            *dot = sums[0];
        }
    }
}

/// Adds `Σ w · x` over columns `from..` to `sums`: the whole row for the portable kernel, the
/// columns after the last whole step for the SIMD ones.
fn add_i8_tail<const T: usize>(row: &[i8], xs: &[&[i8]; T], from: usize, sums: &mut [i32; T]) {
    for (i, &w) in row.iter().enumerate().skip(from) {
        for (sum, x) in sums.iter_mut().zip(xs) {
            *sum += i32::from(w) * i32::from(x[i]);
        }
    }
}

/// `Σ k · q` of an f16 row (a cached key) against f32 `q` of the same length.
pub fn f16_dot(isa: Isa, k: &[half::f16], q: &[f32]) -> f32 {
    assert_eq!(k.len(), q.len(), "same length");
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        // SAFETY: every family from AVX2 up has AVX2, FMA and F16C (see `Isa::all_available`).
        return unsafe { avx2::f16_dot(k, q) };
    }
    k.iter().zip(q).map(|(a, b)| a.to_f32() * b).sum()
}

/// `out += weight · v` for an f16 row (a cached value).
pub fn f16_axpy(isa: Isa, weight: f32, v: &[half::f16], out: &mut [f32]) {
    assert_eq!(v.len(), out.len(), "same length");
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        // SAFETY: as in `f16_dot`.
        return unsafe { avx2::f16_axpy(weight, v, out) };
    }
    for (o, x) in out.iter_mut().zip(v) {
        *o += weight * x.to_f32();
    }
}

/// Attention scores of `T` query heads of one size against the cached key rows `keys`:
/// `scores[t · stride + p] = k_p · qs[t]`. Each score is exactly [`f16_dot`]'s, so it does not
/// depend on how many heads share a call; sharing saves widening each key once per head.
pub fn f16_dots<const T: usize>(
    isa: Isa,
    keys: &[half::f16],
    qs: &[&[f32]; T],
    scores: &mut [f32],
    stride: usize,
) {
    let size = qs.first().map_or(0, |q| q.len());
    assert!(
        size > 0 && qs.iter().all(|q| q.len() == size),
        "query rows of one size"
    );
    assert!(keys.len().is_multiple_of(size), "whole key rows");
    let positions = keys.len() / size;
    assert!(
        positions <= stride && scores.len() >= (T - 1) * stride + positions,
        "a score row per head"
    );
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        // SAFETY: as in `f16_dot`; the lengths were checked above. Positions run 4 or 2 at a
        // time so that at least 4 accumulators are in flight; the rest one at a time.
        unsafe {
            let done = if T <= 2 {
                avx2::f16_dots::<T, 4>(keys, qs, (0, positions), scores, stride);
                positions / 4 * 4
            } else {
                avx2::f16_dots::<T, 2>(keys, qs, (0, positions), scores, stride);
                positions / 2 * 2
            };
            avx2::f16_dots::<T, 1>(keys, qs, (done, positions), scores, stride);
        }
        return;
    }
    for (t, q) in qs.iter().enumerate() {
        for (p, key) in keys.chunks_exact(size).enumerate() {
            scores[t * stride + p] = f16_dot(isa, key, q);
        }
    }
}

/// The weighted sums of attention for `T` heads: `outs[t] += Σ_p weights[t · stride + p] · v_p`
/// over the cached value rows `values`, positions in order, each output exactly what repeated
/// [`f16_axpy`] calls give.
pub fn f16_weighted_sums<const T: usize>(
    isa: Isa,
    values: &[half::f16],
    weights: &[f32],
    stride: usize,
    outs: &mut [f32],
) {
    let size = outs.len() / T;
    assert!(size > 0 && outs.len() == T * size, "an output row per head");
    assert!(values.len().is_multiple_of(size), "whole value rows");
    let positions = values.len() / size;
    assert!(
        positions <= stride && weights.len() >= (T - 1) * stride + positions,
        "a weight row per head"
    );
    let mut covered = 0;
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() {
        let chunks = size / 8 * 8;
        // SAFETY: as in `f16_dot`; the lengths were checked above. Columns run 32 or 16 at a
        // time (4 to 8 accumulators), then 8.
        unsafe {
            let done = if T <= 2 {
                avx2::f16_weighted_sums::<T, 4>(values, weights, stride, outs, (0, chunks));
                chunks / 32 * 32
            } else {
                avx2::f16_weighted_sums::<T, 2>(values, weights, stride, outs, (0, chunks));
                chunks / 16 * 16
            };
            avx2::f16_weighted_sums::<T, 1>(values, weights, stride, outs, (done, chunks));
        }
        covered = chunks;
    }
    for (p, value) in values.chunks_exact(size).enumerate() {
        for (t, out) in outs.chunks_exact_mut(size).enumerate() {
            let weight = weights[t * stride + p];
            for (o, v) in out[covered..].iter_mut().zip(&value[covered..]) {
                *o += weight * v.to_f32();
            }
        }
    }
}

pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

#[cfg(target_arch = "x86_64")]
mod avx2;
mod q6k;
pub use q6k::q6k_dots;
mod softmax;
pub use softmax::softmax;
#[cfg(target_arch = "x86_64")]
mod vnni;

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
    fn a_run_of_rows_against_one_activation_row_equals_one_row_at_a_time() {
        let mut seed = 11u64;
        for blocks in [1usize, 5, 54] {
            let row_bytes = blocks * BLOCK_BYTES;
            // Nine rows: two whole quads and a remainder, or any shorter run of them.
            let rows: Vec<u8> = (0..9 * row_bytes)
                .map(|_| {
                    (0..4).fold(0u8, |b, lane| {
                        b | (((lcg(&mut seed) % 3) as u8) << (2 * lane))
                    })
                })
                .collect();
            let x: Vec<i8> = (0..blocks * BLOCK)
                .map(|_| (lcg(&mut seed) % 256) as u8 as i8)
                .collect();
            let want: Vec<i32> = rows
                .chunks_exact(row_bytes)
                .map(|row| portable_code_dots(row, &[&x])[0])
                .collect();
            for isa in Isa::all_available() {
                for count in 1..=9 {
                    // Rows from `count` on are only prefetched, never summed.
                    let mut out = vec![0; count];
                    ternary_rows_dot(isa, &rows, row_bytes, &x, &mut out);
                    assert_eq!(out, want[..count], "{isa:?} {blocks} blocks, {count} rows");
                }
            }
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
