//! Quality against a reference: on the perplexity text, each model's next-token distribution
//! at every scored position is compared with the reference's (KL divergence and top-1
//! agreement, `bench::divergence`). Only variants of one base model (same family and size, so
//! the same tokenizer and text positions) are compared. The reference is scored first and its
//! logits are kept in memory, up to [`REFERENCE_BYTES`].

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use super::{
    divergence::Divergence,
    types::{BenchConfig, DivergenceResult},
};
use crate::{inference::workers::RowObserver, registry::Registry};

/// Most memory the reference's logits may take; positions beyond it are not compared (the
/// result says how many were).
pub const REFERENCE_BYTES: usize = 1 << 30;

/// Which model each model is compared with (the references themselves are not keys).
pub fn references(registry: &Registry, config: &BenchConfig) -> HashMap<String, String> {
    if config.perplexity_tokens == 0 {
        return HashMap::new();
    }
    let base = |id: &str| {
        registry
            .get(id)
            .map(|e| (e.family.to_lowercase(), e.parameters.to_lowercase()))
    };
    let mut groups: Vec<((String, String), Vec<&String>)> = Vec::new();
    for id in &config.models {
        let Some(key) = base(id) else { continue };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(id),
            None => groups.push((key, vec![id])),
        }
    }
    let bits = |id: &str| registry.get(id).map_or(0.0, |e| e.bits_per_weight);
    let mut plan = HashMap::new();
    for (key, members) in groups {
        let chosen = config
            .kl_reference
            .as_ref()
            .filter(|r| base(r).as_ref() == Some(&key));
        let reference = match chosen {
            Some(reference) => reference.clone(),
            None if members.len() < 2 => continue,
            // The most bits: the closest to the unquantized model; the first listed on a tie.
            None => members
                .iter()
                .fold(None::<&String>, |best, id| match best {
                    Some(b) if bits(b) >= bits(id) => Some(b),
                    _ => Some(id),
                })
                .map(|id| (*id).clone())
                .unwrap_or_default(),
        };
        for id in members.into_iter().filter(|id| **id != reference) {
            plan.insert(id.clone(), reference.clone());
        }
    }
    plan
}

/// The models in the order they run: each reference before the models compared with it, the
/// rest as listed.
pub fn run_order(config: &BenchConfig, plan: &HashMap<String, String>) -> Vec<String> {
    let is_reference = |id: &String| plan.values().any(|r| r == id);
    let (first, rest): (Vec<String>, Vec<String>) =
        config.models.iter().cloned().partition(is_reference);
    first.into_iter().chain(rest).collect()
}

/// A reference's logits, row after row.
#[derive(Default)]
pub struct ReferenceRows {
    vocabulary: usize,
    values: Vec<f32>,
    /// Rows not kept because of [`REFERENCE_BYTES`].
    dropped: usize,
}

impl ReferenceRows {
    fn rows(&self) -> usize {
        self.values.len() / self.vocabulary.max(1)
    }

    fn row(&self, index: usize) -> Option<&[f32]> {
        let start = index * self.vocabulary;
        self.values.get(start..start + self.vocabulary)
    }
}

/// An observer that keeps every row it sees.
pub fn recorder() -> (RowObserver, Arc<Mutex<ReferenceRows>>) {
    let rows = Arc::new(Mutex::new(ReferenceRows::default()));
    let kept = rows.clone();
    let observer: RowObserver = Box::new(move |row: &[f32]| {
        let Ok(mut rows) = kept.lock() else { return };
        if rows.vocabulary == 0 {
            rows.vocabulary = row.len();
        }
        let full = (rows.values.len() + row.len()) * std::mem::size_of::<f32>() > REFERENCE_BYTES;
        if row.len() != rows.vocabulary || full {
            rows.dropped += 1;
        } else {
            rows.values.extend_from_slice(row);
        }
    });
    (observer, rows)
}

/// Running comparison with a reference.
pub struct Comparison {
    reference: Arc<Mutex<ReferenceRows>>,
    divergence: Divergence,
    next: usize,
    /// Rows whose vocabulary differs from the reference's: the comparison is void.
    mismatched: bool,
}

