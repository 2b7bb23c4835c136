//! From per-token labels to entity spans: BIO merging, character offsets into the original text,
//! a confidence per entity, display groups, and the overlapping windows that let texts longer
//! than the model's positions through. Pure, so every rule is unit-tested without a model.

use serde::{Deserialize, Serialize};

/// One classified word piece: its label (`B-CITY`, `I-CITY`, `O`), the probability of that
/// label, and its character range in the original text.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLabel {
    pub label: String,
    pub score: f32,
    pub start: usize,
    pub end: usize,
}

/// An entity found in the text. `start`/`end` count Unicode characters of the original text
/// and `text` is exactly that substring.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    pub label: String,
    pub group: String,
    pub text: String,
    pub start: usize,
    pub end: usize,
    pub score: f32,
}

/// The display group of an entity type, for colours and filtering.
pub fn group_of(entity_type: &str) -> &'static str {
    match entity_type {
        "PER" | "PERSON" | "GIVEN_NAME" | "SURNAME" => "person",
        "LOC" | "LOCATION" | "CITY" | "STATE" | "STREET_NAME" | "BUILDING_NUMBER"
        | "SECONDARY_ADDRESS" | "ZIP_CODE" | "COUNTRY" => "location",
        "ORG" | "ORGANIZATION" | "ORGANISATION" => "organisation",
        "EMAIL" | "PHONE" | "URL" => "contact",
        "TAX_ID" | "BANK_ACCOUNT" | "ROUTING_NUMBER" | "GOVERNMENT_ID" | "PASSPORT"
        | "DRIVERS_LICENSE" => "identifier",
        _ => "miscellaneous",
    }
}

/// `B-CITY` → (`CITY`, begins); `O` and empty types → `None`.
fn split_label(label: &str) -> Option<(&str, bool)> {
    let (prefix, kind) = match label.split_once('-') {
        Some((prefix, kind)) if prefix.len() == 1 => (prefix, kind),
        _ => ("", label),
    };
    if kind.is_empty() || label == "O" {
        return None;
    }
    Some((kind, prefix.eq_ignore_ascii_case("B")))
}

/// Merges token labels into entities: consecutive tokens of one type join when they touch, or
/// when only whitespace separates them and the next does not begin a new entity (`B-`), so word
/// pieces and the words of one name collapse; `O` and tokens under `threshold` end the current
/// entity. The entity's score is the mean of its tokens'.
pub fn aggregate(text: &str, tokens: &[TokenLabel], threshold: f32) -> Vec<Entity> {
    let chars: Vec<char> = text.chars().collect();
    struct Open<'a> {
        kind: &'a str,
        start: usize,
        end: usize,
        scores: Vec<f32>,
    }
    let mut entities = Vec::new();
    let mut open: Option<Open<'_>> = None;
    let close = |open: Open<'_>, entities: &mut Vec<Entity>| {
        let score = open.scores.iter().sum::<f32>() / open.scores.len() as f32;
        entities.push(Entity {
            label: open.kind.to_string(),
            group: group_of(open.kind).to_string(),
            text: chars[open.start..open.end].iter().collect(),
            start: open.start,
            end: open.end,
            score,
        });
    };
    for token in tokens {
        let end = token.end.min(chars.len());
        let start = token.start.min(end);
        let Some((kind, begins)) = split_label(&token.label).filter(|_| token.score >= threshold)
        else {
            if let Some(done) = open.take() {
                close(done, &mut entities);
            }
            continue;
        };
        if let Some(current) = open.as_mut() {
            let gap = &chars[current.end.min(start)..start];
            // Touching pieces of one type are one entity even when the model tags each
            // `B-` (it does inside e-mail addresses and numbers); across whitespace only an
            // `I-` continues it.
            let continues = gap.is_empty() || (!begins && gap.iter().all(|c| c.is_whitespace()));
            if current.kind == kind && continues {
                current.end = current.end.max(end);
                current.scores.push(token.score);
                continue;
            }
        }
        if let Some(done) = open.take() {
            close(done, &mut entities);
        }
        open = Some(Open {
            kind,
            start,
            end,
            scores: vec![token.score],
        });
    }
    if let Some(done) = open.take() {
        close(done, &mut entities);
    }
    entities
}

