//! BitNet b1.58's forward pass as transformers' `BitNetForCausalLM` defines it: LLaMA blocks
//! (RMSNorm, rotary positions in the split-half convention, grouped-query attention) where every
//! projection is a ternary `BitLinear` over int8 activations, the attention output and the FFN's
//! product pass through an extra RMSNorm ("sub-norm") before their projections, and the FFN is
//! `down(subnorm(relu(gate)² · up))`. The output head is the tied embedding, in bf16 or int8
//! rows ([`super::head`]).
//!
//! All buffers are sized at load for [`MAX_BATCH`] tokens and the context, so a decode step
//! allocates nothing; the key/value cache is f16, as llama.cpp and bitnet.cpp keep theirs.

use std::sync::Arc;

use half::f16;
use rayon::prelude::*;

use super::{
    config::Activation,
    head::{HeadActs, Table},
    kernels::{f16_axpy, f16_dot, Isa},
    ternary::QuantizedRows,
    weights::Weights,
};

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
    /// One context-long row of attention scores per head (decode) or per token (prefill).
    scores: Vec<f32>,
    hidden_acts: QuantizedRows,
    inner_acts: QuantizedRows,
    head_acts: HeadActs,
}

pub struct Model {
    weights: Weights,
    activation: Activation,
    isa: Isa,
    pool: Arc<rayon::ThreadPool>,
    context: usize,
    /// The last position's logits, reused between decode steps.
    last_logits: Vec<f32>,
    /// cos and sin of every position × frequency, `[context, head_size / 2]` each.
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// `[layer, kv head, position, head_size]`.
    keys: Vec<f16>,
    values: Vec<f16>,
    scratch: Scratch,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot start the BitNet thread pool: {0}")]
    Pool(String),
    #[error("hidden_act `{0}` is not one this engine runs")]
    Activation(String),
}

