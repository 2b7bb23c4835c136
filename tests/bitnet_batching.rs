//! Batched decode on the BitNet engine (issue 17, item 4), on tiny checkpoints the tests write:
//! several sequences share each read of the weights, every token's logits are the same bit for
//! bit alone and in company (on every kernel family this CPU runs), replies are the same text,
//! a later turn reuses its slot's cache, and the built binary serves two BitNet replies at once
//! with `serve --parallel 2`.

#![cfg(feature = "ssr")]

mod common;

use std::path::Path;

use common::{
    binary::{command, Binary},
    client::{open_socket, post_json, read_reply, send_start, start_socket},
    sampling,
    tiny_bitnet::{self as tiny, Form, Master},
    CollectText,
};
use quantlab::inference::{
    batch::Batch,
    bitnet::{head::HeadPrecision, kernels::Isa, model::Model, weights::Weights, BitnetEngine},
    logits::SlotToken,
    ChatEngine, GenerationStats, ResolvedSampling,
};
use quantlab::types::Role;
use serde_json::{json, Value};

const CONTEXT: u32 = 256;

fn write_model(seed: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    tiny::write(
        &dir.path().join("tiny-bitnet"),
        &Master::random(seed),
        Form::Packed,
    );
    dir
}

fn load(dir: &Path, slots: usize) -> BitnetEngine {
    BitnetEngine::load_with_slots(
        &dir.join("tiny-bitnet"),
        CONTEXT,
        2,
        HeadPrecision::Int8,
        slots,
    )
    .expect("the tiny checkpoint loads")
}

/// A reply's text with its place in the request list.
struct Indexed(usize, CollectText);

impl quantlab::inference::TokenSink for Indexed {
    fn cancelled(&mut self) -> bool {
        false
    }
    fn piece(&mut self, text: &str) -> std::ops::ControlFlow<()> {
        self.1.piece(text)
    }
}

/// Runs every prompt together (all admitted at once) as the worker does.
fn together(
    engine: &mut BitnetEngine,
    prompts: &[(String, ResolvedSampling)],
) -> Vec<(String, GenerationStats)> {
    let batch_engine = engine.batch().expect("a BitNet engine has slots");
    let mut batch: Batch<Indexed> = Batch::default();
    for (index, (prompt, s)) in prompts.iter().enumerate() {
        assert!(batch
            .admit(
                batch_engine,
                prompt,
                s,
                Indexed(index, CollectText::default())
            )
            .is_ok());
    }
    let mut results: Vec<Option<(String, GenerationStats)>> = vec![None; prompts.len()];
    while !batch.is_empty() {
        for done in batch.step(batch_engine) {
            let Indexed(index, sink) = done.sink;
            results[index] = Some((sink.0, done.outcome.expect("a reply")));
        }
    }
    results.into_iter().map(|r| r.expect("finished")).collect()
}

fn alone(
    engine: &mut BitnetEngine,
    prompt: &str,
    s: &ResolvedSampling,
) -> (String, GenerationStats) {
    let mut sink = CollectText::default();
    let stats = engine.generate(prompt, s, &mut sink).expect("a reply");
    (sink.0, stats)
}

