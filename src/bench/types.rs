//! What a bench run asks for and what it found; shared by the server, the CLI and the Bench page.

use serde::{Deserialize, Serialize};

use super::stats::Stat;
use crate::types::GenerationMetrics;

/// Most models in one bench run.
pub const MAX_BENCH_MODELS: usize = 4;
/// Most measured runs per prompt.
pub const MAX_REPEATS: u32 = 10;
/// Most tokens generated per run.
pub const MAX_BENCH_TOKENS: u32 = 512;
/// Most text tokens scored for perplexity.
pub const MAX_PERPLEXITY_TOKENS: u32 = 8192;

/// A bench request (`POST /api/bench`, the Bench page, `quantlab bench`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchConfig {
    /// Model ids, run one after another.
    pub models: Vec<String>,
    /// Measured runs per prompt, after one warm-up run per model.
    #[serde(default = "default_repeats")]
    pub repeats: u32,
    /// Tokens generated per run (greedy, so every run does the same work).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Text tokens scored for perplexity; 0 skips it.
    #[serde(default = "default_perplexity_tokens")]
    pub perplexity_tokens: u32,
    /// The model the others' next-token distributions are compared with (KL divergence, top-1
    /// agreement) on the perplexity text; `None`: for each base model (family and size) with
    /// several variants in the run, the one with the most bits per weight.
    #[serde(default)]
    pub kl_reference: Option<String>,
}

fn default_repeats() -> u32 {
    3
}
fn default_max_tokens() -> u32 {
    128
}
fn default_perplexity_tokens() -> u32 {
    1024
}

impl BenchConfig {
    pub fn new(models: Vec<String>) -> Self {
        Self {
            models,
            repeats: default_repeats(),
            max_tokens: default_max_tokens(),
            perplexity_tokens: default_perplexity_tokens(),
            kl_reference: None,
        }
    }

    /// Checks the bounds; the message names the field and the allowed range.
    pub fn validate(&self) -> Result<(), String> {
        if self.models.is_empty() {
            return Err("`models` must name at least one model".into());
        }
        if self.models.len() > MAX_BENCH_MODELS {
            return Err(format!(
                "`models` names {} models; at most {MAX_BENCH_MODELS} per run",
                self.models.len()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = self.models.iter().find(|m| !seen.insert(m.as_str())) {
            return Err(format!("`models` lists `{dup}` twice"));
        }
        if !(1..=MAX_REPEATS).contains(&self.repeats) {
            return Err(format!("`repeats` must be 1 to {MAX_REPEATS}"));
        }
        if !(1..=MAX_BENCH_TOKENS).contains(&self.max_tokens) {
            return Err(format!("`max_tokens` must be 1 to {MAX_BENCH_TOKENS}"));
        }
        if let Some(reference) = &self.kl_reference {
            if !self.models.contains(reference) {
                return Err(format!(
                    "`kl_reference` `{reference}` must be one of the models of the run"
                ));
            }
            if self.perplexity_tokens == 0 {
                return Err(
                    "`kl_reference` needs `perplexity_tokens` > 0: KL divergence is measured on the perplexity text".into(),
                );
            }
        }
        if self.perplexity_tokens > MAX_PERPLEXITY_TOKENS {
            return Err(format!(
                "`perplexity_tokens` must be 0 (skip) to {MAX_PERPLEXITY_TOKENS}"
            ));
        }
        Ok(())
    }
}

/// The machine a run was measured on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineInfo {
    pub cpu: String,
    pub logical_cores: u32,
    /// SIMD extensions the CPU reports (of those that matter for inference).
    pub cpu_simd: Vec<String>,
    /// SIMD extensions this binary was compiled to use.
    pub build_simd: Vec<String>,
    /// Threads each model used.
    pub threads: u32,
    pub memory_bytes: Option<u64>,
    pub os: String,
    pub quantlab_version: String,
}

/// One measured generation: what the UI would show for it, and what the bench saw from outside.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The per-reply metrics, exactly as a chat reply reports them.
    pub metrics: GenerationMetrics,
    /// Submit to first piece of text, on the bench's own clock.
    pub observed_ttft_ms: f64,
    /// Tokens after the first over the time between the first and the last piece of text.
    pub observed_decode_tok_s: Option<f64>,
    /// Submit to the final event.
    pub observed_total_ms: f64,
}

/// One prompt of the fixed set, measured `repeats` times.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptBench {
    /// `short`, `medium` or `long`.
    pub prompt: String,
    pub prompt_tokens: u32,
    pub ttft_ms: Option<Stat>,
    pub prefill_tok_s: Option<Stat>,
    pub decode_tok_s: Option<Stat>,
    pub generated_tokens: Option<Stat>,
    pub samples: Vec<Sample>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PerplexityResult {
    /// The file name of the text (see bench/texts/README.md for its source and licence).
    pub text: String,
    pub perplexity: f64,
    pub scored_tokens: u32,
    pub evaluated_tokens: u32,
    /// Tokens per window; the second half of each window is scored.
    pub window: u32,
    pub secs: f64,
}

/// A model's next-token distributions against the reference's, as
/// `llama-perplexity --kl-divergence` reports them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DivergenceResult {
    pub reference: String,
    /// Predictions compared (the scored positions of the perplexity text).
    pub positions: u32,
    /// Mean KL(reference ‖ model) in nats.
    pub mean_kl: f64,
    pub p99_kl: f64,
    pub max_kl: f64,
    /// Fraction of positions where both put the same token first.
    pub top1_agreement: f64,
}

