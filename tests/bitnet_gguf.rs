//! bitnet.cpp's own GGUF (`ggml-model-i2_s.gguf`): I2_S ternary projections with their per-tensor
//! scale, the configuration, tokenizer and chat template from the metadata. Tiny files written
//! by the test in that exact layout load to the same logits, bit for bit, as the same weights
//! from safetensors, generate the same text through the chat template, and damaged files are
//! refused with a reason.

mod common;

use common::tiny_bitnet::{self as tiny, Activation, Cache, Form, GgufForm, Master};
use quantlab::inference::{
    bitnet::{checkpoint::CheckpointKind, head::HeadPrecision, BitnetEngine},
    template::PromptFormat,
    ChatEngine, EngineError, ResolvedSampling,
};
use quantlab::types::{ChatMessage, Role};

const CONTEXT: u32 = 256;

fn load(path: &std::path::Path) -> Result<BitnetEngine, EngineError> {
    BitnetEngine::load(path, CONTEXT, 2, HeadPrecision::Bf16)
}

fn sample_tokens(len: usize) -> Vec<u32> {
    let text = "The quick brown fox jumps over the lazy dog; 0123456789! ".repeat(4);
    std::iter::once(tiny::BOS)
        .chain(tiny::byte_ids(&text).into_iter().take(len - 1))
        .collect()
}

use common::CollectText as Collect;

fn reply(engine: &mut BitnetEngine, question: &str) -> (String, Vec<u32>, usize) {
    let facts = engine.facts();
    let prompt = PromptFormat::Chat {
        template: facts.chat_template.clone().expect("a chat template"),
        bos_token: facts.bos_token.clone(),
        eos_token: facts.eos_token.clone(),
    }
    .render(&[ChatMessage {
        role: Role::User,
        content: question.to_string(),
    }])
    .unwrap();
    let ids = engine.tokenize_prompt(&prompt).unwrap();
    let mut sink = Collect::default();
    let stats = engine
        .generate(&prompt, &ResolvedSampling::greedy(16), &mut sink)
        .unwrap();
    (sink.0, ids, stats.generated_tokens)
}

#[test]
fn an_i2s_gguf_gives_the_logits_and_replies_of_the_same_weights_from_safetensors() {
    let master = Master::random(21);
    let dir = tempfile::tempdir().unwrap();
    tiny::write(&dir.path().join("packed"), &master, Form::Packed);
    tiny::write(&dir.path().join("bf16"), &master, Form::Bf16);
    let i2s = dir.path().join("ggml-model-i2_s.gguf");
    let f32_file = dir.path().join("ggml-model-f32.gguf");
    tiny::write_gguf(&i2s, &master, GgufForm::I2s);
    tiny::write_gguf(&f32_file, &master, GgufForm::F32);

    let mut packed = load(&dir.path().join("packed")).unwrap();
    let mut from_i2s = load(&i2s).unwrap();
    assert_eq!(from_i2s.summary().kind, CheckpointKind::I2sGguf);
    let tokens = sample_tokens(60);
    assert_eq!(
        from_i2s.logits_for(&tokens).unwrap(),
        packed.logits_for(&tokens).unwrap(),
        "I2_S codes and scales read back as the packed checkpoint's, bit for bit"
    );
    // Full-precision projections in a GGUF are quantized at load as the bf16 checkpoint's are.
    let mut bf16 = load(&dir.path().join("bf16")).unwrap();
    let mut from_f32 = load(&f32_file).unwrap();
    assert_eq!(from_f32.summary().kind, CheckpointKind::FullPrecisionGguf);
    assert_eq!(
        from_f32.logits_for(&tokens).unwrap(),
        bf16.logits_for(&tokens).unwrap()
    );

    // The tokenizer, special tokens and chat template come from the metadata.
    let (text, ids, generated) = reply(&mut from_i2s, "Hi!");
    let (expected_text, expected_ids, expected_generated) = reply(&mut packed, "Hi!");
    assert!(generated > 0);
    assert_eq!(generated, expected_generated);
    assert_eq!(ids, expected_ids);
    assert_eq!(ids.first(), Some(&tiny::BOS));
    assert!(ids.contains(&tiny::EOT), "<|eot_id|> is one special token");
    assert_eq!(text, expected_text);
}

