//! `quantlab models quantize` through the built binary, on the default model (SmolLM2-135M,
//! Q4_1: already quantized, so every run here is a requantization). Refused without the
//! explicit flag, with the reason and no file left behind; with it, two types are written, both
//! load and answer on llama.cpp, candle reads them, and their next-token distributions drift
//! from the source's by a KL divergence that is zero for the source itself and grows as bits
//! fall.

mod common;

use std::{ops::ControlFlow, path::Path, process::Command};

use quantlab::{
    bench::divergence::Divergence,
    inference::{
        candle::CandleEngine, llama_cpp::LlamaCppEngine, ChatEngine, ResolvedSampling, TokenSink,
    },
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

struct Collect(String);

impl TokenSink for Collect {
    fn cancelled(&mut self) -> bool {
        false
    }
    fn piece(&mut self, text: &str) -> ControlFlow<()> {
        self.0.push_str(text);
        ControlFlow::Continue(())
    }
}

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
    let files = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
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
        ],
        "no partial file is left"
    );
    // An existing output is not overwritten.
    let again = quantize(dir.path(), &["--type", "Q8_0", "--allow-requantize"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
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
