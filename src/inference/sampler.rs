//! Token sampling for engines that hand us raw logits (candle, BitNet). The chain and its order
//! are llama.cpp's, as our llama.cpp engine configures it: repeat penalty over the last 64
//! tokens, then either greedy, or top-k → top-p → temperature → a seeded draw. The random
//! generator differs from llama.cpp's, so a seed reproduces a reply within one engine only.

use std::collections::VecDeque;

use rand::{rngs::StdRng, Rng, SeedableRng};

use super::{logprobs::token_logprob, ResolvedSampling};
use crate::types::TokenLogprob;

/// How many recent tokens the repeat penalty looks at (llama.cpp's default).
pub const PENALTY_LAST_N: usize = 64;

pub struct Sampler {
    settings: ResolvedSampling,
    rng: StdRng,
    recent: VecDeque<u32>,
    /// With `ignore_eos`: the ids that end a reply, found on the first draw.
    never: Option<Vec<u32>>,
}

impl Sampler {
    pub fn new(settings: &ResolvedSampling) -> Self {
        Self {
            settings: settings.clone(),
            rng: StdRng::seed_from_u64(u64::from(settings.seed)),
            recent: VecDeque::with_capacity(PENALTY_LAST_N),
            never: None,
        }
    }

    /// [`Self::sample`] for a reply: with `ignore_eos`, the tokens `ends_reply` names are out
    /// of the draw (as llama-server biases them to -inf), so the reply runs to its limit.
    pub fn sample_reply_token(
        &mut self,
        logits: &mut [f32],
        ends_reply: impl Fn(u32) -> bool,
    ) -> u32 {
        if self.settings.ignore_eos {
            let never = self.never.get_or_insert_with(|| {
                (0..logits.len() as u32)
                    .filter(|&t| ends_reply(t))
                    .collect()
            });
            for &token in never.iter() {
                if let Some(logit) = logits.get_mut(token as usize) {
                    *logit = f32::NEG_INFINITY;
                }
            }
        }
        self.sample(logits)
    }

    /// Records a token (prompt or generated) for the repeat penalty.
    pub fn accept(&mut self, token: u32) {
        if self.recent.len() == PENALTY_LAST_N {
            self.recent.pop_front();
        }
        self.recent.push_back(token);
    }

    /// Picks the next token from the logits of the last position; `logits` is scratch.
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        self.apply_repeat_penalty(logits);
        let s = &self.settings;
        if s.is_greedy() {
            return argmax(logits);
        }
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, l)| (i as u32, *l))
            .collect();
        if candidates.is_empty() {
            return argmax(logits);
        }
        candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        if s.top_k > 0 {
            candidates.truncate(s.top_k as usize);
        }
        // Top-p on the untempered distribution, keeping at least one token.
        let probabilities = softmax(candidates.iter().map(|c| c.1));
        let mut cumulative = 0.0;
        let mut keep = candidates.len();
        for (i, p) in probabilities.iter().enumerate() {
            cumulative += p;
            if cumulative >= f64::from(s.top_p) {
                keep = i + 1;
                break;
            }
        }
        candidates.truncate(keep.max(1));
        let temperature = s.temperature;
        let weights = softmax(candidates.iter().map(|c| c.1 / temperature));
        let mut draw: f64 = self.rng.random::<f64>();
        for (candidate, weight) in candidates.iter().zip(&weights) {
            if draw < *weight {
                return candidate.0;
            }
            draw -= weight;
        }
        candidates[candidates.len() - 1].0
    }

    fn apply_repeat_penalty(&self, logits: &mut [f32]) {
        penalise(
            logits,
            self.recent.iter().copied(),
            self.settings.repeat_penalty,
        );
    }

    /// The log-probability of `token`, just sampled from `logits` (which `sample` left with the
    /// repeat penalty applied), when the settings ask for them.
    pub fn logprob(
        &self,
        logits: &[f32],
        token: u32,
        piece: &dyn Fn(u32) -> Vec<u8>,
    ) -> Option<TokenLogprob> {
        let top = self.settings.logprobs?;
        Some(token_logprob(
            logits,
            token,
            self.settings.temperature,
            top,
            piece,
        ))
    }
}

