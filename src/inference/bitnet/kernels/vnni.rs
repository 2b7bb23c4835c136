//! `vpdpbusd` kernels: unsigned × signed bytes summed four at a time straight into i32 lanes, so
//! no i16 stage and no widening pass. Two encodings: 512-bit (AVX-512 VNNI) and the VEX 256-bit
//! one (AVX-VNNI). Both return exactly what the portable kernels return.

// Loop counters here index several arrays of registers in lockstep (rows, halves, lanes).
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::{
    avx2::{sum_i32, I8_STEP},
    BLOCK, BLOCK_BYTES,
};

/// Columns per step of the 512-bit int8 kernel.
pub(super) const I8_STEP_512: usize = 128;

/// The 512-bit ternary loop, shared by both ways of unpacking a block (`$codes`): two blocks
/// per step, each into its own pair of accumulators (fixed indices, so they stay in
/// registers). Four accumulators per activation row keep `vpdpbusd`'s latency off the critical
/// path when one row is decoded.
macro_rules! code_dots_512_with {
    ($codes:ident, $row:expr, $xs:expr, $t:expr) => {{
        let (row, xs): (&[u8], _) = ($row, $xs);
        let mut acc = [[_mm512_setzero_si512(); 4]; $t];
        let blocks = row.len() / BLOCK_BYTES;
        let mut block = 0;
        while block + 2 <= blocks {
            let first = $codes(row.as_ptr().add(block * BLOCK_BYTES));
            let second = $codes(row.as_ptr().add((block + 1) * BLOCK_BYTES));
            for t in 0..$t {
                let x = xs[t].as_ptr().add(block * BLOCK);
                acc[t][0] = _mm512_dpbusd_epi32(acc[t][0], first[0], _mm512_loadu_si512(x.cast()));
                acc[t][1] =
                    _mm512_dpbusd_epi32(acc[t][1], first[1], _mm512_loadu_si512(x.add(64).cast()));
                acc[t][2] = _mm512_dpbusd_epi32(
                    acc[t][2],
                    second[0],
                    _mm512_loadu_si512(x.add(128).cast()),
                );
                acc[t][3] = _mm512_dpbusd_epi32(
                    acc[t][3],
                    second[1],
                    _mm512_loadu_si512(x.add(192).cast()),
                );
            }
            block += 2;
        }
        if block < blocks {
            let last = $codes(row.as_ptr().add(block * BLOCK_BYTES));
            for t in 0..$t {
                let x = xs[t].as_ptr().add(block * BLOCK);
                acc[t][0] = _mm512_dpbusd_epi32(acc[t][0], last[0], _mm512_loadu_si512(x.cast()));
                acc[t][1] =
                    _mm512_dpbusd_epi32(acc[t][1], last[1], _mm512_loadu_si512(x.add(64).cast()));
            }
        }
        let mut out = [0i32; $t];
        for t in 0..$t {
            let [a, b, c, d] = acc[t];
            out[t] = _mm512_reduce_add_epi32(_mm512_add_epi32(
                _mm512_add_epi32(a, b),
                _mm512_add_epi32(c, d),
            ));
        }
        out
    }};
}

/// The decode loop over a run of weight rows against one activation row, all inside one call
/// (a call per four rows spent a third of the time outside the products, and the memory
/// stream stalled between calls). Rows go four at a time, sharing each load of the
/// activations, with two accumulators each; 2560 columns are only five blocks per row, so the
/// four sums are reduced together (one transpose-add) rather than one by one. Every other
/// block asks for one line of each row of the next four: the prefetch keeps pace with the
/// reads, and runs on past `out`'s rows into the rest of `rows` (the next chunk's rows).
macro_rules! ternary_rows_512_with {
    ($codes:ident, $rows:expr, $row_bytes:expr, $x:expr, $out:expr) => {{
        let (rows, row_bytes, x, out): (&[u8], usize, &[i8], &mut [i32]) =
            ($rows, $row_bytes, $x, $out);
        let blocks = row_bytes / BLOCK_BYTES;
        let quad_bytes = 4 * row_bytes;
        let mut quads = out.chunks_exact_mut(4);
        let mut base = 0;
        for quad in &mut quads {
            let mut acc = [[_mm512_setzero_si512(); 2]; 4];
            for block in 0..blocks {
                if block % 2 == 0 {
                    for r in 0..4 {
                        let at = base + quad_bytes + r * row_bytes + block * BLOCK_BYTES;
                        if at < rows.len() {
                            _mm_prefetch::<_MM_HINT_T0>(rows.as_ptr().add(at).cast());
                        }
                    }
                }
                let at = x.as_ptr().add(block * BLOCK);
                let low = _mm512_loadu_si512(at.cast());
                let high = _mm512_loadu_si512(at.add(64).cast());
                for r in 0..4 {
                    let codes = rows
                        .as_ptr()
                        .add(base + r * row_bytes + block * BLOCK_BYTES);
                    let [first, second] = $codes(codes);
                    acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], first, low);
                    acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], second, high);
                }
            }
            let sums = sum_four(std::array::from_fn(|r| {
                _mm512_add_epi32(acc[r][0], acc[r][1])
            }));
            _mm_storeu_si128(quad.as_mut_ptr().cast(), sums);
            base += quad_bytes;
        }
        for dot in quads.into_remainder() {
            let mut acc = [_mm512_setzero_si512(); 2];
            for block in 0..blocks {
                let at = x.as_ptr().add(block * BLOCK);
                let [first, second] = $codes(rows.as_ptr().add(base + block * BLOCK_BYTES));
                acc[0] = _mm512_dpbusd_epi32(acc[0], first, _mm512_loadu_si512(at.cast()));
                acc[1] = _mm512_dpbusd_epi32(acc[1], second, _mm512_loadu_si512(at.add(64).cast()));
            }
            *dot = _mm512_reduce_add_epi32(_mm512_add_epi32(acc[0], acc[1]));
            base += row_bytes;
        }
    }};
}