/// Overlapping `[start, end)` windows of at most `budget` tokens covering `count` tokens, each
/// starting `overlap` tokens before the previous one ended (moved back to the start of a word
/// so a window never opens on a word piece, but always past the previous start).
pub fn windows(word_ids: &[Option<u32>], budget: usize, overlap: usize) -> Vec<(usize, usize)> {
    let count = word_ids.len();
    let budget = budget.max(1);
    let overlap = overlap.min(budget - 1);
    let mut out = Vec::new();
    let mut start = 0;
    while start < count {
        let end = (start + budget).min(count);
        out.push((start, end));
        if end == count {
            break;
        }
        let mut next = end - overlap;
        while next > start + 1 && word_ids[next].is_some() && word_ids[next] == word_ids[next - 1] {
            next -= 1;
        }
        start = next.max(start + 1);
    }
    out
}

/// For token `index` inside window `(start, end)`, how far it is from the nearer edge: each
/// token keeps the label from the window where it sits most centrally (most context).
pub fn centrality(index: usize, (start, end): (usize, usize)) -> usize {
    (index - start).min(end - 1 - index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(label: &str, score: f32, start: usize, end: usize) -> TokenLabel {
        TokenLabel {
            label: label.into(),
            score,
            start,
            end,
        }
    }

    #[test]
    fn word_pieces_and_words_of_one_entity_merge_and_offsets_count_characters() {
        // "Zoë Müller, Zürich": characters, not bytes (ë, ü are two bytes each).
        let text = "Zoë Müller, Zürich";
        let tokens = [
            token("B-GIVEN_NAME", 0.9, 0, 2),
            token("I-GIVEN_NAME", 0.7, 2, 3), // a word piece of the same word
            token("B-SURNAME", 0.8, 4, 10),
            token("O", 0.99, 10, 11),
            token("B-CITY", 0.6, 12, 18),
        ];
        let entities = aggregate(text, &tokens, 0.5);
        let summary: Vec<(&str, &str, &str, usize, usize)> = entities
            .iter()
            .map(|e| {
                (
                    e.label.as_str(),
                    e.group.as_str(),
                    e.text.as_str(),
                    e.start,
                    e.end,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("GIVEN_NAME", "person", "Zoë", 0, 3),
                ("SURNAME", "person", "Müller", 4, 10),
                ("CITY", "location", "Zürich", 12, 18),
            ]
        );
        assert!(
            (entities[0].score - 0.8).abs() < 1e-6,
            "mean of 0.9 and 0.7"
        );
    }

    #[test]
    fn a_begin_tag_punctuation_or_low_confidence_splits_entities() {
        let text = "Paris, Lyon Nice";
        let tokens = [
            token("B-CITY", 0.9, 0, 5),
            token("I-CITY", 0.9, 7, 11), // ", " between: not whitespace only
            token("B-CITY", 0.9, 12, 16),
        ];
        let cities: Vec<String> = aggregate(text, &tokens, 0.5)
            .into_iter()
            .map(|e| e.text)
            .collect();
        assert_eq!(cities, ["Paris", "Lyon", "Nice"]);
        // Touching pieces tagged B- each (as inside an e-mail address) are one entity.
        let mail = "a.b@c.de";
        let pieces = [
            token("B-EMAIL", 0.9, 0, 1),
            token("B-EMAIL", 0.9, 1, 2),
            token("B-EMAIL", 0.9, 2, 3),
            token("I-EMAIL", 0.9, 3, 8),
        ];
        let found = aggregate(mail, &pieces, 0.5);
        assert_eq!((found.len(), found[0].text.as_str()), (1, "a.b@c.de"));
        let weak = [token("B-CITY", 0.4, 0, 5)];
        assert!(aggregate(text, &weak, 0.5).is_empty());
    }

    #[test]
    fn windows_cover_everything_overlap_and_never_open_inside_a_word() {
        let words: Vec<Option<u32>> = (0..1000u32).map(|i| Some(i / 3)).collect();
        let spans = windows(&words, 100, 20);
        assert_eq!(spans.first(), Some(&(0, 100)));
        assert_eq!(spans.last().map(|w| w.1), Some(1000));
        for pair in spans.windows(2) {
            let ((_, end), (start, _)) = (pair[0], pair[1]);
            assert!(start < end && end - start >= 20, "{pair:?} overlap");
            assert_ne!(
                words[start],
                words[start - 1],
                "{pair:?} opens inside a word"
            );
        }
        assert!(windows(&[], 100, 20).is_empty());
        // One word longer than the overlap still makes progress.
        let long_word = vec![Some(0u32); 300];
        assert_eq!(windows(&long_word, 100, 20).last().map(|w| w.1), Some(300));
    }
}
