//! One contract, every engine: llama.cpp and candle on the default model's file, BitNet on a
//! tiny checkpoint written here, and the remote engine relaying to a Quantlab on loopback.
//! Each must: repeat itself under greedy decoding and under a fixed seed (and vary with the
//! seed), stop within one token of being asked, end at `max_tokens` with `length`, refuse a
//! prompt longer than its context before computing anything, and stream whole characters.

#![cfg(feature = "ssr")]

mod common;

use common::sampling;

use std::ops::ControlFlow;

use common::tiny_bitnet::{self as tiny, Form, Master};
use quantlab::{
    inference::{
        bitnet::{head::HeadPrecision, BitnetEngine},
        candle::CandleEngine,
        llama_cpp::LlamaCppEngine,
        remote::RemoteEngine,
        template::PromptFormat,
        ChatEngine, EngineError, GenerationStats, ResolvedSampling, TokenSink, UpstreamFailure,
    },
    registry::RemoteSource,
    types::{ChatMessage, FinishReason, Role},
};

/// Context of the local engines: small, so the too-long prompt is cheap to build.
const CONTEXT: u32 = 512;

/// Collects pieces (and log-probabilities); stops when asked to after `stop_after` pieces.
#[derive(Default)]
struct Sink {
    pieces: Vec<String>,
    logprobs: Vec<quantlab::types::TokenLogprob>,
    stop_after: Option<usize>,
    /// Pieces that arrived after the stop was requested.
    late: usize,
}

impl TokenSink for Sink {
    fn cancelled(&mut self) -> bool {
        self.stop_after.is_some_and(|n| self.pieces.len() >= n)
    }

    fn piece(&mut self, text: &str) -> ControlFlow<()> {
        if self.cancelled() {
            self.late += 1;
        }
        self.pieces.push(text.to_string());
        if self.cancelled() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn logprob(&mut self, entry: quantlab::types::TokenLogprob) {
        self.logprobs.push(entry);
    }
}

/// What a contract run needs besides the engine.
struct Subject<'a> {
    name: &'static str,
    engine: &'a mut dyn ChatEngine,
    /// The engine's tokens are text of a trained model (not random bytes): its replies to a
    /// prompt asking for non-ASCII text must be clean UTF-8 with no replacement characters.
    trained: bool,
}

fn user(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage {
        role: Role::User,
        content: text.into(),
    }]
}

/// A reply as the worker produces it: the engine's own message handling (remote), or the
/// model's chat template and `generate`.
fn reply(
    engine: &mut dyn ChatEngine,
    messages: &[ChatMessage],
    sampling: &ResolvedSampling,
    sink: &mut Sink,
) -> Result<GenerationStats, EngineError> {
    if let Some(outcome) = engine.generate_messages(messages, sampling, sink) {
        return outcome;
    }
    let facts = engine.facts();
    let format = match &facts.chat_template {
        Some(template) => PromptFormat::Chat {
            template: template.clone(),
            bos_token: facts.bos_token.clone(),
            eos_token: facts.eos_token.clone(),
        },
        None => PromptFormat::Completion,
    };
    let prompt = format.render(messages)?;
    engine.generate(&prompt, sampling, sink)
}

fn text(
    engine: &mut dyn ChatEngine,
    prompt: &str,
    sampling: &ResolvedSampling,
) -> (String, GenerationStats) {
    let mut sink = Sink::default();
    let stats = reply(engine, &user(prompt), sampling, &mut sink).expect("a reply");
    (sink.pieces.concat(), stats)
}