/// The lane sums of four registers, in order: halves added, then two rounds of pairwise adds.
#[inline]
#[target_feature(enable = "avx512f,avx2")]
unsafe fn sum_four(v: [__m512i; 4]) -> __m128i {
    let halves =
        v.map(|v| _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v)));
    let pairs = _mm256_hadd_epi32(
        _mm256_hadd_epi32(halves[0], halves[1]),
        _mm256_hadd_epi32(halves[2], halves[3]),
    );
    _mm_add_epi32(
        _mm256_castsi256_si128(pairs),
        _mm256_extracti128_si256::<1>(pairs),
    )
}

/// `out[r] = Σ code · x` for the first `out.len()` rows of `rows` (`row_bytes` each, whole
/// blocks); `rows` may run on past them, and is prefetched as far as it goes.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
pub unsafe fn ternary_rows_dot_512(rows: &[u8], row_bytes: usize, x: &[i8], out: &mut [i32]) {
    ternary_rows_512_with!(codes_512, rows, row_bytes, x, out)
}

/// As [`ternary_rows_dot_512`], unpacking with `gf2p8affineqb`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,gfni")]
pub unsafe fn ternary_rows_dot_512_gfni(rows: &[u8], row_bytes: usize, x: &[i8], out: &mut [i32]) {
    ternary_rows_512_with!(codes_512_gfni, rows, row_bytes, x, out)
}

/// Ternary codes against int8 activations, two 512-bit products per 128-column block. The
/// block's 32 code bytes are loaded into both halves of a register; shifting the low half by 0
/// and the high half by 2 gives the codes of columns 0–63 in order (and 4/6: columns 64–127),
/// so the activations are read as they lie.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn code_dots_512<const T: usize>(row: &[u8], xs: &[&[i8]; T]) -> [i32; T] {
    code_dots_512_with!(codes_512, row, xs, T)
}

/// As [`code_dots_512`], with each half's 2-bit field picked by one `gf2p8affineqb` (a bit
/// matrix per 64-bit lane) instead of a variable shift and a mask: two vector operations per
/// 64 codes where the shift-and-mask path needs three, on the ports the products also use.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,gfni")]
pub unsafe fn code_dots_512_gfni<const T: usize>(row: &[u8], xs: &[&[i8]; T]) -> [i32; T] {
    code_dots_512_with!(codes_512_gfni, row, xs, T)
}

/// The `gf2p8affineqb` matrix that moves bits `2·lane` and `2·lane + 1` of every byte to bits 0
/// and 1 and clears the rest: output bit `i` is the parity of the input masked by matrix byte
/// `7 − i`.
const fn field_matrix(lane: u32) -> i64 {
    (((1u64 << (2 * lane)) << 56) | ((1u64 << (2 * lane + 1)) << 48)) as i64
}

/// One block's codes as two registers (columns 0–63 and 64–127, in column order), each half of
/// a register unpacked by its own lane's matrix.
#[inline]
#[target_feature(enable = "avx512f,gfni")]
unsafe fn codes_512_gfni(block: *const u8) -> [__m512i; 2] {
    let (l0, l1, l2, l3) = (
        field_matrix(0),
        field_matrix(1),
        field_matrix(2),
        field_matrix(3),
    );
    // `set_epi64` lists lanes from the highest: the high 256 bits take the odd field.
    let first_half = _mm512_set_epi64(l1, l1, l1, l1, l0, l0, l0, l0);
    let second_half = _mm512_set_epi64(l3, l3, l3, l3, l2, l2, l2, l2);
    let w = _mm512_broadcast_i64x4(_mm256_loadu_si256(block.cast()));
    [
        _mm512_gf2p8affine_epi64_epi8::<0>(w, first_half),
        _mm512_gf2p8affine_epi64_epi8::<0>(w, second_half),
    ]
}