/// llama.cpp's repeat penalty: each distinct recent token's logit is divided by `penalty` when
/// positive, multiplied when not.
pub fn penalise(logits: &mut [f32], recent: impl Iterator<Item = u32>, penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut seen = std::collections::HashSet::with_capacity(PENALTY_LAST_N);
    for token in recent {
        if !seen.insert(token) {
            continue;
        }
        if let Some(logit) = logits.get_mut(token as usize) {
            *logit = if *logit <= 0.0 {
                *logit * penalty
            } else {
                *logit / penalty
            };
        }
    }
}

/// The index of the largest logit; ties go to the lowest id, as in llama.cpp.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, l) in logits.iter().enumerate() {
        if *l > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn softmax(logits: impl Iterator<Item = f32> + Clone) -> Vec<f64> {
    let max = logits.clone().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.map(|l| f64::from(l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(temperature: f32, top_k: u32, top_p: f32, repeat_penalty: f32) -> ResolvedSampling {
        ResolvedSampling {
            cache_prompt: true,
            ignore_eos: false,
            constraint: None,
            stop: Vec::new(),
            logprobs: None,
            temperature,
            top_p,
            top_k,
            repeat_penalty,
            max_tokens: 16,
            seed: 7,
        }
    }

    #[test]
    fn ignore_eos_keeps_ending_tokens_out_of_the_draw() {
        let mut settings = settings(0.0, 40, 0.9, 1.0);
        let ends = |t: u32| t == 1;
        assert_eq!(
            Sampler::new(&settings).sample_reply_token(&mut [0.1, 3.0, 2.9], ends),
            1
        );
        settings.ignore_eos = true;
        let mut sampler = Sampler::new(&settings);
        assert_eq!(sampler.sample_reply_token(&mut [0.1, 3.0, 2.9], ends), 2);
        assert_eq!(sampler.sample_reply_token(&mut [5.0, 9.0, 2.9], ends), 0);
    }

    #[test]
    fn greedy_takes_the_largest_logit() {
        let mut sampler = Sampler::new(&settings(0.0, 40, 0.9, 1.0));
        assert_eq!(sampler.sample(&mut [0.1, 3.0, -2.0, 2.9]), 1);
    }

    #[test]
    fn repeat_penalty_can_change_the_greedy_choice() {
        let mut sampler = Sampler::new(&settings(0.0, 40, 0.9, 1.5));
        sampler.accept(1);
        // 3.0 / 1.5 = 2.0 < 2.9: the repeated token loses.
        assert_eq!(sampler.sample(&mut [0.1, 3.0, -2.0, 2.9]), 3);
        // Negative logits are pushed further down, not up.
        let mut sampler = Sampler::new(&settings(0.0, 40, 0.9, 1.5));
        sampler.accept(0);
        assert_eq!(sampler.sample(&mut [-1.0, -1.2, -5.0]), 1);
    }

    #[test]
    fn penalty_window_forgets_old_tokens() {
        let mut sampler = Sampler::new(&settings(0.0, 40, 0.9, 2.0));
        sampler.accept(0);
        for _ in 0..PENALTY_LAST_N {
            sampler.accept(2);
        }
        assert_eq!(sampler.sample(&mut [3.0, 2.0, 0.0]), 0);
    }

    #[test]
    fn top_k_one_is_greedy_whatever_the_temperature() {
        let mut sampler = Sampler::new(&settings(2.0, 1, 1.0, 1.0));
        for _ in 0..50 {
            assert_eq!(sampler.sample(&mut [0.0, 1.0, 0.9, 0.95]), 1);
        }
    }

    #[test]
    fn top_p_cuts_the_tail() {
        // p(0) ≈ 0.84 after softmax: top-p 0.5 keeps token 0 alone.
        let mut sampler = Sampler::new(&settings(1.5, 0, 0.5, 1.0));
        for _ in 0..50 {
            assert_eq!(sampler.sample(&mut [3.0, 1.0, 0.5, 0.0]), 0);
        }
    }

    #[test]
    fn same_seed_same_draws_and_draws_follow_the_distribution() {
        let draws = |seed| {
            let mut s = settings(1.0, 0, 1.0, 1.0);
            s.seed = seed;
            let mut sampler = Sampler::new(&s);
            (0..2000)
                .map(|_| sampler.sample(&mut [0.0, (3.0f32).ln()]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(1), draws(1));
        assert_ne!(draws(1), draws(2));
        // Token 1 has probability 3/4.
        let ones = draws(3).iter().filter(|&&t| t == 1).count() as f64 / 2000.0;
        assert!((ones - 0.75).abs() < 0.04, "{ones}");
    }
}
