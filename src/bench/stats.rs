//! Summaries of repeated measurements: the median (robust to one slow run) and the spread.

use serde::{Deserialize, Serialize};

/// The median of a set of measurements with its extremes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// How many measurements.
    pub n: usize,
}

/// Runs `run` `repeats` times (at least once) and returns the median of its wall times in
/// milliseconds: the CLI benches' way to time one operation.
pub fn median_millis<E>(repeats: usize, mut run: impl FnMut() -> Result<(), E>) -> Result<f64, E> {
    let mut times = Vec::with_capacity(repeats.max(1));
    for _ in 0..repeats.max(1) {
        let started = std::time::Instant::now();
        run()?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Stat::of(&times).map_or(0.0, |stat| stat.median))
}

impl Stat {
    /// `None` for no measurements; non-finite values (a division by a zero duration) are ignored.
    pub fn of(values: &[f64]) -> Option<Stat> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            n,
        })
    }

    /// "median (min–max)" with `digits` decimals; just the median for a single measurement.
    pub fn display(&self, digits: usize) -> String {
        if self.n > 1 {
            format!(
                "{:.*} ({:.*}–{:.*})",
                digits, self.median, digits, self.min, digits, self.max
            )
        } else {
            format!("{:.*}", digits, self.median)
        }
    }

    /// (max − min) / median, in percent: how far apart the runs were.
    pub fn spread_percent(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.max - self.min) / self.median.abs() * 100.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(Stat::of(&[3.0, 1.0, 2.0]).unwrap().median, 2.0);
        assert_eq!(Stat::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert_eq!(Stat::of(&[7.0]).unwrap().median, 7.0);
    }

    #[test]
    fn one_slow_run_does_not_move_the_median() {
        let s = Stat::of(&[100.0, 101.0, 99.0, 100.0, 10.0]).unwrap();
        assert_eq!(s.median, 100.0);
        assert_eq!((s.min, s.max, s.n), (10.0, 101.0, 5));
    }

    #[test]
    fn spread_is_the_range_relative_to_the_median() {
        let s = Stat::of(&[90.0, 100.0, 110.0]).unwrap();
        assert!((s.spread_percent() - 20.0).abs() < 1e-9);
        assert_eq!(Stat::of(&[5.0, 5.0]).unwrap().spread_percent(), 0.0);
        assert_eq!(Stat::of(&[0.0]).unwrap().spread_percent(), 0.0);
    }

    #[test]
    fn displays_the_range_only_when_there_is_one() {
        assert_eq!(
            Stat::of(&[1.0, 2.0, 4.0]).unwrap().display(1),
            "2.0 (1.0–4.0)"
        );
        assert_eq!(Stat::of(&[3.25]).unwrap().display(0), "3");
    }

    #[test]
    fn empty_and_non_finite_inputs() {
        assert_eq!(Stat::of(&[]), None);
        assert_eq!(Stat::of(&[f64::NAN, f64::INFINITY]), None);
        assert_eq!(Stat::of(&[f64::NAN, 4.0]).unwrap().n, 1);
    }
}
