//! The native BitNet b1.58 engine: Microsoft's ternary models from their hub checkpoints
//! (packed `microsoft/bitnet-b1.58-2B-4T` or `…-bf16`, quantized at load), run by our own
//! forward pass ([`model`]) on our ternary kernels ([`kernels`]): 2-bit weights against int8
//! activations with AVX2 where the CPU has it, threads over output rows, nothing allocated per
//! token. The tokenizer and chat template are the hub's ([`vocab`]); sampling, the decode loop
//! and perplexity are shared with the candle engine ([`super::logits`]).

pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod gguf_file;
pub mod gguf_model;
pub mod gguf_vocab;
pub mod head;
pub mod kernels;
pub mod lanes;
pub mod model;
pub mod pages;
pub mod q6k;
pub mod team;
pub mod ternary;
pub mod vocab;
pub mod weights;

use std::path::Path;

use checkpoint::{Checkpoint, CheckpointKind};
use config::BitnetConfig;
use head::HeadPrecision;
use kernels::Isa;
use model::{Model, MAX_BATCH};
use vocab::HubVocab;

use super::{
    logits::{LogitsEngine, LogitsModel, SlotToken},
    EngineError, EngineFacts,
};

/// The forward pass with what was loaded into it.
pub struct BitnetModel {
    model: Model,
    summary: BitnetSummary,
}

impl LogitsModel for BitnetModel {
    fn forward_last(&mut self, tokens: &[u32], position: usize) -> Result<&mut [f32], EngineError> {
        check_fits(tokens.len(), position, self.model.context())?;
        Ok(self.model.forward_last(tokens, position))
    }

    fn forward_all(
        &mut self,
        tokens: &[u32],
        position: usize,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        check_fits(tokens.len(), position, self.model.context())?;
        Ok(self.model.forward_all(tokens, position))
    }

    fn prefill_batch(&self) -> usize {
        MAX_BATCH
    }

    fn score_batch(&self) -> usize {
        MAX_BATCH
    }

    fn slots(&self) -> usize {
        self.model.slots()
    }

    fn forward_slots(
        &mut self,
        tokens: &[SlotToken],
        picks: &[usize],
    ) -> Result<&mut [f32], EngineError> {
        let context = self.model.context();
        if let Some(beyond) = tokens.iter().find(|t| t.position >= context) {
            return Err(EngineError::PromptTooLong {
                prompt_tokens: beyond.position + 1,
                context,
            });
        }
        let vocab = self.model.weights().config.vocab_size;
        let slots = self.model.slots();
        if tokens.len() > MAX_BATCH
            || tokens
                .iter()
                .any(|t| t.slot >= slots || t.token as usize >= vocab)
            || picks.iter().any(|&p| p >= tokens.len())
        {
            return Err(EngineError::Inference(
                "a forward pass named an unknown slot, token or row".into(),
            ));
        }
        Ok(self.model.forward_slots(tokens, picks))
    }
}

/// What the metrics line says ran: "AVX2 kernels, int8 head", naming the family of passes with
/// several tokens (prefill, company) when it is another.
fn kernels_detail(single: Isa, batch: Isa, head: HeadPrecision) -> String {
    if single == batch {
        format!("{} kernels, {} head", single.label(), head.label())
    } else {
        format!(
            "{} kernels ({} for several tokens), {} head",
            single.label(),
            batch.label(),
            head.label()
        )
    }
}

fn check_fits(tokens: usize, position: usize, context: usize) -> Result<(), EngineError> {
    if position + tokens > context {
        return Err(EngineError::PromptTooLong {
            prompt_tokens: position + tokens,
            context,
        });
    }
    Ok(())
}

/// What the engine loaded, for the UI and the bench.
#[derive(Clone, Debug)]
pub struct BitnetSummary {
    pub kind: CheckpointKind,
    pub isa: Isa,
    pub ternary_bytes: usize,
    pub embedding_bytes: usize,
    pub ternary_parameters: usize,
    pub head: HeadPrecision,
}

type Loaded = (BitnetConfig, HubVocab, weights::Weights, CheckpointKind);

/// Configuration, vocabulary and weights from bitnet.cpp's GGUF.
fn read_gguf(path: &Path) -> Result<Loaded, gguf_model::GgufModelError> {
    let file = gguf_file::GgufFile::open(path)?;
    let config = gguf_model::config(&file)?;
    let vocab = gguf_vocab::vocab(&file, &config)?;
    let weights = gguf_model::weights(&file, &config)?;
    let kind = if gguf_model::is_i2s(&file) {
        CheckpointKind::I2sGguf
    } else {
        CheckpointKind::FullPrecisionGguf
    };
    Ok((config, vocab, weights, kind))
}

