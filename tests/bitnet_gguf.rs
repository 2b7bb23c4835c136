//! bitnet.cpp's own GGUF (`ggml-model-i2_s.gguf`): I2_S ternary projections with their per-tensor
//! scale, the configuration, tokenizer and chat template from the metadata. Tiny files written
//! by the test in that exact layout load to the same logits, bit for bit, as the same weights
//! from safetensors, generate the same text through the chat template, and damaged files are
//! refused with a reason. bitnet.cpp's 2026 files with a Q6_K embedding are read as stored.

mod common;

use common::tiny_bitnet::{self as tiny, Activation, Cache, Form, GgufForm, Master};
use quantlab::bench::divergence::Divergence;
use quantlab::inference::{
    bitnet::{checkpoint::CheckpointKind, head::HeadPrecision, q6k, BitnetEngine},
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
/// llama.cpp's own dequantization of Q6_K blocks, through the library the engine links.
fn ggml_dequantize(blocks: &[u8], values: usize) -> Vec<f32> {
    let mut out = vec![0f32; values];
    // SAFETY: the traits of a built-in type are static; `blocks` holds `values / 256` blocks.
    unsafe {
        let traits = llama_cpp_sys_2::ggml_get_type_traits(llama_cpp_sys_2::GGML_TYPE_Q6_K);
        let to_float = (*traits).to_float.expect("Q6_K has a dequantizer");
        to_float(blocks.as_ptr().cast(), out.as_mut_ptr(), values as i64);
    }
    out
}

/// The Q6_K blocks llama.cpp's quantizer makes of a master's embedding.
fn q6k_embedding(master: &Master) -> Vec<u8> {
    q6k::quantize_rows(master.get("model.embed_tokens.weight"), master.dims.hidden).unwrap()
}

/// bitnet.cpp's 2026 files hold the token embedding (the tied head) as Q6_K
/// (`llama-quantize --token-embedding-type Q6_K`). Such a file loads with its blocks as stored,
/// whatever head was asked for (widening them restores nothing, quantizing them again only
/// adds error), its metrics line says so, and the engine follows the reference forward pass run
/// on the embedding as llama.cpp itself dequantizes those blocks.
#[test]
fn a_q6_k_embedding_runs_as_stored_and_as_llama_cpp_reads_it() {
    let master = Master::random_with(31, tiny::WIDE);
    let blocks = q6k_embedding(&master);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ggml-model-i2_s-embed-q6_k.gguf");
    tiny::write_gguf_q6k(&path, &master, GgufForm::I2s, &blocks);
    let tokens = sample_tokens(60);
    let mut runs = Vec::new();
    for asked in [HeadPrecision::Bf16, HeadPrecision::Int8, HeadPrecision::Q6K] {
        let mut engine = BitnetEngine::load(&path, CONTEXT, 2, asked).unwrap();
        assert_eq!(engine.summary().head, HeadPrecision::Q6K, "{asked:?}");
        assert_eq!(engine.summary().embedding_bytes, blocks.len());
        let detail = &engine.facts().detail;
        assert!(detail.contains("q6_k head"), "{detail}");
        runs.push(engine.logits_for(&tokens).unwrap());
    }
    assert!(
        runs.windows(2).all(|w| w[0] == w[1]),
        "one head, whatever was asked"
    );

    let mut as_llama_cpp_reads_it = Master::random_with(31, tiny::WIDE);
    let embedding = ggml_dequantize(&blocks, tiny::VOCAB * tiny::WIDE.hidden);
    for (name, _, values) in &mut as_llama_cpp_reads_it.tensors {
        if name.contains("embed_tokens") {
            *values = embedding.clone();
        }
    }
    let reference = tiny::reference_logits(&as_llama_cpp_reads_it, &tokens, Cache::F16);
    let original = tiny::reference_logits(&master, &tokens, Cache::F16);
    let top = quantlab::inference::sampler::argmax;
    let mut same_top = 0;
    for (position, (ours, expected)) in runs[0].iter().zip(&reference).enumerate() {
        // int8 activations (the ternary layers and the head) against the f32 reference.
        let error = tiny::relative_l2(ours, expected);
        assert!(error < 0.03, "position {position}: {error}");
        same_top += usize::from(top(ours) == top(expected));
        // The Q6_K rounding is real: the dequantized rows are not the master's.
        assert!(tiny::relative_l2(expected, &original[position]) > 0.0);
    }
    assert!(
        same_top * 100 >= 90 * tokens.len(),
        "top-1 agrees at {same_top}/{}",
        tokens.len()
    );
}

/// `output_head = "q6_k"` on a file with a bf16 embedding quantizes it at load with llama.cpp's
/// quantizer: fewer bytes than int8, predictions kept; a hidden size that is not whole 256-value
/// blocks is refused with the reason.
#[test]
fn a_q6_k_head_asked_for_is_quantized_at_load_or_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let wide = dir.path().join("wide.gguf");
    tiny::write_gguf(&wide, &Master::random_with(33, tiny::WIDE), GgufForm::I2s);
    let mut bf16 = BitnetEngine::load(&wide, CONTEXT, 2, HeadPrecision::Bf16).unwrap();
    let mut int8 = BitnetEngine::load(&wide, CONTEXT, 2, HeadPrecision::Int8).unwrap();
    let mut q6k = BitnetEngine::load(&wide, CONTEXT, 2, HeadPrecision::Q6K).unwrap();
    assert_eq!(q6k.summary().head, HeadPrecision::Q6K);
    assert!(q6k.summary().embedding_bytes < int8.summary().embedding_bytes);
    assert_eq!(
        q6k.summary().embedding_bytes,
        tiny::VOCAB * tiny::WIDE.hidden / 256 * 210
    );
    let tokens = sample_tokens(120);
    let reference = bf16.logits_for(&tokens).unwrap();
    let mut drift = Divergence::default();
    let mut int8_drift = Divergence::default();
    for ((p, q), r) in reference
        .iter()
        .zip(&q6k.logits_for(&tokens).unwrap())
        .zip(&int8.logits_for(&tokens).unwrap())
    {
        drift.add(p, q);
        int8_drift.add(p, r);
    }
    let (drift, int8_drift) = (drift.summary(), int8_drift.summary());
    eprintln!("q6_k head on the tiny checkpoint: {drift:?}; int8: {int8_drift:?}");
    assert!(drift.mean_kl > 0.0 && drift.mean_kl < 5e-3, "{drift:?}");
    assert!(drift.top1_agreement >= 0.9, "{drift:?}");

    let narrow = dir.path().join("narrow.gguf");
    tiny::write_gguf(&narrow, &Master::random(33), GgufForm::I2s);
    let Err(error) = BitnetEngine::load(&narrow, CONTEXT, 2, HeadPrecision::Q6K) else {
        panic!("a 192-column table cannot be Q6_K");
    };
    let message = error.to_string();
    assert!(
        message.contains("q6_k") && message.contains("multiple of 256"),
        "{message}"
    );
}

