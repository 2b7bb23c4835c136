//! The two runtimes a NER model can run on, behind one call (`logits` of a framed window):
//! rten for an ONNX export (`model.onnx`, any quantization rten reads), and candle for
//! safetensors (`model.safetensors`): candle-transformers' BERT plus the token-classification
//! head, a linear layer over each position's hidden state.

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use rten::Model;
use rten_tensor::{prelude::*, NdTensor};
use serde::Deserialize;

use super::NerError;

/// Which runtime a `[[ner_models]]` entry runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NerRuntime {
    /// `model.onnx` on rten.
    #[default]
    Rten,
    /// `model.safetensors` on candle.
    Candle,
}

impl NerRuntime {
    /// The weights file this runtime reads.
    pub fn weights_file(self) -> &'static str {
        match self {
            NerRuntime::Rten => "model.onnx",
            NerRuntime::Candle => "model.safetensors",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            NerRuntime::Rten => "rten",
            NerRuntime::Candle => "candle",
        }
    }
}

pub(super) enum Network {
    Rten(RtenNetwork),
    Candle(CandleNetwork),
}

pub(super) struct RtenNetwork {
    model: Model,
    input_ids: rten::NodeId,
    attention_mask: Option<rten::NodeId>,
    token_type_ids: Option<rten::NodeId>,
    logits: rten::NodeId,
}

pub(super) struct CandleNetwork {
    bert: BertModel,
    classifier: Linear,
    device: Device,
}

fn load_error(dir: &Path, file: &str, detail: String) -> NerError {
    NerError::Load {
        path: dir.join(file).display().to_string(),
        detail,
    }
}

impl Network {
    pub(super) fn load(
        runtime: NerRuntime,
        dir: &Path,
        config_text: &str,
        labels: usize,
    ) -> Result<Self, NerError> {
        match runtime {
            NerRuntime::Rten => {
                crate::denormals::flush_on_rten_threads();
                let file = runtime.weights_file();
                let model = Model::load_file(dir.join(file))
                    .map_err(|e| load_error(dir, file, e.to_string()))?;
                let node = |name: &str| model.find_node(name);
                let input_ids = node("input_ids")
                    .ok_or_else(|| load_error(dir, file, "no `input_ids` input".into()))?;
                let logits = node("logits")
                    .or_else(|| model.output_ids().first().copied())
                    .ok_or_else(|| load_error(dir, file, "no output".into()))?;
                Ok(Network::Rten(RtenNetwork {
                    attention_mask: node("attention_mask"),
                    token_type_ids: node("token_type_ids"),
                    model,
                    input_ids,
                    logits,
                }))
            }
            NerRuntime::Candle => {
                let file = runtime.weights_file();
                let config: BertConfig = serde_json::from_str(config_text)
                    .map_err(|e| load_error(dir, "config.json", e.to_string()))?;
                let device = Device::Cpu;
                // Safety: the file is memory-mapped read-only; it must not change while loaded,
                // which holds for a model folder the registry owns.
                let vb = unsafe {
                    VarBuilder::from_mmaped_safetensors(
                        &[dir.join(file)],
                        candle_core::DType::F32,
                        &device,
                    )
                }
                .map_err(|e| load_error(dir, file, e.to_string()))?;
                let bert = BertModel::load(vb.clone(), &config)
                    .map_err(|e| load_error(dir, file, e.to_string()))?;
                let classifier = candle_nn::linear(config.hidden_size, labels, vb.pp("classifier"))
                    .map_err(|e| load_error(dir, file, format!("classifier: {e}")))?;
                Ok(Network::Candle(CandleNetwork {
                    bert,
                    classifier,
                    device,
                }))
            }
        }
    }

    /// Logits, one row per position, of a window framed with [CLS] … [SEP].
    pub(super) fn logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>, NerError> {
        let run_error = |e: &dyn std::fmt::Display| NerError::Run(e.to_string());
        let length = ids.len();
        match self {
            Network::Rten(net) => {
                let ids: Vec<i32> = ids.iter().map(|&id| id as i32).collect();
                let mut inputs =
                    vec![(net.input_ids, NdTensor::from_data([1, length], ids).into())];
                if let Some(mask) = net.attention_mask {
                    inputs.push((
                        mask,
                        NdTensor::from_data([1, length], vec![1i32; length]).into(),
                    ));
                }
                if let Some(types) = net.token_type_ids {
                    inputs.push((
                        types,
                        NdTensor::from_data([1, length], vec![0i32; length]).into(),
                    ));
                }
                let [output] = net
                    .model
                    .run_n(inputs, [net.logits], None)
                    .map_err(|e| run_error(&e))?;
                let logits: NdTensor<f32, 3> = output.try_into().map_err(|e| run_error(&e))?;
                let [_, rows, classes] = logits.shape();
                Ok((0..rows)
                    .map(|row| (0..classes).map(|c| logits[[0, row, c]]).collect())
                    .collect())
            }
            Network::Candle(net) => {
                let forward = || -> candle_core::Result<Vec<Vec<f32>>> {
                    let input = Tensor::new(ids, &net.device)?.unsqueeze(0)?;
                    let types = input.zeros_like()?;
                    let hidden = net.bert.forward(&input, &types, None)?;
                    net.classifier
                        .forward(&hidden)?
                        .squeeze(0)?
                        .to_vec2::<f32>()
                };
                forward().map_err(|e| run_error(&e))
            }
        }
    }
}
