//! Ratings from votes: a Bradley-Terry fit on the Elo scale, with confidence intervals from
//! bootstrap resamples of the votes (the method of LMSYS's Chatbot Arena).
//!
//! A resample of a handful of votes repeats them (one vote resampled is always that vote), so
//! each interval is widened to at least the normal interval the likelihood's curvature gives
//! (±1.96 standard errors from the observed information): a few votes never look certain.
//!
//! A tie (or "both bad") counts as half a win for each side. Every model also plays one virtual
//! tie against a fixed reference of rating 1000: without it, a model that has only won (the
//! usual case after a handful of votes) has no finite maximum-likelihood strength, and with it a
//! model with no evidence sits at 1000 rather than anywhere.

use std::collections::BTreeMap;

/// Rating of the reference every model is tied with once.
pub const REFERENCE_RATING: f64 = 1000.0;
/// Resamples behind each confidence interval.
pub const BOOTSTRAP_ROUNDS: u32 = 200;
const ELO_SCALE: f64 = 400.0;
const MAX_ITERATIONS: usize = 2000;
const TOLERANCE: f64 = 1e-10;

/// One vote between two models: `score_a` is 1 (A won), 0 (B won) or 0.5 (tie, both bad).
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub a: String,
    pub b: String,
    pub score_a: f64,
}

/// A model's fitted rating and interval, with its tallies.
#[derive(Clone, Debug, PartialEq)]
pub struct Rated {
    pub model: String,
    pub rating: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub battles: u32,
    pub wins: u32,
    pub losses: u32,
    pub ties: u32,
    /// 1 + the number of models whose whole interval lies above this one's.
    pub rank: usize,
}

/// Fits ratings to `outcomes`, best first. Deterministic: the same votes give the same table.
pub fn rate(outcomes: &[Outcome]) -> Vec<Rated> {
    let models: Vec<String> = outcomes
        .iter()
        .flat_map(|o| [o.a.clone(), o.b.clone()])
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if models.is_empty() {
        return Vec::new();
    }
    let index: BTreeMap<&str, usize> = models
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let games: Vec<(usize, usize, f64)> = outcomes
        .iter()
        .filter(|o| o.a != o.b)
        .map(|o| (index[o.a.as_str()], index[o.b.as_str()], o.score_a))
        .collect();
    let ratings = fit(models.len(), games.iter().copied());

    let mut rng = SplitMix(0x5EED_A7E7A);
    let mut samples: Vec<Vec<f64>> =
        vec![Vec::with_capacity(BOOTSTRAP_ROUNDS as usize); models.len()];
    for _ in 0..BOOTSTRAP_ROUNDS {
        let resample = (0..games.len()).map(|_| games[rng.below(games.len())]);
        for (i, r) in fit(models.len(), resample).into_iter().enumerate() {
            samples[i].push(r);
        }
    }

    let spread = standard_errors(&ratings, &games);
    let mut rated: Vec<Rated> = models
        .iter()
        .enumerate()
        .map(|(i, model)| {
            let mut tally = (0, 0, 0, 0);
            for &(a, b, score_a) in &games {
                let score = if a == i {
                    score_a
                } else if b == i {
                    1.0 - score_a
                } else {
                    continue;
                };
                tally.0 += 1;
                if score > 0.75 {
                    tally.1 += 1;
                } else if score < 0.25 {
                    tally.2 += 1;
                } else {
                    tally.3 += 1;
                }
            }
            samples[i].sort_by(f64::total_cmp);
            let normal = 1.96 * spread[i];
            Rated {
                model: model.clone(),
                rating: ratings[i],
                ci_low: percentile(&samples[i], 0.025).min(ratings[i] - normal),
                ci_high: percentile(&samples[i], 0.975).max(ratings[i] + normal),
                battles: tally.0,
                wins: tally.1,
                losses: tally.2,
                ties: tally.3,
                rank: 0,
            }
        })
        .collect();
    let intervals: Vec<(f64, f64)> = rated.iter().map(|r| (r.ci_low, r.ci_high)).collect();
    for r in &mut rated {
        r.rank = 1 + intervals.iter().filter(|(low, _)| *low > r.ci_high).count();
    }
    rated.sort_by(|x, y| y.rating.total_cmp(&x.rating).then(x.model.cmp(&y.model)));
    rated
}