/// bitnet.cpp's `bitnet` architecture (its 2024 graph, and what its
/// `generate-dummy-bitnet-model.py` writes) gates the feed-forward block with SiLU where 2B4T's
/// `bitnet-b1.58` squares a ReLU: the same weights under each name follow their own reference.
#[test]
fn the_bitnet_architecture_runs_its_silu_gate() {
    let master = Master::random(23);
    let dir = tempfile::tempdir().unwrap();
    let silu_file = dir.path().join("bitnet.gguf");
    let relu2_file = dir.path().join("bitnet-b1.58.gguf");
    tiny::write_gguf_as(&silu_file, &master, GgufForm::I2s, "bitnet");
    tiny::write_gguf(&relu2_file, &master, GgufForm::I2s);
    let tokens = sample_tokens(40);
    let silu = load(&silu_file).unwrap().logits_for(&tokens).unwrap();
    let relu2 = load(&relu2_file).unwrap().logits_for(&tokens).unwrap();
    let silu_reference =
        tiny::reference_logits_with(&master, &tokens, Cache::F16, Activation::Silu);
    let relu2_reference = tiny::reference_logits(&master, &tokens, Cache::F16);
    // The engine sums in another order than the reference, so an activation can round to the
    // other int8 step at a .5 boundary; in a model this small one such step moves the logits
    // by about 1%. The two activations are fifty times further apart than that.
    for position in 0..tokens.len() {
        for (name, ours, own, other) in [
            ("SiLU", &silu, &silu_reference, &relu2_reference),
            ("relu²", &relu2, &relu2_reference, &silu_reference),
        ] {
            let error = tiny::relative_l2(&ours[position], &own[position]);
            assert!(error < 0.03, "{name}, position {position}: {error}");
            let apart = tiny::relative_l2(&ours[position], &other[position]);
            assert!(
                apart > 0.3,
                "{name}, position {position}: {apart} from the other gate"
            );
        }
    }
}

#[test]
fn damaged_gguf_files_are_refused_with_a_reason() {
    let master = Master::random(22);
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.gguf");
    tiny::write_gguf(&good, &master, GgufForm::I2s);
    let bytes = std::fs::read(&good).unwrap();
    let refused = |name: &str, data: &[u8]| -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        match load(&path) {
            Err(EngineError::Load { detail, .. }) => detail,
            Err(other) => panic!("{name}: {other}"),
            Ok(_) => panic!("{name} loaded"),
        }
    };
    let truncated = refused("truncated.gguf", &bytes[..bytes.len() - 1000]);
    assert!(truncated.contains("truncated"), "{truncated}");
    let header_only = refused("header.gguf", &bytes[..64]);
    assert!(header_only.contains("not a valid GGUF"), "{header_only}");
    let mut not_gguf = bytes.clone();
    not_gguf[..4].copy_from_slice(b"GGML");
    assert!(refused("magic.gguf", &not_gguf).contains("does not start with GGUF"));
    // A code 3 inside an I2_S tensor: no ternary value packs to it.
    let last_code = bytes.len() - 40;
    let mut bad_code = bytes.clone();
    bad_code[last_code] = 0xFF;
    let detail = refused("code.gguf", &bad_code);
    assert!(detail.contains("code 3"), "{detail}");
    // A llama GGUF is not a BitNet one.
    let llama = common::models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    match load(&llama) {
        Err(EngineError::Load { detail, .. }) => {
            assert!(
                detail.contains("not a BitNet b1.58 GGUF (architecture `llama`)"),
                "{detail}"
            )
        }
        other => panic!("a llama GGUF: {:?}", other.err()),
    }
}

/// `quantlab serve` with a models file whose BitNet entry names an I2_S GGUF: listed as
/// available and streaming a reply labelled with the engine that ran it.
#[tokio::test]
async fn the_binary_serves_a_bitnet_gguf_over_the_chat_api() {
    let dir = tempfile::tempdir().unwrap();
    tiny::write_gguf(
        &dir.path().join("tiny-i2_s.gguf"),
        &Master::random(23),
        GgufForm::I2s,
    );
    let models_file = dir.path().join("models.toml");
    std::fs::write(
        &models_file,
        r#"default = "tiny-bitnet-gguf"

[[models]]
id = "tiny-bitnet-gguf"
name = "Tiny BitNet (I2_S GGUF)"
family = "BitNet b1.58"
parameters = "1M"
quantization = "I2_S"
bits_per_weight = 2.0
context_length = 256
engine = "bitnet"
instruct = true
license = "MIT"
description = "Written by the test."
file = "tiny-i2_s.gguf"
"#,
    )
    .unwrap();
    let mut command = common::binary::command();
    command
        .env("QUANTLAB_MODELS_DIR", dir.path())
        .env("QUANTLAB_MODELS_FILE", &models_file);
    let mut server =
        common::binary::Binary::serve(command, &["--threads", "2", "--context", "256"]);
    server.wait_ready().await;
    let models: serde_json::Value = reqwest::get(format!("{}/api/models", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models[0]["available"], true, "{models}");
    let (_, metrics) = common::chat_reply(&server.url, None, "Hello", 8).await;
    assert_eq!(metrics["engine"], "bitnet", "{metrics}");
    assert!(
        metrics["generated_tokens"].as_u64().unwrap_or(0) > 0,
        "{metrics}"
    );
}
