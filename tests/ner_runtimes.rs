//! The candle NER runtime on real weights: Rampart's 4-bit ONNX weights dequantized to f32
//! safetensors (scripts/dequantize_ner.py, run by scripts/test.sh) and run by candle's BERT must
//! find the same entities as rten running the ONNX file itself.

mod common;

use std::path::PathBuf;

use quantlab::{
    ner::{NerModel, NerRuntime, DEFAULT_THRESHOLD},
    registry::Registry,
};

fn load(id: &str) -> NerModel {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models.toml");
    let registry = Registry::load(&file, &common::models_dir()).expect("models.toml loads");
    let entry = registry.ner(id).expect("declared");
    if let Some(reason) = registry.ner_unavailability(entry) {
        panic!("{reason} (scripts/test.sh does this)");
    }
    NerModel::load(id, &registry.ner_dir(entry), entry.runtime).expect("loads")
}

#[test]
fn candle_and_rten_find_the_same_entities_on_the_same_weights() {
    let rten = load("rampart");
    let candle = load("rampart-candle");
    assert_eq!(rten.runtime(), NerRuntime::Rten);
    assert_eq!(candle.runtime(), NerRuntime::Candle);
    let texts = [
        "My name is John Smith and my email is john.smith@example.com.",
        "Maria Gonzalez lives at 742 Evergreen Terrace, Springfield, IL 62704; call (415) 555-0132.",
        "The committee met on a quiet afternoon and discussed the budget at length.",
    ];
    let mut entities = 0;
    for text in texts {
        let a = rten.recognize(text, DEFAULT_THRESHOLD).expect("rten runs");
        let b = candle
            .recognize(text, DEFAULT_THRESHOLD)
            .expect("candle runs");
        let spans = |o: &quantlab::ner::NerOutput| -> Vec<(String, usize, usize)> {
            o.entities
                .iter()
                .map(|e| (e.label.clone(), e.start, e.end))
                .collect()
        };
        assert_eq!(spans(&a), spans(&b), "{text}");
        for (x, y) in a.entities.iter().zip(&b.entities) {
            assert!((x.score - y.score).abs() < 0.02, "{x:?} vs {y:?}");
        }
        entities += a.entities.len();
    }
    // The cross-check means something only if entities were found.
    assert!(entities >= 8, "{entities}");
}

/// Checkpoints without a tokenizer.json (dslim/bert-base-NER ships vocab.txt) get a WordPiece
/// tokenizer built from vocab.txt and tokenizer_config.json; on Rampart, which ships both, it
/// must cut every text exactly as the tokenizer.json does, offsets included.
#[test]
fn a_tokenizer_built_from_vocab_txt_matches_the_shipped_tokenizer_json() {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models.toml");
    let registry = Registry::load(&file, &common::models_dir()).expect("models.toml loads");
    let entry = registry.ner("rampart").expect("declared");
    if let Some(reason) = registry.ner_unavailability(entry) {
        panic!("{reason} (scripts/test.sh does this)");
    }
    let dir = registry.ner_dir(entry);
    let shipped = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let built = quantlab::ner::tokenizer::from_vocab(&dir).unwrap();
    for text in [
        "My name is John Smith and my email is john.smith@example.com.",
        "Zoë Müller moved to Köln — Straße 12, 50667 — 北京 and Ångström's café!",
        "ACCOUNT 000123456789\tROUTING 021000021\n\nunbelievably-hyphenated words",
    ] {
        let a = shipped.encode_char_offsets(text, false).unwrap();
        let b = built.encode_char_offsets(text, false).unwrap();
        assert_eq!(a.get_ids(), b.get_ids(), "{text}");
        assert_eq!(a.get_offsets(), b.get_offsets(), "{text}");
        assert_eq!(a.get_word_ids(), b.get_word_ids(), "{text}");
    }
}
