//! `quantlab bench --bitnet`: the BitNet engine on a model with BitNet b1.58 2B4T's real shapes
//! and random ternary weights (generated here, no download), against the machine's memory
//! bandwidth measured in the same run. Decode reads every weight once per token, so bytes per
//! token ÷ bandwidth is the fastest decode this machine allows (the roofline); we report the
//! fraction of it we reach, resident memory, and prefill, with the bf16, int8 and Q6_K output
//! heads, on AVX2 and on the best kernels this CPU has; then how far the quantized heads'
//! next-token distributions drift from the bf16 head's, and every kernel family against the
//! portable one.

use std::time::Instant;

use anyhow::Context;
use rayon::prelude::*;

use super::divergence::{Divergence, DivergenceSummary};
use crate::inference::{
    bitnet::{
        config::BitnetConfig,
        head::HeadPrecision,
        kernels::Isa,
        model::{Model, MAX_BATCH},
        team::Team,
        ternary::QuantizedRows,
        weights::Weights,
    },
    memory::resident_bytes,
    sampler::argmax,
};

pub struct BitnetBenchArgs {
    pub threads: usize,
    pub decode_tokens: usize,
    pub prompt_tokens: usize,
    pub kl_positions: usize,
    /// Sequence counts of the batched decode measurement (empty: skipped).
    pub sequences: Vec<usize>,
}

pub(super) const GIB: f64 = (1u64 << 30) as f64;
const SEED: u64 = 0x5EED;

/// The heads measured, the checkpoint's own first.
const HEADS: [HeadPrecision; 3] = [HeadPrecision::Bf16, HeadPrecision::Int8, HeadPrecision::Q6K];

/// One head's model and what was measured of it.
struct HeadRun {
    precision: HeadPrecision,
    /// Resident memory the model's weights added.
    resident: u64,
    model: Model,
    speeds: Vec<Speed>,
}

/// Prefill and decode of one model on one kernel family.
struct Speed {
    isa: Isa,
    prefill_tok_s: f64,
    decode_tok_s: f64,
    fastest_ms: f64,
    slowest_ms: f64,
}

