//! Validation of per-request sampling settings, shared by every API and the UI's websocket.

use std::sync::Arc;

use super::{
    json_grammar::{self, SchemaError},
    reply_text::{MAX_STOP_CHARS, MAX_STOP_SEQUENCES},
};
use crate::{
    error::AppError,
    types::{ResponseFormat, SamplingParams},
};

pub const DEFAULT_TEMPERATURE: f32 = 0.7;
pub const DEFAULT_TOP_P: f32 = 0.9;
pub const DEFAULT_TOP_K: u32 = 40;
pub const DEFAULT_REPEAT_PENALTY: f32 = 1.1;
pub const DEFAULT_MAX_TOKENS: u32 = 512;

/// Sampling settings after validation, with every default filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedSampling {
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 disables top-k.
    pub top_k: u32,
    pub repeat_penalty: f32,
    pub max_tokens: u32,
    pub seed: u32,
    /// Reuse the KV cache of a matching prompt prefix (an earlier turn, a shared system
    /// prompt). Off only where prefill itself is measured.
    pub cache_prompt: bool,
    /// End-of-turn tokens are never sampled: the reply runs to `max_tokens` (or a stop
    /// sequence, or a full context).
    pub ignore_eos: bool,
    /// Structured output: the reply must be a sentence of this grammar.
    pub constraint: Option<OutputConstraint>,
    /// The reply ends before the first of these texts.
    pub stop: Vec<String>,
    /// Report each token's log-probability with this many alternatives; `None`: off.
    pub logprobs: Option<usize>,
}

/// What `response_format` asked for and the GBNF grammar that enforces it.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputConstraint {
    pub format: ResponseFormat,
    pub grammar: Arc<str>,
}

/// Checks stop sequences: at most four, each 1 to 64 characters.
fn resolve_stop(stop: Option<&[String]>) -> Result<Vec<String>, AppError> {
    let stop = stop.unwrap_or_default();
    if stop.len() > MAX_STOP_SEQUENCES {
        return Err(AppError::BadRequest(format!(
            "`stop` has {} sequences; at most {MAX_STOP_SEQUENCES} are accepted",
            stop.len()
        )));
    }
    for sequence in stop {
        let chars = sequence.chars().count();
        if chars == 0 || chars > MAX_STOP_CHARS {
            return Err(AppError::BadRequest(format!(
                "each `stop` sequence must have 1 to {MAX_STOP_CHARS} characters, got {chars}"
            )));
        }
    }
    Ok(stop.to_vec())
}

/// The largest JSON schema accepted (its JSON text).
pub const MAX_SCHEMA_BYTES: usize = 32 * 1024;

/// Turns `response_format` into the grammar that enforces it (`None` for free text).
///
/// # Errors
/// A 400 naming what is wrong with the schema, or what in it cannot be enforced.
pub fn resolve_format(
    format: Option<&ResponseFormat>,
) -> Result<Option<OutputConstraint>, AppError> {
    let grammar = match format {
        None | Some(ResponseFormat::Text) => return Ok(None),
        Some(ResponseFormat::JsonObject) => json_grammar::any_object(),
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            let Some(schema) = &json_schema.schema else {
                return Err(AppError::BadRequest(
                    "`response_format.json_schema.schema` is missing: give the JSON schema the reply must follow".into(),
                ));
            };
            let size = serde_json::to_string(schema).map_or(usize::MAX, |t| t.len());
            if size > MAX_SCHEMA_BYTES {
                return Err(AppError::BadRequest(format!(
                    "`response_format.json_schema.schema` is {size} bytes; at most {MAX_SCHEMA_BYTES} are accepted"
                )));
            }
            json_grammar::grammar_for_schema(schema)
                .map_err(|e: SchemaError| AppError::BadRequest(format!("`response_format`: {e}")))?
        }
    };
    Ok(format.map(|format| OutputConstraint {
        format: format.clone(),
        grammar: grammar.into(),
    }))
}