/// An observer that compares every row it sees with the reference's row at the same position.
pub fn comparer(reference: Arc<Mutex<ReferenceRows>>) -> (RowObserver, Arc<Mutex<Comparison>>) {
    let comparison = Arc::new(Mutex::new(Comparison {
        reference,
        divergence: Divergence::default(),
        next: 0,
        mismatched: false,
    }));
    let shared = comparison.clone();
    let observer: RowObserver = Box::new(move |row: &[f32]| {
        let Ok(mut comparison) = shared.lock() else {
            return;
        };
        let index = comparison.next;
        comparison.next += 1;
        let reference = comparison.reference.clone();
        let Ok(reference) = reference.lock() else {
            return;
        };
        match reference.row(index) {
            Some(expected) if expected.len() == row.len() => {
                comparison.divergence.add(expected, row);
            }
            Some(_) => comparison.mismatched = true,
            None => {}
        }
    });
    (observer, comparison)
}

/// The comparison's result, or why there is none.
pub fn finish(
    comparison: &Mutex<Comparison>,
    reference_id: &str,
) -> Result<DivergenceResult, String> {
    let comparison = comparison
        .lock()
        .map_err(|_| "the comparison was interrupted".to_string())?;
    if comparison.mismatched {
        return Err(format!(
            "not compared with `{reference_id}`: the vocabularies differ"
        ));
    }
    let reference_rows = comparison.reference.lock().map(|r| r.rows()).unwrap_or(0);
    if reference_rows == 0 {
        return Err(format!("`{reference_id}` produced no rows to compare with"));
    }
    if comparison.next
        != reference_rows + comparison.reference.lock().map(|r| r.dropped).unwrap_or(0)
    {
        return Err(format!(
            "not compared with `{reference_id}`: {} positions against its {reference_rows} (different tokenizers)",
            comparison.next
        ));
    }
    let summary = comparison.divergence.summary();
    Ok(DivergenceResult {
        reference: reference_id.to_string(),
        positions: summary.positions as u32,
        mean_kl: summary.mean_kl,
        p99_kl: summary.p99_kl,
        max_kl: summary.max_kl,
        top1_agreement: summary.top1_agreement,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(observer: &mut RowObserver, rows: &[Vec<f32>]) {
        for row in rows {
            observer(row);
        }
    }

    #[test]
    fn a_model_against_its_own_rows_has_zero_divergence_and_full_agreement() {
        let rows: Vec<Vec<f32>> = (0..20)
            .map(|i| {
                (0..50)
                    .map(|j| ((i * 7 + j * 3) % 11) as f32 * 0.3)
                    .collect()
            })
            .collect();
        let (mut record, reference) = recorder();
        feed(&mut record, &rows);
        let (mut compare, comparison) = comparer(reference.clone());
        feed(&mut compare, &rows);
        let same = finish(&comparison, "ref").unwrap();
        assert_eq!(
            (same.positions, same.mean_kl, same.top1_agreement),
            (20, 0.0, 1.0)
        );

        // Perturbed rows drift, more with a larger perturbation.
        let drift = |scale: f32| {
            let (mut compare, comparison) = comparer(reference.clone());
            let noisy: Vec<Vec<f32>> = rows
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    r.iter()
                        .enumerate()
                        .map(|(j, v)| v + scale * (((i + j) % 5) as f32 - 2.0))
                        .collect()
                })
                .collect();
            feed(&mut compare, &noisy);
            finish(&comparison, "ref").unwrap().mean_kl
        };
        let (small, large) = (drift(0.05), drift(0.5));
        assert!(0.0 < small && small < large, "{small} {large}");
    }

    #[test]
    fn other_vocabularies_or_lengths_are_not_compared() {
        let (mut record, reference) = recorder();
        feed(&mut record, &[vec![0.0; 8], vec![1.0; 8]]);
        let (mut compare, comparison) = comparer(reference.clone());
        feed(&mut compare, &[vec![0.0; 9], vec![0.0; 9]]);
        assert!(finish(&comparison, "r")
            .unwrap_err()
            .contains("vocabularies"));
        let (mut compare, comparison) = comparer(reference);
        feed(&mut compare, &[vec![0.0; 8]]);
        assert!(finish(&comparison, "r").unwrap_err().contains("positions"));
    }
}
