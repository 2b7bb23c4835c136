//! `quantlab bench --bitnet --bitnet-cpp DIR`: bitnet.cpp and our BitNet engine on one I2_S
//! file in one run. bitnet.cpp's own `llama-bench` measures itself (prefill of a prompt, then
//! decode from an empty context); ours is measured the same way on the same file, threads and
//! lengths. The engines take turns, round after round, so a slow spell of a shared machine
//! falls on both; medians over the rounds are compared. Both are set against the read
//! bandwidth measured in the same run: bytes read per token ÷ bandwidth is the fastest decode
//! the machine allows.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context};
use serde::Deserialize;

use super::{
    bitnet::{bench_tokens, decode_families, read_bandwidth, shapes, GIB},
    stats::Stat,
};
use crate::inference::{
    bitnet::{
        gguf_file::GgufFile,
        gguf_model,
        head::{HeadPrecision, Table},
        kernels::Isa,
        model::Model,
    },
    memory::resident_bytes,
    sampler::argmax,
};

pub struct BitnetCppArgs {
    /// A bitnet.cpp checkout built by scripts/bitnet-cpp.sh.
    pub checkout: PathBuf,
    /// The I2_S file; default: the dummy model scripts/bitnet-cpp.sh writes.
    pub model: Option<PathBuf>,
    pub threads: usize,
    pub prompt_tokens: usize,
    pub decode_tokens: usize,
    /// Rounds: one run of each engine per round.
    pub repetitions: usize,
    /// Sequence counts for the batched-decode comparison (empty: skipped).
    pub sequences: Vec<usize>,
}

/// The file scripts/bitnet-cpp.sh writes in the checkout.
const DUMMY_MODEL: &str = "models/quantlab-dummy-2b4t/ggml-model-i2_s.gguf";

/// One result row of `llama-bench -o json`.
#[derive(Debug, Deserialize)]
struct LlamaBenchRow {
    #[serde(default)]
    build_commit: String,
    #[serde(default)]
    cpu_info: String,
    model_size: u64,
    n_prompt: u64,
    n_gen: u64,
    avg_ts: f64,
}

/// bitnet.cpp's figures from one `llama-bench` run.
#[derive(Debug, Clone, PartialEq)]
struct TheirSpeeds {
    prefill_tok_s: f64,
    decode_tok_s: f64,
    model_bytes: u64,
    build: String,
    cpu: String,
}

fn parse_llama_bench(json: &str) -> anyhow::Result<TheirSpeeds> {
    let rows: Vec<LlamaBenchRow> =
        serde_json::from_str(json).context("llama-bench's JSON output")?;
    let prefill = rows.iter().find(|r| r.n_prompt > 0 && r.n_gen == 0);
    let decode = rows.iter().find(|r| r.n_gen > 0 && r.n_prompt == 0);
    let (Some(prefill), Some(decode)) = (prefill, decode) else {
        bail!("llama-bench reported no prefill (pp) and decode (tg) rows");
    };
    Ok(TheirSpeeds {
        prefill_tok_s: prefill.avg_ts,
        decode_tok_s: decode.avg_ts,
        model_bytes: decode.model_size,
        build: decode.build_commit.clone(),
        cpu: decode.cpu_info.clone(),
    })
}

