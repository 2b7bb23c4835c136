//! Continuous batching and prompt-cache reuse on the llama.cpp engine, driven as the worker
//! drives it (`Batch` over `BatchEngine`): a reply is the same text alone or in company, the
//! same with or without a reused prefix, a later turn evaluates only its new tokens, and a long
//! prompt joining a running batch does not hold the others' tokens back for its whole length.

#![cfg(feature = "ssr")]

mod common;

use common::sampling;

use std::{cell::RefCell, ops::ControlFlow, rc::Rc};

use quantlab::{
    inference::{
        batch::{Batch, BatchEngine},
        llama_cpp::LlamaCppEngine,
        ChatEngine, GenerationStats, ResolvedSampling, TokenSink,
    },
    types::Role,
};

const CONTEXT: u32 = 1024;

/// A reply's text, with its place in the request list.
struct Indexed(usize, Collect);

impl TokenSink for Indexed {
    fn cancelled(&mut self) -> bool {
        self.1.cancelled()
    }
    fn piece(&mut self, text: &str) -> ControlFlow<()> {
        self.1.piece(text)
    }
}

#[derive(Default)]
struct Collect {
    text: String,
    pieces: usize,
}

impl TokenSink for Collect {
    fn cancelled(&mut self) -> bool {
        false
    }
    fn piece(&mut self, text: &str) -> ControlFlow<()> {
        self.text.push_str(text);
        self.pieces += 1;
        ControlFlow::Continue(())
    }
}

fn engine(slots: usize) -> LlamaCppEngine {
    let path = common::models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    LlamaCppEngine::load_with_slots(&path, CONTEXT, 2, slots).expect("the default model loads")
}

/// Runs every prompt together (all admitted at once) and returns texts and stats in order.
fn together(
    engine: &mut LlamaCppEngine,
    prompts: &[(String, ResolvedSampling)],
) -> Vec<(String, GenerationStats)> {
    let mut batch: Batch<Indexed> = Batch::default();
    for (index, (prompt, sampling)) in prompts.iter().enumerate() {
        assert!(batch
            .admit(engine, prompt, sampling, Indexed(index, Collect::default()))
            .is_ok());
    }
    let mut results: Vec<Option<(String, GenerationStats)>> = vec![None; prompts.len()];
    while !batch.is_empty() {
        for done in batch.step(engine) {
            let Indexed(index, sink) = done.sink;
            results[index] = Some((sink.text, done.outcome.expect("a reply")));
        }
    }
    results.into_iter().map(|r| r.expect("finished")).collect()
}

fn alone(
    engine: &mut LlamaCppEngine,
    prompt: &str,
    s: &ResolvedSampling,
) -> (String, GenerationStats) {
    let mut sink = Collect::default();
    let stats = engine.generate(prompt, s, &mut sink).expect("a reply");
    (sink.text, stats)
}

#[test]
fn a_reply_is_the_same_text_alone_and_in_company() {
    let mut engine = engine(4);
    let questions = [
        "What is the capital of France?",
        "Name three colours.",
        "Write a haiku about rain.",
        "Count from one to five.",
    ];
    let prompts: Vec<(String, ResolvedSampling)> = questions
        .iter()
        .enumerate()
        .map(|(i, q)| {
            // Greedy for two, seeded sampling for the other two.
            let s = if i % 2 == 0 {
                sampling(0.0, 1, 40)
            } else {
                sampling(0.8, 7 + i as u32, 40)
            };
            (common::render_chat(engine.facts(), &[(Role::User, q)]), s)
        })
        .collect();
    let company = together(&mut engine, &prompts);
    let mut fresh = self::engine(1);
    for ((prompt, s), (text, stats)) in prompts.iter().zip(&company) {
        let (solo, _) = alone(&mut fresh, prompt, s);
        assert!(!text.is_empty());
        assert_eq!(text, &solo, "in company vs alone for {prompt:?}");
        assert_eq!(stats.batch_peers, 3, "all four decoded together");
    }
}

