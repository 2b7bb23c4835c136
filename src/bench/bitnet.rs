//! `quantlab bench --bitnet`: the BitNet engine on a model with BitNet b1.58 2B4T's real shapes
//! and random ternary weights (generated here, no download), against the machine's memory
//! bandwidth measured in the same run. Decode reads every weight once per token, so bytes per
//! token ÷ bandwidth is the fastest decode this machine allows (the roofline); we report the
//! fraction of it we reach, resident memory, and prefill through the int8 kernels.

use std::time::Instant;

use anyhow::Context;
use rayon::prelude::*;

use crate::inference::{
    bitnet::{
        config::BitnetConfig, kernels::Isa, model::Model, ternary::QuantizedRows, weights::Weights,
    },
    memory::resident_bytes,
    sampler::argmax,
};

pub struct BitnetBenchArgs {
    pub threads: usize,
    pub decode_tokens: usize,
    pub prompt_tokens: usize,
}

const GIB: f64 = (1u64 << 30) as f64;

pub fn run(args: &BitnetBenchArgs) -> anyhow::Result<()> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .context("thread pool")?;
    let bandwidth_before = pool.install(read_bandwidth);

    let config = BitnetConfig::b1_58_2b_4t();
    let before = resident_bytes().unwrap_or(0);
    let started = Instant::now();
    let weights = Weights::random(&config, 0x5EED);
    let weights_resident = resident_bytes().unwrap_or(0).saturating_sub(before);
    println!(
        "model: BitNet b1.58 2B4T shapes ({} layers, hidden {}, FFN {}, {} heads / {} kv, vocab {}), random ternary weights built in {:.1} s",
        config.num_hidden_layers,
        config.hidden_size,
        config.intermediate_size,
        config.num_attention_heads,
        config.kv_heads(),
        config.vocab_size,
        started.elapsed().as_secs_f64()
    );
    let ternary = weights.ternary_bytes() as f64;
    let embedding = weights.embedding_bytes() as f64;
    println!(
        "weights: {:.3} GiB ternary ({} parameters, {:.2} bits each) + {:.3} GiB bf16 tied embedding; resident growth {:.3} GiB",
        ternary / GIB,
        weights.ternary_parameters(),
        ternary * 8.0 / weights.ternary_parameters() as f64,
        embedding / GIB,
        weights_resident as f64 / GIB
    );

    let context = args.prompt_tokens + args.decode_tokens + 1;
    let isa = Isa::detect();
    let mut model = Model::new(weights, context, args.threads, isa)?;
    let vocab = config.vocab_size as u32;
    let prompt: Vec<u32> = (0..args.prompt_tokens as u32)
        .map(|i| (i * 7919 + 13) % vocab)
        .collect();

    // Prefill: every projection as int8 × ternary over batches of tokens.
    model.forward_last(&prompt[..8.min(prompt.len())], 0); // warm-up
    let started = Instant::now();
    let mut next = argmax(model.forward_last(&prompt, 0));
    let prefill_secs = started.elapsed().as_secs_f64();
    let prefill_tok_s = prompt.len() as f64 / prefill_secs;
    let macs = model.weights().ternary_parameters() as f64 * prompt.len() as f64;

    // Decode, one token at a time, as chat does.
    let mut times = Vec::with_capacity(args.decode_tokens);
    for position in prompt.len()..prompt.len() + args.decode_tokens {
        let started = Instant::now();
        next = argmax(model.forward_last(&[next], position));
        times.push(started.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let decode_tok_s = 1.0 / median;
    // Per token: every ternary weight, the whole head (tied embedding), and the cache so far.
    // Measured again after decode; the higher figure is the roofline (the harsher fraction).
    let bandwidth = pool.install(read_bandwidth).max(bandwidth_before);
    println!(
        "\nmemory read bandwidth, {} threads: {:.1} GB/s (best of 5 passes over 1 GiB, before and after decode)",
        args.threads,
        bandwidth / 1e9
    );
    let kv_bytes = (config.num_hidden_layers * config.kv_size() * 2 * 2) as f64
        * (prompt.len() + args.decode_tokens / 2) as f64;
    let bytes_per_token = ternary + embedding + kv_bytes;
    let roofline = bandwidth / bytes_per_token;
    println!("kernels: {} ({} threads)", isa.label(), args.threads);
    println!(
        "prefill: {} tokens in {:.2} s = {:.1} tok/s ({:.1} G int8×ternary MACs/s)",
        prompt.len(),
        prefill_secs,
        prefill_tok_s,
        macs / prefill_secs / 1e9
    );
    println!(
        "decode:  {:.1} tok/s (median of {} tokens; {:.1}–{:.1} ms per token)",
        decode_tok_s,
        times.len(),
        times[0] * 1e3,
        times[times.len() - 1] * 1e3
    );
    println!(
        "roofline: {:.3} GiB read per token / {:.1} GB/s = {:.1} tok/s; decode reaches {:.0}% of it",
        bytes_per_token / GIB,
        bandwidth / 1e9,
        roofline,
        100.0 * decode_tok_s / roofline
    );
    if isa != Isa::Portable {
        let portable = pool.install(|| kernel_seconds(&model, Isa::Portable));
        let simd = pool.install(|| kernel_seconds(&model, isa));
        println!(
            "kernel: one FFN down projection (2560x6912), one token: {} {:.2} ms, portable {:.2} ms -> {:.1}x",
            isa.label(),
            simd * 1e3,
            portable * 1e3,
            portable / simd
        );
    }
    Ok(())
}

/// Best time of one matrix-vector product with the first layer's down projection.
fn kernel_seconds(model: &Model, isa: Isa) -> f64 {
    let down = &model.weights().layers[0].down;
    let x: Vec<f32> = (0..down.cols())
        .map(|i| ((i % 17) as f32 - 8.0) / 8.0)
        .collect();
    let mut acts = QuantizedRows::with_capacity(1, down.cols());
    acts.quantize(&x, down.cols());
    let mut out = vec![0f32; down.rows()];
    (0..5)
        .map(|_| {
            let started = Instant::now();
            down.matmul(isa, &acts, &mut out);
            started.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Bytes per second the pool's threads read from a buffer far larger than the caches.
fn read_bandwidth() -> f64 {
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