pub fn run(args: &BitnetBenchArgs) -> anyhow::Result<()> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .context("thread pool")?;
    let bandwidth_before = pool.install(read_bandwidth);

    let config = BitnetConfig::b1_58_2b_4t();
    let families = decode_families();
    let decoded = ROUNDS * args.decode_tokens.div_ceil(ROUNDS) * families.len();
    let context = (args.prompt_tokens + decoded + 1).max(args.kl_positions);
    let best = *families.last().unwrap_or(&Isa::Portable);
    let started = Instant::now();
    // One model per head, each built the same way and quantized at load.
    let mut heads: Vec<HeadRun> = Vec::new();
    for precision in HEADS {
        let before = resident_bytes().unwrap_or(0);
        let weights = Weights::random(&config, SEED).with_head(precision)?;
        let resident = resident_bytes().unwrap_or(0).saturating_sub(before);
        heads.push(HeadRun {
            precision,
            resident,
            model: Model::new(weights, context, args.threads, best)?,
            speeds: Vec::new(),
        });
    }
    println!(
        "model: BitNet b1.58 2B4T shapes ({}), random ternary weights built in {:.1} s (one copy per head)",
        shapes(&config),
        started.elapsed().as_secs_f64()
    );
    let ternary = heads[0].model.weights().ternary_bytes() as f64;
    let parameters = heads[0].model.weights().ternary_parameters();
    println!(
        "ternary weights: {:.3} GiB ({parameters} parameters, {:.2} bits each)",
        ternary / GIB,
        ternary * 8.0 / parameters as f64,
    );

    let mut models: Vec<&mut Model> = heads.iter_mut().map(|h| &mut h.model).collect();
    let speeds = measure_interleaved(&mut models, &families, args);
    for (head, speeds) in heads.iter_mut().zip(speeds) {
        head.speeds = speeds;
    }

    // Measured again after decode; the higher figure is the roofline (the harsher fraction).
    let bandwidth = pool.install(read_bandwidth).max(bandwidth_before);
    println!(
        "\nmemory read bandwidth, {} threads: {:.1} GB/s (best of 5 passes over 1 GiB, before and after decode)",
        args.threads,
        bandwidth / 1e9
    );
    let growth: Vec<String> = heads
        .iter()
        .map(|h| {
            format!(
                "{:.3} GiB with the {} head",
                h.resident as f64 / GIB,
                h.precision.label()
            )
        })
        .collect();
    println!(
        "resident growth: {} (tied: the embedding lookup reads the same rows)",
        growth.join(", ")
    );
    // Per token: every ternary weight, the whole head, and the cache so far.
    let kv_bytes = (config.num_hidden_layers * config.kv_size() * 2 * 2) as f64
        * (args.prompt_tokens + args.decode_tokens / 2) as f64;
    println!(
        "\n{:<6} {:<13} {:>13} {:>12} {:>14} {:>13} {:>9}",
        "head",
        "kernels",
        "prefill tok/s",
        "decode tok/s",
        "GiB per token",
        "roofline t/s",
        "reached"
    );
    for head in &heads {
        let bytes_per_token = ternary + head.model.weights().embedding_bytes() as f64 + kv_bytes;
        let roofline = bandwidth / bytes_per_token;
        for speed in &head.speeds {
            println!(
                "{:<6} {:<13} {:>13.1} {:>12.1} {:>14.3} {:>13.1} {:>8.0}%   ({:.1}–{:.1} ms per token)",
                head.precision.label(),
                speed.isa.label(),
                speed.prefill_tok_s,
                speed.decode_tok_s,
                bytes_per_token / GIB,
                roofline,
                100.0 * speed.decode_tok_s / roofline,
                speed.fastest_ms,
                speed.slowest_ms,
            );
        }
    }
    let bf16_best = heads[0].speeds.last();
    for head in &heads[1..] {
        if let (Some(b), Some(q)) = (bf16_best, head.speeds.last()) {
            println!(
                "{} head ÷ bf16 head ({}): decode {:.2}x, prefill {:.2}x",
                head.precision.label(),
                q.isa.label(),
                q.decode_tok_s / b.decode_tok_s,
                q.prefill_tok_s / b.prefill_tok_s
            );
        }
    }
    let int8_speeds = &heads[1].speeds;
    if let ([first, .., last], true) = (int8_speeds.as_slice(), int8_speeds.len() > 1) {
        println!(
            "{} ÷ {} (int8 head): decode {:.2}x, prefill {:.2}x",
            last.isa.label(),
            first.isa.label(),
            last.decode_tok_s / first.decode_tok_s,
            last.prefill_tok_s / first.prefill_tok_s
        );
    }

    let [bf16, int8, q6k] = &mut heads[..] else {
        unreachable!("one run per head of HEADS")
    };
    let (bf16, int8, q6k) = (&mut bf16.model, &mut int8.model, &mut q6k.model);
    if args.kl_positions > 0 {
        println!(
            "\nnext-token distributions against the bf16 model's, {} positions:",
            args.kl_positions
        );
        let reference = all_logits(bf16, args.kl_positions);
        let hidden = config.hidden_size;
        for (precision, served) in [
            (HeadPrecision::Int8, &mut *int8),
            (HeadPrecision::Q6K, &mut *q6k),
        ] {
            let started = Instant::now();
            let whole = divergence(&reference, served);
            print_divergence(
                &format!("{} head and embedding (as served)", precision.label()),
                &whole,
                started,
            );
            let started = Instant::now();
            let head_only = bf16.weights().embedding.to_precision(precision, hidden)?;
            bf16.set_output_head(Some(head_only));
            let head_only = divergence(&reference, bf16);
            bf16.set_output_head(None); // the copy made for this measurement is dropped
            print_divergence(
                &format!("{} head alone (same hidden states)", precision.label()),
                &head_only,
                started,
            );
        }
        println!(
            "  (random layers amplify any change to their input, the quantized embedding rows here, far more than trained ones do; the head alone is the quantization's own cost)"
        );
    }

    println!(
        "\nkernels on one FFN down projection (2560x6912), best of 5, against the portable kernel:"
    );
    println!(
        "  {:<13} {:>10} {:>7} {:>11} {:>7}",
        "", "1 token", "", "4 tokens", ""
    );
    let mut team = Team::new(args.threads, "bench-kernels").context("kernel threads")?;
    let portable = [1, 4].map(|n| kernel_seconds(int8, &mut team, Isa::Portable, n));
    for isa in Isa::all_available() {
        let [one, four] = match isa {
            Isa::Portable => portable,
            _ => [1, 4].map(|n| kernel_seconds(int8, &mut team, isa, n)),
        };
        println!(
            "  {:<13} {:>7.3} ms {:>6.1}x {:>8.3} ms {:>6.1}x",
            isa.label(),
            one * 1e3,
            portable[0] / one,
            four * 1e3,
            portable[1] / four
        );
    }
    if !args.sequences.is_empty() {
        let int8 = heads.swap_remove(1).model;
        drop(heads);
        super::bitnet_batch::run(
            int8.into_weights(),
            args.threads,
            &args.sequences,
            args.decode_tokens,
        )?;
    }
    Ok(())
}

