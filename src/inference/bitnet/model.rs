//! BitNet b1.58's forward pass as transformers' `BitNetForCausalLM` defines it: LLaMA blocks
//! (RMSNorm, rotary positions in the split-half convention, grouped-query attention) where every
//! projection is a ternary `BitLinear` over int8 activations, the attention output and the FFN's
//! product pass through an extra RMSNorm ("sub-norm") before their projections, and the FFN is
//! `down(subnorm(relu(gate)² · up))`. The output head is the tied embedding, in bf16, int8 or Q6_K
//! rows ([`super::head`]).
//!
//! A forward pass takes tokens of several sequences at once, each extending its own slot of the
//! key/value cache ([`super::cache`]): the weights are read once for all of them, which is what
//! a decode step costs on a CPU. All buffers are sized at load for [`MAX_BATCH`] tokens, so a
//! decode step allocates nothing once the number of sequences it serves has been seen.

use super::{
    cache::{rotate_half, KvCache},
    config::Activation,
    head::{HeadActs, Table},
    kernels::Isa,
    team::Team,
    ternary::QuantizedRows,
    weights::Weights,
};
use crate::inference::logits::SlotToken;

/// Tokens per forward pass during prefill and scoring.
pub const MAX_BATCH: usize = 64;

/// Per-batch working memory, sized once.
struct Scratch {
    x: Vec<f32>,
    normed: Vec<f32>,
    qkv: Vec<f32>,
    attention: Vec<f32>,
    projected: Vec<f32>,
    gate_up: Vec<f32>,
    product: Vec<f32>,
    /// One context-long row of attention scores per (token, head) of a decode step, or per
    /// (token, head sharing a key/value head) of a longer pass.
    scores: Vec<f32>,
    hidden_acts: QuantizedRows,
    inner_acts: QuantizedRows,
    head_acts: HeadActs,
}

pub struct Model {
    weights: Weights,
    activation: Activation,
    /// The kernel family of passes with one token (decode alone), ...
    isa: Isa,
    /// ... of passes with several (prefill, decode in company), ...
    batch_isa: Isa,
    /// ... and of the pass running now.
    pass_isa: Isa,
    /// The threads of a pass: a team that spins between the ~150 short parallel loops of a
    /// token rather than sleeping (see [`Team`]).
    team: Team,
    context: usize,
    slots: usize,
    /// The logits of the rows a pass was asked for, `[pick, vocab]`, reused between passes.
    picked: Vec<f32>,
    /// One group of up to 4 picked rows' logits as the head computes them, `[vocab, 4]`.
    group: Vec<f32>,
    /// The tokens of a single-sequence call, as slot-0 rows.
    single: Vec<SlotToken>,
    /// cos and sin of every position × frequency, `[context, head_size / 2]` each.
    cos: Vec<f32>,
    sin: Vec<f32>,
    cache: KvCache,
    scratch: Scratch,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot start the BitNet threads: {0}")]
    Threads(String),
    #[error("hidden_act `{0}` is not one this engine runs")]
    Activation(String),
}

impl Model {
    /// A model keeping one sequence.
    pub fn new(
        weights: Weights,
        context: usize,
        threads: usize,
        isa: Isa,
    ) -> Result<Self, ModelError> {
        Self::with_slots(weights, context, threads, isa, 1)
    }

