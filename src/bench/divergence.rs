//! How far a model's next-token distributions drift from a reference's on the same tokens, as
//! `llama-perplexity --kl-divergence` reports it: the mean KL divergence `Σ p·ln(p/q)` (p the
//! reference's softmax, q the tested one's) and how often both put the same token first.

/// Running totals over positions.
#[derive(Clone, Debug, Default)]
pub struct Divergence {
    positions: usize,
    kl_sum: f64,
    kl_values: Vec<f64>,
    same_top: usize,
}

/// The totals, summarised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DivergenceSummary {
    pub positions: usize,
    pub mean_kl: f64,
    /// The 99th percentile of the per-position KL divergence.
    pub p99_kl: f64,
    pub max_kl: f64,
    /// Fraction of positions where both models' likeliest token is the same.
    pub top1_agreement: f64,
}

impl Divergence {
    /// One position: the reference's logits and the tested model's, same vocabulary.
    pub fn add(&mut self, reference: &[f32], tested: &[f32]) {
        assert_eq!(reference.len(), tested.len(), "one vocabulary");
        let p = log_softmax(reference);
        let q = log_softmax(tested);
        let kl: f64 = p
            .iter()
            .zip(&q)
            .map(|(&lp, &lq)| lp.exp() * (lp - lq))
            .sum::<f64>()
            .max(0.0);
        self.kl_sum += kl;
        self.kl_values.push(kl);
        self.positions += 1;
        self.same_top += usize::from(top(reference) == top(tested));
    }

    pub fn summary(&self) -> DivergenceSummary {
        let mut sorted = self.kl_values.clone();
        sorted.sort_by(f64::total_cmp);
        let at = |fraction: f64| {
            sorted
                .get(((sorted.len() as f64 - 1.0) * fraction).round() as usize)
                .copied()
                .unwrap_or(0.0)
        };
        let n = self.positions.max(1) as f64;
        DivergenceSummary {
            positions: self.positions,
            mean_kl: self.kl_sum / n,
            p99_kl: at(0.99),
            max_kl: at(1.0),
            top1_agreement: self.same_top as f64 / n,
        }
    }
}

/// `ln softmax(logits)` in f64, so tiny probabilities keep their contribution.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f64 = logits.iter().map(|&v| f64::from(v - max).exp()).sum();
    let log_sum = sum.ln();
    logits
        .iter()
        .map(|&v| f64::from(v - max) - log_sum)
        .collect()
}

fn top(logits: &[f32]) -> usize {
    logits
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_against_itself_diverges_by_nothing() {
        let mut d = Divergence::default();
        d.add(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]);
        d.add(&[0.0, 0.0, 5.0], &[0.0, 0.0, 5.0]);
        let s = d.summary();
        assert_eq!(s.positions, 2);
        assert!(s.mean_kl.abs() < 1e-12 && s.max_kl.abs() < 1e-12);
        assert_eq!(s.top1_agreement, 1.0);
    }

    #[test]
    fn kl_matches_the_definition_and_grows_with_the_drift() {
        // p = (0.5, 0.5), q = (0.25, 0.75): KL = 0.5 ln 2 + 0.5 ln(2/3).
        let mut d = Divergence::default();
        d.add(&[0.0, 0.0], &[0.0, 3f32.ln()]);
        let want = 0.5 * 2f64.ln() + 0.5 * (2.0f64 / 3.0).ln();
        assert!((d.summary().mean_kl - want).abs() < 1e-6);
        let mut far = Divergence::default();
        far.add(&[0.0, 0.0], &[0.0, 9f32.ln()]);
        assert!(far.summary().mean_kl > d.summary().mean_kl);
        // Both put token 0 or 1 first: ties go to the first index, q's favourite is 1.
        assert_eq!(d.summary().top1_agreement, 0.0);
    }
}