/// Everything measured for one model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelBench {
    pub model: String,
    pub name: String,
    pub engine: String,
    pub quantization: String,
    pub bits_per_weight: f32,
    /// The weights' file name: two engines on one file are compared (see `ratios`).
    pub file: Option<String>,
    pub file_bytes: Option<u64>,
    pub load_ms: Option<f64>,
    /// Resident memory the loaded model added.
    pub resident_bytes: Option<u64>,
    /// The highest resident memory above the pre-load baseline while generating (None where
    /// the kernel does not allow resetting the high-water mark).
    pub peak_resident_bytes: Option<u64>,
    pub prompts: Vec<PromptBench>,
    /// Over every measured run of every prompt.
    pub decode_tok_s: Option<Stat>,
    pub perplexity: Option<PerplexityResult>,
    /// How far its next-token distributions are from the reference's on the perplexity text.
    #[serde(default)]
    pub divergence: Option<DivergenceResult>,
    /// Other models of the run were compared with this one.
    #[serde(default)]
    pub is_reference: bool,
    /// Why this model has no (or partial) results.
    pub error: Option<String>,
}

impl ModelBench {
    pub fn prompt(&self, id: &str) -> Option<&PromptBench> {
        self.prompts.iter().find(|p| p.prompt == id)
    }

    /// Prefill speed on the longest prompt, where it is least dominated by fixed costs.
    pub fn prefill_tok_s(&self) -> Option<Stat> {
        self.prompt("long").and_then(|p| p.prefill_tok_s)
    }

    /// Time to first token on the short prompt: what a quick question feels like.
    pub fn ttft_ms(&self) -> Option<Stat> {
        self.prompt("short").and_then(|p| p.ttft_ms)
    }
}

/// A finished (or cancelled) bench run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchRun {
    pub id: String,
    pub started_at_ms: i64,
    /// The whole run on the bench's clock, loads included.
    pub wall_ms: f64,
    pub machine: MachineInfo,
    pub config: BenchConfig,
    pub models: Vec<ModelBench>,
    pub cancelled: bool,
}

/// Where a running bench is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchProgress {
    pub step: u32,
    pub total_steps: u32,
    pub model: String,
    /// What is being measured now, in words.
    pub phase: String,
}

/// What the Bench page polls.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchStatus {
    pub progress: Option<BenchProgress>,
    /// The id of the newest stored run.
    pub latest_run: Option<String>,
    /// Why the last run failed, if it did.
    pub last_error: Option<String>,
}

/// Events of `POST /api/bench` (SSE event name = variant, data = JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BenchEvent {
    Progress(BenchProgress),
    Done { run: Box<BenchRun> },
    Error { status: u16, message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_bounds_are_enforced_with_the_field_named() {
        let ok = BenchConfig::new(vec!["a".into()]);
        assert!(ok.validate().is_ok());
        let cases = [
            (BenchConfig::new(vec![]), "models"),
            (
                BenchConfig::new(vec![
                    "a".into(),
                    "b".into(),
                    "c".into(),
                    "d".into(),
                    "e".into(),
                ]),
                "at most 4",
            ),
            (BenchConfig::new(vec!["a".into(), "a".into()]), "twice"),
            (
                BenchConfig {
                    repeats: 0,
                    ..ok.clone()
                },
                "repeats",
            ),
            (
                BenchConfig {
                    repeats: 11,
                    ..ok.clone()
                },
                "repeats",
            ),
            (
                BenchConfig {
                    max_tokens: 0,
                    ..ok.clone()
                },
                "max_tokens",
            ),
            (
                BenchConfig {
                    max_tokens: 513,
                    ..ok.clone()
                },
                "max_tokens",
            ),
            (
                BenchConfig {
                    perplexity_tokens: 9000,
                    ..ok.clone()
                },
                "perplexity_tokens",
            ),
            (
                BenchConfig {
                    kl_reference: Some("z".into()),
                    ..ok.clone()
                },
                "kl_reference",
            ),
            (
                BenchConfig {
                    kl_reference: Some("a".into()),
                    perplexity_tokens: 0,
                    ..ok.clone()
                },
                "perplexity_tokens",
            ),
        ];
        for (config, needle) in cases {
            let message = config.validate().unwrap_err();
            assert!(message.contains(needle), "{message}");
        }
    }

    #[test]
    fn config_defaults_fill_missing_fields_and_unknown_fields_are_refused() {
        let c: BenchConfig = serde_json::from_str(r#"{"models":["m"]}"#).unwrap();
        assert_eq!(c, BenchConfig::new(vec!["m".into()]));
        assert!(serde_json::from_str::<BenchConfig>(r#"{"models":["m"],"repeat":2}"#).is_err());
    }
}
