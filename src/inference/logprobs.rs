//! Token log-probabilities for `logprobs`: the distribution the sampler draws from (logits after
//! the repeat penalty, divided by the temperature; 1 when greedy, as OpenAI reports greedy
//! replies), the chosen token's log-probability and the likeliest alternatives.

use crate::types::{TokenLogprob, TopLogprob};

/// Most alternatives per token (OpenAI's limit for `top_logprobs`).
pub const MAX_TOP_LOGPROBS: u8 = 20;

/// The log-probability of `chosen` and the `top` likeliest tokens under `logits / temperature`;
/// `piece` gives a token's bytes. Non-finite logits (tokens masked out) have probability 0.
pub fn token_logprob(
    logits: &[f32],
    chosen: u32,
    temperature: f32,
    top: usize,
    piece: &dyn Fn(u32) -> Vec<u8>,
) -> TokenLogprob {
    let scale = if temperature > 0.0 {
        1.0 / f64::from(temperature)
    } else {
        1.0
    };
    let finite = || logits.iter().filter(|l| l.is_finite());
    let max = finite().fold(f64::NEG_INFINITY, |m, &l| m.max(f64::from(l) * scale));
    let sum: f64 = finite().map(|&l| (f64::from(l) * scale - max).exp()).sum();
    let log_normaliser = max + sum.ln();
    let logprob = |token: u32| -> f32 {
        match logits.get(token as usize) {
            Some(l) if l.is_finite() => (f64::from(*l) * scale - log_normaliser) as f32,
            _ => f32::NEG_INFINITY,
        }
    };
    // The `top` largest logits, kept sorted in a small vector: one pass over the vocabulary.
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (id, &l) in logits.iter().enumerate() {
            if !l.is_finite() || (best.len() == top && l <= best[top - 1].1) {
                continue;
            }
            let at = best.partition_point(|&(_, b)| b >= l);
            best.insert(at, (id as u32, l));
            best.truncate(top);
        }
    }
    let entry = |token: u32| {
        let bytes = piece(token);
        TopLogprob {
            token: String::from_utf8_lossy(&bytes).into_owned(),
            logprob: logprob(token),
            bytes,
        }
    };
    let chosen_entry = entry(chosen);
    TokenLogprob {
        token: chosen_entry.token,
        logprob: chosen_entry.logprob,
        bytes: chosen_entry.bytes,
        top_logprobs: best.into_iter().map(|(id, _)| entry(id)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(token: u32) -> Vec<u8> {
        format!("t{token}").into_bytes()
    }

    #[test]
    fn log_probabilities_normalise_and_the_top_list_is_ordered() {
        let logits = [1.0, 3.0, f32::NEG_INFINITY, 2.0];
        let choice = token_logprob(&logits, 3, 0.0, 3, &piece);
        assert_eq!(choice.token, "t3");
        let tops: Vec<&str> = choice
            .top_logprobs
            .iter()
            .map(|t| t.token.as_str())
            .collect();
        assert_eq!(tops, ["t1", "t3", "t0"]);
        let total: f64 = choice
            .top_logprobs
            .iter()
            .map(|t| f64::from(t.logprob).exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-6, "{total}");
        assert_eq!(choice.logprob, choice.top_logprobs[1].logprob);
        // softmax([1, 3, 2])[2] = e^2 / (e + e^3 + e^2)
        let expected = (2.0f64.exp() / (1f64.exp() + 3f64.exp() + 2f64.exp())).ln();
        assert!((f64::from(choice.logprob) - expected).abs() < 1e-6);
        assert_eq!(
            token_logprob(&logits, 2, 1.0, 0, &piece).logprob,
            f32::NEG_INFINITY
        );
    }

    #[test]
    fn temperature_sharpens_or_flattens_the_distribution() {
        let logits = [0.0, 1.0];
        let cold = token_logprob(&logits, 1, 0.5, 0, &piece).logprob;
        let plain = token_logprob(&logits, 1, 1.0, 0, &piece).logprob;
        let hot = token_logprob(&logits, 1, 2.0, 0, &piece).logprob;
        assert!(cold > plain && plain > hot, "{cold} {plain} {hot}");
    }
}
