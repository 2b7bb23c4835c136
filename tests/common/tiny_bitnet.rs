//! Tiny BitNet checkpoints written by the tests in the hub's exact layout (config.json with
//! transformers' keys, model.safetensors with transformers' tensor names, a byte-level BPE
//! tokenizer.json, tokenizer_config.json with a chat template), in both forms: packed ternary
//! (`microsoft/bitnet-b1.58-2B-4T`) and bf16 master weights (`…-bf16`). Beside them, a plain
//! f32 forward pass written from the reference's definition, to hold the engine to.

#![allow(dead_code)]

use std::{collections::HashMap, path::Path};

use safetensors::{tensor::TensorView, Dtype};
use serde_json::json;

/// The sizes of a tiny model.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub kv_heads: usize,
}

impl Dims {
    pub fn head(&self) -> usize {
        self.hidden / self.heads
    }

    pub fn kv(&self) -> usize {
        self.kv_heads * self.head()
    }
}

/// The usual tiny model: a hidden size that is not a multiple of the 128-column block.
pub const TINY: Dims = Dims {
    hidden: 192,
    intermediate: 320,
    heads: 6,
    kv_heads: 2,
};
/// Whole 256-value blocks per row, as Q6_K tables need.
pub const WIDE: Dims = Dims {
    hidden: 256,
    intermediate: 320,
    heads: 8,
    kv_heads: 2,
};
pub const LAYERS: usize = 2;
pub const BOS: u32 = 256;
pub const END_OF_TEXT: u32 = 257;
pub const EOT: u32 = 258;
pub const VOCAB: usize = 259;
pub const EPS: f32 = 1e-5;
pub const THETA: f32 = 10_000.0;
pub const POSITIONS: usize = 256;

pub const CHAT_TEMPLATE: &str = "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}{{ message['role'] | capitalize }}: {{ message['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}Assistant: {% endif %}";

/// Master weights (bf16 values held as f32) of one tiny model.
pub struct Master {
    pub dims: Dims,
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Roughly normal (sum of uniforms), times `scale`, rounded to bf16.
    fn weight(&mut self, scale: f32) -> f32 {
        let sum: f32 = (0..4)
            .map(|_| (self.next() % 10_000) as f32 / 10_000.0)
            .sum();
        half::bf16::from_f32((sum - 2.0) * scale).to_f32()
    }
}

fn bf16(v: f32) -> f32 {
    half::bf16::from_f32(v).to_f32()
}

impl Master {
    pub fn random(seed: u64) -> Self {
        Self::random_with(seed, TINY)
    }

    pub fn random_with(seed: u64, d: Dims) -> Self {
        let mut rng = Rng(seed | 1);
        let mut tensors = Vec::new();
        let mut add = |name: String, shape: Vec<usize>, scale: f32, base: f32| {
            let count = shape.iter().product();
            let values = (0..count).map(|_| bf16(base + rng.weight(scale))).collect();
            tensors.push((name, shape, values));
        };
        add(
            "model.embed_tokens.weight".into(),
            vec![VOCAB, d.hidden],
            0.15,
            0.0,
        );
        add("model.norm.weight".into(), vec![d.hidden], 0.2, 1.0);
        for i in 0..LAYERS {
            let p = format!("model.layers.{i}");
            add(
                format!("{p}.input_layernorm.weight"),
                vec![d.hidden],
                0.2,
                1.0,
            );
            add(
                format!("{p}.post_attention_layernorm.weight"),
                vec![d.hidden],
                0.2,
                1.0,
            );
            add(
                format!("{p}.self_attn.attn_sub_norm.weight"),
                vec![d.hidden],
                0.2,
                1.0,
            );
            add(
                format!("{p}.mlp.ffn_sub_norm.weight"),
                vec![d.intermediate],
                0.2,
                1.0,
            );
            for (name, rows, cols) in projections(&d) {
                add(format!("{p}.{name}.weight"), vec![rows, cols], 0.05, 0.0);
            }
        }
        Self { dims: d, tensors }
    }

    pub fn get(&self, name: &str) -> &[f32] {
        &self
            .tensors
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("{name}"))
            .2
    }
}

