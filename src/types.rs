//! Data shared by the server and the browser: what the UI shows and what the APIs speak.

use serde::{Deserialize, Serialize};

/// Who wrote a chat message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// Sampling settings for one request. `None` means "use the default".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 means greedy decoding.
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub repeat_penalty: Option<f32>,
    pub max_tokens: Option<u32>,
    pub seed: Option<u64>,
    /// Reuse the cached prompt prefix (default true), as llama-server's `cache_prompt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_prompt: Option<bool>,
    /// Never end at an end-of-turn token, so the reply runs to `max_tokens` (llama-server's
    /// `ignore_eos`: replies of a known length, for measurements).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_eos: Option<bool>,
    /// Constrains the reply to JSON, or to JSON matching a schema (OpenAI's `response_format`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// The reply ends before the first of these texts (OpenAI's `stop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    /// Report each generated token's log-probability with this many likeliest alternatives
    /// (0–20; OpenAI's `logprobs: true` with `top_logprobs`). Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u8>,
}

/// The shape a reply must take, as OpenAI's `response_format` says it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text (the default).
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON valid under `json_schema.schema`.
    JsonSchema { json_schema: JsonSchemaFormat },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub schema: Option<serde_json::Value>,
    #[serde(default)]
    pub strict: Option<bool>,
}

/// What the browser sends to start a reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub sampling: SamplingParams,
    /// Save the last (user) message and the reply to this conversation.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Where the saved question goes in the conversation's tree: the message it follows, or
    /// `tree::ROOT_PARENT` for a first message (an edited opening question). Absent, it follows
    /// the message stored last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// Regenerate: answer this stored question again (its text is the last of `messages`);
    /// no question is saved, and the reply becomes a sibling of the earlier answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

/// Messages from the browser over a websocket: `{"start": request}`, then maybe `"stop"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientMsg<R> {
    Start(R),
    Stop,
}

/// The chat websocket's messages (`/ws/chat`).
pub type ChatClientMsg = ClientMsg<ChatRequest>;

/// What the Compare page asks for (`/ws/compare`; `POST /api/compare` takes the same, flat).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompareRequest {
    pub models: Vec<String>,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub sampling: SamplingParams,
    /// Run every model at once instead of one after another.
    #[serde(default)]
    pub together: bool,
}

/// One event of a comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CompareEvent {
    /// An event of one slot's reply.
    Slot {
        slot: usize,
        model: String,
        event: ChatEvent,
    },
    /// The slot did not run: the comparison was stopped first.
    Skipped { slot: usize, model: String },
    /// The comparison could not start (bad models or settings).
    Failed { event: ChatEvent },
    /// Every slot is done.
    End { together: bool },
}

/// Why a reply ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced its end-of-generation token.
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// The context window filled up.
    ContextFull,
    /// The client stopped it.
    Cancelled,
}

impl FinishReason {
    /// The OpenAI `finish_reason` string.
    pub fn openai(self) -> &'static str {
        match self {
            FinishReason::Stop | FinishReason::Cancelled => "stop",
            FinishReason::Length | FinishReason::ContextFull => "length",
        }
    }
}

/// Measured figures for one reply. Times are wall-clock milliseconds on the server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationMetrics {
    pub model: String,
    pub engine: String,
    pub prompt_tokens: u32,
    /// Leading prompt tokens whose KV cache was reused (an earlier turn, a shared system
    /// prompt): not evaluated again, and not counted in `prompt_tokens_per_s`.
    #[serde(default)]
    pub cached_prompt_tokens: u32,
    /// Time spent evaluating the prompt (prefill) until the first token was sampled.
    pub prompt_ms: f64,
    pub prompt_tokens_per_s: f64,
    /// From the request reaching the server to the first generated text.
    pub time_to_first_token_ms: f64,
    /// Time spent waiting for the model's worker before work started.
    pub queue_ms: f64,
    pub generated_tokens: u32,
    pub decode_ms: f64,
    /// Tokens decoded after the first one, per second of decode time.
    pub decode_tokens_per_s: f64,
    pub total_ms: f64,
    /// Resident memory the model added to the process when it loaded (weights, KV cache, buffers).
    pub model_resident_bytes: u64,
    pub finish_reason: Option<FinishReason>,
    pub threads: u32,
    pub seed: u64,
    /// The most other replies decoded in the same forward passes as this one (batching).
    #[serde(default)]
    pub batch_peers: u32,
    /// How the engine ran the model (e.g. BitNet's kernels and head precision); empty when the
    /// engine has nothing to add.
    #[serde(default)]
    pub engine_detail: String,
}