#[test]
fn a_later_turn_reuses_the_earlier_ones_and_answers_the_same() {
    let mut cached = engine(2);
    let greedy = sampling(0.0, 1, 32);
    let first = common::render_chat(
        cached.facts(),
        &[(Role::User, "What is the capital of France?")],
    );
    let (answer, stats) = alone(&mut cached, &first, &greedy);
    assert_eq!(stats.cached_prompt_tokens, 0);
    let second_turn = [
        (Role::User, "What is the capital of France?"),
        (Role::Assistant, answer.as_str()),
        (Role::User, "And of Italy?"),
    ];
    let second = common::render_chat(cached.facts(), &second_turn);
    let (reused, stats) = alone(&mut cached, &second, &greedy);
    assert!(
        stats.cached_prompt_tokens + 20 >= stats.prompt_tokens && stats.cached_prompt_tokens > 10,
        "only the new turn is evaluated: {} of {} cached",
        stats.cached_prompt_tokens,
        stats.prompt_tokens
    );
    // The same conversation on an engine that never saw it: identical answer.
    let (fresh, stats) = alone(&mut engine(1), &second, &greedy);
    assert_eq!(stats.cached_prompt_tokens, 0);
    assert_eq!(reused, fresh);
    // A prompt repeated exactly still evaluates its last token (the first reply token needs
    // its logits) and gives the same answer.
    let (again, stats) = alone(&mut cached, &second, &greedy);
    assert_eq!(stats.cached_prompt_tokens, stats.prompt_tokens - 1);
    assert_eq!(again, fresh);
}

#[test]
fn the_slot_sharing_the_longest_prefix_is_reused() {
    let mut engine = engine(2);
    let greedy = sampling(0.0, 1, 8);
    let system = "You are a terse assistant who answers with one word. ".repeat(8);
    let a = common::render_chat(
        engine.facts(),
        &[(Role::System, &system), (Role::User, "Capital of Spain?")],
    );
    let b = common::render_chat(engine.facts(), &[(Role::User, "Name a fruit.")]);
    // Two slots now hold different prompts.
    together(&mut engine, &[(a, greedy.clone()), (b, greedy.clone())]);
    // A new question under the same long system prompt finds it cached.
    let c = common::render_chat(
        engine.facts(),
        &[(Role::System, &system), (Role::User, "Capital of Peru?")],
    );
    let (_, stats) = alone(&mut engine, &c, &greedy);
    assert!(
        stats.cached_prompt_tokens > 80,
        "the system prompt was reused: {} of {}",
        stats.cached_prompt_tokens,
        stats.prompt_tokens
    );
}

/// Logs which reply each piece belongs to, in the order the pieces came.
struct Logged {
    reply: usize,
    log: Rc<RefCell<Vec<usize>>>,
}

impl TokenSink for Logged {
    fn cancelled(&mut self) -> bool {
        false
    }
    fn piece(&mut self, _: &str) -> ControlFlow<()> {
        self.log.borrow_mut().push(self.reply);
        ControlFlow::Continue(())
    }
}

#[test]
fn a_long_prompt_joins_in_chunks_while_the_others_keep_decoding() {
    let mut engine = engine(2);
    let log = Rc::new(RefCell::new(Vec::new()));
    let sink = |reply| Logged {
        reply,
        log: log.clone(),
    };
    let mut batch: Batch<Logged> = Batch::default();
    let story = common::render_chat(
        engine.facts(),
        &[(Role::User, "Tell me a long story about a cat.")],
    );
    let s = sampling(0.0, 1, 300);
    assert!(batch.admit(&mut engine, &story, &s, sink(0)).is_ok());
    while log.borrow().is_empty() {
        assert!(batch.step(&mut engine).is_empty());
    }
    let long_text = "The quick brown fox jumps over the lazy dog. ".repeat(60);
    let long = common::render_chat(engine.facts(), &[(Role::User, &long_text)]);
    let before = log.borrow().len();
    assert!(batch
        .admit(&mut engine, &long, &sampling(0.0, 1, 4), sink(1))
        .is_ok());
    let mut long_stats = None;
    while long_stats.is_none() {
        for done in batch.step(&mut engine) {
            if done.sink.reply == 1 {
                long_stats = Some(done.outcome.expect("a reply"));
            }
        }
    }
    let long_stats = long_stats.expect("finished");
    assert!(
        long_stats.prompt_tokens > 500,
        "{}",
        long_stats.prompt_tokens
    );
    // While the long prompt was read (in chunks), the story kept streaming.
    let log = log.borrow();
    let first_of_long = before + log[before..].iter().position(|&r| r == 1).expect("reply 1");
    let story_pieces_meanwhile = log[before..first_of_long].len();
    assert!(
        story_pieces_meanwhile >= 3,
        "the running reply got {story_pieces_meanwhile} pieces while {} prompt tokens were read",
        long_stats.prompt_tokens
    );
    assert_eq!(long_stats.batch_peers, 1);
}

#[test]
fn every_slot_busy_refuses_a_new_prompt_with_a_reason() {
    let mut engine = engine(1);
    let prompt = common::render_chat(engine.facts(), &[(Role::User, "Hi")]);
    let s = sampling(0.0, 1, 8);
    engine.admit(&prompt, &s).expect("the only slot");
    let refused = engine.admit(&prompt, &s).expect_err("no slot left");
    assert!(refused.to_string().contains("busy"), "{refused}");
}