/// Three sequences decoded in the same passes (one of them joining late, its prompt read in
/// chunks beside the others' decode rows) get exactly the logits each gets alone.
#[test]
fn every_token_has_the_same_logits_alone_and_in_company_on_every_kernel_family() {
    let config = tiny::small_config();
    let sequences: [Vec<u32>; 3] = [
        (1..40).collect(),
        (50..60).chain(std::iter::repeat_n(7, 20)).collect(),
        (100..170).collect(),
    ];
    let mut families = Vec::new();
    for isa in Isa::all_available() {
        families.push(isa.label());
        let alone: Vec<Vec<Vec<f32>>> = sequences
            .iter()
            .map(|tokens| {
                let mut model = Model::new(Weights::random(&config, 5), 256, 2, isa).unwrap();
                tokens
                    .iter()
                    .enumerate()
                    .map(|(position, &t)| model.forward_last(&[t], position).to_vec())
                    .collect()
            })
            .collect();

        let mut model = Model::with_slots(Weights::random(&config, 5), 256, 2, isa, 3).unwrap();
        let vocab = config.vocab_size;
        // Sequence 2 joins at pass 5 and reads its prompt 16 tokens a pass; the others decode
        // one token a pass. Every row is picked, so every token's logits are compared.
        let mut next = [0usize; 3];
        let mut pass = 0;
        while next.iter().zip(&sequences).any(|(n, s)| *n < s.len()) {
            let mut rows = Vec::new();
            for (slot, tokens) in sequences.iter().enumerate() {
                let take = match slot {
                    2 if pass < 5 => 0,
                    2 => 16,
                    _ => 1,
                };
                let end = (next[slot] + take).min(tokens.len());
                rows.extend(tokens[next[slot]..end].iter().zip(next[slot]..).map(
                    |(&token, position)| SlotToken {
                        token,
                        slot,
                        position,
                    },
                ));
            }
            let picks: Vec<usize> = (0..rows.len()).collect();
            let logits = model.forward_slots(&rows, &picks).to_vec();
            for (row, got) in rows.iter().zip(logits.chunks_exact(vocab)) {
                assert!(
                    alone[row.slot][row.position] == got,
                    "{}: slot {} position {} differs in company (pass {pass})",
                    isa.label(),
                    row.slot,
                    row.position
                );
                next[row.slot] = row.position + 1;
            }
            pass += 1;
        }
    }
    println!("kernel families exercised: {}", families.join(", "));
}

#[test]
fn replies_are_the_same_text_alone_and_in_company() {
    let dir = write_model(31);
    let mut engine = load(dir.path(), 3);
    let questions = [
        "What is the capital of France?",
        "Name three colours.",
        "Count to five.",
    ];
    let prompts: Vec<(String, ResolvedSampling)> = questions
        .iter()
        .enumerate()
        .map(|(i, q)| {
            // Greedy for one, seeded sampling for the others.
            let s = if i == 0 {
                sampling(0.0, 1, 24)
            } else {
                sampling(0.9, 40 + i as u32, 24)
            };
            (common::render_chat(engine.facts(), &[(Role::User, q)]), s)
        })
        .collect();
    let company = together(&mut engine, &prompts);
    let mut fresh = load(dir.path(), 1);
    for ((prompt, s), (text, stats)) in prompts.iter().zip(&company) {
        let (solo, solo_stats) = alone(&mut fresh, prompt, s);
        assert!(stats.generated_tokens > 0);
        assert_eq!(text, &solo, "in company vs alone for {prompt:?}");
        assert_eq!(stats.generated_tokens, solo_stats.generated_tokens);
        assert_eq!(stats.batch_peers, 2, "all three decoded together");
        assert_eq!(solo_stats.batch_peers, 0);
    }
}

#[test]
fn a_later_turn_reuses_its_slot_and_answers_as_a_fresh_engine() {
    let dir = write_model(32);
    let mut cached = load(dir.path(), 2);
    let greedy = sampling(0.0, 1, 16);
    let first = common::render_chat(
        cached.facts(),
        &[(Role::User, "What is the capital of France?")],
    );
    let (answer, stats) = alone(&mut cached, &first, &greedy);
    assert_eq!(stats.cached_prompt_tokens, 0);
    let turns = [
        (Role::User, "What is the capital of France?"),
        (Role::Assistant, answer.as_str()),
        (Role::User, "And of Italy?"),
    ];
    let second = common::render_chat(cached.facts(), &turns);
    let (reused, stats) = alone(&mut cached, &second, &greedy);
    let first_tokens = cached.tokenize_prompt(&first).unwrap().len();
    assert!(
        stats.cached_prompt_tokens >= first_tokens,
        "the first turn's prompt was reused: {} of {} cached",
        stats.cached_prompt_tokens,
        stats.prompt_tokens
    );
    let (fresh, stats) = alone(&mut load(dir.path(), 1), &second, &greedy);
    assert_eq!(stats.cached_prompt_tokens, 0);
    assert_eq!(reused, fresh, "reuse never changes an answer");
    // Scoring writes slot 0's cache: the next reply must not reuse what it overwrote.
    cached
        .score(
            "Some plain text to score, long enough for a window or two.",
            quantlab::inference::score::ScoreWindow {
                tokens: 32,
                max_text_tokens: 0,
            },
            &mut |_| {},
            &mut || false,
        )
        .unwrap();
    let (after_score, stats) = alone(&mut cached, &second, &greedy);
    assert_eq!(
        stats.cached_prompt_tokens, 0,
        "scoring invalidated the cached turn"
    );
    assert_eq!(after_score, fresh);
}

