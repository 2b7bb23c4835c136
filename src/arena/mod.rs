//! The arena: two anonymous models answer one prompt, a person votes, and the votes become a
//! leaderboard. What a battle is and what the browser sees of it (shared with the browser), the
//! ratings ([`rating`]), and on the server the run that keeps the models hidden until the vote
//! ([`battle`]).

#[cfg(feature = "ssr")]
pub mod battle;
pub mod rating;

use serde::{Deserialize, Serialize};

use crate::types::{GenerationMetrics, PersistenceStatus, SamplingParams};

/// Longest arena prompt (characters): one question, not a document.
pub const MAX_PROMPT_CHARS: usize = 8_000;

/// The person's verdict on a battle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Side A answered better.
    A,
    /// Side B answered better.
    B,
    /// Both equally good.
    Tie,
    /// Both bad: counted as a tie between them, as LMSYS's arena does.
    Bad,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::A => "a",
            Verdict::B => "b",
            Verdict::Tie => "tie",
            Verdict::Bad => "bad",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "a" => Some(Verdict::A),
            "b" => Some(Verdict::B),
            "tie" => Some(Verdict::Tie),
            "bad" => Some(Verdict::Bad),
            _ => None,
        }
    }
}

/// One model's side of a battle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BattleSide {
    pub model: String,
    /// The model's display name when the battle ran.
    pub name: String,
    pub reply: String,
    pub metrics: GenerationMetrics,
}

/// A finished battle: both replies complete, stored so it can be voted on once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Battle {
    pub id: String,
    pub created_at_ms: i64,
    pub prompt: String,
    /// The settings both models ran with (the seed included: one seed for both sides).
    pub sampling: SamplingParams,
    pub a: BattleSide,
    pub b: BattleSide,
    #[serde(default)]
    pub verdict: Option<Verdict>,
    #[serde(default)]
    pub voted_at_ms: Option<i64>,
}

impl Battle {
    /// What may be shown before the vote: the prompt and the replies, no names, no metrics
    /// (a speed or an engine would give the model away).
    pub fn blind(&self) -> BlindBattle {
        BlindBattle {
            id: self.id.clone(),
            prompt: self.prompt.clone(),
            a: self.a.reply.clone(),
            b: self.b.reply.clone(),
            voted: self.verdict.is_some(),
        }
    }
}

/// A battle as shown before its vote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlindBattle {
    pub id: String,
    pub prompt: String,
    pub a: String,
    pub b: String,
    pub voted: bool,
}

/// What starts a battle (`POST /api/arena/battles`, or `{"start": …}` on `/ws/arena`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BattleRequest {
    pub prompt: String,
    /// The models to pit against each other: two, or one and a random opponent, or none for two
    /// at random among the available chat models. The sides are shuffled either way, so A is
    /// not always the first named.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub sampling: SamplingParams,
}

/// The body of `POST /api/arena/battles/{id}/vote`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoteRequest {
    pub winner: Verdict,
}

/// Which side an event belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    A,
    B,
}

/// What a running battle tells the browser: text, never names or speeds, until the vote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ArenaEvent {
    /// The battle has an id and two sides.
    Started {
        id: String,
    },
    /// A side waits behind other requests or for its model to load.
    Waiting {
        side: Side,
        ahead: usize,
        loading: bool,
    },
    Token {
        side: Side,
        text: String,
    },
    /// A side's reply is complete.
    SideDone {
        side: Side,
    },
    /// Both replies are complete and stored: the battle can be voted on.
    Ready {
        id: String,
    },
    /// The battle did not finish (a side failed or was stopped) and was not stored.
    Abandoned {
        status: u16,
        message: String,
    },
}

/// One model's line on the leaderboard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaderboardRow {
    pub rank: usize,
    pub model: String,
    pub name: String,
    /// Bradley-Terry strength on the Elo scale (400 points = 10:1 odds), 1000 = the reference.
    pub rating: f64,
    /// The 2.5th and 97.5th percentiles of the rating over bootstrap resamples of the votes.
    pub ci_low: f64,
    pub ci_high: f64,
    pub battles: u32,
    pub wins: u32,
    pub losses: u32,
    pub ties: u32,
    pub speed: Option<MeasuredSpeed>,
}

/// How fast a model ran on this machine, and where the figure comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeasuredSpeed {
    pub decode_tok_s: f64,
    pub resident_bytes: Option<u64>,
    /// `bench` (the newest benchmark run, the model alone on the machine) or `battles` (the
    /// median over this model's battles, where it shared the CPU with its opponent).
    pub source: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Leaderboard {
    pub rows: Vec<LeaderboardRow>,
    /// Voted battles counted.
    pub votes: u32,
    /// Battles stored but not (yet) voted on.
    pub unvoted: u32,
    pub bootstrap_rounds: u32,
    /// Where the votes come from right now (PostgreSQL, or the JSON folder while it is away).
    pub persistence: PersistenceStatus,
}