/// One block's codes as two registers: columns 0–63 and 64–127, in column order.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn codes_512(block: *const u8) -> [__m512i; 2] {
    let mask = _mm512_set1_epi8(3);
    // `set_epi64` lists lanes from the highest: the high 256 bits shift by 2 (or 6).
    let first_half = _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0);
    let second_half = _mm512_set_epi64(6, 6, 6, 6, 4, 4, 4, 4);
    let w = _mm512_broadcast_i64x4(_mm256_loadu_si256(block.cast()));
    [
        _mm512_and_si512(_mm512_srlv_epi64(w, first_half), mask),
        _mm512_and_si512(_mm512_srlv_epi64(w, second_half), mask),
    ]
}

/// Ternary codes against int8 activations in the AVX2 layout, `vpdpbusd` in place of
/// `maddubs` + `madd`. One activation row gets four accumulators (one per 32-column lane), since
/// a single chain would wait on `vpdpbusd`'s latency; several rows get two each, enough chains
/// in total without spilling the 16 registers.
#[target_feature(enable = "avx2,avxvnni")]
pub unsafe fn code_dots_256<const T: usize>(row: &[u8], xs: &[&[i8]; T]) -> [i32; T] {
    if T == 1 {
        let mut out = [0i32; T];
        out[0] = code_dot_256(row, xs[0]);
        return out;
    }
    let mask = _mm256_set1_epi8(3);
    let mut acc = [[_mm256_setzero_si256(); 2]; T];
    let blocks = row.len() / BLOCK_BYTES;
    for block in 0..blocks {
        let codes = codes_256(row.as_ptr().add(block * BLOCK_BYTES), mask);
        for t in 0..T {
            let x = xs[t].as_ptr().add(block * BLOCK);
            for (lane, codes) in codes.iter().enumerate() {
                let chain = &mut acc[t][lane & 1];
                *chain = _mm256_dpbusd_avx_epi32(
                    *chain,
                    *codes,
                    _mm256_loadu_si256(x.add(BLOCK_BYTES * lane).cast()),
                );
            }
        }
    }
    let mut out = [0i32; T];
    for t in 0..T {
        out[t] = sum_i32(_mm256_add_epi32(acc[t][0], acc[t][1]));
    }
    out
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn codes_256(block: *const u8, mask: __m256i) -> [__m256i; 4] {
    let w = _mm256_loadu_si256(block.cast());
    [
        _mm256_and_si256(w, mask),
        _mm256_and_si256(_mm256_srli_epi16(w, 2), mask),
        _mm256_and_si256(_mm256_srli_epi16(w, 4), mask),
        _mm256_and_si256(_mm256_srli_epi16(w, 6), mask),
    ]
}

#[target_feature(enable = "avx2,avxvnni")]
unsafe fn code_dot_256(row: &[u8], x: &[i8]) -> i32 {
    let mask = _mm256_set1_epi8(3);
    let mut acc = [_mm256_setzero_si256(); 4];
    for block in 0..row.len() / BLOCK_BYTES {
        let codes = codes_256(row.as_ptr().add(block * BLOCK_BYTES), mask);
        let x = x.as_ptr().add(block * BLOCK);
        for lane in 0..4 {
            acc[lane] = _mm256_dpbusd_avx_epi32(
                acc[lane],
                codes[lane],
                _mm256_loadu_si256(x.add(BLOCK_BYTES * lane).cast()),
            );
        }
    }
    sum_i32(_mm256_add_epi32(
        _mm256_add_epi32(acc[0], acc[1]),
        _mm256_add_epi32(acc[2], acc[3]),
    ))
}

/// int8 rows against int8 activations over whole steps, as `vpdpbusd(|w|, ±x)`: the sign of `w` moves onto `x`
/// (both within ±127, so neither overflows).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn i8_dots_512<const T: usize>(row: &[i8], xs: &[&[i8]; T]) -> [i32; T] {
    let zero = _mm512_setzero_si512();
    let mut acc = [[zero; 2]; T];
    let full = row.len() / I8_STEP_512 * I8_STEP_512;
    let mut i = 0;
    while i < full {
        for half in 0..2 {
            let w = _mm512_loadu_si512(row.as_ptr().add(i + 64 * half).cast());
            let magnitude = _mm512_abs_epi8(w);
            let negative = _mm512_movepi8_mask(w);
            for t in 0..T {
                let x = _mm512_loadu_si512(xs[t].as_ptr().add(i + 64 * half).cast());
                let signed = _mm512_mask_sub_epi8(x, negative, zero, x);
                acc[t][half] = _mm512_dpbusd_epi32(acc[t][half], magnitude, signed);
            }
        }
        i += I8_STEP_512;
    }
    let mut out = [0i32; T];
    for t in 0..T {
        out[t] = _mm512_reduce_add_epi32(_mm512_add_epi32(acc[t][0], acc[t][1]));
    }
    out
}

