//! Batched decode on the BitNet engine: N sequences decoded together, one token each per pass
//! and one read of the weights for all of them, against one sequence alone in the same run.
//! Part of `quantlab bench --bitnet`.

use std::time::Instant;

use super::bitnet::{bench_tokens, GIB};
use crate::inference::{
    bitnet::{
        kernels::Isa,
        model::{Model, MAX_BATCH},
        weights::Weights,
    },
    logits::SlotToken,
};

/// Rounds over every sequence count in turn, so a slow spell of a shared machine falls on all
/// of them.
const ROUNDS: usize = 4;
/// Prompt tokens every slot holds before decode is timed.
const PROMPT: usize = 64;

pub struct BatchSpeed {
    pub sequences: usize,
    /// Median seconds of one pass (one token for each sequence).
    pub pass_secs: f64,
}

impl BatchSpeed {
    pub fn aggregate_tok_s(&self) -> f64 {
        self.sequences as f64 / self.pass_secs
    }
}

/// A model with `slots` sequence slots on the kernel family that decodes fastest here, as
/// `serve` would run it.
///
/// # Errors
/// The thread pool cannot start.
pub fn served_model(
    weights: Weights,
    context: usize,
    threads: usize,
    slots: usize,
) -> anyhow::Result<Model> {
    let mut model = Model::with_slots(weights, context, threads, Isa::best(), slots)?;
    model.choose_fastest_isa();
    model.choose_fastest_batch_isa();
    Ok(model)
}

/// The families `served_model` chose, for the tables.
pub fn kernels_chosen(model: &Model) -> String {
    format!(
        "{} kernels for one sequence, {} for several (timed at start, as served)",
        model.isa().label(),
        model.batch_isa().label()
    )
}

/// Reads `prompt` into slots `0..count` from position 0 (no logits kept).
pub fn prefill_slots(model: &mut Model, count: usize, prompt: &[u32]) {
    let mut rows = Vec::with_capacity(MAX_BATCH);
    for slot in 0..count {
        for (index, chunk) in prompt.chunks(MAX_BATCH).enumerate() {
            rows.clear();
            rows.extend(chunk.iter().enumerate().map(|(i, &token)| SlotToken {
                token,
                slot,
                position: index * MAX_BATCH + i,
            }));
            model.forward_slots(&rows, &[]);
        }
    }
}

/// Times `passes` decode passes of slots `0..count` from `start`, each feeding one token per
/// slot and taking every slot's logits, as a server step does; seconds per pass.
pub fn timed_passes(model: &mut Model, count: usize, start: usize, passes: usize) -> Vec<f64> {
    let vocab = model.weights().config.vocab_size as u32;
    let picks: Vec<usize> = (0..count).collect();
    let mut rows = Vec::with_capacity(count);
    (0..passes)
        .map(|step| {
            rows.clear();
            // Different tokens per slot, as different conversations have.
            rows.extend((0..count).map(|slot| SlotToken {
                token: (step as u32 * 7919 + 97 * slot as u32 + 13) % vocab,
                slot,
                position: start + step,
            }));
            let started = Instant::now();
            std::hint::black_box(model.forward_slots(&rows, &picks));
            started.elapsed().as_secs_f64()
        })
        .collect()
}

/// Decodes `tokens` passes per count in `sequences`, interleaved over rounds; each round starts
/// every slot again at the end of the same prompt, so every count decodes at the same context
/// lengths.
///
/// # Errors
/// The thread pool cannot start.
pub fn measure(
    weights: Weights,
    threads: usize,
    sequences: &[usize],
    tokens: usize,
) -> anyhow::Result<(Model, Vec<BatchSpeed>)> {
    let slots = sequences.iter().copied().max().unwrap_or(1);
    let per_round = tokens.div_ceil(ROUNDS).max(1);
    let mut model = served_model(weights, PROMPT + per_round + 1, threads, slots)?;
    let vocab = model.weights().config.vocab_size as u32;
    prefill_slots(&mut model, slots, &bench_tokens(PROMPT, vocab));
    let mut times = vec![Vec::with_capacity(ROUNDS * per_round); sequences.len()];
    for _ in 0..ROUNDS {
        for (&count, times) in sequences.iter().zip(&mut times) {
            times.extend(timed_passes(&mut model, count, PROMPT, per_round));
        }
    }
    let speeds = sequences
        .iter()
        .zip(times)
        .map(|(&count, mut times)| {
            times.sort_by(f64::total_cmp);
            BatchSpeed {
                sequences: count,
                pass_secs: times[times.len() / 2],
            }
        })
        .collect();
    Ok((model, speeds))
}

/// Measures and prints the table; `weights` are the int8-head model's.
///
/// # Errors
/// The thread pool cannot start.
pub fn run(
    weights: Weights,
    threads: usize,
    sequences: &[usize],
    tokens: usize,
) -> anyhow::Result<()> {
    let (model, speeds) = measure(weights, threads, sequences, tokens)?;
    let c = &model.weights().config;
    let cache_per_4k = (2 * c.num_hidden_layers * c.kv_size() * 4096 * 2) as f64;
    println!(
        "\nbatched decode, int8 head, {}, {} threads, context {PROMPT}+, medians of {} passes:",
        kernels_chosen(&model),
        threads,
        ROUNDS * tokens.div_ceil(ROUNDS).max(1)
    );
    println!(
        "  {:>9} {:>16} {:>19} {:>15}",
        "sequences", "aggregate tok/s", "per sequence tok/s", "× one sequence"
    );
    let alone = speeds
        .iter()
        .find(|s| s.sequences == 1)
        .map(BatchSpeed::aggregate_tok_s);
    for speed in &speeds {
        let ratio = alone.map_or(String::from("—"), |one| {
            format!("{:.2}x", speed.aggregate_tok_s() / one)
        });
        println!(
            "  {:>9} {:>16.1} {:>19.1} {:>15}",
            speed.sequences,
            speed.aggregate_tok_s(),
            1.0 / speed.pass_secs,
            ratio
        );
    }
    println!(
        "  each sequence's f16 key/value cache: {:.3} GiB at 4096 tokens (pages are taken as positions fill)",
        cache_per_4k / GIB
    );
    Ok(())
}
