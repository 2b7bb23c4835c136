//! What a GGUF file says about itself, read the way the engine will read it: our header check
//! first (a damaged file gets a reason), then llama.cpp's own loader (mmap, so the weights are
//! mapped, not read), which refuses architectures this build cannot run and tensors that do not
//! fit the file. Used before a file from the hub is listed.

use std::path::Path;

use llama_cpp_2::model::{params::LlamaModelParams, LlamaModel};

use super::{backend, quantize::file_type_name};
use crate::inference::{gguf, EngineError};

/// A GGUF file's own description of the model in it.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufFacts {
    /// `general.architecture`, e.g. `llama`.
    pub architecture: String,
    /// `general.name`, when the file has one.
    pub name: Option<String>,
    /// `general.basename` (the model family), when given.
    pub basename: Option<String>,
    /// `general.license`, when given.
    pub license: Option<String>,
    /// llama.cpp's name for the file type, e.g. `Q4_K_M`.
    pub quantization: String,
    pub parameters: u64,
    pub context_length: u32,
    /// Whether a chat template is embedded (an instruct model).
    pub chat_template: bool,
    /// Bytes of tensor data.
    pub size: u64,
}

impl GgufFacts {
    /// Bits per weight over all tensors, measured from the file.
    pub fn bits_per_weight(&self) -> f32 {
        if self.parameters == 0 {
            return 0.0;
        }
        (self.size as f64 * 8.0 / self.parameters as f64) as f32
    }
}

/// Checks `path` and reads its description.
///
/// # Errors
/// A damaged or truncated file, a split file (only its first part), an architecture llama.cpp
/// cannot run, or a file without `general.architecture`.
pub fn inspect(path: &Path) -> Result<GgufFacts, EngineError> {
    let refused = |detail: String| EngineError::Load {
        path: path.display().to_string(),
        detail,
    };
    match gguf::open(path) {
        // IQ types are unknown to our reader; llama.cpp judges those below.
        Ok(_) | Err(gguf::GgufError::UnsupportedType { .. }) => {}
        Err(e) => return Err(refused(e.to_string())),
    }
    let params = LlamaModelParams::default();
    let model = LlamaModel::load_from_file(backend()?, path, &params)
        .map_err(|e| refused(format!("llama.cpp cannot load it ({e})")))?;
    let text = |key: &str| model.meta_val_str(key).ok().filter(|v| !v.is_empty());
    if let Some(count) = text("split.count").and_then(|c| c.parse::<u32>().ok()) {
        if count > 1 {
            return Err(refused(format!(
                "it is part of a model split into {count} files; pick a single-file quantization"
            )));
        }
    }
    let architecture = text("general.architecture")
        .ok_or_else(|| refused("it names no `general.architecture`".into()))?;
    let quantization = text("general.file_type")
        .and_then(|t| t.parse::<u32>().ok())
        .map_or_else(|| "unknown".to_string(), file_type_name);
    Ok(GgufFacts {
        name: text("general.name"),
        basename: text("general.basename"),
        license: text("general.license"),
        quantization,
        parameters: model.n_params(),
        context_length: model.n_ctx_train(),
        chat_template: model.chat_template(None).is_ok(),
        size: model.size(),
        architecture,
    })
}
