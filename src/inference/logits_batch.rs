//! Continuous batching for engines whose forward pass hands us logits and keeps several
//! sequences in slots of one cache (BitNet): the slots' bookkeeping, prompt-cache reuse and
//! per-slot sampling behind [`BatchEngine`], over [`LogitsModel::forward_slots`]. The rules a
//! reply follows (end of turn, limits, Stop) stay in [`super::batch::Batch`].

use super::{
    batch::{reuse_slot, Admission, BatchEngine, Sampled},
    decode::check_prompt,
    logits::{LogitsEngine, LogitsModel, SlotToken, TokenText},
    sampler::Sampler,
    EngineError, ResolvedSampling,
};

/// Prompt tokens a pass reads for newcomers while other replies are decoding. A pass costs
/// about one read of the weights plus a little per row, so a few rows of prompt ride along
/// almost free, where a whole prompt would hold every running reply's next token back.
pub const PREFILL_IN_COMPANY: usize = 16;

enum Work {
    Idle,
    /// Prompt tokens still to read.
    Prefill(Vec<u32>),
    /// The sampled token to feed next.
    Decode(u32),
}

struct Slot {
    /// The tokens whose keys and values the slot's cache holds, in order.
    history: Vec<u32>,
    work: Work,
    sampler: Option<Sampler>,
}

/// The sequence slots of a [`LogitsEngine`] and the buffers of its passes.
pub struct SlotTable {
    slots: Vec<Slot>,
    /// Slots holding a reply, in the order they were admitted (prompts are read first come,
    /// first served).
    admitted: Vec<usize>,
    tokens: Vec<SlotToken>,
    picks: Vec<usize>,
    /// Which slot each pick samples for.
    picked_slots: Vec<usize>,
    /// (slot, tokens of it this pass feeds)
    fed: Vec<(usize, usize)>,
}

impl SlotTable {
    pub fn new(slots: usize) -> Self {
        Self {
            slots: (0..slots)
                .map(|_| Slot {
                    history: Vec::new(),
                    work: Work::Idle,
                    sampler: None,
                })
                .collect(),
            admitted: Vec::new(),
            tokens: Vec::new(),
            picks: Vec::new(),
            picked_slots: Vec::new(),
            fed: Vec::new(),
        }
    }

    /// A single-sequence call (scoring, teacher forcing) overwrote slot 0's cache.
    pub fn forget_slot_zero(&mut self) {
        if let Some(slot) = self.slots.first_mut() {
            slot.history.clear();
        }
    }

    /// The cache may hold part of a failed pass: no slot's history can be trusted.
    fn forget_all(&mut self) {
        for slot in &mut self.slots {
            slot.history.clear();
        }
    }
}

impl<M: LogitsModel, V: TokenText> BatchEngine for LogitsEngine<M, V> {
    fn slots(&self) -> usize {
        self.slots.slots.len()
    }

    fn slot_context(&self) -> usize {
        self.facts.context_size
    }

    fn admit(
        &mut self,
        prompt: &str,
        sampling: &ResolvedSampling,
    ) -> Result<Admission, EngineError> {
        // The HTTP boundary refuses this first; an engine without a grammar never pretends.
        if sampling.constraint.is_some() {
            return Err(EngineError::Unsupported(
                "structured output (`response_format`) needs the llama.cpp engine".into(),
            ));
        }
        let tokens = self.vocab.encode_prompt(prompt)?;
        check_prompt(tokens.len(), self.facts.context_size)?;
        let table = &mut self.slots;
        let free = table
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.work, Work::Idle))
            .map(|(i, s)| (i, s.history.as_slice()));
        // Cache entries past `keep` are stale but never read: a position is written before
        // attention looks at it.
        let (slot, keep) = reuse_slot(free, &tokens, sampling.cache_prompt)?;
        let s = &mut table.slots[slot];
        let mut sampler = Sampler::new(sampling);
        for &token in &tokens {
            sampler.accept(token);
        }
        s.history.truncate(keep);
        s.work = Work::Prefill(tokens[keep..].to_vec());
        s.sampler = Some(sampler);
        table.admitted.push(slot);
        Ok(Admission {
            slot,
            prompt_tokens: tokens.len(),
            cached_tokens: keep,
        })
    }

    fn step(&mut self) -> Result<Vec<Sampled>, EngineError> {
        let Self {
            model,
            vocab,
            slots: table,
            ..
        } = self;
        let capacity = model.prefill_batch();
        table.tokens.clear();
        table.picks.clear();
        table.picked_slots.clear();
        table.fed.clear();
        for (index, slot) in table.slots.iter().enumerate() {
            if let Work::Decode(token) = slot.work {
                table.tokens.push(SlotToken {
                    token,
                    slot: index,
                    position: slot.history.len(),
                });
                table.picks.push(table.tokens.len() - 1);
                table.picked_slots.push(index);
                table.fed.push((index, 1));
            }
        }
        let mut budget = if table.tokens.is_empty() {
            capacity
        } else {
            PREFILL_IN_COMPANY.min(capacity.saturating_sub(table.tokens.len()))
        };
        for &index in &table.admitted {
            if budget == 0 {
                break;
            }
            let slot = &table.slots[index];
            let Work::Prefill(pending) = &slot.work else {
                continue;
            };
            let take = pending.len().min(budget);
            let start = slot.history.len();
            for (i, &token) in pending[..take].iter().enumerate() {
                table.tokens.push(SlotToken {
                    token,
                    slot: index,
                    position: start + i,
                });
            }
            if take == pending.len() {
                table.picks.push(table.tokens.len() - 1);
                table.picked_slots.push(index);
            }
            table.fed.push((index, take));
            budget -= take;
        }
        if table.tokens.is_empty() {
            return Ok(Vec::new());
        }
        let logits = match model.forward_slots(&table.tokens, &table.picks) {
            Ok(logits) => logits,
            Err(e) => {
                table.forget_all();
                return Err(e);
            }
        };
        let mut sampled = Vec::with_capacity(table.picked_slots.len());
        // A pass that only reads prompt chunks picks no row.
        let width = logits
            .len()
            .checked_div(table.picks.len())
            .unwrap_or(1)
            .max(1);
        for (row, &index) in logits.chunks_exact_mut(width).zip(&table.picked_slots) {
            let slot = &mut table.slots[index];
            let Some(sampler) = slot.sampler.as_mut() else {
                continue;
            };
            if let Work::Decode(fed) = slot.work {
                sampler.accept(fed);
            }
            let token = sampler.sample_reply_token(row, |t| vocab.ends_reply(t));
            let logprob = sampler.logprob(row, token, &|t| vocab.piece(t).to_vec());
            sampled.push((index, token, logprob));
        }
        for &(index, count) in &table.fed {
            let slot = &mut table.slots[index];
            match &mut slot.work {
                Work::Decode(token) => slot.history.push(*token),
                Work::Prefill(pending) => slot.history.extend(pending.drain(..count)),
                Work::Idle => {}
            }
        }
        Ok(sampled
            .into_iter()
            .map(|(index, token, logprob)| {
                table.slots[index].work = Work::Decode(token);
                Sampled {
                    slot: index,
                    bytes: vocab.piece(token).to_vec(),
                    ends_reply: vocab.ends_reply(token),
                    logprob,
                }
            })
            .collect())
    }

    fn release(&mut self, slot: usize) {
        let table = &mut self.slots;
        if let Some(s) = table.slots.get_mut(slot) {
            // A prompt cut short keeps the part it read; the unfed sampled token is dropped.
            s.work = Work::Idle;
            s.sampler = None;
        }
        table.admitted.retain(|&s| s != slot);
    }
}