#[tokio::test]
async fn the_binary_serves_a_bitnet_gguf_over_the_chat_api() {
    let dir = tempfile::tempdir().unwrap();
    tiny::write_gguf(
        &dir.path().join("tiny-i2_s.gguf"),
        &Master::random(23),
        GgufForm::I2s,
    );
    let wide = Master::random_with(23, tiny::WIDE);
    tiny::write_gguf_q6k(
        &dir.path().join("tiny-i2_s-embed-q6_k.gguf"),
        &wide,
        GgufForm::I2s,
        &q6k_embedding(&wide),
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

[[models]]
id = "tiny-bitnet-q6k"
name = "Tiny BitNet (I2_S, Q6_K embedding)"
family = "BitNet b1.58"
parameters = "1M"
quantization = "I2_S"
bits_per_weight = 2.0
context_length = 256
engine = "bitnet"
instruct = true
license = "MIT"
description = "Written by the test, as bitnet.cpp's --token-embedding-type Q6_K writes it."
file = "tiny-i2_s-embed-q6_k.gguf"
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
    // bitnet.cpp's 2026 layout: the reply's metrics name the Q6_K head that ran.
    let (events, metrics) =
        common::chat_reply(&server.url, Some("tiny-bitnet-q6k"), "Hello", 8).await;
    assert_eq!(metrics["model"], "tiny-bitnet-q6k", "{metrics}");
    let detail = metrics["engine_detail"].as_str().unwrap_or_default();
    assert!(detail.contains("q6_k head"), "{metrics}");
    assert!(
        metrics["generated_tokens"].as_u64().unwrap_or(0) > 0 && !events.is_empty(),
        "{metrics}"
    );
}