/// The BitNet engine: our ternary forward pass and the hub's vocabulary.
pub type BitnetEngine = LogitsEngine<BitnetModel, HubVocab>;

impl LogitsEngine<BitnetModel, HubVocab> {
    /// Loads a checkpoint folder (config.json, model.safetensors or its shards, tokenizer.json,
    /// and optionally tokenizer_config.json and generation_config.json) or bitnet.cpp's GGUF
    /// file (I2_S), with the output head in `head`'s precision.
    ///
    /// # Errors
    /// `EngineError::Load` naming the file and what is wrong with it.
    pub fn load(
        dir: &Path,
        context_size: u32,
        threads: u32,
        head: HeadPrecision,
    ) -> Result<Self, EngineError> {
        Self::load_with_slots(dir, context_size, threads, head, 1)
    }

    /// Like [`Self::load`], with `slots` sequences of up to `context_size` tokens each that
    /// are decoded together, one read of the weights per step for all of them.
    ///
    /// # Errors
    /// As [`Self::load`].
    pub fn load_with_slots(
        dir: &Path,
        context_size: u32,
        threads: u32,
        head: HeadPrecision,
        slots: usize,
    ) -> Result<Self, EngineError> {
        let load_error = |detail: String| EngineError::Load {
            path: dir.display().to_string(),
            detail,
        };
        let (config, vocab, weights, kind) = if dir.is_file() {
            read_gguf(dir).map_err(|e| load_error(e.to_string()))?
        } else if dir.is_dir() {
            let config = BitnetConfig::read(&dir.join("config.json"))
                .map_err(|e| load_error(e.to_string()))?;
            let vocab = HubVocab::load(dir, &config).map_err(|e| load_error(e.to_string()))?;
            let (weights, kind) = Checkpoint::open(dir)
                .and_then(|checkpoint| checkpoint.weights(&config))
                .map_err(|e| load_error(e.to_string()))?;
            (config, vocab, weights, kind)
        } else {
            return Err(load_error(
                "not found: a BitNet model is a checkpoint folder (config.json, model.safetensors, tokenizer.json) or bitnet.cpp's GGUF file"
                    .into(),
            ));
        };
        let weights = weights
            .with_head(head)
            .map_err(|e| load_error(format!("output_head = \"{}\": {e}", head.label())))?;
        let context = (context_size as usize)
            .min(config.max_position_embeddings)
            .max(16);
        let requested = Isa::requested();
        let mut model = Model::with_slots(
            weights,
            context,
            threads as usize,
            requested.unwrap_or_else(Isa::best),
            slots,
        )
        .map_err(|e| load_error(e.to_string()))?;
        if requested.is_none() {
            let log = |timings: &[(Isa, f64)], chosen: Isa, what: &str| {
                if timings.is_empty() {
                    return;
                }
                let measured: Vec<String> = timings
                    .iter()
                    .map(|(isa, seconds)| format!("{} {:.1} ms", isa.label(), seconds * 1e3))
                    .collect();
                tracing::info!(
                    chosen = chosen.label(),
                    measured = %measured.join(", "),
                    "BitNet kernels for {what} chosen by one timed pass each"
                );
            };
            let single = model.choose_fastest_isa();
            log(&single, model.isa(), "one token");
            let batched = model.choose_fastest_batch_isa();
            log(&batched, model.batch_isa(), "several tokens");
        }
        let isa = model.isa();
        let weights = model.weights();
        let summary = BitnetSummary {
            kind,
            isa,
            ternary_bytes: weights.ternary_bytes(),
            embedding_bytes: weights.embedding_bytes(),
            ternary_parameters: weights.ternary_parameters(),
            head: weights.head_precision(),
        };
        tracing::info!(
            dir = %dir.display(),
            checkpoint = kind.label(),
            kernels = isa.label(),
            ternary_mib = summary.ternary_bytes / (1 << 20),
            embedding_mib = summary.embedding_bytes / (1 << 20),
            head = summary.head.label(),
            slots = model.slots(),
            cache_mib_per_slot = model.cache_bytes_per_slot() >> 20,
            "BitNet model loaded"
        );
        let facts = EngineFacts {
            context_size: context,
            chat_template: vocab.chat_template.clone(),
            bos_token: vocab.bos_text.clone(),
            eos_token: vocab.eos_text.clone(),
            threads: threads.max(1),
            detail: kernels_detail(isa, model.batch_isa(), summary.head),
        };
        Ok(Self::new(BitnetModel { model, summary }, vocab, facts))
    }

    pub fn summary(&self) -> &BitnetSummary {
        &self.model.summary
    }
}