/// A model's sizes, as the benches print them.
pub(super) fn shapes(config: &BitnetConfig) -> String {
    format!(
        "{} layers, hidden {}, FFN {}, {} heads / {} kv, vocab {}",
        config.num_hidden_layers,
        config.hidden_size,
        config.intermediate_size,
        config.num_attention_heads,
        config.kv_heads(),
        config.vocab_size
    )
}

/// The kernel families decode is measured on: AVX2 (the baseline every x86 machine of the
/// fleet has) and the best this CPU runs.
pub(super) fn decode_families() -> Vec<Isa> {
    let all = Isa::all_available();
    let best = *all.last().unwrap_or(&Isa::Portable);
    let mut families: Vec<Isa> = all.into_iter().filter(|&isa| isa == Isa::Avx2).collect();
    if !families.contains(&best) {
        families.push(best);
    }
    families
}

/// Decode rounds this many times over every (head, kernels) pair in turn, so a slow spell of
/// a shared machine falls on all of them rather than on one.
const ROUNDS: usize = 4;

/// Prefill, then decode in interleaved rounds, for every model on every family; the speeds
/// per model, in the order given.
fn measure_interleaved(
    models: &mut [&mut Model],
    families: &[Isa],
    args: &BitnetBenchArgs,
) -> Vec<Vec<Speed>> {
    let Some(first) = models.first() else {
        return Vec::new();
    };
    let vocab = first.weights().config.vocab_size as u32;
    let prompt = bench_tokens(args.prompt_tokens, vocab);
    let mut runs: Vec<(usize, Isa, u32, Vec<f64>, f64)> = Vec::new();
    for (which, model) in models.iter_mut().enumerate() {
        for &isa in families {
            model.set_isa(isa);
            model.forward_last(&prompt[..8.min(prompt.len())], 0); // warm-up
            let started = Instant::now();
            let next = argmax(model.forward_last(&prompt, 0));
            let prefill_tok_s = prompt.len() as f64 / started.elapsed().as_secs_f64();
            runs.push((which, isa, next, Vec::new(), prefill_tok_s));
        }
    }
    // The families of one model take turns extending one sequence (the kernels are exact, so
    // the cache stays that sequence's).
    let per_round = args.decode_tokens.div_ceil(ROUNDS);
    let mut positions = vec![prompt.len(); models.len()];
    for _ in 0..ROUNDS {
        for (which, isa, next, times, _) in &mut runs {
            let model = &mut *models[*which];
            model.set_isa(*isa);
            for _ in 0..per_round {
                let started = Instant::now();
                *next = argmax(model.forward_last(&[*next], positions[*which]));
                times.push(started.elapsed().as_secs_f64());
                positions[*which] += 1;
            }
        }
    }
    let mut speeds: Vec<Vec<Speed>> = models.iter().map(|_| Vec::new()).collect();
    for (which, isa, _, mut times, prefill_tok_s) in runs {
        times.sort_by(f64::total_cmp);
        speeds[which].push(Speed {
            isa,
            prefill_tok_s,
            decode_tok_s: 1.0 / times[times.len() / 2],
            fastest_ms: times[0] * 1e3,
            slowest_ms: times[times.len() - 1] * 1e3,
        });
    }
    speeds
}

