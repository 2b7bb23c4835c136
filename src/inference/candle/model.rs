//! Our own forward pass for llama-family GGUF models (llama, qwen2) on candle tensors and
//! candle's quantized matmuls. Owning it lets us (1) run Q4_1 and Q5_0 weights on candle's SIMD
//! kernels, exactly (see [`Linear`]), and (2) return logits for every position, so scoring and teacher forcing
//! are batched like prefill. Layout and names follow the GGUF tensor names.

use candle_core::{
    quantized::{ggml_file::qtensor_from_ggml, gguf_file, GgmlDType, QMatMul, QTensor},
    DType, Device, IndexOp, Module, Result, Tensor,
};

/// Shape facts from the GGUF metadata.
#[derive(Clone, Debug)]
pub struct Hyper {
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    /// qwen2 rotates the two halves of each head (NeoX); llama files rotate adjacent pairs.
    pub rope_halves: bool,
}

impl Hyper {
    pub fn from_metadata(ct: &gguf_file::Content, arch: &str) -> Result<Self> {
        let number = |key: &str| -> Result<u32> {
            match ct.metadata.get(&format!("{arch}.{key}")) {
                Some(v) => v.to_u32(),
                None => candle_core::bail!("the file has no `{arch}.{key}`"),
            }
        };
        let hidden = number("embedding_length")? as usize;
        let heads = number("attention.head_count")? as usize;
        let kv_heads = number("attention.head_count_kv")? as usize;
        if heads == 0
            || kv_heads == 0
            || !hidden.is_multiple_of(heads)
            || !heads.is_multiple_of(kv_heads)
        {
            candle_core::bail!(
                "inconsistent head counts ({heads} heads, {kv_heads} kv heads, width {hidden})"
            );
        }
        let float = |key: &str, default: f32| {
            ct.metadata
                .get(&format!("{arch}.{key}"))
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(default)
        };
        Ok(Self {
            layers: number("block_count")? as usize,
            heads,
            kv_heads,
            head_dim: hidden / heads,
            rms_eps: float("attention.layer_norm_rms_epsilon", 1e-5),
            rope_theta: float("rope.freq_base", 10_000.0),
            rope_halves: arch == "qwen2",
        })
    }
}

/// A weight matrix. Q4_1 (w = d·q + m per 32-block) has no SIMD kernel in candle; it is split
/// exactly into a Q8_0 matrix of d·q (q ≤ 15 fits an i8) and the per-block minima m, whose
/// contribution is m · (sum of the input over the block): a matmul 32 times smaller.
enum Linear {
    Quantized(QMatMul),
    SplitQ4_1 {
        steps: QMatMul,
        /// [k / 32, n]: the minima, transposed for the block-sum product.
        minima: Tensor,
    },
}

const Q4_1_BLOCK_BYTES: usize = 20;
const Q8_0_BLOCK_BYTES: usize = 34;
const BLOCK: usize = 32;

