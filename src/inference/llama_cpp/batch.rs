//! Continuous batching on the llama.cpp engine: each forward pass decodes the next token of
//! every running reply plus a chunk of the prompts being read, across the context's sequence
//! slots, and a new prompt reuses the slot that already holds its longest prefix.

use llama_cpp_2::{sampling::LlamaSampler, token::LlamaToken};

use super::{
    inference_error,
    sampling::{build_sampler, sample_within},
    LlamaCppEngine, Slot, SlotWork, PREFILL_BATCH, PREFILL_CHUNK_IN_COMPANY,
};
use crate::inference::{
    batch::{reuse_slot, Admission, BatchEngine, Sampled},
    decode::check_prompt,
    logprobs::token_logprob,
    sampler::penalise,
    EngineError, ResolvedSampling,
};

impl BatchEngine for LlamaCppEngine {
    fn slots(&self) -> usize {
        self.slots.len()
    }

    fn slot_context(&self) -> usize {
        self.facts.context_size
    }

    fn admit(
        &mut self,
        prompt: &str,
        sampling: &ResolvedSampling,
    ) -> Result<Admission, EngineError> {
        let tokens = Self::tokenize(self.inner.borrow_owner(), prompt);
        check_prompt(tokens.len(), self.facts.context_size)?;
        let free = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.work, SlotWork::Idle))
            .map(|(i, s)| (i, s.history.as_slice()));
        let (slot, mut keep) = reuse_slot(free, &tokens, sampling.cache_prompt)?;
        if keep < self.slots[slot].history.len() {
            let removed = self.inner.with_dependent_mut(|_, ctx| {
                ctx.clear_kv_cache_seq(Some(slot as u32), Some(keep as u32), None)
            });
            // A model whose cache cannot be cut at a position (recurrent, sliding window)
            // starts the sequence over.
            if !matches!(removed, Ok(true)) {
                let _ = self.inner.with_dependent_mut(|_, ctx| {
                    ctx.clear_kv_cache_seq(Some(slot as u32), None, None)
                });
                keep = 0;
            }
        }
        let grammar = match &sampling.constraint {
            None => None,
            Some(constraint) => Some(
                LlamaSampler::grammar(self.inner.borrow_owner(), &constraint.grammar, "root")
                    .map_err(|e| {
                        EngineError::Inference(format!("llama.cpp refused the output grammar: {e}"))
                    })?,
            ),
        };
        let mut sampler = build_sampler(self.inner.borrow_owner(), sampling);
        sampler.accept_many(&tokens);
        let s = &mut self.slots[slot];
        s.history.truncate(keep);
        s.work = SlotWork::Prefill(tokens[keep..].to_vec());
        s.sampler = Some(sampler);
        s.grammar = grammar;
        s.logprobs = sampling
            .logprobs
            .map(|top| (top, sampling.temperature, sampling.repeat_penalty));
        self.admitted.push(slot);
        Ok(Admission {
            slot,
            prompt_tokens: tokens.len(),
            cached_tokens: keep,
        })
    }

    fn step(&mut self) -> Result<Vec<Sampled>, EngineError> {
        let Self {
            inner,
            slots,
            admitted,
            batch,
            ..
        } = self;
        batch.clear();
        // (slot, index in the batch of the row whose logits pick its next token)
        let mut picks: Vec<(usize, i32)> = Vec::with_capacity(admitted.len());
        let mut fed: Vec<(usize, usize)> = Vec::with_capacity(admitted.len());
        // In slot order: llama.cpp evaluates sequences of separate KV streams in one pass only
        // when their ids ascend one by one; any other order splits the pass.
        for (slot, state) in slots.iter().enumerate() {
            if let SlotWork::Decode(token) = state.work {
                let position = state.history.len() as i32;
                batch
                    .add(token, position, &[slot as i32], true)
                    .map_err(inference_error)?;
                picks.push((slot, batch.n_tokens() - 1));
                fed.push((slot, 1));
            }
        }
        let mut budget = if picks.is_empty() {
            PREFILL_BATCH
        } else {
            PREFILL_CHUNK_IN_COMPANY.min(PREFILL_BATCH - picks.len())
        };
        for &slot in admitted.iter() {
            if budget == 0 {
                break;
            }
            let SlotWork::Prefill(pending) = &slots[slot].work else {
                continue;
            };
            let take = pending.len().min(budget);
            let start = slots[slot].history.len();
            for (i, token) in pending[..take].iter().enumerate() {
                let last = i + 1 == pending.len();
                batch
                    .add(*token, (start + i) as i32, &[slot as i32], last)
                    .map_err(inference_error)?;
                if last {
                    picks.push((slot, batch.n_tokens() - 1));
                }
            }
            fed.push((slot, take));
            budget -= take;
        }
        if batch.n_tokens() == 0 {
            return Ok(Vec::new());
        }
        let sampled = inner.with_dependent_mut(|model, ctx| {
            ctx.decode(batch).map_err(inference_error)?;
            let vocab = model.vocab();
            let mut sampled = Vec::with_capacity(picks.len());
            for &(slot, row) in &picks {
                let Slot {
                    sampler: Some(sampler),
                    grammar,
                    logprobs,
                    ..
                } = &mut slots[slot]
                else {
                    continue;
                };
                let token = match grammar {
                    None => sampler.sample(ctx, row),
                    Some(grammar) => sample_within(ctx, row, grammar, sampler, &vocab)?,
                };
                let logprob = (*logprobs).map(|(top, temperature, penalty)| {
                    let fed_here = fed.iter().find(|(s, _)| *s == slot).map_or(0, |f| f.1);
                    let mut logits = ctx.get_logits_ith(row).to_vec();
                    let window = slots[slot].penalty_window(fed_here);
                    penalise(&mut logits, window.into_iter(), penalty);
                    token_logprob(&logits, token.0 as u32, temperature, top, &|t| {
                        vocab.token_to_piece(LlamaToken(t as i32), false, None)
                    })
                });
                sampled.push((
                    slot,
                    token,
                    vocab.token_to_piece(token, false, None),
                    vocab.is_eog(token),
                    logprob,
                ));
            }
            Ok::<_, EngineError>(sampled)
        });
        let sampled = match sampled {
            Ok(sampled) => sampled,
            Err(e) => {
                // The cache may hold part of this pass: no slot's history can be trusted.
                inner.with_dependent_mut(|_, ctx| ctx.clear_kv_cache());
                for slot in slots.iter_mut() {
                    slot.history.clear();
                }
                return Err(e);
            }
        };
        for (slot, count) in fed {
            let s = &mut slots[slot];
            match &mut s.work {
                SlotWork::Decode(token) => s.history.push(*token),
                SlotWork::Prefill(pending) => {
                    s.history.extend(pending.drain(..count));
                }
                SlotWork::Idle => {}
            }
        }
        Ok(sampled
            .into_iter()
            .map(|(slot, token, bytes, ends_reply, logprob)| {
                slots[slot].work = SlotWork::Decode(token);
                Sampled {
                    slot,
                    bytes,
                    ends_reply,
                    logprob,
                }
            })
            .collect())
    }

    fn release(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            // A prompt cut short keeps the part it read; the unfed sampled token is dropped.
            s.work = SlotWork::Idle;
            s.sampler = None;
            s.grammar = None;
            s.logprobs = None;
        }
        self.admitted.retain(|&s| s != slot);
    }
}