/// (module, out rows, in columns) of every ternary projection in a layer.
pub fn projections(d: &Dims) -> Vec<(&'static str, usize, usize)> {
    vec![
        ("self_attn.q_proj", d.hidden, d.hidden),
        ("self_attn.k_proj", d.kv(), d.hidden),
        ("self_attn.v_proj", d.kv(), d.hidden),
        ("self_attn.o_proj", d.hidden, d.hidden),
        ("mlp.gate_proj", d.intermediate, d.hidden),
        ("mlp.up_proj", d.intermediate, d.hidden),
        ("mlp.down_proj", d.hidden, d.intermediate),
    ]
}

fn is_projection(name: &str) -> bool {
    name.contains("_proj.")
}

/// transformers' `WeightQuant`: ternary values and the bf16 scale `bf16(1 / s)`.
pub fn weight_quant(w: &[f32]) -> (Vec<i8>, f32) {
    let mean = w.iter().map(|v| f64::from(v.abs())).sum::<f64>() / w.len() as f64;
    let s = 1.0 / (mean as f32).max(1e-5);
    let t = w
        .iter()
        .map(|v| (v * s).round_ties_even().clamp(-1.0, 1.0) as i8)
        .collect();
    (t, bf16(1.0 / s))
}

/// transformers' `pack_weights`: row `lane · rows/4 + p` goes to bits `2·lane` of row `p`.
pub fn pack(t: &[i8], rows: usize, cols: usize) -> Vec<u8> {
    let quarter = rows / 4;
    let mut packed = vec![0u8; quarter * cols];
    for lane in 0..4 {
        for p in 0..quarter {
            for c in 0..cols {
                let code = (t[(lane * quarter + p) * cols + c] + 1) as u8;
                packed[p * cols + c] |= code << (2 * lane);
            }
        }
    }
    packed
}

fn bf16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Form {
    Packed,
    Bf16,
}

