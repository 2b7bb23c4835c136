//! SentencePiece vocabularies in bitnet.cpp's GGUF files (`tokenizer.ggml.model = llama`: the
//! Llama vocabularies of 1bitLLM's reproductions and of bitnet.cpp's dummy models) split text
//! as llama.cpp itself splits it: the same metadata, read by llama.cpp's own tokenizer through
//! the library the llama.cpp engine links, gives the same ids.

mod common;

use common::tiny_bitnet as tiny;
use llama_cpp_2::{
    llama_backend::LlamaBackend, model::params::LlamaModelParams, model::LlamaModel,
};
use quantlab::inference::bitnet::{config::BitnetConfig, gguf_file::GgufFile, gguf_vocab};

const SAMPLES: &[&str] = &[
    "the cat",
    "hello world",
    "Hello World!",
    "  the  cat sings   ",
    "testing the thesis",
    "héllo wörld ✓ 🙂",
    "line one\nline two\ttab",
    "<s>the cat</s> hello",
    "",
    "x",
];

#[test]
fn a_sentencepiece_vocabulary_tokenizes_as_llama_cpp_does() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vocab.gguf");
    let vocab = tiny::sentencepiece_vocab();
    tiny::write_vocab_gguf(&path, &vocab);

    let backend = LlamaBackend::init().unwrap();
    let params = LlamaModelParams::default().with_vocab_only(true);
    let theirs = LlamaModel::load_from_file(&backend, &path, &params).unwrap();
    let file = GgufFile::open(&path).unwrap();
    let mut config = BitnetConfig::b1_58_2b_4t();
    config.vocab_size = vocab.0.len();
    let ours = gguf_vocab::vocab(&file, &config).unwrap();

    for text in SAMPLES {
        let expected: Vec<u32> = theirs
            .vocab()
            .tokenize(text.as_bytes(), false, true)
            .into_iter()
            .map(|t| t.0 as u32)
            .collect();
        let got = ours.encode(text).unwrap();
        assert_eq!(got, expected, "{text:?}");
        eprintln!("{text:?}: {} ids, as llama.cpp", got.len());
    }
    // Not blind: the samples use merges, byte fallback and the special tokens.
    let ids = ours.encode("<s>the cat é🙂").unwrap();
    assert_eq!(ids[0], 1, "<s> is one token");
    assert!(
        ids.iter().any(|&id| (3..259).contains(&id)),
        "byte fallback: {ids:?}"
    );
    let the = vocab.0.iter().position(|t| t == "\u{2581}the").unwrap() as u32;
    assert!(ids.contains(&the), "{ids:?}");
}
