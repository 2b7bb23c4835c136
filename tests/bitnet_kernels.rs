//! The BitNet kernels against a naive reference: random shapes (odd sizes, sizes below and
//! across a 128-column block, one row), one and several activation rows, every instruction
//! set this CPU runs.

use quantlab::inference::bitnet::{
    kernels::{bf16_dots, f16_axpy, f16_dot, Isa},
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
            for isa in Isa::all_available() {
                let mut out = vec![f32::NAN; tokens * rows];
                matrix.matmul(isa, &acts, &mut out);
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
    stacked.matmul(Isa::detect(), &acts, &mut out);
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
