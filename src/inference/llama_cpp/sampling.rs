//! The llama.cpp sampler chain built from a request's settings, and sampling under a grammar.

use llama_cpp_2::{
    model::LlamaModel,
    sampling::LlamaSampler,
    token::{logit_bias::LlamaLogitBias, LlamaToken},
};

use super::{Context, PENALTY_LAST_N};
use crate::inference::{EngineError, ResolvedSampling};

pub(super) fn build_sampler(model: &LlamaModel, s: &ResolvedSampling) -> LlamaSampler {
    let mut chain = Vec::with_capacity(6);
    if s.ignore_eos {
        // As llama-server does: every end-of-generation token biased out of the draw.
        let vocab = model.vocab();
        let never: Vec<LlamaLogitBias> = (0..model.n_vocab())
            .map(LlamaToken)
            .filter(|&token| vocab.is_eog(token))
            .map(|token| LlamaLogitBias::new(token, f32::NEG_INFINITY))
            .collect();
        chain.push(LlamaSampler::logit_bias(model.n_vocab(), &never));
    }
    if s.repeat_penalty != 1.0 {
        chain.push(LlamaSampler::penalties(
            model.n_vocab(),
            PENALTY_LAST_N,
            s.repeat_penalty,
            0.0,
            0.0,
        ));
    }
    if s.is_greedy() {
        chain.push(LlamaSampler::greedy());
    } else {
        if s.top_k > 0 {
            chain.push(LlamaSampler::top_k(s.top_k as i32));
        }
        chain.push(LlamaSampler::top_p(s.top_p, 1));
        chain.push(LlamaSampler::temp(s.temperature));
        chain.push(LlamaSampler::dist(s.seed));
    }
    LlamaSampler::chain_simple(chain)
}

/// Samples the row's next token among those `grammar` allows, then lets both samplers see it.
pub(super) fn sample_within(
    ctx: &Context<'_>,
    row: i32,
    grammar: &mut LlamaSampler,
    sampler: &mut LlamaSampler,
    vocab: &llama_cpp_2::vocab::LlamaVocab<'_>,
) -> Result<LlamaToken, EngineError> {
    let mut candidates = ctx.token_data_array_ith(row);
    candidates.apply_sampler(grammar);
    candidates.apply_sampler(sampler);
    let token = candidates
        .selected_token()
        .ok_or_else(|| EngineError::Inference("the output grammar allowed no token".into()))?;
    // An end token is allowed only once the grammar is complete, and ends the reply: llama.cpp
    // aborts on accepting one into an unfinished grammar, so it is never fed.
    if !vocab.is_eog(token) {
        grammar.accept(token);
    }
    sampler.accept(token);
    Ok(token)
}
