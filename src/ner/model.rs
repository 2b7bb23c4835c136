//! The NER engine: BERT token classification on rten or candle ([`super::runtime`]), driven by
//! the model's own `config.json` (`id2label`) and `tokenizer.json`; long texts go through in
//! overlapping windows.

use rayon::prelude::*;
use std::{path::Path, time::Instant};

use tokenizers::Tokenizer;

use super::{
    runtime::{NerRuntime, Network},
    spans::{aggregate, centrality, windows, TokenLabel},
    NerMetrics, NerOutput,
};

/// Entities below this probability are dropped (the Rampart reference's default).
pub const DEFAULT_THRESHOLD: f32 = 0.5;
/// Word pieces per window. The model takes 512 positions, but (as Rampart's reference notes
/// and our long-text test shows) it finds entities best in short windows of ~480 characters:
/// with 500 tokens of context an e-mail address after filler text came back cut short.
const WINDOW_TOKENS: usize = 128;
/// Word pieces two windows share, so an entity on a boundary is seen whole by one of them.
const WINDOW_OVERLAP: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum NerError {
    #[error("cannot read {path}: {detail}")]
    Load { path: String, detail: String },
    #[error("the NER model failed: {0}")]
    Run(String),
    /// Stopped between windows: the client left or the deadline passed.
    #[error("stopped")]
    Stopped,
}

pub struct NerModel {
    id: String,
    runtime: NerRuntime,
    network: Network,
    tokenizer: Tokenizer,
    labels: Vec<String>,
    /// Word pieces per window, without [CLS] and [SEP].
    budget: usize,
    cls: u32,
    sep: u32,
}

impl NerModel {
    /// Loads the runtime's weights file, `tokenizer.json` and `config.json` from `dir`.
    pub fn load(id: &str, dir: &Path, runtime: NerRuntime) -> Result<Self, NerError> {
        let load_error = |file: &str, detail: String| NerError::Load {
            path: dir.join(file).display().to_string(),
            detail,
        };
        let config_text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| load_error("config.json", e.to_string()))?;
        let config: serde_json::Value = serde_json::from_str(&config_text)
            .map_err(|e| load_error("config.json", e.to_string()))?;
        let id2label = config["id2label"]
            .as_object()
            .ok_or_else(|| load_error("config.json", "no `id2label` table".into()))?;
        let mut labels = vec![String::new(); id2label.len()];
        for (index, label) in id2label {
            let slot = index
                .parse::<usize>()
                .ok()
                .and_then(|i| labels.get_mut(i))
                .ok_or_else(|| load_error("config.json", format!("label id `{index}`")))?;
            *slot = label.as_str().unwrap_or("O").to_string();
        }
        let positions = config["max_position_embeddings"].as_u64().unwrap_or(512) as usize;

        let mut tokenizer = super::tokenizer::load(dir)?;
        // We cut windows ourselves.
        tokenizer
            .with_truncation(None)
            .map_err(|e| load_error("tokenizer.json", e.to_string()))?;
        tokenizer.with_padding(None);
        let special = |name: &str| {
            tokenizer
                .token_to_id(name)
                .ok_or_else(|| load_error("tokenizer.json", format!("no `{name}` token")))
        };
        let (cls, sep) = (special("[CLS]")?, special("[SEP]")?);

