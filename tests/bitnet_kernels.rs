//! The BitNet kernels against a naive reference: random shapes (odd sizes, sizes below and
//! across a 128-column block, one row), one and several activation rows, every instruction
//! set this CPU runs (each test prints which ran, and one checks that list against the CPU's
//! own flags, so a kernel family cannot drop out silently).

mod common;

use quantlab::inference::bitnet::{
    kernels::{
        bf16_dots, f16_axpy, f16_dot, f16_dots, f16_weighted_sums, i8_dots, i8_rows_dot, Isa,
        I8_LIMIT,
    },
    team::Team,
    ternary::{QuantizedRows, TernaryMatrix},
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn ternary(&mut self) -> i8 {
        (self.next() % 3) as i8 - 1
    }
    fn float(&mut self) -> f32 {
        (self.next() % 20_001) as f32 / 10_000.0 - 1.0
    }
}

const SHAPES: &[(usize, usize)] = &[
    (1, 1),
    (3, 5),
    (4, 127),
    (7, 128),
    (130, 129),
    (33, 300),
    (257, 1000),
    (64, 2560),
    (5, 6912),
];

#[test]
fn ternary_matmul_equals_the_naive_product_on_every_shape_and_isa() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // More threads than this machine's two cores: tasks are claimed by whichever runs.
    let mut team = Team::new(3, "test").unwrap();
    for &(rows, cols) in SHAPES {
        let values: Vec<i8> = (0..rows * cols).map(|_| rng.ternary()).collect();
        let scale = 0.25 + (rng.next() % 100) as f32 / 100.0;
        let matrix = TernaryMatrix::from_ternary("w", rows, cols, &values, scale).unwrap();
        for tokens in [1usize, 3, 6] {
            let x: Vec<f32> = (0..tokens * cols).map(|_| rng.float() * 4.0).collect();
            let mut acts = QuantizedRows::default();
            acts.quantize(&x, cols);
            // Naive: Σ value · dequantized activation, in f64.
            let expected: Vec<f64> = (0..tokens)
                .flat_map(|t| {
                    let (values, acts) = (&values, &acts);
                    (0..rows).map(move |r| {
                        (0..cols)
                            .map(|c| {
                                f64::from(values[r * cols + c]) * f64::from(acts.dequantized(t, c))
                            })
                            .sum::<f64>()
                            * f64::from(scale)
                    })
                })
                .collect();
            for isa in exercised("ternary matmul") {
                let mut out = vec![f32::NAN; tokens * rows];
                matrix.matmul(isa, &mut team, &acts, &mut out);
                for (i, (&got, &want)) in out.iter().zip(&expected).enumerate() {
                    let tolerance = 1e-4 * (1.0 + want.abs());
                    assert!(
                        (f64::from(got) - want).abs() <= tolerance,
                        "{isa:?} {rows}x{cols}, {tokens} tokens, output {i}: {got} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn stacked_matrices_keep_each_part_and_its_scale() {
    let mut rng = Rng(42);
    let cols = 200;
    let parts: Vec<(usize, f32, Vec<i8>)> = [(8usize, 0.5f32), (4, 2.0), (4, 1.25)]
        .iter()
        .map(|&(rows, scale)| {
            (
                rows,
                scale,
                (0..rows * cols).map(|_| rng.ternary()).collect(),
            )
        })
        .collect();
    let stacked = TernaryMatrix::stack(
        parts
            .iter()
            .map(|(rows, scale, v)| {
                TernaryMatrix::from_ternary("p", *rows, cols, v, *scale).unwrap()
            })
            .collect(),
    )
    .unwrap();
    let x: Vec<f32> = (0..cols).map(|_| rng.float()).collect();
    let mut acts = QuantizedRows::default();
    acts.quantize(&x, cols);
    let mut out = vec![0.0; 16];
    stacked.matmul(
        Isa::detect(),
        &mut Team::new(2, "test").unwrap(),
        &acts,
        &mut out,
    );
    let mut row = 0;
    for (rows, scale, values) in &parts {
        for r in 0..*rows {
            let want: f32 = (0..cols)
                .map(|c| f32::from(values[r * cols + c]) * acts.dequantized(0, c))
                .sum::<f32>()
                * scale;
            assert!((out[row] - want).abs() < 1e-4 * (1.0 + want.abs()));
            row += 1;
        }
    }
}

#[test]
fn bf16_rows_equal_the_naive_dot_product() {
    let mut rng = Rng(7);
    for len in [1usize, 7, 8, 15, 16, 17, 100, 2560] {
        let row: Vec<u16> = (0..len)
            .map(|_| half::bf16::from_f32(rng.float()).to_bits())
            .collect();
        let xs: Vec<Vec<f32>> = (0..4)
            .map(|_| (0..len).map(|_| rng.float()).collect())
            .collect();
        let want: Vec<f64> = xs
            .iter()
            .map(|x| {
                row.iter()
                    .zip(x)
                    .map(|(&w, &v)| f64::from(half::bf16::from_bits(w).to_f32()) * f64::from(v))
                    .sum()
            })
            .collect();
        for isa in Isa::all_available() {
            let four = bf16_dots(isa, &row, &[&xs[0], &xs[1], &xs[2], &xs[3]]);
            let one = bf16_dots(isa, &row, &[&xs[2]]);
            for (got, want) in four.iter().zip(&want) {
                assert!(
                    (f64::from(*got) - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "{isa:?} {len}"
                );
            }
            assert!((f64::from(one[0]) - want[2]).abs() < 1e-4 * (1.0 + want[2].abs()));
        }
    }
}

#[test]
fn activation_quantization_is_per_token_absmax_to_127() {
    let x = [
        0.0f32, 1.0, -2.0, 0.5, /* second token */ 10.0, -10.0, 5.0, 0.0,
    ];
    let mut acts = QuantizedRows::default();
    acts.quantize(&x, 4);
    assert_eq!(acts.rows(), 2);
    // 127 / 2 · [0, 1, -2, 0.5] = [0, 63.5, -127, 31.75] -> half to even: 64, -127, 32.
    assert_eq!(&acts.row(0)[..4], &[0, 64, -127, 32]);
    assert_eq!(&acts.row(1)[..4], &[127, -127, 64, 0]);
    // Padding to the block is zero, so it adds nothing to any dot product.
    assert!(acts.row(0)[4..].iter().all(|&q| q == 0));
    // An all-zero token does not divide by zero.
    acts.quantize(&[0.0; 4], 4);
    assert!(acts.row(0).iter().all(|&q| q == 0) && acts.dequantized(0, 0) == 0.0);
}

#[test]
fn f16_cache_kernels_equal_the_naive_loops() {
    let mut rng = Rng(99);
    for len in [1usize, 8, 13, 64, 128] {
        let k: Vec<half::f16> = (0..len).map(|_| half::f16::from_f32(rng.float())).collect();
        let q: Vec<f32> = (0..len).map(|_| rng.float()).collect();
        let want: f32 = k.iter().zip(&q).map(|(a, b)| a.to_f32() * b).sum();
        for isa in Isa::all_available() {
            let got = f16_dot(isa, &k, &q);
            assert!(
                (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                "{isa:?} {len}"
            );
            let mut out: Vec<f32> = q.clone();
            f16_axpy(isa, 0.5, &k, &mut out);
            for ((o, a), b) in out.iter().zip(&k).zip(&q) {
                assert!((o - (b + 0.5 * a.to_f32())).abs() < 1e-5);
            }
        }
    }
}

/// Attention reads each cached row once for all the query heads that share it. The scores and
/// weighted sums must still be, bit for bit, what one head at a time gives (`f16_dot`,
/// `f16_axpy` in position order): otherwise a token's answer would depend on its company.
#[test]
fn shared_head_attention_kernels_give_one_head_at_a_time_bit_for_bit() {
    let mut rng = Rng(7);
    for isa in exercised("shared_head_attention_kernels") {
        for size in [8usize, 13, 24, 40, 128] {
            for positions in [1usize, 3, 7, 33] {
                let keys: Vec<half::f16> = (0..positions * size)
                    .map(|_| half::f16::from_f32(rng.float()))
                    .collect();
                let qs: Vec<Vec<f32>> = (0..4)
                    .map(|_| (0..size).map(|_| rng.float()).collect())
                    .collect();
                let stride = positions + 2;
                let weights: Vec<f32> = (0..4 * stride).map(|_| rng.float()).collect();
                check_heads::<1>(isa, &keys, &qs, &weights, stride);
                check_heads::<2>(isa, &keys, &qs, &weights, stride);
                check_heads::<3>(isa, &keys, &qs, &weights, stride);
                check_heads::<4>(isa, &keys, &qs, &weights, stride);
            }
        }
    }
}

fn check_heads<const T: usize>(
    isa: Isa,
    keys: &[half::f16],
    qs: &[Vec<f32>],
    weights: &[f32],
    stride: usize,
) {
    let size = qs[0].len();
    let positions = keys.len() / size;
    let heads: [&[f32]; T] = std::array::from_fn(|t| qs[t].as_slice());
    let mut scores = vec![f32::NAN; T * stride];
    f16_dots(isa, keys, &heads, &mut scores, stride);
    let mut outs: Vec<f32> = qs[..T].concat();
    f16_weighted_sums::<T>(isa, keys, weights, stride, &mut outs);
    for t in 0..T {
        let mut out = qs[t].clone();
        for (p, key) in keys.chunks_exact(size).enumerate() {
            let want = f16_dot(isa, key, &qs[t]);
            let got = scores[t * stride + p];
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{isa:?} T={T} size {size} p {p}"
            );
            f16_axpy(isa, weights[t * stride + p], key, &mut out);
        }
        let got = &outs[t * size..][..size];
        for (d, (g, w)) in got.iter().zip(&out).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{isa:?} T={T} {positions} × {size}, column {d}"
            );
        }
    }
}

/// The kernel families the test runs on, printed so a log shows which ran.
fn exercised(test: &str) -> Vec<Isa> {
    let all = Isa::all_available();
    let labels: Vec<&str> = all.iter().map(|isa| isa.label()).collect();
    eprintln!("{test}: kernels exercised: {}", labels.join(", "));
    all
}

#[test]
fn int8_rows_equal_the_naive_dot_product_on_every_isa() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let limit = i64::from(I8_LIMIT);
    let mut int8 = move || ((rng.next() % (2 * limit as u64 + 1)) as i64 - limit) as i8;
    for len in [1usize, 31, 32, 63, 64, 65, 127, 128, 129, 200, 2560] {
        let row: Vec<i8> = (0..len).map(|_| int8()).collect();
        let mut xs: Vec<Vec<i8>> = (0..4).map(|_| (0..len).map(|_| int8()).collect()).collect();
        // The extremes: every product at ±127·127.
        xs[3] = row
            .iter()
            .map(|&w| if w < 0 { -I8_LIMIT } else { I8_LIMIT })
            .collect();
        let want: Vec<i32> = xs
            .iter()
            .map(|x| {
                row.iter()
                    .zip(x)
                    .map(|(&w, &v)| i32::from(w) * i32::from(v))
                    .sum()
            })
            .collect();
        for isa in exercised("int8 rows") {
            let four = i8_dots(isa, &row, &[&xs[0], &xs[1], &xs[2], &xs[3]]);
            assert_eq!(four.to_vec(), want, "{isa:?} {len}");
            assert_eq!(i8_dots(isa, &row, &[&xs[1]]), [want[1]], "{isa:?} {len}");
        }
    }
}

#[test]
fn the_heads_many_rows_kernel_equals_the_naive_dot_product_on_every_isa() {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let limit = i64::from(I8_LIMIT);
    let mut int8 = move || ((rng.next() % (2 * limit as u64 + 1)) as i64 - limit) as i8;
    for cols in [1usize, 31, 32, 63, 64, 65, 129, 200, 2560] {
        for count in [1usize, 3, 4, 9] {
            let mut rows: Vec<i8> = (0..count * cols).map(|_| int8()).collect();
            // One row of extremes: the offset trick must hold at ±127 in both operands.
            rows[..cols].fill(-I8_LIMIT);
            let x: Vec<i8> = (0..cols)
                .map(|c| if c % 2 == 0 { I8_LIMIT } else { -I8_LIMIT })
                .collect();
            let want: Vec<i32> = rows
                .chunks_exact(cols)
                .map(|row| {
                    row.iter()
                        .zip(&x)
                        .map(|(&w, &v)| i32::from(w) * i32::from(v))
                        .sum()
                })
                .collect();
            for isa in exercised("int8 head rows") {
                let mut got = vec![0i32; count];
                i8_rows_dot(isa, &rows, cols, &x, &mut got);
                assert_eq!(got, want, "{isa:?} {cols} columns, {count} rows");
            }
        }
    }
}

#[test]
fn every_kernel_family_the_cpu_reports_is_exercised() {
    let all = exercised("families");
    assert!(
        all.contains(&Isa::detect()),
        "the chosen family is one the CPU runs"
    );
    let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else {
        eprintln!("no /proc/cpuinfo: the list above comes from CPUID alone");
        return;
    };
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|line| line.starts_with("flags"))
        .map(|line| line.split_whitespace().collect())
        .unwrap_or_default();
    let has = |flag: &str| flags.contains(&flag);
    let expected = [
        (Isa::Avx2, has("avx2") && has("fma") && has("f16c")),
        (Isa::AvxVnni, has("avx2") && has("avx_vnni")),
        (
            Isa::Avx512Vnni,
            has("avx2") && has("avx512bw") && has("avx512_vnni"),
        ),
        (
            Isa::Avx512VnniGfni,
            has("avx2") && has("avx512bw") && has("avx512_vnni") && has("gfni"),
        ),
    ];
    for (isa, reported) in expected {
        assert_eq!(
            all.contains(&isa),
            reported,
            "{}: /proc/cpuinfo and runtime detection disagree",
            isa.label()
        );
    }
}

#[test]
fn kernel_families_are_named_as_printed() {
    for isa in Isa::ALL {
        assert_eq!(Isa::from_label(isa.label()), Some(isa));
    }
    assert_eq!(Isa::from_label("avx512vnni"), Some(Isa::Avx512Vnni));
    assert_eq!(
        Isa::from_label("AVX-512 VNNI+GFNI"),
        Some(Isa::Avx512VnniGfni)
    );
    assert_eq!(Isa::from_label("sse9"), None);
}

/// At load the engine times one decode step on each family from AVX2 up and keeps the
/// fastest; the families compute the same logits, so the choice never changes an answer.
#[test]
fn the_fastest_kernel_family_is_chosen_by_measurement_and_answers_alike() {
    use quantlab::inference::bitnet::{model::Model, weights::Weights};
    let config = common::tiny_bitnet::small_config();
    config.check().unwrap();
    let tokens = [5u32, 17, 900, 3];
    // From AVX2 up the families share their float kernels (head, attention) and their ternary
    // products are exact, so any choice among them gives AVX2's logits bit for bit.
    let baseline = if Isa::all_available().contains(&Isa::Avx2) {
        Isa::Avx2
    } else {
        Isa::Portable
    };
    let mut reference = Model::new(Weights::random(&config, 7), 64, 2, baseline).unwrap();
    let expected = reference.forward_last(&tokens, 0).to_vec();

    let mut model = Model::new(Weights::random(&config, 7), 64, 2, Isa::best()).unwrap();
    let timings = model.choose_fastest_isa();
    let candidates: Vec<Isa> = Isa::all_available()
        .into_iter()
        .filter(|&isa| isa >= Isa::Avx2)
        .collect();
    if candidates.len() < 2 {
        assert!(timings.is_empty(), "no choice to make: {timings:?}");
        assert_eq!(model.isa(), Isa::best());
    } else {
        let timed: Vec<Isa> = timings.iter().map(|&(isa, _)| isa).collect();
        assert_eq!(timed, candidates, "every family from AVX2 up is timed");
        let fastest = timings
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|&(isa, _)| isa);
        assert_eq!(Some(model.isa()), fastest);
    }
    eprintln!(
        "kernel families timed: {:?}; chosen: {}",
        timings
            .iter()
            .map(|(isa, s)| format!("{} {:.3} ms", isa.label(), s * 1e3))
            .collect::<Vec<_>>(),
        model.isa().label()
    );
    assert_eq!(
        model.forward_last(&tokens, 0).to_vec(),
        expected,
        "the chosen family's logits are {}'s own",
        baseline.label()
    );

    // Passes of several tokens get their own choice, timed the same way; the single-token
    // choice stays.
    let single = model.isa();
    let batched = model.choose_fastest_batch_isa();
    assert_eq!(model.isa(), single);
    if candidates.len() >= 2 {
        let fastest = batched
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|&(isa, _)| isa);
        assert_eq!(Some(model.batch_isa()), fastest, "{batched:?}");
    }
    eprintln!("for several tokens: {}", model.batch_isa().label());
    // The prompt is a pass of four tokens, now on the batch family: the same logits.
    assert_eq!(model.forward_last(&tokens, 0).to_vec(), expected);
}