    /// A model keeping `slots` sequences of up to `context` tokens each.
    pub fn with_slots(
        weights: Weights,
        context: usize,
        threads: usize,
        isa: Isa,
        slots: usize,
    ) -> Result<Self, ModelError> {
        let slots = slots.clamp(1, MAX_BATCH);
        let team =
            Team::new(threads.max(1), "bitnet").map_err(|e| ModelError::Threads(e.to_string()))?;
        let c = &weights.config;
        let activation = c
            .activation()
            .ok_or_else(|| ModelError::Activation(c.hidden_act.clone()))?;
        let (hidden, inter, head) = (c.hidden_size, c.intermediate_size, c.head_size());
        let half = head / 2;
        let mut cos = Vec::with_capacity(context * half);
        let mut sin = Vec::with_capacity(context * half);
        for position in 0..context {
            for i in 0..half {
                // transformers: inv_freq = 1 / theta^(2i / head), angle = position · inv_freq.
                let inv_freq = 1.0 / c.theta().powf((2 * i) as f32 / head as f32);
                let angle = position as f32 * inv_freq;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let qkv_width = hidden + 2 * c.kv_size();
        let scratch = Scratch {
            x: vec![0.0; MAX_BATCH * hidden],
            normed: vec![0.0; MAX_BATCH * hidden],
            qkv: vec![0.0; MAX_BATCH * qkv_width],
            attention: vec![0.0; MAX_BATCH * hidden],
            projected: vec![0.0; MAX_BATCH * hidden],
            gate_up: vec![0.0; MAX_BATCH * 2 * inter],
            product: vec![0.0; MAX_BATCH * inter],
            scores: vec![
                0.0;
                (MAX_BATCH * c.num_attention_heads / c.kv_heads())
                    .max(slots * c.num_attention_heads)
                    * context
            ],
            hidden_acts: QuantizedRows::with_capacity(MAX_BATCH, hidden),
            inner_acts: QuantizedRows::with_capacity(MAX_BATCH, inter),
            head_acts: HeadActs::with_capacity(MAX_BATCH, hidden),
        };
        let vocab = c.vocab_size;
        let cache = KvCache::new(slots, c.num_hidden_layers, c.kv_heads(), context, head);
        Ok(Self {
            weights,
            activation,
            isa,
            batch_isa: isa,
            pass_isa: isa,
            team,
            context,
            slots,
            picked: vec![0.0; vocab],
            group: vec![0.0; 4 * vocab],
            single: Vec::with_capacity(MAX_BATCH),
            cos,
            sin,
            cache,
            scratch,
        })
    }

    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The weights back, for a model with another number of slots (the bench's batched decode).
    pub fn into_weights(self) -> Weights {
        self.weights
    }

    pub fn context(&self) -> usize {
        self.context
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Sequences the cache keeps.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Bytes of cache one sequence fills over the whole context.
    pub fn cache_bytes_per_slot(&self) -> usize {
        self.cache.bytes_per_slot()
    }

    /// Gives the model its own output head (untied from the embedding), or ties it back with
    /// `None`, and returns the head it had: the bench measures a head alone this way, on hidden
    /// states that stay the same, and hands the table back and forth without copying it.
    ///
    /// # Panics
    /// If the table has another size than the embedding.
    pub fn set_output_head(&mut self, output: Option<Table>) -> Option<Table> {
        if let Some(table) = &output {
            assert_eq!(
                table.values(),
                self.weights.embedding.values(),
                "an output head has the embedding's shape"
            );
        }
        std::mem::replace(&mut self.weights.output, output)
    }

    /// Times one decode step on every kernel family from AVX2 up, in alternating rounds, and
    /// keeps the fastest for passes of one token and of several; returns each family's median
    /// seconds (empty when there is no choice). The rank of a family says little about its
    /// speed on a given CPU: on an AMD EPYC (Zen 4) the 512-bit VNNI kernels decoded 10–20%
    /// slower than AVX2 from memory, though faster on a matrix held in cache. The families
    /// compute the same logits, so the choice changes only the speed.
    pub fn choose_fastest_isa(&mut self) -> Vec<(Isa, f64)> {
        let medians = self.time_families(1);
        if let Some(fastest) = fastest(&medians) {
            self.set_isa(fastest);
        }
        medians
    }

    /// Like [`Model::choose_fastest_isa`] for passes of several tokens, timed on four (one per
    /// slot while there are slots): with more rows per weight read, arithmetic rather than
    /// memory bounds a pass, and another family may win.
    pub fn choose_fastest_batch_isa(&mut self) -> Vec<(Isa, f64)> {
        let medians = self.time_families(4);
        if let Some(fastest) = fastest(&medians) {
            self.batch_isa = fastest;
        }
        medians
    }

    /// Median seconds of a pass of `rows` tokens (token 0, spread over the slots from
    /// position 0: the next request starts anew) on every family from AVX2 up, in alternating
    /// rounds after a warm-up; the families in use are left as they were.
    fn time_families(&mut self, rows: usize) -> Vec<(Isa, f64)> {
        const ROUNDS: usize = 3;
        let candidates: Vec<Isa> = Isa::all_available()
            .into_iter()
            .filter(|&isa| isa >= Isa::Avx2)
            .collect();
        if candidates.len() < 2 {
            return Vec::new();
        }
        let (single, batch) = (self.isa, self.batch_isa);
        let tokens: Vec<SlotToken> = (0..rows)
            .map(|i| SlotToken {
                token: 0,
                slot: i % self.slots,
                position: i / self.slots,
            })
            .collect();
        let picks: Vec<usize> = (0..rows).collect();
        self.forward_slots(&tokens, &picks); // warm-up: weights paged in, threads awake
        let mut times = vec![Vec::with_capacity(ROUNDS); candidates.len()];
        for _ in 0..ROUNDS {
            for (isa, times) in candidates.iter().zip(&mut times) {
                self.set_isa(*isa);
                let clock = std::time::Instant::now();
                self.forward_slots(&tokens, &picks);
                times.push(clock.elapsed().as_secs_f64());
            }
        }
        (self.isa, self.batch_isa) = (single, batch);
        candidates
            .into_iter()
            .zip(times)
            .map(|(isa, mut times)| {
                times.sort_by(f64::total_cmp);
                (isa, times[ROUNDS / 2])
            })
            .collect()
    }

    /// Runs the next passes, of any size, on another kernel family (for benchmarks that
    /// compare them).
    pub fn set_isa(&mut self, isa: Isa) {
        self.isa = isa;
        self.batch_isa = isa;
    }

    /// The family of passes with several tokens.
    pub fn batch_isa(&self) -> Isa {
        self.batch_isa
    }

    /// Feeds `tokens` starting at `position` of slot 0 (0 starts a new sequence); returns the
    /// last token's logits, in a buffer reused by the next call.
    ///
    /// # Panics
    /// When ids reach the vocabulary size or positions leave the context: the engine checks
    /// both before calling.
    pub fn forward_last(&mut self, tokens: &[u32], position: usize) -> &mut [f32] {
        let chunks = tokens.len().div_ceil(MAX_BATCH);
        let mut single = std::mem::take(&mut self.single);
        for (index, batch) in tokens.chunks(MAX_BATCH).enumerate() {
            slot_zero_rows(&mut single, batch, position + index * MAX_BATCH);
            let picks: &[usize] = if index + 1 == chunks {
                &[batch.len() - 1]
            } else {
                &[]
            };
            self.forward_slots(&single, picks);
        }
        self.single = single;
        let vocab = self.weights.config.vocab_size;
        &mut self.picked[..vocab]
    }

    /// Like [`Model::forward_last`], but every token's logits, one row each.
    pub fn forward_all(&mut self, tokens: &[u32], position: usize) -> Vec<Vec<f32>> {
        let vocab = self.weights.config.vocab_size;
        let mut rows = Vec::with_capacity(tokens.len());
        let mut single = std::mem::take(&mut self.single);
        let every: Vec<usize> = (0..MAX_BATCH).collect();
        for (index, batch) in tokens.chunks(MAX_BATCH).enumerate() {
            slot_zero_rows(&mut single, batch, position + index * MAX_BATCH);
            let logits = self.forward_slots(&single, &every[..batch.len()]);
            rows.extend(logits.chunks_exact(vocab).map(<[f32]>::to_vec));
        }
        self.single = single;
        // Serving picks at most one row per slot; the rows every token needed here (64 ×
        // vocabulary, 33 MB for 2B4T) are given back rather than kept for good.
        self.picked.truncate(self.slots * vocab);
        self.picked.shrink_to_fit();
        rows
    }

    /// One pass over up to [`MAX_BATCH`] tokens of any slots (a slot's tokens in order of
    /// position); returns the logits of rows `picks`, `[pick, vocab]`. A token's logits are the
    /// same bit for bit whatever else is in the pass.
    ///
    /// # Panics
    /// Beyond [`MAX_BATCH`] tokens, on an unknown slot or token id, a position outside the
    /// context, or a pick outside the pass: the engine checks these before calling.
    pub fn forward_slots(&mut self, tokens: &[SlotToken], picks: &[usize]) -> &mut [f32] {
        self.check(tokens, picks);
        self.pass_isa = if tokens.len() > 1 {
            self.batch_isa
        } else {
            self.isa
        };
        self.pass(tokens);
        if !picks.is_empty() {
            self.final_norm(picks);
            self.picked_logits(picks.len());
        }
        self.team.rest();
        let vocab = self.weights.config.vocab_size;
        &mut self.picked[..picks.len() * vocab]
    }

    fn check(&self, tokens: &[SlotToken], picks: &[usize]) {
        assert!(
            tokens.len() <= MAX_BATCH,
            "a pass holds at most MAX_BATCH tokens"
        );
        let vocab = self.weights.config.vocab_size;
        assert!(
            tokens.iter().all(|t| (t.token as usize) < vocab
                && t.slot < self.slots
                && t.position < self.context),
            "known token ids, slots and positions inside the context"
        );
        assert!(
            picks.iter().all(|&p| p < tokens.len()),
            "picks name rows of the pass"
        );
    }

    fn pass(&mut self, tokens: &[SlotToken]) {
        let hidden = self.weights.config.hidden_size;
        let s = &mut self.scratch;
        for (row, t) in s.x.chunks_exact_mut(hidden).zip(tokens) {
            self.weights.embedding.row_into(t.token as usize, row);
        }
        for layer_index in 0..self.weights.layers.len() {
            self.attention_block(layer_index, tokens);
            self.feed_forward_block(layer_index, tokens.len());
        }
    }

    fn attention_block(&mut self, layer_index: usize, tokens: &[SlotToken]) {
        let c = &self.weights.config;
        let layer = &self.weights.layers[layer_index];
        let (hidden, kv, head) = (c.hidden_size, c.kv_size(), c.head_size());
        let heads = c.num_attention_heads;
        let n = tokens.len();
        let eps = c.rms_norm_eps;
        let s = &mut self.scratch;
        rms_norm(&s.x[..n * hidden], &layer.input_norm, eps, &mut s.normed);
        s.hidden_acts.quantize(&s.normed[..n * hidden], hidden);
        let width = hidden + 2 * kv;
        let team = &mut self.team;
        layer
            .qkv
            .matmul(self.pass_isa, team, &s.hidden_acts, &mut s.qkv);
        let half = head / 2;
        for (row, t) in s.qkv[..n * width].chunks_exact_mut(width).zip(tokens) {
            let (cos, sin) = (
                &self.cos[t.position * half..][..half],
                &self.sin[t.position * half..][..half],
            );
            let (q, rest) = row.split_at_mut(hidden);
            let (k, v) = rest.split_at_mut(kv);
            for one_head in q.chunks_exact_mut(head).chain(k.chunks_exact_mut(head)) {
                rotate_half(one_head, cos, sin);
            }
            self.cache.store(t.slot, layer_index, t.position, k, v);
        }
        let attention = self.cache.attention(layer_index, heads, self.pass_isa);
        let context = self.context;
        if n <= self.slots {
            // A decode step (at most a token per slot): every (token, head) pair in parallel,
            // so one sequence or a few keep every thread busy.
            let qkv = &s.qkv;
            team.zip_chunks_mut(
                (&mut s.attention[..n * hidden], head),
                (&mut s.scores, context),
                |pair, out, scores| {
                    let (row, h) = (pair / heads, pair % heads);
                    let q = &qkv[row * width..row * width + hidden];
                    let t = tokens[row];
                    attention.heads(q, h..h + 1, t.slot, t.position, scores, out);
                },
            );
        } else {
            // A longer pass: one task per token, which reads each cached key and value row
            // once for all the query heads that share it.
            let group = attention.group();
            let qkv = &s.qkv;
            team.zip_chunks_mut(
                (&mut s.attention[..n * hidden], hidden),
                (&mut s.scores, group * context),
                |row, out, scores| {
                    let q = &qkv[row * width..row * width + hidden];
                    let t = tokens[row];
                    for (kv_head, out) in out.chunks_exact_mut(group * head).enumerate() {
                        let heads = kv_head * group..(kv_head + 1) * group;
                        attention.heads(q, heads, t.slot, t.position, scores, out);
                    }
                },
            );
        }
        rms_norm(
            &s.attention[..n * hidden],
            &layer.attn_sub_norm,
            eps,
            &mut s.normed,
        );
        s.hidden_acts.quantize(&s.normed[..n * hidden], hidden);
        layer
            .o
            .matmul(self.pass_isa, team, &s.hidden_acts, &mut s.projected);
        for (x, o) in s.x[..n * hidden].iter_mut().zip(&s.projected) {
            *x += o;
        }
    }

    fn feed_forward_block(&mut self, layer_index: usize, n: usize) {
        let c = &self.weights.config;
        let layer = &self.weights.layers[layer_index];
        let (hidden, inter, eps) = (c.hidden_size, c.intermediate_size, c.rms_norm_eps);
        let s = &mut self.scratch;
        rms_norm(
            &s.x[..n * hidden],
            &layer.post_attention_norm,
            eps,
            &mut s.normed,
        );
        s.hidden_acts.quantize(&s.normed[..n * hidden], hidden);
        layer.gate_up.matmul(
            self.pass_isa,
            &mut self.team,
            &s.hidden_acts,
            &mut s.gate_up,
        );
        let activation = self.activation;
        for (row, out) in s.gate_up[..n * 2 * inter]
            .chunks_exact(2 * inter)
            .zip(s.product.chunks_exact_mut(inter))
        {
            let (gate, up) = row.split_at(inter);
            activation.apply_gated(gate, up, out);
        }
        let product = &mut s.product[..n * inter];
        rms_norm_in_place(product, inter, &layer.ffn_sub_norm, eps);
        s.inner_acts.quantize(product, inter);
        layer.down.matmul(
            self.pass_isa,
            &mut self.team,
            &s.inner_acts,
            &mut s.projected,
        );
        for (x, d) in s.x[..n * hidden].iter_mut().zip(&s.projected) {
            *x += d;
        }
    }

    /// The final norm of the rows `picks`, into the first rows of `normed`.
    fn final_norm(&mut self, picks: &[usize]) {
        let c = &self.weights.config;
        let hidden = c.hidden_size;
        let s = &mut self.scratch;
        for (i, &row) in picks.iter().enumerate() {
            rms_norm(
                &s.x[row * hidden..(row + 1) * hidden],
                &self.weights.final_norm,
                c.rms_norm_eps,
                &mut s.normed[i * hidden..(i + 1) * hidden],
            );
        }
    }

    /// Logits of the first `count` normed rows into `picked`, up to four rows per read of the
    /// head (the kernels treat each row alike, so a row's logits do not depend on its group).
    fn picked_logits(&mut self, count: usize) {
        let (hidden, vocab) = (
            self.weights.config.hidden_size,
            self.weights.config.vocab_size,
        );
        if self.picked.len() < count * vocab {
            self.picked.resize(count * vocab, 0.0);
        }
        let head = self.weights.head();
        self.scratch.head_acts.load(
            &self.scratch.normed[..count * hidden],
            hidden,
            head.precision(),
        );
        let mut first = 0;
        while first < count {
            let size = (count - first).min(4);
            let group = &mut self.group[..size * vocab];
            let (acts, isa) = (&self.scratch.head_acts, self.pass_isa);
            head.logits_of_rows(
                isa,
                &mut self.team,
                acts,
                hidden,
                first..first + size,
                group,
            );
            for (r, values) in group.chunks_exact(size).enumerate() {
                for (k, &value) in values.iter().enumerate() {
                    self.picked[(first + k) * vocab + r] = value;
                }
            }
            first += size;
        }
    }
}

/// The family with the least time, if any was timed.
fn fastest(medians: &[(Isa, f64)]) -> Option<Isa> {
    medians
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|&(isa, _)| isa)
}

/// `tokens` as rows of slot 0 from `start`, into `rows`.
fn slot_zero_rows(rows: &mut Vec<SlotToken>, tokens: &[u32], start: usize) {
    rows.clear();
    rows.extend(
        tokens
            .iter()
            .zip(start..)
            .map(|(&token, position)| SlotToken {
                token,
                slot: 0,
                position,
            }),
    );
}

/// `out = weight · x / sqrt(mean(x²) + eps)` for each row of `x`.
fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let width = weight.len();
    for (row, target) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let inverse = inverse_rms(row, eps);
        for ((o, &v), &w) in target.iter_mut().zip(row).zip(weight) {
            *o = w * (v * inverse);
        }
    }
}

fn rms_norm_in_place(x: &mut [f32], width: usize, weight: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(width) {
        let inverse = inverse_rms(row, eps);
        for (v, &w) in row.iter_mut().zip(weight) {
            *v = w * (*v * inverse);
        }
    }
}

fn inverse_rms(row: &[f32], eps: f32) -> f32 {
    let mean_square = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
    1.0 / (mean_square + eps).sqrt()
}
