//! The weights a BitNet forward pass holds: per layer four norms and four ternary matrices
//! (q/k/v and gate/up stacked), the embedding that is also the output head, and random weights
//! with real shapes for benchmarks.

use super::{
    config::BitnetConfig,
    head::{HeadPrecision, Table},
    q6k::Q6kError,
    ternary::TernaryMatrix,
};

pub struct Layer {
    pub input_norm: Vec<f32>,
    pub post_attention_norm: Vec<f32>,
    pub attn_sub_norm: Vec<f32>,
    pub ffn_sub_norm: Vec<f32>,
    /// q, k and v stacked, each with its own scale.
    pub qkv: TernaryMatrix,
    pub o: TernaryMatrix,
    /// gate and up stacked.
    pub gate_up: TernaryMatrix,
    pub down: TernaryMatrix,
}

pub struct Weights {
    pub config: BitnetConfig,
    /// `[vocab, hidden]`; also the output head when embeddings are tied.
    pub embedding: Table,
    /// An untied output head, `[vocab, hidden]`.
    pub output: Option<Table>,
    pub final_norm: Vec<f32>,
    pub layers: Vec<Layer>,
}

impl Weights {
    /// Bytes of packed ternary weights.
    pub fn ternary_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.qkv.bytes() + l.o.bytes() + l.gate_up.bytes() + l.down.bytes())
            .sum()
    }

    /// Bytes of the embedding and (if untied) the output head.
    pub fn embedding_bytes(&self) -> usize {
        self.embedding.bytes() + self.output.as_ref().map_or(0, Table::bytes)
    }

    /// The output head in `precision` (see [`Table::into_precision`]). A tied embedding
    /// changes with it (one table serves both, so only one copy is resident); an untied
    /// embedding keeps its own precision.
    ///
    /// # Errors
    /// Q6_K is asked for a hidden size that is not a multiple of 256.
    pub fn with_head(mut self, precision: HeadPrecision) -> Result<Self, Q6kError> {
        let hidden = self.config.hidden_size;
        match self.output.take() {
            Some(output) => self.output = Some(output.into_precision(precision, hidden)?),
            None => self.embedding = self.embedding.into_precision(precision, hidden)?,
        }
        Ok(self)
    }

    /// The precision the output head runs in.
    pub fn head_precision(&self) -> HeadPrecision {
        self.head().precision()
    }

    /// Ternary parameters (rows × columns of every projection).
    pub fn ternary_parameters(&self) -> usize {
        self.layers
            .iter()
            .map(|l| {
                [&l.qkv, &l.o, &l.gate_up, &l.down]
                    .iter()
                    .map(|m| m.rows() * m.cols())
                    .sum::<usize>()
            })
            .sum()
    }

    pub(super) fn head(&self) -> &Table {
        self.output.as_ref().unwrap_or(&self.embedding)
    }

    /// Random weights with `config`'s shapes: ternary values uniform over {-1, 0, +1}, small
    /// bf16 embeddings, unit norms. For benchmarks, which need the shapes, not the knowledge.
    pub fn random(config: &BitnetConfig, seed: u64) -> Self {
        let mut state = seed | 1;
        let mut next = move || {
            // xorshift64*: fast enough to fill gigabytes in seconds.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let (hidden, inter, kv) = (
            config.hidden_size,
            config.intermediate_size,
            config.kv_size(),
        );
        let mut matrix = |rows: usize, cols: usize| {
            TernaryMatrix::random(rows, cols, 0.5 + (next() % 100) as f32 / 100.0, &mut next)
        };
        let layers = (0..config.num_hidden_layers)
            .map(|_| {
                let parts = vec![
                    matrix(hidden, hidden),
                    matrix(kv, hidden),
                    matrix(kv, hidden),
                ];
                let qkv = TernaryMatrix::stack(parts).expect("q, k and v share their columns");
                let gate_up =
                    TernaryMatrix::stack(vec![matrix(inter, hidden), matrix(inter, hidden)])
                        .expect("gate and up share their columns");
                Layer {
                    input_norm: vec![1.0; hidden],
                    post_attention_norm: vec![1.0; hidden],
                    attn_sub_norm: vec![1.0; hidden],
                    ffn_sub_norm: vec![1.0; inter],
                    qkv,
                    o: matrix(hidden, hidden),
                    gate_up,
                    down: matrix(hidden, inter),
                }
            })
            .collect();
        let embedding = Table::Bf16(
            (0..config.vocab_size * hidden)
                .map(|_| half::bf16::from_f32(((next() % 2001) as f32 - 1000.0) * 2e-5).to_bits())
                .collect(),
        );
        Self {
            config: config.clone(),
            embedding,
            output: None,
            final_norm: vec![1.0; hidden],
            layers,
        }
    }
}