impl ResolvedSampling {
    /// Greedy decoding with no repeat penalty and no reuse of a cached prompt: the same text
    /// on every run, for tests and measurements.
    pub fn greedy(max_tokens: u32) -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            repeat_penalty: 1.0,
            max_tokens,
            seed: 0,
            cache_prompt: false,
            ignore_eos: false,
            constraint: None,
            stop: Vec::new(),
            logprobs: None,
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

fn check_range(field: &str, value: f32, min: f32, max: f32) -> Result<f32, AppError> {
    if !value.is_finite() || value < min || value > max {
        return Err(AppError::BadRequest(format!(
            "`{field}` must be a number from {min} to {max}, got {value}"
        )));
    }
    Ok(value)
}

/// Checks every field and fills defaults. A missing seed gets a random one, reported back in
/// the reply's metrics so the reply can be reproduced.
pub fn resolve(params: &SamplingParams, max_new_tokens: u32) -> Result<ResolvedSampling, AppError> {
    let temperature = check_range(
        "temperature",
        params.temperature.unwrap_or(DEFAULT_TEMPERATURE),
        0.0,
        2.0,
    )?;
    let top_p = check_range("top_p", params.top_p.unwrap_or(DEFAULT_TOP_P), 0.0, 1.0)?;
    if top_p == 0.0 {
        return Err(AppError::BadRequest(
            "`top_p` must be greater than 0 (use temperature 0 for greedy decoding)".into(),
        ));
    }
    let top_k = params.top_k.unwrap_or(DEFAULT_TOP_K);
    if top_k > 100 {
        return Err(AppError::BadRequest(format!(
            "`top_k` must be from 0 (off) to 100, got {top_k}"
        )));
    }
    let repeat_penalty = check_range(
        "repeat_penalty",
        params.repeat_penalty.unwrap_or(DEFAULT_REPEAT_PENALTY),
        0.5,
        2.0,
    )?;
    let max_tokens = params
        .max_tokens
        .unwrap_or(DEFAULT_MAX_TOKENS.min(max_new_tokens));
    if max_tokens == 0 || max_tokens > max_new_tokens {
        return Err(AppError::BadRequest(format!(
            "`max_tokens` must be from 1 to {max_new_tokens}, got {max_tokens}"
        )));
    }
    let seed = match params.seed {
        Some(seed) => u32::try_from(seed).map_err(|_| {
            AppError::BadRequest(format!("`seed` must be from 0 to {}, got {seed}", u32::MAX))
        })?,
        None => rand::random::<u32>(),
    };
    Ok(ResolvedSampling {
        temperature,
        top_p,
        top_k,
        repeat_penalty,
        max_tokens,
        seed,
        cache_prompt: params.cache_prompt.unwrap_or(true),
        ignore_eos: params.ignore_eos.unwrap_or(false),
        constraint: resolve_format(params.response_format.as_ref())?,
        stop: resolve_stop(params.stop.as_deref())?,
        logprobs: match params.logprobs {
            Some(top) if top > super::logprobs::MAX_TOP_LOGPROBS => {
                return Err(AppError::BadRequest(format!(
                    "`top_logprobs` must be from 0 to {}, got {top}",
                    super::logprobs::MAX_TOP_LOGPROBS
                )))
            }
            other => other.map(usize::from),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SamplingParams {
        SamplingParams::default()
    }

    fn field_error(p: SamplingParams) -> String {
        match resolve(&p, 4096) {
            Err(AppError::BadRequest(msg)) => msg,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_filled_and_seed_is_random_but_reported() {
        let r = resolve(&params(), 4096).unwrap();
        assert_eq!(r.temperature, DEFAULT_TEMPERATURE);
        assert_eq!(r.max_tokens, DEFAULT_MAX_TOKENS);
        let a = resolve(&params(), 4096).unwrap().seed;
        let b = resolve(&params(), 4096).unwrap().seed;
        let c = resolve(&params(), 4096).unwrap().seed;
        assert!(a != b || b != c, "three random seeds were equal");
    }

    #[test]
    fn bad_values_name_their_field() {
        assert!(field_error(SamplingParams {
            temperature: Some(f32::NAN),
            ..params()
        })
        .contains("`temperature`"));
        assert!(field_error(SamplingParams {
            temperature: Some(-0.1),
            ..params()
        })
        .contains("`temperature`"));
        assert!(field_error(SamplingParams {
            temperature: Some(2.5),
            ..params()
        })
        .contains("`temperature`"));
        assert!(field_error(SamplingParams {
            top_p: Some(1.5),
            ..params()
        })
        .contains("`top_p`"));
        assert!(field_error(SamplingParams {
            top_p: Some(0.0),
            ..params()
        })
        .contains("`top_p`"));
        assert!(field_error(SamplingParams {
            top_k: Some(101),
            ..params()
        })
        .contains("`top_k`"));
        assert!(field_error(SamplingParams {
            max_tokens: Some(0),
            ..params()
        })
        .contains("`max_tokens`"));
        assert!(field_error(SamplingParams {
            max_tokens: Some(5000),
            ..params()
        })
        .contains("4096"));
        assert!(field_error(SamplingParams {
            seed: Some(1 << 40),
            ..params()
        })
        .contains("`seed`"));
        assert!(field_error(SamplingParams {
            repeat_penalty: Some(f32::INFINITY),
            ..params()
        })
        .contains("`repeat_penalty`"));
    }

    #[test]
    fn response_formats_become_grammars_and_oversized_schemas_are_refused() {
        use crate::types::JsonSchemaFormat;
        let schema_format = |schema: serde_json::Value| ResponseFormat::JsonSchema {
            json_schema: JsonSchemaFormat {
                name: None,
                schema: Some(schema),
                strict: None,
            },
        };
        assert_eq!(resolve_format(Some(&ResponseFormat::Text)).unwrap(), None);
        let boolean = resolve_format(Some(&schema_format(
            serde_json::json!({ "type": "boolean" }),
        )))
        .unwrap()
        .unwrap();
        assert!(
            boolean.grammar.starts_with("root ::= boolean"),
            "{}",
            boolean.grammar
        );
        let description = "x".repeat(MAX_SCHEMA_BYTES);
        let big = serde_json::json!({ "type": "boolean", "description": description });
        match resolve_format(Some(&schema_format(big))) {
            Err(AppError::BadRequest(message)) => assert!(message.contains("32768"), "{message}"),
            other => panic!("expected a 400, got {other:?}"),
        }
        let missing = ResponseFormat::JsonSchema {
            json_schema: JsonSchemaFormat {
                name: Some("x".into()),
                schema: None,
                strict: None,
            },
        };
        assert!(matches!(
            resolve_format(Some(&missing)),
            Err(AppError::BadRequest(_))
        ));
    }

    #[test]
    fn stop_sequences_are_limited_in_number_and_length() {
        let stops = |list: &[&str]| SamplingParams {
            stop: Some(list.iter().map(|s| s.to_string()).collect()),
            ..params()
        };
        assert_eq!(
            resolve(&stops(&["\n", "END"]), 4096).unwrap().stop,
            ["\n", "END"]
        );
        assert!(field_error(stops(&["a", "b", "c", "d", "e"])).contains("at most 4"));
        assert!(field_error(stops(&[""])).contains("1 to 64"));
        assert!(field_error(stops(&[&"x".repeat(65)])).contains("1 to 64"));
    }

    #[test]
    fn temperature_zero_is_greedy_and_edges_are_accepted() {
        let r = resolve(
            &SamplingParams {
                temperature: Some(0.0),
                top_p: Some(1.0),
                top_k: Some(0),
                seed: Some(7),
                ..params()
            },
            4096,
        )
        .unwrap();
        assert!(r.is_greedy());
        assert_eq!((r.top_k, r.seed), (0, 7));
    }
}
