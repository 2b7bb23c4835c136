//! Scoring text with a language model: the quality half of a benchmark. Perplexity is
//! exp(mean negative log-likelihood) of each token given the tokens before it.

/// How an engine splits a long text. Each window starts fresh (BOS, empty cache); the first
/// half of it is context only and the second half is scored, as llama.cpp's `perplexity` does,
/// so no scored token sees less than half a window of context. A last window shorter than half
/// a window is dropped (unless it is the only one): its few tokens would be scored on too little
/// context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScoreWindow {
    /// Text tokens per window (BOS not included).
    pub tokens: usize,
    /// Stop after this many text tokens (0: the whole text).
    pub max_text_tokens: usize,
}

impl ScoreWindow {
    /// The index within a window of `len` text tokens from which predictions are scored.
    pub fn first_scored(len: usize) -> usize {
        (len / 2).max(1)
    }

    /// The window shrunk, if needed, so that it fits a context of `context` tokens together
    /// with its BOS (and holds at least two tokens).
    pub fn within(self, context: usize) -> Self {
        Self {
            tokens: self.tokens.clamp(2, context.saturating_sub(1).max(2)),
            ..self
        }
    }

    /// Whether the window at `index` (of `len` tokens) is scored at all.
    pub fn keeps(&self, index: usize, len: usize) -> bool {
        index == 0 || len * 2 >= self.tokens
    }
}

/// What scoring a text produced.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TextScore {
    /// Predictions that were scored.
    pub scored_tokens: usize,
    /// Tokens the engine evaluated, scored or not.
    pub evaluated_tokens: usize,
    /// Sum of −ln p(token | context) over the scored predictions.
    pub nll_sum: f64,
    pub secs: f64,
}

impl TextScore {
    /// `None` when nothing was scored (a text shorter than two tokens).
    pub fn perplexity(&self) -> Option<f64> {
        (self.scored_tokens > 0).then(|| (self.nll_sum / self.scored_tokens as f64).exp())
    }
}

/// −ln softmax(logits)[target], computed stably in f64.
///
/// # Panics
/// Never for `target < logits.len()`; callers pass token ids the model's vocabulary produced.
pub fn token_nll(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    max + sum.ln() - logits[target] as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_logits_give_perplexity_equal_to_the_vocabulary_size() {
        let logits = [0.5f32; 4];
        let score = TextScore {
            scored_tokens: 3,
            evaluated_tokens: 4,
            nll_sum: (0..3).map(|t| token_nll(&logits, t)).sum(),
            secs: 0.0,
        };
        let ppl = score.perplexity().unwrap();
        assert!((ppl - 4.0).abs() < 1e-9, "{ppl}");
    }

    #[test]
    fn known_two_token_case() {
        // p(target 1) = e^ln3 / (1 + e^ln3) = 3/4; p(target 0) = 1/4.
        let logits = [0.0f32, 3f32.ln()];
        let nll = token_nll(&logits, 1) + token_nll(&logits, 0);
        let score = TextScore {
            scored_tokens: 2,
            nll_sum: nll,
            ..Default::default()
        };
        // exp((ln(4/3) + ln 4) / 2) = sqrt(16/3)
        let expected = (16.0f64 / 3.0).sqrt();
        assert!((score.perplexity().unwrap() - expected).abs() < 1e-6);
    }

    #[test]
    fn huge_logits_do_not_overflow() {
        let logits = [1000.0f32, 0.0];
        assert!(token_nll(&logits, 0).abs() < 1e-9);
        assert!((token_nll(&logits, 1) - 1000.0).abs() < 1e-6);
    }

    #[test]
    fn nothing_scored_has_no_perplexity() {
        assert_eq!(TextScore::default().perplexity(), None);
    }

    #[test]
    fn a_window_shrinks_to_fit_the_context_with_its_bos() {
        let w = ScoreWindow {
            tokens: 512,
            max_text_tokens: 0,
        };
        assert_eq!(w.within(4096).tokens, 512);
        assert_eq!(w.within(256).tokens, 255);
        assert_eq!(w.within(1).tokens, 2);
    }

    #[test]
    fn the_second_half_of_each_window_is_scored_and_short_tails_are_dropped() {
        let w = ScoreWindow {
            tokens: 512,
            max_text_tokens: 0,
        };
        assert_eq!(ScoreWindow::first_scored(512), 256);
        assert_eq!(ScoreWindow::first_scored(256), 128);
        assert_eq!(ScoreWindow::first_scored(1), 1);
        assert!(w.keeps(0, 10), "a short text is still scored");
        assert!(w.keeps(3, 256));
        assert!(!w.keeps(3, 255));
    }
}