/// Writes a checkpoint folder of `master` in `form`.
pub fn write(dir: &Path, master: &Master, form: Form) {
    let d = &master.dims;
    std::fs::create_dir_all(dir).unwrap();
    let quantization = match form {
        Form::Packed => {
            json!({"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"})
        }
        Form::Bf16 => {
            json!({"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"})
        }
    };
    let config = json!({
        "architectures": ["BitNetForCausalLM"],
        "model_type": "bitnet",
        "hidden_size": d.hidden,
        "intermediate_size": d.intermediate,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": d.heads,
        "num_key_value_heads": d.kv_heads,
        "vocab_size": VOCAB,
        "max_position_embeddings": POSITIONS,
        "rms_norm_eps": EPS,
        "rope_theta": THETA,
        "hidden_act": "relu2",
        "tie_word_embeddings": true,
        "attention_bias": false,
        "bos_token_id": BOS,
        "eos_token_id": END_OF_TEXT,
        "torch_dtype": "bfloat16",
        "quantization_config": quantization,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(
        dir.join("generation_config.json"),
        json!({"bos_token_id": BOS, "eos_token_id": [END_OF_TEXT, EOT]}).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        json!({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": CHAT_TEMPLATE}).to_string(),
    )
    .unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json()).unwrap();

    let mut data: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, shape, values) in &master.tensors {
        if form == Form::Packed && is_projection(name) {
            let (rows, cols) = (shape[0], shape[1]);
            let (t, scale) = weight_quant(values);
            data.push((
                name.clone(),
                Dtype::U8,
                vec![rows / 4, cols],
                pack(&t, rows, cols),
            ));
            let scale_name = name.replace(".weight", ".weight_scale");
            data.push((scale_name, Dtype::BF16, vec![1], bf16_bytes(&[scale])));
        } else {
            data.push((name.clone(), Dtype::BF16, shape.clone(), bf16_bytes(values)));
        }
    }
    let views: Vec<(String, TensorView<'_>)> = data
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            (
                name.clone(),
                TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

/// A byte-level BPE with the 256 byte tokens and no merges, plus Llama 3's special tokens.
fn tokenizer_json() -> String {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut shifted = 0u32;
    let mut vocab = serde_json::Map::new();
    for b in 0u8..=255 {
        let c = if printable(b) {
            char::from(b)
        } else {
            shifted += 1;
            char::from_u32(255 + shifted).unwrap()
        };
        vocab.insert(c.to_string(), json!(b));
    }
    let special = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(BOS, "<|begin_of_text|>"), special(END_OF_TEXT, "<|end_of_text|>"), special(EOT, "<|eot_id|>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": []}
    })
    .to_string()
}

/// The token ids of `text` under the tiny tokenizer: one per byte.
pub fn byte_ids(text: &str) -> Vec<u32> {
    text.bytes().map(u32::from).collect()
}

// ---- The reference forward pass: plain f32, whole sequence, no cache. ----

fn rms_norm(x: &[f32], weight: &[f32]) -> Vec<f32> {
    let mean = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inverse = 1.0 / (mean + EPS).sqrt();
    x.iter().zip(weight).map(|(v, w)| w * v * inverse).collect()
}

/// `ActQuant` then a dense product with the dequantized ternary weights (`t · scale`).
fn bit_linear(x: &[f32], t: &[i8], scale: f32, rows: usize) -> Vec<f32> {
    let cols = x.len();
    let max = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-5);
    let s = 127.0 / max;
    let q: Vec<f32> = x
        .iter()
        .map(|v| (v * s).round_ties_even().clamp(-128.0, 127.0) / s)
        .collect();
    (0..rows)
        .map(|r| {
            (0..cols)
                .map(|c| f32::from(t[r * cols + c]) * q[c])
                .sum::<f32>()
                * scale
        })
        .collect()
}

fn rotate(x: &mut [f32], position: usize) {
    let half = x.len() / 2;
    for i in 0..half {
        let freq = 1.0 / THETA.powf((2 * i) as f32 / x.len() as f32);
        let (sin, cos) = (position as f32 * freq).sin_cos();
        let (a, b) = (x[i], x[i + half]);
        x[i] = a * cos - b * sin;
        x[i + half] = b * cos + a * sin;
    }
}

/// How the reference keeps attention keys and values.
#[derive(Clone, Copy, Debug)]
pub enum Cache {
    /// As computed (the definition).
    F32,
    /// Rounded to f16, as the engine's cache holds them.
    F16,
}

impl Cache {
    fn keep(self, x: f32) -> f32 {
        match self {
            Cache::F32 => x,
            Cache::F16 => half::f16::from_f32(x).to_f32(),
        }
    }
}

/// The gate's activation in the feed-forward block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// BitNet b1.58 2B4T: `relu(g)²`.
    Relu2,
    /// bitnet.cpp's `bitnet` graph (1bitLLM's reproductions): `g · sigmoid(g)`.
    Silu,
}

/// Logits after every token of `tokens`, with 2B4T's activation.
pub fn reference_logits(master: &Master, tokens: &[u32], cache: Cache) -> Vec<Vec<f32>> {
    reference_logits_with(master, tokens, cache, Activation::Relu2)
}

/// `‖a − b‖ / ‖b‖`.
pub fn relative_l2(a: &[f32], b: &[f32]) -> f32 {
    let diff: f32 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let norm: f32 = b.iter().map(|y| y * y).sum();
    (diff / norm).sqrt()
}

/// Logits after every token of `tokens`, with the gate's `activation`.
pub fn reference_logits_with(
    master: &Master,
    tokens: &[u32],
    cache: Cache,
    activation: Activation,
) -> Vec<Vec<f32>> {
    let d = &master.dims;
    let quantized: HashMap<String, (Vec<i8>, f32)> = master
        .tensors
        .iter()
        .filter(|(name, _, _)| is_projection(name))
        .map(|(name, _, values)| (name.clone(), weight_quant(values)))
        .collect();
    let linear = |name: String, x: &[f32], rows: usize| {
        let (t, scale) = &quantized[&name];
        bit_linear(x, t, *scale, rows)
    };
    let embedding = master.get("model.embed_tokens.weight");
    let mut xs: Vec<Vec<f32>> = tokens
        .iter()
        .map(|&t| embedding[t as usize * d.hidden..][..d.hidden].to_vec())
        .collect();
    for i in 0..LAYERS {
        let p = format!("model.layers.{i}");
        let mut keys = Vec::new();
        let mut values = Vec::new();
        let mut queries = Vec::new();
        for (position, x) in xs.iter().enumerate() {
            let h = rms_norm(x, master.get(&format!("{p}.input_layernorm.weight")));
            let mut q = linear(format!("{p}.self_attn.q_proj.weight"), &h, d.hidden);
            let mut k = linear(format!("{p}.self_attn.k_proj.weight"), &h, d.kv());
            q.chunks_mut(d.head())
                .for_each(|head| rotate(head, position));
            k.chunks_mut(d.head())
                .for_each(|head| rotate(head, position));
            let v = linear(format!("{p}.self_attn.v_proj.weight"), &h, d.kv());
            queries.push(q);
            keys.push(k.iter().map(|&x| cache.keep(x)).collect::<Vec<f32>>());
            values.push(v.iter().map(|&x| cache.keep(x)).collect::<Vec<f32>>());
        }
        for (position, x) in xs.iter_mut().enumerate() {
            let mut attention = vec![0f32; d.hidden];
            for head in 0..d.heads {
                let kv_head = head / (d.heads / d.kv_heads);
                let q = &queries[position][head * d.head()..][..d.head()];
                let scores: Vec<f32> = (0..=position)
                    .map(|j| {
                        let k = &keys[j][kv_head * d.head()..][..d.head()];
                        q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() / (d.head() as f32).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f32 = exps.iter().sum();
                for (j, e) in exps.iter().enumerate() {
                    let v = &values[j][kv_head * d.head()..][..d.head()];
                    for (i, value) in v.iter().enumerate() {
                        attention[head * d.head() + i] += e / total * value;
                    }
                }
            }
            let normed = rms_norm(
                &attention,
                master.get(&format!("{p}.self_attn.attn_sub_norm.weight")),
            );
            let o = linear(format!("{p}.self_attn.o_proj.weight"), &normed, d.hidden);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let h = rms_norm(
                x,
                master.get(&format!("{p}.post_attention_layernorm.weight")),
            );
            let gate = linear(format!("{p}.mlp.gate_proj.weight"), &h, d.intermediate);
            let up = linear(format!("{p}.mlp.up_proj.weight"), &h, d.intermediate);
            let product: Vec<f32> = gate
                .iter()
                .zip(&up)
                .map(|(&g, u)| match activation {
                    Activation::Relu2 => g.max(0.0).powi(2) * u,
                    Activation::Silu => g / (1.0 + (-g).exp()) * u,
                })
                .collect();
            let normed = rms_norm(
                &product,
                master.get(&format!("{p}.mlp.ffn_sub_norm.weight")),
            );
            let down = linear(format!("{p}.mlp.down_proj.weight"), &normed, d.hidden);
            x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
        }
    }
    xs.iter()
        .map(|x| {
            let h = rms_norm(x, master.get("model.norm.weight"));
            (0..VOCAB)
                .map(|v| {
                    embedding[v * d.hidden..][..d.hidden]
                        .iter()
                        .zip(&h)
                        .map(|(a, b)| a * b)
                        .sum()
                })
                .collect()
        })
        .collect()
}

// ---- bitnet.cpp's GGUF of the same weights. ----

/// How the projections are stored in a GGUF.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GgufForm {
    /// bitnet.cpp's I2_S (type 36), one f32 scale per tensor.
    I2s,
    /// f32 master weights (quantized at load).
    F32,
}

/// bitnet.cpp's I2_S bytes of ternary `t` (row-major) with `scale`: 128-value blocks of 32
/// bytes, byte `p` holding values `p`, `32 + p`, `64 + p`, `96 + p` in bits 7-6, 5-4, 3-2, 1-0
/// as `t + 1`; then the f32 scale at `n / 4`, in a 32-byte tail.
pub fn i2s_bytes(t: &[i8], scale: f32) -> Vec<u8> {
    assert_eq!(t.len() % 128, 0);
    let mut out = vec![0u8; t.len() / 4 + 32];
    for (i, &v) in t.iter().enumerate() {
        let (block, within) = (i / 128, i % 128);
        out[block * 32 + within % 32] |= ((v + 1) as u8) << (6 - 2 * (within / 32));
    }
    out[t.len() / 4..t.len() / 4 + 4].copy_from_slice(&scale.to_le_bytes());
    out
}

/// The GGUF name of a transformers tensor of the tiny model.
fn gguf_name(name: &str) -> String {
    name.replace("model.embed_tokens", "token_embd")
        .replace("model.norm", "output_norm")
        .replace("model.layers.", "blk.")
        .replace(".input_layernorm", ".attn_norm")
        .replace(".post_attention_layernorm", ".ffn_norm")
        .replace(".self_attn.attn_sub_norm", ".attn_sub_norm")
        .replace(".mlp.ffn_sub_norm", ".ffn_sub_norm")
        .replace(".self_attn.q_proj", ".attn_q")
        .replace(".self_attn.k_proj", ".attn_k")
        .replace(".self_attn.v_proj", ".attn_v")
        .replace(".self_attn.o_proj", ".attn_output")
        .replace(".mlp.gate_proj", ".ffn_gate")
        .replace(".mlp.up_proj", ".ffn_up")
        .replace(".mlp.down_proj", ".ffn_down")
}

struct GgufWriter {
    header: Vec<u8>,
    keys: u64,
}

impl GgufWriter {
    fn string(out: &mut Vec<u8>, text: &str) {
        out.extend_from_slice(&(text.len() as u64).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    fn key(&mut self, key: &str, kind: u32) {
        Self::string(&mut self.header, key);
        self.header.extend_from_slice(&kind.to_le_bytes());
        self.keys += 1;
    }
    fn text(&mut self, key: &str, value: &str) {
        self.key(key, 8);
        Self::string(&mut self.header, value);
    }
    fn u32(&mut self, key: &str, value: u32) {
        self.key(key, 4);
        self.header.extend_from_slice(&value.to_le_bytes());
    }
    fn f32(&mut self, key: &str, value: f32) {
        self.key(key, 6);
        self.header.extend_from_slice(&value.to_le_bytes());
    }
    fn texts(&mut self, key: &str, values: &[String]) {
        self.key(key, 9);
        self.header.extend_from_slice(&8u32.to_le_bytes());
        self.header
            .extend_from_slice(&(values.len() as u64).to_le_bytes());
        for v in values {
            Self::string(&mut self.header, v);
        }
    }
    /// An array of 4-byte numbers of GGUF type `kind` (5 i32, 6 f32), given as their bytes.
    fn numbers(&mut self, key: &str, kind: u32, values: impl ExactSizeIterator<Item = [u8; 4]>) {
        self.key(key, 9);
        self.header.extend_from_slice(&kind.to_le_bytes());
        self.header
            .extend_from_slice(&(values.len() as u64).to_le_bytes());
        for v in values {
            self.header.extend_from_slice(&v);
        }
    }
    fn f32s(&mut self, key: &str, values: &[f32]) {
        self.numbers(key, 6, values.iter().map(|v| v.to_le_bytes()));
    }
    fn i32s(&mut self, key: &str, values: &[i32]) {
        self.numbers(key, 5, values.iter().map(|v| v.to_le_bytes()));
    }
}

/// The tiny tokenizer's tokens in id order: the 256 byte-level characters, then the specials.
fn gguf_tokens() -> Vec<String> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut shifted = 0u32;
    let mut tokens: Vec<String> = (0u8..=255)
        .map(|b| {
            if printable(b) {
                char::from(b).to_string()
            } else {
                shifted += 1;
                char::from_u32(255 + shifted).unwrap().to_string()
            }
        })
        .collect();
    tokens.extend(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"].map(String::from));
    tokens
}

/// Writes `master` as bitnet.cpp's GGUF (architecture `bitnet-b1.58`, its tensor names, the
/// tokenizer and chat template in the metadata), projections in `form`.
pub fn write_gguf(path: &Path, master: &Master, form: GgufForm) {
    write_gguf_as(path, master, form, "bitnet-b1.58");
}

/// [`write_gguf`] under another of bitnet.cpp's architecture names (`bitnet` is its SiLU graph).
pub fn write_gguf_as(path: &Path, master: &Master, form: GgufForm, arch: &str) {
    write_gguf_embedding(path, master, form, arch, None);
}

/// [`write_gguf`] with the token embedding given as Q6_K blocks (type 14), as bitnet.cpp's
/// `llama-quantize --token-embedding-type Q6_K` writes it.
pub fn write_gguf_q6k(path: &Path, master: &Master, form: GgufForm, q6k_embedding: &[u8]) {
    write_gguf_embedding(path, master, form, "bitnet-b1.58", Some(q6k_embedding));
}

fn write_gguf_embedding(
    path: &Path,
    master: &Master,
    form: GgufForm,
    arch: &str,
    q6k_embedding: Option<&[u8]>,
) {
    let d = &master.dims;
    let mut w = GgufWriter {
        header: Vec::new(),
        keys: 0,
    };
    w.text("general.architecture", arch);
    w.text("general.name", "tiny bitnet");
    w.u32(&format!("{arch}.block_count"), LAYERS as u32);
    w.u32(&format!("{arch}.embedding_length"), d.hidden as u32);
    w.u32(
        &format!("{arch}.feed_forward_length"),
        d.intermediate as u32,
    );
    w.u32(&format!("{arch}.attention.head_count"), d.heads as u32);
    w.u32(
        &format!("{arch}.attention.head_count_kv"),
        d.kv_heads as u32,
    );
    w.f32(&format!("{arch}.attention.layer_norm_rms_epsilon"), EPS);
    w.f32(&format!("{arch}.rope.freq_base"), THETA);
    w.u32(&format!("{arch}.context_length"), POSITIONS as u32);
    w.u32(&format!("{arch}.vocab_size"), VOCAB as u32);
    w.text("tokenizer.ggml.model", "gpt2");
    let tokens = gguf_tokens();
    let types: Vec<i32> = (0..tokens.len())
        .map(|i| if i < 256 { 1 } else { 3 })
        .collect();
    w.texts("tokenizer.ggml.tokens", &tokens);
    w.i32s("tokenizer.ggml.token_type", &types);
    w.u32("tokenizer.ggml.bos_token_id", BOS);
    w.u32("tokenizer.ggml.eos_token_id", EOT);
    w.text("tokenizer.chat_template", CHAT_TEMPLATE);

    // Tensor directory and data, each tensor at a 32-byte aligned offset.
    let mut directory = Vec::new();
    let mut data: Vec<u8> = Vec::new();
    for (name, shape, values) in &master.tensors {
        let (kind, bytes): (u32, Vec<u8>) = if is_projection(name) && form == GgufForm::I2s {
            let (t, scale) = weight_quant(values);
            (36, i2s_bytes(&t, scale))
        } else if name.contains("embed_tokens") {
            match q6k_embedding {
                Some(blocks) => (14, blocks.to_vec()),
                None => (30, bf16_bytes(values)),
            }
        } else {
            (0, values.iter().flat_map(|v| v.to_le_bytes()).collect())
        };
        while !data.len().is_multiple_of(32) {
            data.push(0);
        }
        GgufWriter::string(&mut directory, &gguf_name(name));
        directory.extend_from_slice(&(shape.len() as u32).to_le_bytes());
        for d in shape.iter().rev() {
            directory.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        directory.extend_from_slice(&kind.to_le_bytes());
        directory.extend_from_slice(&(data.len() as u64).to_le_bytes());
        data.extend_from_slice(&bytes);
    }
    let mut file = b"GGUF".to_vec();
    file.extend_from_slice(&3u32.to_le_bytes());
    file.extend_from_slice(&(master.tensors.len() as u64).to_le_bytes());
    file.extend_from_slice(&w.keys.to_le_bytes());
    file.extend_from_slice(&w.header);
    file.extend_from_slice(&directory);
    while !file.len().is_multiple_of(32) {
        file.push(0);
    }
    file.extend_from_slice(&data);
    std::fs::write(path, file).unwrap();
}

/// 2B4T's configuration shrunk to a few hundred columns (grouped-query attention kept), for
/// tests that build random weights in memory.
pub fn small_config() -> quantlab::inference::bitnet::config::BitnetConfig {
    let mut config = quantlab::inference::bitnet::config::BitnetConfig::b1_58_2b_4t();
    config.hidden_size = 256;
    config.intermediate_size = 640;
    config.num_hidden_layers = 2;
    config.num_attention_heads = 4;
    config.num_key_value_heads = Some(2);
    config.vocab_size = 1000;
    config
}

/// A registry with the tiny model the tests write as `tiny-bitnet` in the models folder.
pub const REGISTRY: &str = r#"
default = "tiny-bitnet"

[[models]]
id = "tiny-bitnet"
name = "Tiny BitNet"
family = "BitNet b1.58"
parameters = "1M"
quantization = "ternary"
bits_per_weight = 2.0
context_length = 256
engine = "bitnet"
instruct = true
license = "MIT"
description = "Written by the test."
file = "tiny-bitnet"
"#;

/// A small SentencePiece vocabulary in llama.cpp's form (`tokenizer.ggml.model = llama`):
/// `<unk>`, `<s>`, `</s>`, the 256 byte tokens `<0xNN>`, then pieces with scores (higher merges
/// first), as (tokens, scores, token types).
pub fn sentencepiece_vocab() -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
    let mut types = vec![2, 3, 3];
    for byte in 0..=255u8 {
        tokens.push(format!("<0x{byte:02X}>"));
        types.push(6);
    }
    // Every character of a piece is a piece itself, as SentencePiece's trainer guarantees (its
    // alphabet comes first); other characters fall back to bytes.
    let pieces = [
        "\u{2581}",
        "g",
        "e",
        "t",
        "h",
        "a",
        "o",
        "l",
        "c",
        "w",
        "r",
        "d",
        "s",
        "n",
        "i",
        "é",
        "\u{2581}t",
        "he",
        "\u{2581}the",
        "at",
        "\u{2581}c",
        "\u{2581}cat",
        "ll",
        "\u{2581}h",
        "\u{2581}he",
        "llo",
        "\u{2581}hello",
        "or",
        "\u{2581}w",
        "\u{2581}wor",
        "ld",
        "\u{2581}world",
        "in",
        "\u{2581}s",
        "\u{2581}in",
        "ing",
        "\u{2581}sing",
        "th",
        "\u{2581}th",
        "es",
        "est",
    ];
    let mut scores = vec![0.0; tokens.len()];
    for (rank, piece) in pieces.iter().enumerate() {
        tokens.push((*piece).to_string());
        types.push(1);
        scores.push(-(rank as f32));
    }
    (tokens, scores, types)
}

/// A GGUF holding only a Llama architecture's metadata and `vocab` (no tensors): what llama.cpp
/// loads with `vocab_only`, and what our reader takes the vocabulary from.
pub fn write_vocab_gguf(path: &Path, vocab: &(Vec<String>, Vec<f32>, Vec<i32>)) {
    let (tokens, scores, types) = vocab;
    let mut w = GgufWriter {
        header: Vec::new(),
        keys: 0,
    };
    w.text("general.architecture", "llama");
    w.text("general.name", "tiny sentencepiece vocabulary");
    w.u32("llama.block_count", 1);
    w.u32("llama.context_length", 256);
    w.u32("llama.embedding_length", 64);
    w.u32("llama.feed_forward_length", 128);
    w.u32("llama.attention.head_count", 4);
    w.u32("llama.attention.head_count_kv", 4);
    w.f32("llama.attention.layer_norm_rms_epsilon", EPS);
    w.u32("llama.vocab_size", tokens.len() as u32);
    w.text("tokenizer.ggml.model", "llama");
    w.texts("tokenizer.ggml.tokens", tokens);
    w.f32s("tokenizer.ggml.scores", scores);
    w.i32s("tokenizer.ggml.token_type", types);
    w.u32("tokenizer.ggml.unknown_token_id", 0);
    w.u32("tokenizer.ggml.bos_token_id", 1);
    w.u32("tokenizer.ggml.eos_token_id", 2);
    let mut file = b"GGUF".to_vec();
    file.extend_from_slice(&3u32.to_le_bytes());
    file.extend_from_slice(&0u64.to_le_bytes());
    file.extend_from_slice(&w.keys.to_le_bytes());
    file.extend_from_slice(&w.header);
    while !file.len().is_multiple_of(32) {
        file.push(0);
    }
    std::fs::write(path, file).unwrap();
}
