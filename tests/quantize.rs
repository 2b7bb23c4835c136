//! `quantlab models quantize` through the built binary, on the default model (SmolLM2-135M,
//! Q4_1: already quantized, so every run here is a requantization). Refused without the
//! explicit flag, with the reason and no file left behind; with it, two types are written, both
//! load and answer on llama.cpp, candle reads them, and their next-token distributions drift
//! from the source's by a KL divergence that is zero for the source itself and grows as bits
//! fall.

mod common;

use std::{path::Path, process::Command};

use quantlab::{
    bench::divergence::Divergence,
    inference::{candle::CandleEngine, llama_cpp::LlamaCppEngine, ChatEngine, ResolvedSampling},
};

const SOURCE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn quantize(models: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quantlab"))
        .arg("--models-dir")
        .arg(models)
        .args([
            "models",
            "quantize",
            "smollm2-135m-instruct",
            "--threads",
            "2",
        ])
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the binary runs")
}

use common::CollectText as Collect;

fn mean_kl(reference: &[Vec<f32>], tested: &[Vec<f32>]) -> f64 {
    let mut divergence = Divergence::default();
    for (p, q) in reference.iter().zip(tested) {
        divergence.add(p, q);
    }
    divergence.summary().mean_kl
}

#[test]
fn requantizing_needs_consent_and_the_results_load_and_drift_as_bits_fall() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(common::models_dir().join(SOURCE), dir.path().join(SOURCE)).unwrap();

    let refused = quantize(dir.path(), &["--type", "Q8_0"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("already quantized (Q4_1)") && stderr.contains("loses quality twice"),
        "{stderr}"
    );
    let files = common::models_api::names;
    assert_eq!(files(dir.path()), [SOURCE], "a refusal leaves nothing");

    for kind in ["Q8_0", "Q2_K"] {
        let made = quantize(dir.path(), &["--type", kind, "--allow-requantize"]);
        let stdout = String::from_utf8_lossy(&made.stdout);
        assert!(
            made.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        assert!(
            stdout.contains("Q4_1 ->") && stdout.contains("requantized"),
            "{stdout}"
        );
    }
    let q8 = dir.path().join("SmolLM2-135M-Instruct.Q4_1.Q8_0.gguf");
    let q2 = dir.path().join("SmolLM2-135M-Instruct.Q4_1.Q2_K.gguf");
    assert_eq!(
        files(dir.path()),
        [
            "SmolLM2-135M-Instruct.Q4_1.Q2_K.gguf",
            "SmolLM2-135M-Instruct.Q4_1.Q8_0.gguf",
            SOURCE,
            "quantized.toml",
        ],
        "no partial file is left"
    );
    // A second Q8_0 would repeat a registered id; another type under a taken file name would
    // overwrite a file: both refused.
    let again = quantize(dir.path(), &["--type", "Q8_0", "--allow-requantize"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already declared"));
    let clash = quantize(
        dir.path(),
        &[
            "--type",
            "Q4_0",
            "--allow-requantize",
            "--output",
            "SmolLM2-135M-Instruct.Q4_1.Q8_0.gguf",
        ],
    );
    assert!(!clash.status.success());
    assert!(String::from_utf8_lossy(&clash.stderr).contains("already exists"));
    let (q8_bytes, q2_bytes) = (q8.metadata().unwrap().len(), q2.metadata().unwrap().len());
    assert!(q2_bytes < q8_bytes, "{q2_bytes} vs {q8_bytes}");

    // Both load on llama.cpp and answer.
    for path in [&q8, &q2] {
        let mut engine = LlamaCppEngine::load(path, 512, 2).expect("loads on llama.cpp");
        let mut reply = Collect(String::new());
        let sampling = ResolvedSampling::greedy(8);
        let stats = engine
            .generate("The capital of France is", &sampling, &mut reply)
            .expect("generates");
        assert!(stats.generated_tokens > 0, "{}", path.display());
    }

    // Teacher-forced on one text, candle reads all three; KL against the source.
    let text =
        "Paris is the capital and largest city of France. It is known for the Eiffel Tower, \
                museums such as the Louvre, and its cafes along the river Seine.";
    let logits = |path: &Path| {
        let mut engine = CandleEngine::load(path, 512, 2).expect("loads on candle");
        let tokens = engine.tokenize_prompt(text).unwrap();
        engine.logits_for(&tokens).unwrap()
    };
    let source = logits(&dir.path().join(SOURCE));
    let (itself, eight, two) = (
        mean_kl(&source, &source),
        mean_kl(&source, &logits(&q8)),
        mean_kl(&source, &logits(&q2)),
    );
    eprintln!("mean KL against Q4_1: itself {itself:e}, Q8_0 {eight:e}, Q2_K {two:e}");
    assert_eq!(itself, 0.0);
    assert!(eight > 0.0 && eight < two, "Q8_0 {eight}, Q2_K {two}");
}

/// A quantization made by the binary is registered: `models list` shows it, and `serve` on
/// that models folder lists it as available and answers with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_quantization_is_registered_and_served() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(common::models_dir().join(SOURCE), dir.path().join(SOURCE)).unwrap();
    let made = quantize(dir.path(), &["--type", "Q8_0", "--allow-requantize"]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    assert!(String::from_utf8_lossy(&made.stdout)
        .contains("registered as `smollm2-135m-instruct-q8-0`"));

    let listed = common::binary::command()
        .env("QUANTLAB_MODELS_DIR", dir.path())
        .args(["models", "list"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(listing.contains("smollm2-135m-instruct-q8-0"), "{listing}");

    let mut command = common::binary::command();
    command.env("QUANTLAB_MODELS_DIR", dir.path());
    let mut server = common::binary::Binary::serve(command, &["--threads", "2"]);
    server.wait_listening().await;
    let models: serde_json::Value = reqwest::get(format!("{}/api/models", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = models
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "smollm2-135m-instruct-q8-0")
        .unwrap_or_else(|| panic!("not listed: {models}"));
    assert_eq!(entry["available"], true, "{entry}");
    assert_eq!(entry["quantization"], "Q8_0", "{entry}");
    let (_, metrics) = common::chat_reply(
        &server.url,
        Some("smollm2-135m-instruct-q8-0"),
        "Name a colour.",
        8,
    )
    .await;
    assert_eq!(metrics["model"], "smollm2-135m-instruct-q8-0");
    assert!(
        metrics["generated_tokens"].as_u64().unwrap() > 0,
        "{metrics}"
    );
}

/// `quantlab bench` on the source and two quantizations made from it: the variant with the
/// most bits is the reference, and the others drift from it as bits fall.
#[test]
fn the_bench_measures_each_variant_against_the_one_with_most_bits() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(common::models_dir().join(SOURCE), dir.path().join(SOURCE)).unwrap();
    for kind in ["Q8_0", "Q2_K"] {
        let made = quantize(dir.path(), &["--type", kind, "--allow-requantize"]);
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    let json = dir.path().join("run.json");
    let output = common::binary::command()
        .env("QUANTLAB_MODELS_DIR", dir.path())
        .args(["bench", "--models"])
        .arg("smollm2-135m-instruct,smollm2-135m-instruct-q8-0,smollm2-135m-instruct-q2-k")
        .args([
            "--repeats",
            "1",
            "--tokens",
            "4",
            "--perplexity-tokens",
            "384",
        ])
        .args(["--threads", "2", "--no-save", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let model = |id: &str| {
        run["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["model"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} missing: {run}"))
    };
    let (source, q8, q2) = (
        model("smollm2-135m-instruct"),
        model("smollm2-135m-instruct-q8-0"),
        model("smollm2-135m-instruct-q2-k"),
    );
    assert_eq!(q8["is_reference"], true, "{q8}");
    assert!(q8["divergence"].is_null());
    let kl = |m: &serde_json::Value| {
        let d = &m["divergence"];
        assert_eq!(d["reference"], "smollm2-135m-instruct-q8-0", "{m}");
        assert!(d["positions"].as_u64().unwrap() >= 128, "{d}");
        d["mean_kl"].as_f64().unwrap()
    };
    let (kl_source, kl_q2) = (kl(&source), kl(&q2));
    assert!(
        0.0 < kl_source && kl_source < kl_q2,
        "Q4_1 {kl_source}, Q2_K {kl_q2}"
    );
    assert!(
        source["divergence"]["top1_agreement"].as_f64().unwrap()
            > q2["divergence"]["top1_agreement"].as_f64().unwrap()
    );
    // Results keep the order asked for, though the reference ran first.
    let order: Vec<&str> = run["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(order[0], "smollm2-135m-instruct");
    assert!(
        stdout.contains("against smollm2-135m-instruct-q8-0: mean KL"),
        "{stdout}"
    );
}
