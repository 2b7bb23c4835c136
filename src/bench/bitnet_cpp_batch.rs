//! The batched half of `quantlab bench --bitnet --bitnet-cpp DIR`: bitnet.cpp's own
//! `llama-batched-bench` (N sequences, each with its own prompt, decoded together) and our
//! engine's sequence slots on the same file, threads and lengths, in alternating rounds.

use std::{path::Path, process::Command};

use anyhow::{bail, Context};
use serde::Deserialize;

use super::{
    bitnet::bench_tokens,
    bitnet_batch::{kernels_chosen, prefill_slots, served_model, timed_passes},
    stats::Stat,
};
use crate::inference::bitnet::weights::Weights;

pub struct BatchedArgs<'a> {
    pub binary: &'a Path,
    pub model: &'a Path,
    pub threads: usize,
    pub prompt_tokens: usize,
    pub decode_tokens: usize,
    pub sequences: &'a [usize],
    pub rounds: usize,
}

/// One line of `llama-batched-bench --output-format jsonl`.
#[derive(Debug, Deserialize)]
struct BatchedBenchLine {
    pl: usize,
    speed_tg: f64,
}

/// (sequences, aggregate decode tok/s) per line.
fn parse_batched_bench(text: &str) -> anyhow::Result<Vec<(usize, f64)>> {
    let rows: Vec<(usize, f64)> = text
        .lines()
        .filter(|line| line.trim_start().starts_with('{'))
        .map(|line| {
            serde_json::from_str::<BatchedBenchLine>(line)
                .map(|row| (row.pl, row.speed_tg))
                .with_context(|| format!("llama-batched-bench's JSONL line `{line}`"))
        })
        .collect::<anyhow::Result<_>>()?;
    if rows.is_empty() {
        bail!("llama-batched-bench printed no results");
    }
    Ok(rows)
}

fn run_batched_bench(args: &BatchedArgs<'_>) -> anyhow::Result<Vec<(usize, f64)>> {
    let most = args.sequences.iter().copied().max().unwrap_or(1);
    // It skips any count whose prompts and replies do not all fit the context.
    let context = most * (args.prompt_tokens + args.decode_tokens) + 16;
    let counts: Vec<String> = args.sequences.iter().map(usize::to_string).collect();
    let output = Command::new(args.binary)
        .arg("-m")
        .arg(args.model)
        .args(["-t", &args.threads.to_string()])
        .args(["-c", &context.to_string()])
        .args(["-b", "2048", "-ub", "512"])
        .args(["-npp", &args.prompt_tokens.to_string()])
        .args(["-ntg", &args.decode_tokens.to_string()])
        .args(["-npl", &counts.join(",")])
        .args(["--output-format", "jsonl"])
        .output()
        .with_context(|| format!("running {}", args.binary.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        bail!(
            "{} failed ({}): {}",
            args.binary.display(),
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    parse_batched_bench(&String::from_utf8_lossy(&output.stdout))
}

/// Runs both in alternating rounds and prints aggregate decode per sequence count, the ratio
/// of ours to bitnet.cpp's, and each engine's gain over its own single sequence.
///
/// # Errors
/// bitnet.cpp's tool fails or prints nothing usable; our thread pool cannot start.
pub fn run(weights: Weights, args: &BatchedArgs<'_>) -> anyhow::Result<()> {
    let slots = args.sequences.iter().copied().max().unwrap_or(1);
    let (pp, tg) = (args.prompt_tokens, args.decode_tokens);
    let mut model = served_model(weights, pp + tg + 1, args.threads, slots)?;
    let prompt = bench_tokens(pp, model.weights().config.vocab_size as u32);
    let mut theirs = vec![Vec::new(); args.sequences.len()];
    let mut ours = vec![Vec::new(); args.sequences.len()];
    for round in 1..=args.rounds {
        eprintln!(
            "batched round {round} of {}: bitnet.cpp's llama-batched-bench, then ours…",
            args.rounds
        );
        for (count, speed) in run_batched_bench(args)? {
            if let Some(index) = args.sequences.iter().position(|&n| n == count) {
                theirs[index].push(speed);
            }
        }
        for (&count, speeds) in args.sequences.iter().zip(&mut ours) {
            // As llama-batched-bench: each sequence reads its prompt (not timed here), then
            // `tg` passes decode one token of every sequence.
            prefill_slots(&mut model, count, &prompt);
            let seconds: f64 = timed_passes(&mut model, count, pp, tg).iter().sum();
            speeds.push((count * tg) as f64 / seconds);
        }
    }
    println!(
        "\nbatched decode, same file, {} threads, each sequence pp{pp} then tg{tg}, {} rounds, medians (min–max) of aggregate tok/s; ours with the file's head (bf16), {}:",
        args.threads,
        args.rounds,
        kernels_chosen(&model)
    );
    println!(
        "  {:>9} {:>21} {:>21} {:>9} {:>14} {:>14}",
        "sequences", "bitnet.cpp", "quantlab", "ours ×", "theirs × one", "ours × one"
    );
    let medians = |runs: &[Vec<f64>]| -> Vec<Option<Stat>> {
        runs.iter().map(|speeds| Stat::of(speeds)).collect()
    };
    let (theirs, ours) = (medians(&theirs), medians(&ours));
    let alone = |stats: &[Option<Stat>]| {
        args.sequences
            .iter()
            .position(|&n| n == 1)
            .and_then(|i| stats[i].as_ref())
            .map(|s| s.median)
    };
    let (their_one, our_one) = (alone(&theirs), alone(&ours));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "—".into(),
    };
    for ((&count, their), our) in args.sequences.iter().zip(&theirs).zip(&ours) {
        let show = |stat: &Option<Stat>| stat.as_ref().map_or("skipped".into(), |s| s.display(1));
        let (t, o) = (
            their.as_ref().map(|s| s.median),
            our.as_ref().map(|s| s.median),
        );
        println!(
            "  {:>9} {:>21} {:>21} {:>9} {:>14} {:>14}",
            count,
            show(their),
            show(our),
            ratio(o, t),
            ratio(t, their_one),
            ratio(o, our_one)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batched_bench_jsonl_gives_each_count_and_its_decode_speed() {
        let text = r#"
main: n_kv_max = 1024
{"n_kv_max": 1024, "n_batch": 2048, "pp": 64, "tg": 32, "pl": 1, "n_kv": 96, "t_pp": 1.8, "speed_pp": 35.4, "t_tg": 1.83, "speed_tg": 17.47, "t": 3.6, "speed": 26.4}
{"n_kv_max": 1024, "n_batch": 2048, "pp": 64, "tg": 32, "pl": 4, "n_kv": 384, "t_pp": 6.5, "speed_pp": 39.3, "t_tg": 4.83, "speed_tg": 26.5, "t": 11.3, "speed": 33.9}

llama_perf_context_print: load time = 1.0 ms
"#;
        assert_eq!(
            parse_batched_bench(text).unwrap(),
            vec![(1, 17.47), (4, 26.5)]
        );
        assert!(parse_batched_bench("no results here").is_err());
        assert!(parse_batched_bench("{\"pl\": 1}").is_err());
    }
}