/// Maximum-likelihood Bradley-Terry strengths by the MM iteration (Hunter 2004), on the Elo
/// scale, each model also tied once with the reference.
fn fit(models: usize, games: impl Iterator<Item = (usize, usize, f64)>) -> Vec<f64> {
    // Half a win from the virtual tie with the reference.
    let mut wins = vec![0.5; models];
    let mut meetings = vec![vec![0.0f64; models]; models];
    for (a, b, score_a) in games {
        wins[a] += score_a;
        wins[b] += 1.0 - score_a;
        meetings[a][b] += 1.0;
        meetings[b][a] += 1.0;
    }
    let mut strength = vec![1.0f64; models];
    for _ in 0..MAX_ITERATIONS {
        let mut change = 0.0f64;
        let next: Vec<f64> = (0..models)
            .map(|i| {
                // The reference has strength 1 and met every model once.
                let mut denominator = 1.0 / (strength[i] + 1.0);
                for j in 0..models {
                    if meetings[i][j] > 0.0 {
                        denominator += meetings[i][j] / (strength[i] + strength[j]);
                    }
                }
                wins[i] / denominator
            })
            .collect();
        for (old, new) in strength.iter_mut().zip(next) {
            change = change.max((new.ln() - old.ln()).abs());
            *old = new;
        }
        if change < TOLERANCE {
            break;
        }
    }
    strength
        .into_iter()
        .map(|s| REFERENCE_RATING + ELO_SCALE * s.log10())
        .collect()
}

/// Each rating's standard error (Elo points) from the diagonal of the observed information of
/// the fitted model, the reference's virtual tie included.
fn standard_errors(ratings: &[f64], games: &[(usize, usize, f64)]) -> Vec<f64> {
    let strength: Vec<f64> = ratings
        .iter()
        .map(|r| 10f64.powf((r - REFERENCE_RATING) / ELO_SCALE))
        .collect();
    // d²(-log L)/dθ² for one game between strengths a and b (θ = ln a): ab / (a + b)².
    let curvature = |a: f64, b: f64| a * b / ((a + b) * (a + b));
    let mut information: Vec<f64> = strength.iter().map(|&s| curvature(s, 1.0)).collect();
    for &(a, b, _) in games {
        let c = curvature(strength[a], strength[b]);
        information[a] += c;
        information[b] += c;
    }
    let points_per_nat = ELO_SCALE / std::f64::consts::LN_10;
    information
        .into_iter()
        .map(|i| points_per_nat / i.sqrt())
        .collect()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let position = q * (sorted.len() - 1) as f64;
    let (low, high) = (position.floor() as usize, position.ceil() as usize);
    let weight = position - low as f64;
    sorted[low] * (1.0 - weight) + sorted[high] * weight
}

/// A small, seeded generator: the bootstrap must not need an entropy source (nor a crate in
/// the browser build), and the same votes must always give the same intervals.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(a: &str, b: &str, score_a: f64) -> Outcome {
        Outcome {
            a: a.into(),
            b: b.into(),
            score_a,
        }
    }

    #[test]
    fn no_votes_no_table() {
        assert!(rate(&[]).is_empty());
    }

    #[test]
    fn one_win_puts_the_winner_ahead_by_a_finite_margin() {
        let table = rate(&[vote("x", "y", 1.0)]);
        assert_eq!(table[0].model, "x");
        assert!(table[0].rating > 1000.0 && table[1].rating < 1000.0);
        assert!(table[0].rating.is_finite() && table[1].rating.is_finite());
        // With one vote nothing is settled: both share rank 1.
        assert_eq!((table[0].rank, table[1].rank), (1, 1));
        assert_eq!((table[0].wins, table[0].losses, table[1].losses), (1, 0, 1));
    }

    #[test]
    fn the_fit_recovers_known_odds() {
        // x beats y 3 times in 4: the likelihood is maximal near odds of 3:1, i.e. about
        // 400·log10(3) ≈ 191 points, pulled in a little by the virtual ties.
        let mut votes = Vec::new();
        for _ in 0..300 {
            votes.push(vote("x", "y", 1.0));
        }
        for _ in 0..100 {
            votes.push(vote("y", "x", 1.0));
        }
        let table = rate(&votes);
        let gap = table[0].rating - table[1].rating;
        assert!((gap - 190.8).abs() < 6.0, "gap {gap}");
        // 400 votes separate them clearly.
        assert!(table[0].ci_low > table[1].ci_high, "{table:?}");
        assert_eq!((table[0].rank, table[1].rank), (1, 2));
    }

    #[test]
    fn ties_and_both_bad_pull_models_together_and_are_counted_as_ties() {
        let decided = rate(&[vote("x", "y", 1.0), vote("x", "y", 1.0)]);
        let tied = rate(&[
            vote("x", "y", 1.0),
            vote("x", "y", 1.0),
            vote("x", "y", 0.5),
        ]);
        let gap = |t: &[Rated]| t[0].rating - t[1].rating;
        assert!(gap(&tied) < gap(&decided));
        assert_eq!(tied[0].ties, 1);
        assert_eq!(tied[0].battles, 3);
    }

    #[test]
    fn intervals_contain_the_rating_and_the_table_is_deterministic() {
        let votes = vec![
            vote("x", "y", 1.0),
            vote("y", "z", 1.0),
            vote("x", "z", 0.5),
            vote("z", "x", 1.0),
        ];
        let first = rate(&votes);
        assert_eq!(first, rate(&votes));
        for r in &first {
            assert!(
                r.ci_low <= r.rating + 1e-9 && r.rating <= r.ci_high + 1e-9,
                "{r:?}"
            );
        }
    }
}
