//! The key/value cache of every sequence slot, in f16 as llama.cpp and bitnet.cpp keep theirs,
//! and causal attention over it. Slots share the weights, not their cache: each holds
//! `[layer, kv head, position, head_size]` of its own.

use half::{f16, vec::HalfBitsVecExt};

use super::kernels::{f16_axpy, f16_dot, Isa};

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
    /// Causal attention of query head `h` of `slot` at `position` over positions
    /// `0..=position`. The arithmetic depends only on these arguments, so a token gets the same
    /// result alone and in a batch of other slots' tokens.
    pub fn head(
        &self,
        q: &[f32],
        h: usize,
        slot: usize,
        position: usize,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        let c = self.cache;
        let size = c.head;
        let q = &q[h * size..][..size];
        let base = c.base(slot, self.layer) + (h / self.group) * c.context * size;
        let scale = 1.0 / (size as f32).sqrt();
        let scores = &mut scores[..=position];
        let mut max = f32::NEG_INFINITY;
        for (p, score) in scores.iter_mut().enumerate() {
            let k = &c.keys[base + p * size..][..size];
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
            let v = &c.values[base + p * size..][..size];
            f16_axpy(self.isa, weight / total, v, out);
        }
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
