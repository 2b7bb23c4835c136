//! Engine against engine on the same weights: when a run measured one GGUF file on llama.cpp
//! and on another engine, how the other engine's medians compare (other ÷ llama.cpp).

use super::types::ModelBench;

/// The engine the others are measured against.
pub const REFERENCE_ENGINE: &str = "llama_cpp";

#[derive(Clone, Debug, PartialEq)]
pub struct EngineRatio {
    pub file: String,
    pub engine: String,
    pub model: String,
    pub reference_model: String,
    /// Tokens per second ratios: above 1 the other engine is faster.
    pub decode: Option<f64>,
    pub prefill: Option<f64>,
    /// Time and memory ratios: above 1 the other engine takes more.
    pub ttft: Option<f64>,
    pub resident: Option<f64>,
    pub perplexity: Option<f64>,
}

fn ratio(other: Option<f64>, reference: Option<f64>) -> Option<f64> {
    match (other, reference) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() => Some(a / b),
        _ => None,
    }
}

/// One line per non-reference model whose file the run also measured on llama.cpp.
pub fn engine_ratios(models: &[ModelBench]) -> Vec<EngineRatio> {
    let reference_for = |file: &str| {
        models.iter().find(|m: &&ModelBench| {
            m.engine == REFERENCE_ENGINE && m.file.as_deref() == Some(file) && m.error.is_none()
        })
    };
    models
        .iter()
        .filter(|m| m.engine != REFERENCE_ENGINE && m.error.is_none())
        .filter_map(|m| {
            let file = m.file.as_deref()?;
            let reference = reference_for(file)?;
            let median = |s: Option<super::stats::Stat>| s.map(|s| s.median);
            Some(EngineRatio {
                file: file.to_string(),
                engine: m.engine.clone(),
                model: m.model.clone(),
                reference_model: reference.model.clone(),
                decode: ratio(median(m.decode_tok_s), median(reference.decode_tok_s)),
                prefill: ratio(median(m.prefill_tok_s()), median(reference.prefill_tok_s())),
                ttft: ratio(median(m.ttft_ms()), median(reference.ttft_ms())),
                resident: ratio(
                    m.resident_bytes.map(|b| b as f64),
                    reference.resident_bytes.map(|b| b as f64),
                ),
                perplexity: ratio(
                    m.perplexity.as_ref().map(|p| p.perplexity),
                    reference.perplexity.as_ref().map(|p| p.perplexity),
                ),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{stats::Stat, types::PromptBench};

    fn model(id: &str, engine: &str, file: &str, decode: f64, prefill: f64) -> ModelBench {
        ModelBench {
            model: id.into(),
            engine: engine.into(),
            file: Some(file.into()),
            decode_tok_s: Some(Stat::of(&[decode]).unwrap()),
            prompts: vec![PromptBench {
                prompt: "long".into(),
                prefill_tok_s: Some(Stat::of(&[prefill]).unwrap()),
                ..Default::default()
            }],
            resident_bytes: Some(100),
            ..Default::default()
        }
    }

    #[test]
    fn pairs_engines_by_file_and_divides_by_llama_cpp() {
        let ratios = engine_ratios(&[
            model("a", "llama_cpp", "a.gguf", 100.0, 300.0),
            model("a-candle", "candle", "a.gguf", 45.0, 150.0),
            model("b-candle", "candle", "b.gguf", 10.0, 10.0),
        ]);
        assert_eq!(
            ratios.len(),
            1,
            "b.gguf has no llama.cpp run to compare with"
        );
        let r = &ratios[0];
        assert_eq!(
            (r.model.as_str(), r.reference_model.as_str()),
            ("a-candle", "a")
        );
        assert_eq!(r.decode, Some(0.45));
        assert_eq!(r.prefill, Some(0.5));
        assert_eq!(r.resident, Some(1.0));
        assert_eq!(r.ttft, None);
    }
}