impl Linear {
    fn new(weight: QTensor) -> Result<Self> {
        let weight = super::widen::without_q5_0(weight)?;
        if weight.dtype() != GgmlDType::Q4_1 {
            return Ok(Self::Quantized(QMatMul::from_qtensor(weight)?));
        }
        let (n, k) = weight.shape().dims2()?;
        let device = weight.device();
        let data = weight.data()?;
        let blocks = data.len() / Q4_1_BLOCK_BYTES;
        let mut steps = vec![0u8; blocks * Q8_0_BLOCK_BYTES];
        let mut minima = Vec::with_capacity(blocks);
        for (q4, q8) in data
            .chunks_exact(Q4_1_BLOCK_BYTES)
            .zip(steps.chunks_exact_mut(Q8_0_BLOCK_BYTES))
        {
            // Q4_1: f16 d, f16 m, 16 bytes (element j low nibble, element j + 16 high nibble).
            q8[..2].copy_from_slice(&q4[..2]);
            minima.push(half::f16::from_le_bytes([q4[2], q4[3]]).to_f32());
            for j in 0..BLOCK / 2 {
                q8[2 + j] = q4[4 + j] & 0x0f;
                q8[2 + BLOCK / 2 + j] = q4[4 + j] >> 4;
            }
        }
        let steps = qtensor_from_ggml(GgmlDType::Q8_0, &steps, vec![n, k], &device)?;
        let minima = Tensor::from_vec(minima, (n, k / BLOCK), &device)?
            .t()?
            .contiguous()?;
        Ok(Self::SplitQ4_1 {
            steps: QMatMul::from_qtensor(steps)?,
            minima,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Quantized(m) => m.forward(x),
            Self::SplitQ4_1 { steps, minima } => {
                let mut blocked = x.dims().to_vec();
                let k = blocked.pop().unwrap_or(0);
                blocked.push(k / BLOCK);
                let sums = Tensor::from_vec(quantized_block_sums(x)?, blocked, x.device())?;
                steps.forward(x)? + sums.broadcast_matmul(minima)?
            }
        }
    }
}

/// The sum of each 32-block of `x` after 8-bit quantization, as ggml's Q8_1 stores it (`s =
/// f16(d · Σq)`). ggml's Q4_1 kernel multiplies the minima by this, not by the exact sum; using
/// the same rounding keeps our top-1 choices with llama.cpp's on near-ties (exact sums agreed
/// at 89% of positions on the default model, these at 96%).
fn quantized_block_sums(x: &Tensor) -> Result<Vec<f32>> {
    let values = x.flatten_all()?.to_vec1::<f32>()?;
    Ok(values
        .chunks_exact(BLOCK)
        .map(|block| {
            let max = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = max / 127.0;
            let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let sum: f32 = block.iter().map(|v| (v * inverse).round()).sum();
            half::f16::from_f32(scale * sum).to_f32()
        })
        .collect())
}

/// Matrices that read the same input, stacked by rows into one when their types match, so a
/// token takes one matmul (one hand-off to candle's thread pool) instead of several.
struct Stacked {
    parts: Vec<Linear>,
    /// Output width of each original matrix.
    widths: Vec<usize>,
}

impl Stacked {
    fn new(weights: Vec<QTensor>) -> Result<Self> {
        // Widen first, so a Q5_0 matrix can stack with Q8_0 neighbours.
        let weights = weights
            .into_iter()
            .map(super::widen::without_q5_0)
            .collect::<Result<Vec<_>>>()?;
        let mut shapes = Vec::with_capacity(weights.len());
        for w in &weights {
            shapes.push(w.shape().dims2()?);
        }
        let widths: Vec<usize> = shapes.iter().map(|(n, _)| *n).collect();
        let first = weights.first().map(|w| w.dtype());
        let stackable = weights.len() > 1
            && weights.iter().all(|w| Some(w.dtype()) == first)
            && shapes.iter().all(|(_, k)| *k == shapes[0].1)
            && !matches!(first, Some(GgmlDType::F32 | GgmlDType::F16));
        let parts = match first {
            Some(dtype) if stackable => {
                // Quantized rows are whole blocks, so the row-major bytes simply concatenate.
                let mut bytes = Vec::new();
                for w in &weights {
                    bytes.extend_from_slice(&w.data()?);
                }
                let device = weights[0].device();
                let shape = vec![widths.iter().sum(), shapes[0].1];
                drop(weights);
                vec![Linear::new(qtensor_from_ggml(
                    dtype, &bytes, shape, &device,
                )?)?]
            }
            _ => weights
                .into_iter()
                .map(Linear::new)
                .collect::<Result<_>>()?,
        };
        Ok(Self { parts, widths })
    }

    /// One output per original matrix.
    fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        if self.parts.len() == self.widths.len() {
            return self.parts.iter().map(|p| p.forward(x)).collect();
        }
        let y = self.parts[0].forward(x)?;
        let mut start = 0;
        let mut outputs = Vec::with_capacity(self.widths.len());
        for &width in &self.widths {
            outputs.push(y.narrow(candle_core::D::Minus1, start, width)?);
            start += width;
        }
        Ok(outputs)
    }
}

struct Layer {
    attn_norm: Tensor,
    /// q, k, v.
    qkv: Stacked,
    /// qwen2 only.
    qkv_bias: Option<(Tensor, Tensor, Tensor)>,
    o: Linear,
    ffn_norm: Tensor,
    /// gate, up.
    gate_up: Stacked,
    down: Linear,
    cache: Option<(Tensor, Tensor)>,
}

pub struct Transformer {
    hyper: Hyper,
    embedding: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    output: Linear,
    cos: Tensor,
    sin: Tensor,
}

fn repeat_kv(x: Tensor, times: usize) -> Result<Tensor> {
    if times == 1 {
        return Ok(x);
    }
    let (b, heads, len, dim) = x.dims4()?;
    Tensor::cat(&vec![&x; times], 2)?.reshape((b, heads * times, len, dim))
}