impl Model {
    pub fn new(
        weights: Weights,
        context: usize,
        threads: usize,
        isa: Isa,
    ) -> Result<Self, ModelError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("bitnet-{i}"))
            .build()
            .map_err(|e| ModelError::Pool(e.to_string()))?;
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
        let cache = c.num_hidden_layers * c.kv_size() * context;
        let qkv_width = hidden + 2 * c.kv_size();
        let scratch = Scratch {
            x: vec![0.0; MAX_BATCH * hidden],
            normed: vec![0.0; MAX_BATCH * hidden],
            qkv: vec![0.0; MAX_BATCH * qkv_width],
            attention: vec![0.0; MAX_BATCH * hidden],
            projected: vec![0.0; MAX_BATCH * hidden],
            gate_up: vec![0.0; MAX_BATCH * 2 * inter],
            product: vec![0.0; MAX_BATCH * inter],
            scores: vec![0.0; MAX_BATCH.max(c.num_attention_heads) * context],
            hidden_acts: QuantizedRows::with_capacity(MAX_BATCH, hidden),
            inner_acts: QuantizedRows::with_capacity(MAX_BATCH, inter),
            head_acts: HeadActs::with_capacity(MAX_BATCH, hidden),
        };
        let vocab = c.vocab_size;
        Ok(Self {
            weights,
            activation,
            isa,
            pool: Arc::new(pool),
            context,
            last_logits: vec![0.0; vocab],
            cos,
            sin,
            keys: vec![f16::ZERO; cache],
            values: vec![f16::ZERO; cache],
            scratch,
        })
    }

    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    pub fn context(&self) -> usize {
        self.context
    }

    pub fn isa(&self) -> Isa {
        self.isa
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
    /// keeps the fastest; returns each family's median seconds (empty when there is no choice).
    /// The rank of a family says little about its speed on a given CPU: on an AMD EPYC
    /// (Zen 4) the 512-bit VNNI kernels decoded 10–20% slower than AVX2 from memory, though
    /// faster on a matrix held in cache. The families compute the same logits, so the choice
    /// changes only the speed.
    pub fn choose_fastest_isa(&mut self) -> Vec<(Isa, f64)> {
        const ROUNDS: usize = 3;
        let candidates: Vec<Isa> = Isa::all_available()
            .into_iter()
            .filter(|&isa| isa >= Isa::Avx2)
            .collect();
        if candidates.len() < 2 {
            return Vec::new();
        }
        let started = self.isa;
        // Token 0 at position 0: every vocabulary has it, and the next request starts anew.
        let token = [0u32];
        self.forward_last(&token, 0); // warm-up: weights paged in, threads awake
        let mut times = vec![Vec::with_capacity(ROUNDS); candidates.len()];
        for _ in 0..ROUNDS {
            for (isa, times) in candidates.iter().zip(&mut times) {
                self.set_isa(*isa);
                let clock = std::time::Instant::now();
                self.forward_last(&token, 0);
                times.push(clock.elapsed().as_secs_f64());
            }
        }
        let medians: Vec<(Isa, f64)> = candidates
            .into_iter()
            .zip(times)
            .map(|(isa, mut times)| {
                times.sort_by(f64::total_cmp);
                (isa, times[ROUNDS / 2])
            })
            .collect();
        let fastest = medians
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(started, |&(isa, _)| isa);
        self.set_isa(fastest);
        medians
    }

    /// Runs the next steps on another kernel family (for benchmarks that compare them).
    pub fn set_isa(&mut self, isa: Isa) {
        self.isa = isa;
    }

    /// Feeds `tokens` starting at `position` (0 starts a new sequence); returns the last
    /// token's logits, in a buffer reused by the next call.
    ///
    /// # Panics
    /// When ids reach the vocabulary size or positions leave the context: the engine checks
    /// both before calling.
    pub fn forward_last(&mut self, tokens: &[u32], position: usize) -> &mut [f32] {
        self.check(tokens, position);
        let pool = Arc::clone(&self.pool);
        pool.install(|| {
            let chunks = tokens.chunks(MAX_BATCH);
            let count = chunks.len();
            for (index, batch) in chunks.enumerate() {
                self.batch(batch, position + index * MAX_BATCH);
                if index + 1 == count {
                    self.final_norm(batch.len() - 1..batch.len());
                    self.last_logits_from_normed();
                }
            }
        });
        &mut self.last_logits
    }

    /// Like [`Model::forward_last`], but every token's logits, one row each.
    pub fn forward_all(&mut self, tokens: &[u32], position: usize) -> Vec<Vec<f32>> {
        self.check(tokens, position);
        let pool = Arc::clone(&self.pool);
        let mut rows = Vec::with_capacity(tokens.len());
        pool.install(|| {
            for (index, batch) in tokens.chunks(MAX_BATCH).enumerate() {
                self.batch(batch, position + index * MAX_BATCH);
                self.final_norm(0..batch.len());
                rows.extend(self.all_logits_from_normed(batch.len()));
            }
        });
        rows
    }

    fn check(&self, tokens: &[u32], position: usize) {
        assert!(
            position + tokens.len() <= self.context,
            "inside the context"
        );
        let vocab = self.weights.config.vocab_size;
        assert!(
            tokens.iter().all(|&t| (t as usize) < vocab),
            "known token ids"
        );
    }

    fn batch(&mut self, tokens: &[u32], start: usize) {
        let c = &self.weights.config;
        let hidden = c.hidden_size;
        let n = tokens.len();
        let s = &mut self.scratch;
        for (row, &token) in s.x.chunks_exact_mut(hidden).zip(tokens) {
            self.weights.embedding.row_into(token as usize, row);
        }
        for layer_index in 0..self.weights.layers.len() {
            self.attention_block(layer_index, n, start);
            self.feed_forward_block(layer_index, n);
        }
    }

    fn attention_block(&mut self, layer_index: usize, n: usize, start: usize) {
        let c = &self.weights.config;
        let layer = &self.weights.layers[layer_index];
        let (hidden, kv, head) = (c.hidden_size, c.kv_size(), c.head_size());
        let eps = c.rms_norm_eps;
        let s = &mut self.scratch;
        rms_norm(&s.x[..n * hidden], &layer.input_norm, eps, &mut s.normed);
        s.hidden_acts.quantize(&s.normed[..n * hidden], hidden);
        let width = hidden + 2 * kv;
        layer.qkv.matmul(self.isa, &s.hidden_acts, &mut s.qkv);
        let half = head / 2;
        let layer_cache = layer_index * kv * self.context;
        for (t, row) in s.qkv[..n * width].chunks_exact_mut(width).enumerate() {
            let position = start + t;
            let (cos, sin) = (
                &self.cos[position * half..][..half],
                &self.sin[position * half..][..half],
            );
            let (q, rest) = row.split_at_mut(hidden);
            let (k, v) = rest.split_at_mut(kv);
            for one_head in q.chunks_exact_mut(head).chain(k.chunks_exact_mut(head)) {
                rotate_half(one_head, cos, sin);
            }
            for h in 0..c.kv_heads() {
                let at = layer_cache + (h * self.context + position) * head;
                for (slot, &value) in self.keys[at..at + head].iter_mut().zip(&k[h * head..]) {
                    *slot = f16::from_f32(value);
                }
                for (slot, &value) in self.values[at..at + head].iter_mut().zip(&v[h * head..]) {
                    *slot = f16::from_f32(value);
                }
            }
        }
        let geometry = Attention {
            heads: c.num_attention_heads,
            group: c.num_attention_heads / c.kv_heads(),
            head,
            context: self.context,
            keys: &self.keys[layer_cache..layer_cache + kv * self.context],
            values: &self.values[layer_cache..layer_cache + kv * self.context],
            isa: self.isa,
        };
        if n == 1 {
            // One token: its heads in parallel.
            let q = &s.qkv[..hidden];
            s.attention[..hidden]
                .par_chunks_mut(head)
                .zip(s.scores.par_chunks_mut(self.context))
                .enumerate()
                .for_each(|(h, (out, scores))| geometry.head(q, h, start, scores, out));
        } else {
            s.attention[..n * hidden]
                .par_chunks_mut(hidden)
                .zip(s.scores.par_chunks_mut(self.context))
                .enumerate()
                .for_each(|(t, (out, scores))| {
                    let q = &s.qkv[t * width..t * width + hidden];
                    for h in 0..geometry.heads {
                        geometry.head(q, h, start + t, scores, &mut out[h * head..][..head]);
                    }
                });
        }
        rms_norm(
            &s.attention[..n * hidden],
            &layer.attn_sub_norm,
            eps,
            &mut s.normed,
        );
        s.hidden_acts.quantize(&s.normed[..n * hidden], hidden);
        layer.o.matmul(self.isa, &s.hidden_acts, &mut s.projected);
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
        layer
            .gate_up
            .matmul(self.isa, &s.hidden_acts, &mut s.gate_up);
        let activation = self.activation;
        for (row, out) in s.gate_up[..n * 2 * inter]
            .chunks_exact(2 * inter)
            .zip(s.product.chunks_exact_mut(inter))
        {
            let (gate, up) = row.split_at(inter);
            for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                *o = activation.apply(g) * u;
            }
        }
        let product = &mut s.product[..n * inter];
        rms_norm_in_place(product, inter, &layer.ffn_sub_norm, eps);
        s.inner_acts.quantize(product, inter);
        layer.down.matmul(self.isa, &s.inner_acts, &mut s.projected);
        for (x, d) in s.x[..n * hidden].iter_mut().zip(&s.projected) {
            *x += d;
        }
    }

    /// The final norm of batch rows `rows`, into the first rows of `normed`.
    fn final_norm(&mut self, rows: std::ops::Range<usize>) {
        let c = &self.weights.config;
        let hidden = c.hidden_size;
        let s = &mut self.scratch;
        rms_norm(
            &s.x[rows.start * hidden..rows.end * hidden],
            &self.weights.final_norm,
            c.rms_norm_eps,
            &mut s.normed,
        );
    }

    fn last_logits_from_normed(&mut self) {
        let hidden = self.weights.config.hidden_size;
        let head = self.weights.head();
        let acts = &mut self.scratch.head_acts;
        acts.load(&self.scratch.normed[..hidden], hidden, head.precision());
        let acts = &*acts;
        let isa = self.isa;
        self.last_logits
            .par_chunks_mut(HEAD_CHUNK)
            .enumerate()
            .for_each(|(chunk, logits)| {
                for (i, logit) in logits.iter_mut().enumerate() {
                    [*logit] = head.dots(isa, chunk * HEAD_CHUNK + i, hidden, acts, [0]);
                }
            });
    }

    /// Logits of the first `n` normed rows, four at a time per read of the head.
    fn all_logits_from_normed(&mut self, n: usize) -> Vec<Vec<f32>> {
        let (hidden, vocab) = (
            self.weights.config.hidden_size,
            self.weights.config.vocab_size,
        );
        let head = self.weights.head();
        let acts = &mut self.scratch.head_acts;
        acts.load(&self.scratch.normed[..n * hidden], hidden, head.precision());
        let acts = &*acts;
        let isa = self.isa;
        let mut rows = vec![vec![0f32; vocab]; n];
        let mut by_row = vec![[0f32; 4]; vocab];
        for (group, outs) in rows.chunks_mut(4).enumerate() {
            // A short last group repeats its final row; the extra results are dropped.
            let ts: [usize; 4] = std::array::from_fn(|k| group * 4 + k.min(outs.len() - 1));
            by_row
                .par_chunks_mut(HEAD_CHUNK)
                .enumerate()
                .for_each(|(chunk, slots)| {
                    for (i, slot) in slots.iter_mut().enumerate() {
                        *slot = head.dots(isa, chunk * HEAD_CHUNK + i, hidden, acts, ts);
                    }
                });
            for (r, values) in by_row.iter().enumerate() {
                for (k, out) in outs.iter_mut().enumerate() {
                    out[r] = values[k];
                }
            }
        }
        rows
    }
}