pub(super) fn bench_tokens(count: usize, vocab: u32) -> Vec<u32> {
    (0..count as u32).map(|i| (i * 7919 + 13) % vocab).collect()
}

/// Every position's logits of a fixed token sequence, for comparing models on it.
fn all_logits(model: &mut Model, positions: usize) -> Vec<Vec<f32>> {
    let vocab = model.weights().config.vocab_size as u32;
    let tokens = bench_tokens(positions, vocab);
    let mut rows = Vec::with_capacity(positions);
    for (index, batch) in tokens.chunks(MAX_BATCH).enumerate() {
        rows.extend(model.forward_all(batch, index * MAX_BATCH));
    }
    rows
}

/// `tested` on the tokens `reference` was computed on, batch by batch.
fn divergence(reference: &[Vec<f32>], tested: &mut Model) -> DivergenceSummary {
    let vocab = tested.weights().config.vocab_size as u32;
    let tokens = bench_tokens(reference.len(), vocab);
    let mut divergence = Divergence::default();
    for (index, batch) in tokens.chunks(MAX_BATCH).enumerate() {
        let got = tested.forward_all(batch, index * MAX_BATCH);
        for (p, q) in reference[index * MAX_BATCH..].iter().zip(&got) {
            divergence.add(p, q);
        }
    }
    divergence.summary()
}

fn print_divergence(what: &str, summary: &DivergenceSummary, started: Instant) {
    println!(
        "  {what}: mean KL {:.2e} nats, p99 {:.2e}, max {:.2e}; same top token at {:.2}% ({:.0} s)",
        summary.mean_kl,
        summary.p99_kl,
        summary.max_kl,
        100.0 * summary.top1_agreement,
        started.elapsed().as_secs_f64()
    );
}

/// Best time of one product of the first layer's down projection with `tokens` rows.
fn kernel_seconds(model: &Model, team: &mut Team, isa: Isa, tokens: usize) -> f64 {
    let down = &model.weights().layers[0].down;
    let x: Vec<f32> = (0..down.cols() * tokens)
        .map(|i| ((i % 17) as f32 - 8.0) / 8.0)
        .collect();
    let mut acts = QuantizedRows::with_capacity(tokens, down.cols());
    acts.quantize(&x, down.cols());
    let mut out = vec![0f32; down.rows() * tokens];
    (0..5)
        .map(|_| {
            let started = Instant::now();
            down.matmul(isa, team, &acts, &mut out);
            started.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Bytes per second the pool's threads read from a buffer far larger than the caches.
pub(super) fn read_bandwidth() -> f64 {
    const WORDS: usize = (1 << 30) / 8;
    let buffer: Vec<u64> = (0..WORDS as u64).collect();
    let mut best = 0f64;
    let mut checksum = 0u64;
    for _ in 0..5 {
        let started = Instant::now();
        checksum = checksum.wrapping_add(
            buffer
                .par_chunks(1 << 16)
                .map(|chunk| {
                    // Eight independent sums: the adds never wait on each other, so
                    // only memory limits the pass.
                    let mut sums = [0u64; 8];
                    for words in chunk.chunks_exact(8) {
                        for (sum, &word) in sums.iter_mut().zip(words) {
                            *sum = sum.wrapping_add(word);
                        }
                    }
                    sums.iter().fold(0u64, |a, &b| a.wrapping_add(b))
                })
                .reduce(|| 0, u64::wrapping_add),
        );
        best = best.max((WORDS * 8) as f64 / started.elapsed().as_secs_f64());
    }
    // The sum is used so the reads cannot be optimised away.
    std::hint::black_box(checksum);
    best
}