/// int8 rows against int8 activations over whole steps, 256-bit: `vpdpbusd(|w|, sign(x, w))`.
#[target_feature(enable = "avx2,avxvnni")]
pub unsafe fn i8_dots_256<const T: usize>(row: &[i8], xs: &[&[i8]; T]) -> [i32; T] {
    let mut acc = [[_mm256_setzero_si256(); 2]; T];
    let full = row.len() / I8_STEP * I8_STEP;
    let mut i = 0;
    while i < full {
        for half in 0..2 {
            let w = _mm256_loadu_si256(row.as_ptr().add(i + 32 * half).cast());
            let magnitude = _mm256_abs_epi8(w);
            for t in 0..T {
                let x = _mm256_loadu_si256(xs[t].as_ptr().add(i + 32 * half).cast());
                acc[t][half] =
                    _mm256_dpbusd_avx_epi32(acc[t][half], magnitude, _mm256_sign_epi8(x, w));
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

/// The output head's decode loop: every int8 row of `rows` (`cols` each) against one activation
/// row, over whole 64-column steps, one row after another (four rows in lockstep, sharing each
/// load of `x`, measured slower: four streams where the prefetcher likes one). `vpdpbusd` takes
/// the weights unsigned: `w ^ 0x80` is `w + 128`, so one XOR replaces the abs, sign mask and
/// masked negate of [`i8_dots_512`], and `128 · Σ x` comes off each sum at the end. Writes one
/// i32 per row into `out`; columns past the last whole step are the caller's.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn i8_rows_dot_512(rows: &[i8], cols: usize, x: &[i8], out: &mut [i32]) {
    let full = cols / I8_ROWS_STEP_512 * I8_ROWS_STEP_512;
    let flip = _mm512_set1_epi8(i8::MIN);
    let offset = 128 * x[..full].iter().map(|&v| i32::from(v)).sum::<i32>();
    for (r, dot) in out.iter_mut().enumerate() {
        let row = rows.as_ptr().add(r * cols);
        let step = |acc: __m512i, i: usize| {
            let w = _mm512_xor_si512(_mm512_loadu_si512(row.add(i).cast()), flip);
            _mm512_dpbusd_epi32(acc, w, _mm512_loadu_si512(x.as_ptr().add(i).cast()))
        };
        // Two chains (even and odd steps), named so they stay in registers, hide the latency.
        let (mut even, mut odd) = (_mm512_setzero_si512(), _mm512_setzero_si512());
        let mut i = 0;
        while i + 2 * I8_ROWS_STEP_512 <= full {
            even = step(even, i);
            odd = step(odd, i + I8_ROWS_STEP_512);
            i += 2 * I8_ROWS_STEP_512;
        }
        if i < full {
            even = step(even, i);
        }
        *dot = _mm512_reduce_add_epi32(_mm512_add_epi32(even, odd)) - offset;
    }
}

/// As [`i8_rows_dot_512`] in 256 bits (AVX-VNNI), whole 32-column steps.
#[target_feature(enable = "avx2,avxvnni")]
pub unsafe fn i8_rows_dot_256(rows: &[i8], cols: usize, x: &[i8], out: &mut [i32]) {
    let full = cols / I8_STEP_256 * I8_STEP_256;
    let flip = _mm256_set1_epi8(i8::MIN);
    let offset = 128 * x[..full].iter().map(|&v| i32::from(v)).sum::<i32>();
    for (r, dot) in out.iter_mut().enumerate() {
        let row = rows.as_ptr().add(r * cols);
        let step = |acc: __m256i, i: usize| {
            let w = _mm256_xor_si256(_mm256_loadu_si256(row.add(i).cast()), flip);
            _mm256_dpbusd_avx_epi32(acc, w, _mm256_loadu_si256(x.as_ptr().add(i).cast()))
        };
        let (mut even, mut odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        let mut i = 0;
        while i + 2 * I8_STEP_256 <= full {
            even = step(even, i);
            odd = step(odd, i + I8_STEP_256);
            i += 2 * I8_STEP_256;
        }
        if i < full {
            even = step(even, i);
        }
        *dot = sum_i32(_mm256_add_epi32(even, odd)) - offset;
    }
}

/// Columns per step of [`i8_rows_dot_256`].
pub(super) const I8_STEP_256: usize = 32;

/// Columns per step of [`i8_rows_dot_512`].
pub(super) const I8_ROWS_STEP_512: usize = 64;