fn run_llama_bench(
    binary: &Path,
    model: &Path,
    args: &BitnetCppArgs,
) -> anyhow::Result<TheirSpeeds> {
    let output = Command::new(binary)
        .arg("-m")
        .arg(model)
        .args(["-t", &args.threads.to_string()])
        .args(["-p", &args.prompt_tokens.to_string()])
        .args(["-n", &args.decode_tokens.to_string()])
        // One repetition per round: the rounds interleave the engines.
        .args(["-r", "1"])
        .args(["-o", "json"])
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        bail!(
            "{} failed ({}): {}",
            binary.display(),
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    parse_llama_bench(&String::from_utf8_lossy(&output.stdout))
}

/// One prefill and one decode of ours, as llama-bench measures its own: a new sequence;
/// prefill feeds the prompt in one call, decode generates from an empty context.
fn our_speeds(model: &mut Model, isa: Isa, args: &BitnetCppArgs) -> (f64, f64) {
    model.set_isa(isa);
    let vocab = model.weights().config.vocab_size as u32;
    let prompt = bench_tokens(args.prompt_tokens, vocab);
    let started = Instant::now();
    std::hint::black_box(argmax(model.forward_last(&prompt, 0)));
    let prefill_tok_s = prompt.len() as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut next = prompt[0];
    for position in 0..args.decode_tokens {
        next = argmax(model.forward_last(&[next], position));
    }
    (
        prefill_tok_s,
        args.decode_tokens as f64 / started.elapsed().as_secs_f64(),
    )
}

/// One engine's measurements, a pair per round.
struct Row {
    label: String,
    bytes_per_token: f64,
    prefill: Vec<f64>,
    decode: Vec<f64>,
}

impl Row {
    fn new(label: String, bytes_per_token: f64) -> Self {
        Self {
            label,
            bytes_per_token,
            prefill: Vec::new(),
            decode: Vec::new(),
        }
    }

    fn push(&mut self, (prefill, decode): (f64, f64)) {
        self.prefill.push(prefill);
        self.decode.push(decode);
    }

    fn medians(&self) -> (Stat, Stat) {
        let none = Stat {
            median: 0.0,
            min: 0.0,
            max: 0.0,
            n: 0,
        };
        (
            Stat::of(&self.prefill).unwrap_or(none),
            Stat::of(&self.decode).unwrap_or(none),
        )
    }
}

pub fn run(args: &BitnetCppArgs) -> anyhow::Result<()> {
    let llama_bench = args.checkout.join("build/bin/llama-bench");
    let model_path = args
        .model
        .clone()
        .unwrap_or_else(|| args.checkout.join(DUMMY_MODEL));
    if !llama_bench.is_file() {
        bail!(
            "{} is missing: build bitnet.cpp with scripts/bitnet-cpp.sh {}",
            llama_bench.display(),
            args.checkout.display()
        );
    }
    if !model_path.is_file() {
        bail!(
            "{} is missing: scripts/bitnet-cpp.sh {} writes it (or pass --bitnet-gguf FILE)",
            model_path.display(),
            args.checkout.display()
        );
    }

    let before = resident_bytes().unwrap_or(0);
    let started = Instant::now();
    let (weights, architecture, i2s) = {
        let file = GgufFile::open(&model_path)
            .with_context(|| format!("reading {}", model_path.display()))?;
        let config = gguf_model::config(&file)?;
        let architecture = file
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let i2s = gguf_model::is_i2s(&file);
        (gguf_model::weights(&file, &config)?, architecture, i2s)
    };
    let resident = resident_bytes().unwrap_or(0).saturating_sub(before);
    let c = weights.config.clone();
    println!(
        "model: {} ({} `{architecture}`: {}), loaded by our engine in {:.1} s",
        model_path.display(),
        if i2s { "I2_S" } else { "full precision" },
        shapes(&c),
        started.elapsed().as_secs_f64()
    );
    let ternary = weights.ternary_bytes() as f64;
    let head_bytes = weights.embedding_bytes() as f64;
    println!(
        "our resident weights: {:.3} GiB ({:.3} GiB ternary, {:.3} GiB {} embedding and head)",
        resident as f64 / GIB,
        ternary / GIB,
        head_bytes / GIB,
        weights.head_precision().label()
    );

    let families = decode_families();
    let context = args.prompt_tokens.max(args.decode_tokens) + 1;
    let mut ours = Model::new(weights, context, args.threads, Isa::Portable)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .context("thread pool")?;

    // Decode from an empty context to n tokens reads, on average, half of its final cache.
    let kv_bytes =
        (c.num_hidden_layers * c.kv_size() * 2 * 2) as f64 * (args.decode_tokens as f64 / 2.0);
    let stored = ours.weights().head_precision();
    let best = *families.last().unwrap_or(&Isa::Portable);
    // Each row holds the output head it runs with (`None`: the file's own) while it is not
    // being measured; the table moves into the model and back, never copied.
    let mut our_rows: Vec<(Isa, Option<Table>, Row)> = families
        .iter()
        .map(|&isa| {
            let label = format!("quantlab {}, {} head", isa.label(), stored.label());
            (isa, None, Row::new(label, ternary + head_bytes + kv_bytes))
        })
        .collect();
    // A file whose embedding is stored wide also runs with the quantized heads: int8, and Q6_K
    // as bitnet.cpp's own 2026 files hold it (whole blocks of 256 columns only).
    if stored == HeadPrecision::Bf16 {
        for precision in [HeadPrecision::Int8, HeadPrecision::Q6K] {
            let Ok(head) = ours
                .weights()
                .embedding
                .to_precision(precision, c.hidden_size)
            else {
                continue;
            };
            let bytes = head.bytes() as f64;
            our_rows.push((
                best,
                Some(head),
                Row::new(
                    format!("quantlab {}, {} head", best.label(), precision.label()),
                    ternary + bytes + kv_bytes,
                ),
            ));
        }
    }
    let mut measure = |isa: Isa, head: &mut Option<Table>| {
        ours.set_output_head(head.take());
        let speeds = our_speeds(&mut ours, isa, args);
        *head = ours.set_output_head(None);
        speeds
    };
    for (isa, head, _) in &mut our_rows {
        // Warm-up: pages touched, caches and frequency settled.
        measure(*isa, head);
    }

    let bandwidth_before = pool.install(read_bandwidth);
    let mut theirs: Option<TheirSpeeds> = None;
    let mut their_row = Row::new("bitnet.cpp I2_S, f16 head".into(), 0.0);
    for round in 1..=args.repetitions {
        eprintln!(
            "round {round} of {}: bitnet.cpp's llama-bench, then ours…",
            args.repetitions
        );
        let speeds = run_llama_bench(&llama_bench, &model_path, args)?;
        their_row.push((speeds.prefill_tok_s, speeds.decode_tok_s));
        theirs = Some(speeds);
        for (isa, head, row) in &mut our_rows {
            row.push(measure(*isa, head));
        }
    }
    let bandwidth = pool.install(read_bandwidth).max(bandwidth_before);
    let Some(theirs) = theirs else {
        bail!("no rounds were run");
    };
    their_row.bytes_per_token = theirs.model_bytes as f64 + kv_bytes;

    println!(
        "\nmemory read bandwidth, {} threads: {:.1} GB/s (best of 5 passes over 1 GiB, before and after the rounds)",
        args.threads,
        bandwidth / 1e9
    );
    println!(
        "bitnet.cpp: build {}, CPU `{}`; {} rounds, each one llama-bench run (pp{} and tg{}, {} threads) and one of ours per row; medians (min–max)",
        theirs.build,
        theirs.cpu,
        args.repetitions,
        args.prompt_tokens,
        args.decode_tokens,
        args.threads
    );
    println!(
        "\n{:<34} {:>19} {:>19} {:>8} {:>12} {:>8} {:>9} {:>9}",
        "engine",
        "prefill tok/s",
        "decode tok/s",
        "GiB/tok",
        "roofline t/s",
        "reached",
        "decode ×",
        "prefill ×"
    );
    let (their_prefill, their_decode) = their_row.medians();
    for row in std::iter::once(&their_row).chain(our_rows.iter().map(|(_, _, row)| row)) {
        let (prefill, decode) = row.medians();
        let roofline = bandwidth / row.bytes_per_token;
        println!(
            "{:<34} {:>19} {:>19} {:>8.3} {:>12.1} {:>7.0}% {:>8.2}x {:>8.2}x",
            row.label,
            prefill.display(1),
            decode.display(1),
            row.bytes_per_token / GIB,
            roofline,
            100.0 * decode.median / roofline,
            decode.median / their_decode.median,
            prefill.median / their_prefill.median,
        );
    }
    if stored == HeadPrecision::Bf16 {
        println!(
            "\n(a file's f16 head is held as bf16 by our engine: the same two bytes a value; the int8 and q6_k rows are heads quantized by us at load, which bitnet.cpp runs only from a file made with `--token-embedding-type`)"
        );
    }
    if !args.sequences.is_empty() {
        let binary = args.checkout.join("build/bin/llama-batched-bench");
        if !binary.is_file() {
            println!(
                "\nbatched decode skipped: {} is missing (scripts/bitnet-cpp.sh builds it)",
                binary.display()
            );
            return Ok(());
        }
        drop(our_rows); // the quantized head copies
        super::bitnet_cpp_batch::run(
            ours.into_weights(),
            &super::bitnet_cpp_batch::BatchedArgs {
                binary: &binary,
                model: &model_path,
                threads: args.threads,
                prompt_tokens: args.prompt_tokens,
                decode_tokens: args.decode_tokens,
                sequences: &args.sequences,
                rounds: args.repetitions,
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_bench_json_gives_prefill_decode_and_the_file_size() {
        let json = r#"[
          {"build_commit": "c82b5e6", "cpu_info": "AMD EPYC", "model_size": 760357440,
           "n_prompt": 128, "n_gen": 0, "avg_ts": 40.8, "samples_ts": [45.3, 36.7]},
          {"build_commit": "c82b5e6", "cpu_info": "AMD EPYC", "model_size": 760357440,
           "n_prompt": 0, "n_gen": 64, "avg_ts": 22.2}
        ]"#;
        let speeds = parse_llama_bench(json).unwrap();
        assert_eq!(speeds.prefill_tok_s, 40.8);
        assert_eq!(speeds.decode_tok_s, 22.2);
        assert_eq!(speeds.model_bytes, 760_357_440);
        assert_eq!(speeds.build, "c82b5e6");
        let error =
            parse_llama_bench(r#"[{"model_size": 1, "n_prompt": 128, "n_gen": 0, "avg_ts": 1.0}]"#)
                .unwrap_err()
                .to_string();
        assert!(error.contains("no prefill"), "{error}");
    }
}