/// A generated token with its log-probability and the likeliest alternatives at its position
/// (OpenAI's `logprobs.content` entries). Probabilities are the sampler's: after the repeat
/// penalty and the temperature (1 when greedy), before top-k, top-p and any grammar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    /// The most likely tokens at this position, most likely first.
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// One event of a streamed reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatEvent {
    /// The request waits: `ahead` requests come first; `loading` while the model loads.
    Queued { ahead: usize, loading: bool },
    /// A piece of reply text (always whole UTF-8 characters), with the tokens it completes when
    /// log-probabilities were asked for.
    Token {
        text: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        logprobs: Vec<TokenLogprob>,
    },
    /// The reply is finished; the last event of a successful stream.
    Done { metrics: GenerationMetrics },
    /// The reply failed; the last event of a failed stream.
    Error { status: u16, message: String },
    /// The user message and the reply are durably saved (websocket chat only).
    Saved {
        conversation_id: String,
        persistence: PersistenceStatus,
        /// The saved question's id (none when regenerating), then the reply's: the browser
        /// attaches later edits and regenerations to them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        question_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_id: Option<String>,
    },
}

/// Which engine runs a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    LlamaCpp,
    Candle,
    Bitnet,
    Remote,
}

impl EngineKind {
    /// Can hold a reply to a `response_format` (a grammar on llama.cpp; a remote server is
    /// given the format to enforce itself).
    pub fn constrains_output(self) -> bool {
        matches!(self, EngineKind::LlamaCpp | EngineKind::Remote)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::LlamaCpp => "llama_cpp",
            EngineKind::Candle => "candle",
            EngineKind::Bitnet => "bitnet",
            EngineKind::Remote => "remote",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            EngineKind::LlamaCpp => "llama.cpp",
            EngineKind::Candle => "candle",
            EngineKind::Bitnet => "BitNet (native)",
            EngineKind::Remote => "remote server",
        }
    }
}

/// A model as the UI and `/api/models` describe it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub id: String,
    pub name: String,
    pub family: String,
    pub parameters: String,
    pub quantization: String,
    pub bits_per_weight: f32,
    pub context_length: u32,
    pub engine: EngineKind,
    pub instruct: bool,
    pub license: String,
    pub description: String,
    /// Where the weights come from, in words.
    pub source: String,
    /// A warning a person should see before trusting the file (e.g. an anonymous upload).
    pub provenance_note: Option<String>,
    pub default: bool,
    pub available: bool,
    /// Why the model cannot run, when `available` is false.
    pub reason: Option<String>,
    /// The command that makes it available.
    pub fix: Option<String>,
    pub size_bytes: Option<u64>,
    /// Whether the weights are loaded in memory right now.
    pub loaded: bool,
    /// Bytes the weights take in the models folder now (`None` when absent).
    #[serde(default)]
    pub on_disk_bytes: Option<u64>,
    /// Made here (another quantization); deleting it removes it from the list too.
    #[serde(default)]
    pub made_here: bool,
    /// It has a source to download from (offline pack or hub).
    #[serde(default)]
    pub can_fetch: bool,
    /// A downloaded GGUF that llama.cpp's quantizer can turn into other types.
    #[serde(default)]
    pub can_quantize: bool,
    /// Already quantized: quantizing it again loses quality twice.
    #[serde(default)]
    pub quantized_source: bool,
    /// The download or quantization running (or last failed) for this model.
    #[serde(default)]
    pub job: Option<ModelJob>,
}