        let network = Network::load(runtime, dir, &config_text, labels.len())?;
        Ok(Self {
            id: id.to_string(),
            runtime,
            network,
            tokenizer,
            labels,
            budget: positions.saturating_sub(2).clamp(8, WINDOW_TOKENS),
            cls,
            sep,
        })
    }

    pub fn runtime(&self) -> NerRuntime {
        self.runtime
    }

    /// The exact input ids of every window `recognize` runs for `text` ([CLS] … [SEP]), so a
    /// benchmark can feed another runtime the same inputs.
    pub fn input_windows(&self, text: &str) -> Result<Vec<Vec<u32>>, NerError> {
        let encoding = self
            .tokenizer
            .encode_char_offsets(text, false)
            .map_err(|e| NerError::Run(format!("tokenizer: {e}")))?;
        let ids = encoding.get_ids();
        Ok(
            windows(encoding.get_word_ids(), self.budget, WINDOW_OVERLAP)
                .into_iter()
                .map(|(start, end)| self.framed(&ids[start..end]))
                .collect(),
        )
    }

    fn framed(&self, pieces: &[u32]) -> Vec<u32> {
        std::iter::once(self.cls)
            .chain(pieces.iter().copied())
            .chain(std::iter::once(self.sep))
            .collect()
    }

    pub fn recognize(&self, text: &str, threshold: f32) -> Result<NerOutput, NerError> {
        self.recognize_until(text, threshold, &|| false)
    }

    /// `recognize`, stopping between windows once `stop` says so.
    pub fn recognize_until(
        &self,
        text: &str,
        threshold: f32,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<NerOutput, NerError> {
        let started = Instant::now();
        let encoding = self
            .tokenizer
            .encode_char_offsets(text, false)
            .map_err(|e| NerError::Run(format!("tokenizer: {e}")))?;
        let ids = encoding.get_ids();
        let offsets = encoding.get_offsets();
        let plan = windows(encoding.get_word_ids(), self.budget, WINDOW_OVERLAP);
        // Per token: the best-placed window's (centrality, label index, probability).
        let mut best: Vec<Option<(usize, usize, f32)>> = vec![None; ids.len()];
        // Windows run side by side on rten's pool (each still splits its operators across it),
        // which keeps both cores busy through the small operators of one window.
        let classified = rten::thread_pool().run(|| {
            plan.par_iter()
                .map(|&(start, end)| {
                    if stop() {
                        return Err(NerError::Stopped);
                    }
                    self.classify(&ids[start..end])
                })
                .collect::<Vec<_>>()
        });
        for (&window, rows) in plan.iter().zip(classified) {
            for (offset, (label, probability)) in rows?.into_iter().enumerate() {
                let index = window.0 + offset;
                let place = centrality(index, window);
                if best[index].is_none_or(|(held, _, _)| place > held) {
                    best[index] = Some((place, label, probability));
                }
            }
        }
        let tokens: Vec<TokenLabel> = best
            .iter()
            .zip(offsets)
            .filter_map(|(choice, &(start, end))| {
                let (_, label, score) = (*choice)?;
                Some(TokenLabel {
                    label: self.labels.get(label).cloned().unwrap_or_default(),
                    score,
                    start,
                    end,
                })
            })
            .collect();
        let entities = aggregate(text, &tokens, threshold);
        let metrics = NerMetrics {
            model: self.id.clone(),
            millis: started.elapsed().as_secs_f64() * 1e3,
            queued_millis: 0.0,
            load_millis: 0.0,
            characters: text.chars().count(),
            tokens: ids.len(),
            windows: plan.len(),
            entities: entities.len(),
        };
        Ok(NerOutput { entities, metrics })
    }

    /// (label index, probability) of each word piece of one window.
    fn classify(&self, pieces: &[u32]) -> Result<Vec<(usize, f32)>, NerError> {
        let length = pieces.len() + 2;
        let logits = self.network.logits(&self.framed(pieces))?;
        let (rows, classes) = (logits.len(), logits.first().map_or(0, Vec::len));
        if rows != length || classes != self.labels.len() {
            return Err(NerError::Run(format!(
                "the model returned {rows}x{classes} logits for {length} tokens and {} labels",
                self.labels.len()
            )));
        }
        // Skip [CLS] and [SEP]; softmax each row.
        Ok(logits[1..rows - 1]
            .iter()
            .map(|values| {
                let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let total: f32 = values.iter().map(|v| (v - max).exp()).sum();
                let (label, top) = values
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or((0, max), |(i, v)| (i, *v));
                (label, (top - max).exp() / total)
            })
            .collect())
    }
}
