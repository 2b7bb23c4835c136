//! `quantlab bench --ner`: our NER (rten, end to end: tokenizing, windows, model, spans) against
//! onnxruntime running the same ONNX file on the very same word-piece windows with the same
//! thread count (model only), in one run; the ratio is printed per text.

use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::{
    ner::{NerModel, NerRuntime, DEFAULT_THRESHOLD},
    registry::Registry,
};

/// A short message like the 88-token orientation text, and a long document.
fn texts() -> Vec<(&'static str, String)> {
    let short = "Hi team, this is Maria Garcia from accounting. Please send the signed contract to \
                 maria.garcia@example.com or call me on +1 415 555 0199 before Friday; my office is at \
                 1600 Pennsylvania Avenue, Washington, DC 20500.";
    let long = format!(
        "{}Please write to Zoë Müller at zoe.muller@example.org about it.",
        "The committee met on a quiet afternoon and discussed the budget at length. ".repeat(100)
    );
    vec![("short", short.to_string()), ("long", long)]
}

#[derive(Deserialize)]
struct Reference {
    /// One window per run, as a simple loop does.
    millis: Vec<f64>,
    /// All of a text's windows in one padded batch (absent without an attention mask input).
    batched_millis: Option<Vec<f64>>,
    version: String,
}

impl Reference {
    /// onnxruntime's faster way for this text, the one we are measured against.
    fn best(&self, index: usize) -> f64 {
        let batched = self.batched_millis.as_ref().and_then(|b| b.get(index));
        self.millis[index].min(batched.copied().unwrap_or(f64::INFINITY))
    }
}

pub fn run(
    registry: &Registry,
    python: &str,
    threads: usize,
    repeats: usize,
) -> anyhow::Result<()> {
    let id = registry
        .default_ner
        .clone()
        .context("models.toml declares no default NER model")?;
    let entry = registry
        .ner(&id)
        .context("the default NER model is not declared")?;
    if let Some(reason) = registry.ner_unavailability(entry) {
        bail!("{reason}");
    }
    let dir = registry.ner_dir(entry);
    let model = NerModel::load(&id, &dir, NerRuntime::Rten)?;
    let texts = texts();
    let mut ours = Vec::new();
    let mut windows = Vec::new();
    for (_, text) in &texts {
        model.recognize(text, DEFAULT_THRESHOLD)?; // warm-up
        ours.push(super::stats::median_millis(repeats, || {
            model.recognize(text, DEFAULT_THRESHOLD).map(drop)
        })?);
        windows.push(model.input_windows(text)?);
    }
    let reference = onnxruntime(python, &dir.join("model.onnx"), &windows, threads, repeats);
    println!("NER model `{id}`, {threads} threads, median of {repeats} runs after a warm-up");
    for (index, (name, text)) in texts.iter().enumerate() {
        let tokens: usize = windows[index].iter().map(|w| w.len() - 2).sum();
        let line = format!(
            "  {name:<6} {:>6} chars {:>5} word pieces {:>3} windows: quantlab (rten, end to end) {:>8.2} ms",
            text.chars().count(),
            tokens,
            windows[index].len(),
            ours[index]
        );
        match &reference {
            Ok(r) => {
                let batched = r
                    .batched_millis
                    .as_ref()
                    .and_then(|b| b.get(index))
                    .map_or_else(String::new, |ms| format!(", one padded batch {ms:.2} ms"));
                println!(
                    "{line}\n{:>10}onnxruntime {} (model only): a run per window {:.2} ms{batched}; \
                     best ÷ quantlab {:.2}x",
                    "",
                    r.version,
                    r.millis[index],
                    r.best(index) / ours[index]
                )
            }
            Err(e) => println!("{line}   onnxruntime: {e}"),
        }
    }
    if reference.is_err() {
        println!("(install the reference with scripts/bench-ner-deps.sh and pass --python)");
    }
    Ok(())
}

fn onnxruntime(
    python: &str,
    model: &Path,
    windows: &[Vec<Vec<u32>>],
    threads: usize,
    repeats: usize,
) -> anyhow::Result<Reference> {
    let job = serde_json::json!({
        "model": model, "texts": windows, "threads": threads, "repeats": repeats,
    });
    super::python::run_script(python, &super::python::NER_ONNXRUNTIME, &job)
}