impl Transformer {
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
        arch: &str,
        max_positions: usize,
    ) -> Result<Self> {
        let device = Device::Cpu;
        let hyper = Hyper::from_metadata(ct, arch)?;
        let mut tensor = |name: &str| ct.tensor(reader, name, &device);
        let embedding_q = tensor("token_embd.weight")?;
        let embedding = embedding_q.dequantize(&device)?;
        let output = match tensor("output.weight") {
            Ok(w) => Linear::new(w)?,
            Err(_) => Linear::new(embedding_q)?, // tied embeddings
        };
        let norm = tensor("output_norm.weight")?.dequantize(&device)?;
        let mut layers = Vec::with_capacity(hyper.layers);
        for i in 0..hyper.layers {
            let mut t = |part: &str| tensor(&format!("blk.{i}.{part}"));
            let qkv_bias = if arch == "qwen2" {
                Some((
                    t("attn_q.bias")?.dequantize(&device)?,
                    t("attn_k.bias")?.dequantize(&device)?,
                    t("attn_v.bias")?.dequantize(&device)?,
                ))
            } else {
                None
            };
            layers.push(Layer {
                attn_norm: t("attn_norm.weight")?.dequantize(&device)?,
                qkv: Stacked::new(vec![
                    t("attn_q.weight")?,
                    t("attn_k.weight")?,
                    t("attn_v.weight")?,
                ])?,
                qkv_bias,
                o: Linear::new(t("attn_output.weight")?)?,
                ffn_norm: t("ffn_norm.weight")?.dequantize(&device)?,
                gate_up: Stacked::new(vec![t("ffn_gate.weight")?, t("ffn_up.weight")?])?,
                down: Linear::new(t("ffn_down.weight")?)?,
                cache: None,
            });
        }
        // Rotation angles for every position: theta_i = base^(-2i/d).
        let half = hyper.head_dim / 2;
        let inverse: Vec<f32> = (0..half)
            .map(|i| {
                hyper
                    .rope_theta
                    .powf(-((2 * i) as f32) / hyper.head_dim as f32)
            })
            .collect();
        let angles = Tensor::arange(0, max_positions as u32, &device)?
            .to_dtype(DType::F32)?
            .reshape((max_positions, 1))?
            .matmul(&Tensor::from_vec(inverse, (1, half), &device)?)?;
        Ok(Self {
            cos: angles.cos()?,
            sin: angles.sin()?,
            hyper,
            embedding,
            layers,
            norm,
            output,
        })
    }

    /// Logits for `tokens` placed at `position..`: every position's when `all`, else the last
    /// one's; shape [rows, vocabulary]. Position 0 starts a new sequence.
    pub fn forward(&mut self, tokens: &[u32], position: usize, all: bool) -> Result<Tensor> {
        let device = Device::Cpu;
        let len = tokens.len();
        let ids = Tensor::new(tokens, &device)?;
        let mut x = self.embedding.index_select(&ids, 0)?.unsqueeze(0)?;
        let mask = (len > 1)
            .then(|| causal_mask(len, position, &device))
            .transpose()?;
        let (cos, sin) = (
            self.cos.narrow(0, position, len)?,
            self.sin.narrow(0, position, len)?,
        );
        let h = &self.hyper;
        for layer in &mut self.layers {
            let normed = candle_nn::ops::rms_norm(&x, &layer.attn_norm, h.rms_eps)?;
            let [mut q, mut k, mut v]: [Tensor; 3] = layer
                .qkv
                .forward(&normed)?
                .try_into()
                .map_err(|_| candle_core::Error::Msg("q, k and v expected".into()))?;
            if let Some((bq, bk, bv)) = &layer.qkv_bias {
                q = q.broadcast_add(bq)?;
                k = k.broadcast_add(bk)?;
                v = v.broadcast_add(bv)?;
            }
            let heads = |t: Tensor, n: usize| {
                let t = t.contiguous()?;
                t.reshape((1, len, n, h.head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let (q, k, v) = (
                heads(q, h.heads)?,
                heads(k, h.kv_heads)?,
                heads(v, h.kv_heads)?,
            );
            let rotate = |t: &Tensor| {
                if h.rope_halves {
                    candle_nn::rotary_emb::rope(t, &cos, &sin)
                } else {
                    candle_nn::rotary_emb::rope_i(t, &cos, &sin)
                }
            };
            let (q, k) = (rotate(&q)?, rotate(&k)?);
            let (k, v) = match (&layer.cache, position) {
                (Some((past_k, past_v)), p) if p > 0 => (
                    Tensor::cat(&[past_k, &k], 2)?,
                    Tensor::cat(&[past_v, &v], 2)?,
                ),
                _ => (k, v),
            };
            layer.cache = Some((k.clone(), v.clone()));
            let group = h.heads / h.kv_heads;
            let (k, v) = (repeat_kv(k, group)?, repeat_kv(v, group)?.contiguous()?);
            let mut scores = (q.matmul(&k.t()?)? / (h.head_dim as f64).sqrt())?;
            if let Some(mask) = &mask {
                scores = scores.broadcast_add(mask)?;
            }
            let attended = candle_nn::ops::softmax_last_dim(&scores)?
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((1, len, h.heads * h.head_dim))?;
            x = (layer.o.forward(&attended)? + x)?;

            let normed = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, h.rms_eps)?;
            let [gate, up]: [Tensor; 2] = layer
                .gate_up
                .forward(&normed)?
                .try_into()
                .map_err(|_| candle_core::Error::Msg("gate and up expected".into()))?;
            let gated = (candle_nn::ops::silu(&gate.contiguous()?)? * up)?;
            x = (layer.down.forward(&gated)? + x)?;
        }
        let x = if all { x } else { x.i((.., len - 1.., ..))? };
        let x = candle_nn::ops::rms_norm(&x, &self.norm, h.rms_eps)?;
        self.output.forward(&x)?.squeeze(0)
    }
}

/// Additive mask [len, position + len]: -inf where a token would see a later one.
fn causal_mask(len: usize, position: usize, device: &Device) -> Result<Tensor> {
    let width = position + len;
    let values: Vec<f32> = (0..len)
        .flat_map(|i| {
            (0..width).map(move |j| {
                if j > position + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(values, (len, width), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_q4_1_matmul_equals_the_dequantized_product() {
        // A 4 × 64 Q4_1 matrix with varied scales and minima, against plain f32 maths.
        let (n, k) = (4usize, 64usize);
        let mut bytes = Vec::new();
        let mut state = 0x9e37_79b9u32;
        for block in 0..(n * k / BLOCK) {
            let d = half::f16::from_f32(0.01 + block as f32 * 0.003);
            let m = half::f16::from_f32(-0.05 + block as f32 * 0.02);
            bytes.extend_from_slice(&d.to_le_bytes());
            bytes.extend_from_slice(&m.to_le_bytes());
            for _ in 0..16 {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                bytes.push((state >> 24) as u8);
            }
        }
        let weight = qtensor_from_ggml(GgmlDType::Q4_1, &bytes, vec![n, k], &Device::Cpu).unwrap();
        let dense = weight.dequantize(&Device::Cpu).unwrap();
        let x = Tensor::arange(0f32, (2 * k) as f32, &Device::Cpu)
            .unwrap()
            .affine(0.01, -0.3)
            .unwrap()
            .reshape((1, 2, k))
            .unwrap();
        let expected = x.broadcast_matmul(&dense.t().unwrap()).unwrap();
        let got = Linear::new(weight).unwrap().forward(&x).unwrap();
        let (expected, got) = (
            expected.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        // Q8_0 quantizes the input for the d·q part; allow that rounding, not a wrong formula.
        for (e, g) in expected.iter().zip(&got) {
            assert!((e - g).abs() < 0.01 * e.abs().max(1.0), "{e} vs {g}");
        }
    }

    /// Q8_0 blocks with small positive scales and varied values.
    fn q8_0_matrix(n: usize, k: usize, seed: u32) -> QTensor {
        let mut bytes = Vec::new();
        let mut state = seed;
        for block in 0..(n * k / BLOCK) as u16 {
            bytes.extend_from_slice(&(0x2000u16 + block * 7).to_le_bytes());
            for _ in 0..BLOCK {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                bytes.push((state >> 24) as u8);
            }
        }
        qtensor_from_ggml(GgmlDType::Q8_0, &bytes, vec![n, k], &Device::Cpu).unwrap()
    }

    #[test]
    fn stacked_matrices_give_each_original_output() {
        let k = 64;
        let x = Tensor::arange(0f32, (3 * k) as f32, &Device::Cpu)
            .unwrap()
            .affine(0.02, -1.0)
            .unwrap()
            .reshape((1, 3, k))
            .unwrap();
        let separate: Vec<Vec<f32>> = [(8, 1), (4, 2)]
            .iter()
            .map(|&(n, seed)| {
                Linear::new(q8_0_matrix(n, k, seed))
                    .unwrap()
                    .forward(&x)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .collect();
        let stacked = Stacked::new(vec![q8_0_matrix(8, k, 1), q8_0_matrix(4, k, 2)]).unwrap();
        assert_eq!(stacked.parts.len(), 1, "same type and width: one matmul");
        for (got, want) in stacked.forward(&x).unwrap().iter().zip(&separate) {
            let got = got
                .contiguous()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(&got, want);
        }
    }

    #[test]
    fn the_mask_hides_only_later_positions() {
        let mask = causal_mask(2, 3, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(mask[0][..4], [0.0; 4]);
        assert!(mask[0][4].is_infinite());
        assert_eq!(mask[1], vec![0.0; 5]);
    }
}
