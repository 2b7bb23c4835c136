//! The key/value cache of every sequence slot, in f16 as llama.cpp and bitnet.cpp keep theirs,
//! and causal attention over it. Slots share the weights, not their cache: each holds
//! `[layer, kv head, position, head_size]` of its own.

use half::{f16, vec::HalfBitsVecExt};

use std::ops::Range;

use super::kernels::{f16_dots, f16_weighted_sums, softmax, Isa};

pub struct KvCache {
    keys: Vec<f16>,
    values: Vec<f16>,
    layers: usize,
    kv_heads: usize,
    context: usize,
    head: usize,
}

impl KvCache {
    /// Zeroed pages the kernel hands out on first touch: a slot costs memory only for the
    /// positions it has filled.
    pub fn new(slots: usize, layers: usize, kv_heads: usize, context: usize, head: usize) -> Self {
        let len = slots * layers * kv_heads * context * head;
        Self {
            keys: vec![0u16; len].reinterpret_into(),
            values: vec![0u16; len].reinterpret_into(),
            layers,
            kv_heads,
            context,
            head,
        }
    }

    /// Bytes one slot holds when its whole context is filled.
    pub fn bytes_per_slot(&self) -> usize {
        2 * self.layers * self.kv_heads * self.context * self.head * std::mem::size_of::<f16>()
    }

    fn base(&self, slot: usize, layer: usize) -> usize {
        (slot * self.layers + layer) * self.kv_heads * self.context * self.head
    }

    /// Stores the key and value rows (`kv_heads × head` each) of `slot` at `position`.
    pub fn store(&mut self, slot: usize, layer: usize, position: usize, k: &[f32], v: &[f32]) {
        let base = self.base(slot, layer);
        for h in 0..self.kv_heads {
            let at = base + (h * self.context + position) * self.head;
            let source = h * self.head..(h + 1) * self.head;
            for (cell, &value) in self.keys[at..at + self.head]
                .iter_mut()
                .zip(&k[source.clone()])
            {
                *cell = f16::from_f32(value);
            }
            for (cell, &value) in self.values[at..at + self.head].iter_mut().zip(&v[source]) {
                *cell = f16::from_f32(value);
            }
        }
    }

    /// What attention needs to read for one layer.
    pub fn attention(&self, layer: usize, query_heads: usize, isa: Isa) -> Attention<'_> {
        Attention {
            cache: self,
            layer,
            group: query_heads / self.kv_heads,
            isa,
        }
    }
}

/// One layer's attention over the cache of any slot.
pub struct Attention<'a> {
    cache: &'a KvCache,
    layer: usize,
    group: usize,
    isa: Isa,
}

impl Attention<'_> {
    /// Query heads that share one key/value head: the rows a task reads once for all of them.
    pub fn group(&self) -> usize {
        self.group
    }

    /// Causal attention of the query heads `heads` of `slot` at `position` over positions
    /// `0..=position`, into `out` (`heads.len() × head_size`). The heads must share a key/value
    /// head, so every cached row is read once for up to 4 of them; `scores` holds `heads.len()`
    /// rows of `position + 1`. A head's arithmetic depends only on its own query and the cache,
    /// never on which heads or tokens share the call, so a token gets the same result alone, in
    /// a batch of other slots' tokens, and in prefill or decode.
    pub fn heads(
        &self,
        q: &[f32],
        heads: Range<usize>,
        slot: usize,
        position: usize,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        let size = self.cache.head;
        assert!(
            !heads.is_empty() && (heads.end - 1) / self.group == heads.start / self.group,
            "heads of one key/value head"
        );
        let mut first = heads.start;
        // The kernels take up to 4 heads at a time (registers hold 4 accumulators per column).
        while first < heads.end {
            let count = (heads.end - first).min(4);
            let out = &mut out[(first - heads.start) * size..][..count * size];
            match count {
                1 => self.few::<1>(q, first, slot, position, scores, out),
                2 => self.few::<2>(q, first, slot, position, scores, out),
                3 => self.few::<3>(q, first, slot, position, scores, out),
                _ => self.few::<4>(q, first, slot, position, scores, out),
            }
            first += count;
        }
    }

    fn few<const T: usize>(
        &self,
        q: &[f32],
        first: usize,
        slot: usize,
        position: usize,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        let c = self.cache;
        let size = c.head;
        let len = position + 1;
        let qs: [&[f32]; T] = std::array::from_fn(|t| &q[(first + t) * size..][..size]);
        let base = c.base(slot, self.layer) + (first / self.group) * c.context * size;
        let keys = &c.keys[base..base + len * size];
        let values = &c.values[base..base + len * size];
        let scores = &mut scores[..T * len];
        f16_dots(self.isa, keys, &qs, scores, len);
        let scale = 1.0 / (size as f32).sqrt();
        for row in scores.chunks_exact_mut(len) {
            softmax(self.isa, row, scale);
        }
        out.fill(0.0);
        f16_weighted_sums::<T>(self.isa, values, scores, len, out);
    }
}

/// transformers' `rotate_half` convention: the first half of a head pairs with the second.
pub fn rotate_half(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    let (first, second) = x.split_at_mut(half);
    for i in 0..half {
        let (a, b) = (first[i], second[i]);
        first[i] = a * cos[i] - b * sin[i];
        second[i] = b * cos[i] + a * sin[i];
    }
}