fn run_contract(subject: Subject<'_>) {
    let Subject {
        name,
        engine,
        trained,
    } = subject;
    let story = "Tell me a long story about a dragon who learns to bake bread.";

    // Greedy decoding repeats itself.
    let greedy = sampling(0.0, 1, 16);
    let (first, stats) = text(engine, story, &greedy);
    assert!(!first.is_empty(), "{name}: an empty greedy reply");
    assert_eq!(
        text(engine, story, &greedy).0,
        first,
        "{name}: greedy is not repeatable"
    );
    assert!(stats.prompt_tokens > 0, "{name}: no prompt tokens counted");

    // A seed fixes a sampled reply; other seeds change it.
    let seeded = |seed| sampling(1.0, seed, 16);
    let with_7 = text(engine, story, &seeded(7)).0;
    assert_eq!(
        text(engine, story, &seeded(7)).0,
        with_7,
        "{name}: seed 7 twice differs"
    );
    let others: Vec<String> = (8..12)
        .map(|seed| text(engine, story, &seeded(seed)).0)
        .collect();
    assert!(
        others.iter().any(|t| *t != with_7),
        "{name}: seeds change nothing"
    );

    // max_tokens ends the reply with `length`, at exactly that many tokens.
    let (_, stats) = text(engine, story, &sampling(0.0, 1, 5));
    assert_eq!(
        stats.finish_reason,
        Some(FinishReason::Length),
        "{name}: {stats:?}"
    );
    assert_eq!(stats.generated_tokens, 5, "{name}: {stats:?}");

    // Stop within one token: after the third piece nothing more arrives.
    let mut sink = Sink {
        stop_after: Some(3),
        ..Sink::default()
    };
    let stats = reply(engine, &user(story), &sampling(0.0, 1, 64), &mut sink).expect("a reply");
    assert_eq!(
        stats.finish_reason,
        Some(FinishReason::Cancelled),
        "{name}: {stats:?}"
    );
    assert_eq!(
        sink.pieces.len(),
        3,
        "{name}: pieces after Stop: {:?}",
        sink.pieces
    );
    assert_eq!(sink.late, 0, "{name}");
    // And the engine is ready for the next reply, unharmed.
    assert_eq!(
        text(engine, story, &greedy).0,
        first,
        "{name}: changed after a Stop"
    );

    // A prompt longer than the context is refused before any piece is produced.
    let long = "word ".repeat(3000);
    let mut sink = Sink::default();
    match reply(engine, &user(&long), &greedy, &mut sink) {
        Err(EngineError::PromptTooLong {
            prompt_tokens,
            context,
        }) => {
            assert!(
                prompt_tokens > context,
                "{name}: {prompt_tokens} <= {context}"
            )
        }
        // The remote server refuses it itself; it is relayed as a refusal, not a failure.
        Err(EngineError::Upstream {
            failure: UpstreamFailure::Refused,
            message,
        }) => assert!(message.contains("tokens"), "{name}: {message}"),
        other => panic!("{name}: a too-long prompt gave {other:?}"),
    }
    assert!(
        sink.pieces.is_empty(),
        "{name}: pieces for a refused prompt"
    );

    // Whole characters: pieces are never empty, and emoji — several byte-level tokens each —
    // stream whole, never as replacement characters. (The last one may be cut by max_tokens:
    // its unfinished bytes end the reply as one U+FFFD.)
    let mut sink = Sink::default();
    let ask = "Reply with an emoji that shows happiness.";
    reply(engine, &user(ask), &sampling(0.0, 1, 40), &mut sink).expect("a reply");
    assert!(
        sink.pieces.iter().all(|p| !p.is_empty()),
        "{name}: an empty piece"
    );
    let said = sink.pieces.concat();
    if trained {
        let emoji = said.chars().filter(|c| u32::from(*c) >= 0x1F000).count();
        assert!(emoji >= 2, "{name}: no emoji to check in {said:?}");
        let body = said.trim_end_matches('\u{FFFD}');
        assert!(
            !body.contains('\u{FFFD}'),
            "{name}: a split character in {said:?}"
        );
    }
    // Log-probabilities (local engines; a remote server's are its own business): one entry per
    // generated token, whose bytes spell the reply, and under greedy decoding the likeliest
    // alternative is the token chosen.
    if name != "remote" {
        let mut sink = Sink::default();
        let asked = ResolvedSampling {
            logprobs: Some(3),
            ..sampling(0.0, 1, 8)
        };
        let stats = reply(engine, &user(story), &asked, &mut sink).expect("a reply");
        assert_eq!(
            sink.logprobs.len(),
            stats.generated_tokens,
            "{name}: {stats:?}"
        );
        let bytes: Vec<u8> = sink.logprobs.iter().flat_map(|t| t.bytes.clone()).collect();
        if trained {
            assert_eq!(
                String::from_utf8_lossy(&bytes),
                sink.pieces.concat(),
                "{name}"
            );
        }
        for entry in &sink.logprobs {
            assert!(entry.logprob <= 0.0, "{name}: {entry:?}");
            assert_eq!(entry.top_logprobs.len(), 3, "{name}: {entry:?}");
            assert_eq!(
                entry.top_logprobs[0].bytes, entry.bytes,
                "{name}: {entry:?}"
            );
        }
    }
    eprintln!("{name}: contract holds");
}

#[test]
fn llama_cpp_keeps_the_contract() {
    let path = common::models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut engine = LlamaCppEngine::load(&path, CONTEXT, 2).expect("the default model loads");
    run_contract(Subject {
        name: "llama.cpp",
        engine: &mut engine,
        trained: true,
    });
}

#[test]
fn llama_cpp_with_batch_slots_keeps_the_contract() {
    let path = common::models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut engine =
        LlamaCppEngine::load_with_slots(&path, CONTEXT, 2, 4).expect("the default model loads");
    run_contract(Subject {
        name: "llama.cpp, 4 slots",
        engine: &mut engine,
        trained: true,
    });
}

#[test]
fn candle_keeps_the_contract() {
    let path = common::models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut engine = CandleEngine::load(&path, CONTEXT, 2).expect("the default model loads");
    run_contract(Subject {
        name: "candle",
        engine: &mut engine,
        trained: true,
    });
}

#[test]
fn bitnet_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    tiny::write(&dir.path().join("tiny"), &Master::random(5), Form::Packed);
    let mut engine =
        BitnetEngine::load(&dir.path().join("tiny"), 256, 2, HeadPrecision::Int8).expect("loads");
    run_contract(Subject {
        name: "bitnet",
        engine: &mut engine,
        // Random weights: its bytes need not form valid UTF-8 at all.
        trained: false,
    });
}

#[test]
fn remote_keeps_the_contract() {
    let (url, _) = common::spawn_server(quantlab::config::Settings {
        context_size: CONTEXT,
        ..common::settings()
    });
    let source = RemoteSource {
        base_url: format!("{url}/v1"),
        model: common::MODEL.into(),
        api_key_env: None,
        timeout_secs: 60,
    };
    let mut engine = RemoteEngine::load(&source, CONTEXT).expect("the loopback server answers");
    run_contract(Subject {
        name: "remote",
        engine: &mut engine,
        trained: true,
    });
}
