//! Reading a GGUF header defensively, for every engine. candle's reader already bounds string
//! and array lengths by the file size; on top of that we check what a corrupt header could
//! still get wrong (element counts that overflow, tensors that end past the end of the file or
//! do not fill whole quantization blocks), and turn any panic inside the reader into an error,
//! so a damaged download gets a message instead of taking the server down.

use std::{
    fs::File,
    io::{BufReader, Read, Seek},
    panic::{catch_unwind, AssertUnwindSafe},
    path::Path,
};

use candle_core::quantized::gguf_file;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "not a valid GGUF file ({0}); the download may be incomplete or damaged: fetch it again"
    )]
    Corrupt(String),
    #[error("tensor `{name}` ends at byte {end} but the file has only {file_len} bytes: the file is truncated; fetch it again")]
    Truncated {
        name: String,
        end: u64,
        file_len: u64,
    },
    #[error("the file uses tensor type {type_id} ({}), which the candle engine cannot read; run it on llama.cpp", type_name(*.type_id))]
    UnsupportedType { type_id: u32 },
}

/// Names of ggml tensor types candle does not read (its reader knows only the others).
fn type_name(type_id: u32) -> &'static str {
    match type_id {
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        _ => "unknown to this build",
    }
}

/// A validated header plus the file it came from (positioned anywhere; readers seek).
pub struct CheckedGguf<R> {
    pub content: gguf_file::Content,
    pub reader: R,
}

/// Opens and validates a GGUF file.
pub fn open(path: &Path) -> Result<CheckedGguf<BufReader<File>>, GgufError> {
    let file = File::open(path)?;
    check(BufReader::new(file))
}

/// Validates a GGUF header against the length of `reader`.
pub fn check<R: Read + Seek>(mut reader: R) -> Result<CheckedGguf<R>, GgufError> {
    let file_len = reader.seek(std::io::SeekFrom::End(0))?;
    reader.rewind()?;
    let content = catch_unwind(AssertUnwindSafe(|| gguf_file::Content::read(&mut reader)))
        .map_err(|_| GgufError::Corrupt("the header is inconsistent".into()))?
        .map_err(|e| {
            let message = candle_cause(&e);
            match message
                .strip_prefix("unknown dtype for tensor ")
                .and_then(|id| id.split_whitespace().next())
                .and_then(|id| id.parse().ok())
            {
                Some(type_id) => GgufError::UnsupportedType { type_id },
                None => GgufError::Corrupt(message),
            }
        })?;
    if let Some(alignment) = content.metadata.get("general.alignment") {
        let valid = alignment
            .to_u32()
            .is_ok_and(|a| a.is_power_of_two() && a <= 1 << 20);
        if !valid {
            return Err(GgufError::Corrupt(format!(
                "general.alignment is {alignment:?}, not a power of two"
            )));
        }
    }
    for (name, info) in &content.tensor_infos {
        let elements = info
            .shape
            .dims()
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .ok_or_else(|| {
                GgufError::Corrupt(format!("tensor `{name}` has an impossible shape"))
            })?;
        let block = info.ggml_dtype.block_size() as u64;
        if elements % block != 0 {
            return Err(GgufError::Corrupt(format!(
                "tensor `{name}` has {elements} elements, not a whole number of {block}-element blocks"
            )));
        }
        let bytes = (elements / block).checked_mul(info.ggml_dtype.type_size() as u64);
        let end = bytes
            .and_then(|b| b.checked_add(info.offset))
            .and_then(|b| b.checked_add(content.tensor_data_offset));
        match end {
            Some(end) if end <= file_len => {}
            Some(end) => {
                return Err(GgufError::Truncated {
                    name: name.clone(),
                    end,
                    file_len,
                })
            }
            None => {
                return Err(GgufError::Corrupt(format!(
                    "tensor `{name}` has an impossible size or offset"
                )))
            }
        }
    }
    Ok(CheckedGguf { content, reader })
}

/// candle appends a backtrace to its errors when RUST_BACKTRACE is set; people need the cause,
/// which is the first line.
pub fn candle_cause(error: &candle_core::Error) -> String {
    error
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `general.architecture`, e.g. `llama` or `qwen2`.
pub fn architecture(content: &gguf_file::Content) -> Option<&str> {
    content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
}