// --- through the built binary ---------------------------------------------------------------

fn chat_request(prompt: &str) -> Value {
    json!({
        "model": "tiny-bitnet",
        "messages": [{ "role": "user", "content": prompt }],
        "sampling": { "temperature": 0.0, "repeat_penalty": 1.0, "max_tokens": 48, "seed": 1 },
    })
}

/// `quantlab` with the tiny model of `dir` as its only model.
fn command_for(dir: &Path) -> std::process::Command {
    let registry = dir.join("models.toml");
    std::fs::write(&registry, tiny::REGISTRY).unwrap();
    let mut cmd = command();
    cmd.env("QUANTLAB_MODELS_DIR", dir)
        .arg("--models-file")
        .arg(&registry)
        .arg("--conversations-dir")
        .arg(dir.join("conversations"));
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_binary_serves_two_bitnet_replies_together_each_as_alone() {
    let dir = write_model(33);
    let cmd = command_for(dir.path());
    let mut server = Binary::serve(cmd, &["--parallel", "2", "--threads", "2"]);
    server.wait_ready().await;
    // Byte-level tokens: the prompts are long enough that both are still being decoded when
    // the other starts.
    let prompts = [
        "Tell me about the sea and its tides.",
        "Write a line about mountains.",
    ];
    // Both sockets are open before either request is sent: the second request must not wait
    // a handshake, in which the tiny model can finish the first reply.
    let mut first = open_socket(&server.url, "/ws/chat").await;
    let mut second = open_socket(&server.url, "/ws/chat").await;
    send_start(&mut first, chat_request(prompts[0])).await;
    send_start(&mut second, chat_request(prompts[1])).await;
    let (a, b) = tokio::join!(read_reply(first), read_reply(second));
    for (reply, m) in [(&a, &a.metrics), (&b, &b.metrics)] {
        assert!(!reply.text.is_empty(), "{m}");
        assert_eq!(m["engine"], "bitnet", "{m}");
        assert_eq!(m["batch_peers"], 1, "the two replies shared passes: {m}");
    }
    assert!(
        a.first_token < b.done && b.first_token < a.done,
        "the replies ran one after the other"
    );

    // Alone, with the prompt already in a slot: the same text, the prompt read from cache.
    for (prompt, together) in prompts.iter().zip([&a, &b]) {
        let socket = start_socket(&server.url, "/ws/chat", chat_request(prompt)).await;
        let solo = read_reply(socket).await;
        assert_eq!(solo.text, together.text, "{prompt}");
        assert_eq!(solo.metrics["batch_peers"], 0);
        let prompt_tokens = solo.metrics["prompt_tokens"].as_u64().unwrap();
        assert_eq!(
            solo.metrics["cached_prompt_tokens"].as_u64().unwrap(),
            prompt_tokens - 1,
            "{}",
            solo.metrics
        );
    }

    // The OpenAI API reports the reuse as `cached_tokens`.
    let body = json!({
        "model": "tiny-bitnet", "messages": [{ "role": "user", "content": prompts[0] }],
        "temperature": 0.0, "max_tokens": 8, "repeat_penalty": 1.0,
    });
    let answer = post_json(&format!("{}/v1/chat/completions", server.url), &body).await;
    let usage = &answer["usage"];
    assert!(
        usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{answer}"
    );
}

/// A model that cannot load is reported with its reason on the OpenAI API, not as "loading"
/// to a client that would retry forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_api_says_why_a_model_cannot_load() {
    let dir = write_model(34);
    std::fs::remove_file(dir.path().join("tiny-bitnet/tokenizer.json")).unwrap();
    let cmd = command_for(dir.path());
    let mut server = Binary::serve(cmd, &["--lazy", "--threads", "2"]);
    server.wait_listening().await;
    let body = json!({
        "model": "tiny-bitnet", "messages": [{ "role": "user", "content": "Hello" }],
        "max_tokens": 4,
    });
    let url = format!("{}/v1/chat/completions", server.url);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, answer) = common::client::post_with_status(&url, &body).await;
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(status, 503, "{answer}");
        if answer["error"]["type"] == "model_loading" {
            assert!(
                std::time::Instant::now() < deadline,
                "still loading: {answer}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            continue;
        }
        assert!(message.contains("tokenizer.json"), "{answer}");
        break;
    }
}