/// Vocabulary rows per parallel task of the output head.
const HEAD_CHUNK: usize = 256;

/// What one head's attention needs to read.
struct Attention<'a> {
    heads: usize,
    group: usize,
    head: usize,
    context: usize,
    keys: &'a [f16],
    values: &'a [f16],
    isa: Isa,
}

impl Attention<'_> {
    /// Causal attention of query head `h` at `position` over positions `0..=position`.
    fn head(&self, q: &[f32], h: usize, position: usize, scores: &mut [f32], out: &mut [f32]) {
        let q = &q[h * self.head..][..self.head];
        let kv_head = h / self.group;
        let base = kv_head * self.context * self.head;
        let scale = 1.0 / (self.head as f32).sqrt();
        let scores = &mut scores[..=position];
        let mut max = f32::NEG_INFINITY;
        for (p, score) in scores.iter_mut().enumerate() {
            let k = &self.keys[base + p * self.head..][..self.head];
            *score = f16_dot(self.isa, k, q) * scale;
            max = max.max(*score);
        }
        let mut total = 0.0;
        for score in scores.iter_mut() {
            *score = (*score - max).exp();
            total += *score;
        }
        out.fill(0.0);
        for (p, &weight) in scores.iter().enumerate() {
            let v = &self.values[base + p * self.head..][..self.head];
            f16_axpy(self.isa, weight / total, v, out);
        }
    }
}

/// transformers' `rotate_half` convention: the first half of a head pairs with the second.
fn rotate_half(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    let (first, second) = x.split_at_mut(half);
    for i in 0..half {
        let (a, b) = (first[i], second[i]);
        first[i] = a * cos[i] - b * sin[i];
        second[i] = b * cos[i] + a * sin[i];
    }
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