/// What a download or quantization of a model is doing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelJob {
    /// `fetch`, `quantize`, `verify` or `add`.
    pub kind: String,
    /// For a quantization, the type being made.
    #[serde(default)]
    pub target: Option<String>,
    pub phase: String,
    pub done: u64,
    /// 0 when the phase's size is unknown.
    pub total: u64,
    pub state: JobState,
    /// Why it failed, for a person.
    #[serde(default)]
    pub error: Option<String>,
    /// The model a finished quantization or addition listed.
    #[serde(default)]
    pub made: Option<String>,
    /// What a finished job found, in words (a verification's verdict, what an addition is).
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Finished,
    Failed,
    Cancelled,
}

impl ModelJob {
    pub fn running(&self) -> bool {
        self.state == JobState::Running
    }

    /// The fraction done, when the phase has a known size.
    pub fn fraction(&self) -> Option<f64> {
        (self.total > 0).then(|| (self.done as f64 / self.total as f64).clamp(0.0, 1.0))
    }
}

/// A saved message, with what is needed to compare or reproduce it later.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// A UUID; appending the same id twice stores it once.
    pub id: String,
    /// The message this one answers or follows: another message's id, or
    /// `tree::ROOT_PARENT` for a first message. Absent on messages saved before conversations
    /// had branches: they follow the message stored before them (see `tree`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    pub role: Role,
    pub content: String,
    /// Unix time in milliseconds.
    pub created_at_ms: i64,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub engine: Option<String>,
    #[serde(default)]
    pub sampling: Option<SamplingParams>,
    #[serde(default)]
    pub metrics: Option<GenerationMetrics>,
    /// The reply was cut short (Stop, closed tab) and is saved as far as it got.
    #[serde(default)]
    pub interrupted: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
    pub title: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub messages: Vec<StoredMessage>,
}

/// A line of the history list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConversationSummary {
    pub id: String,
    pub title: String,
    pub message_count: usize,
    /// The model of the latest reply, if any.
    pub model: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Conversation {
    pub fn summary(&self) -> ConversationSummary {
        ConversationSummary {
            id: self.id.clone(),
            title: self.title.clone(),
            message_count: self.messages.len(),
            model: self.messages.iter().rev().find_map(|m| m.model.clone()),
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
        }
    }
}

/// Where conversations are saved right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PersistenceBackend {
    /// PostgreSQL (`DATABASE_URL`), reachable.
    Postgres,
    /// PostgreSQL is configured but unreachable: saves go to JSON files until it is back.
    JsonFallback,
    /// No database configured: JSON files.
    Json,
}

impl PersistenceBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            PersistenceBackend::Postgres => "postgres",
            PersistenceBackend::JsonFallback => "json_fallback",
            PersistenceBackend::Json => "json",
        }
    }
}

/// Where saves go right now; shown in the UI.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PersistenceStatus {
    pub backend: PersistenceBackend,
    pub detail: String,
    /// Conversations saved to JSON while the database was away, waiting to be imported.
    pub pending_import: usize,
}

/// A quantization type the Models page offers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantOption {
    /// As llama.cpp names it, e.g. `Q4_K_M`.
    pub label: String,
    /// Bits per weight as llama.cpp documents it.
    pub nominal_bits: f32,
}

/// A NER or OCR model (a folder of files) as the Models page shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FolderModelInfo {
    pub id: String,
    /// `NER` or `OCR`.
    pub task: String,
    pub name: String,
    /// What it labels or reads.
    pub detail: String,
    pub license: String,
    pub source: String,
    pub default: bool,
    pub available: bool,
    /// Why it cannot run, with the fix.
    pub reason: Option<String>,
    pub on_disk_bytes: Option<u64>,
    pub can_fetch: bool,
    pub job: Option<ModelJob>,
}

/// A GGUF being added from the hub: listed only once it is downloaded and checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingModel {
    pub id: String,
    pub job: ModelJob,
}

/// Everything the Models page shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelsOverview {
    pub models: Vec<ModelInfo>,
    pub quant_types: Vec<QuantOption>,
    /// NER and OCR models.
    pub folders: Vec<FolderModelInfo>,
    /// Additions from the hub that are running, or failed and were not listed.
    pub adding: Vec<PendingModel>,
}
