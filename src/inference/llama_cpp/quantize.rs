//! Another quantization of a GGUF through llama.cpp's own quantizer (`llama_model_quantize`,
//! what `llama-quantize` runs). The output is written under a temporary name beside the target
//! and renamed into place only when llama.cpp reports success, so a cancelled or failed run
//! never leaves a file that looks finished.

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use candle_core::quantized::gguf_file::Value;

use super::backend;
use crate::inference::gguf;

/// The types offered: llama.cpp's common choices from 8 bits down to 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantType {
    Q8_0,
    Q6K,
    Q5KM,
    Q4KM,
    Q4_0,
    Iq4Xs,
    Q3KM,
    Q2K,
}

impl QuantType {
    pub const ALL: [QuantType; 8] = [
        QuantType::Q8_0,
        QuantType::Q6K,
        QuantType::Q5KM,
        QuantType::Q4KM,
        QuantType::Q4_0,
        QuantType::Iq4Xs,
        QuantType::Q3KM,
        QuantType::Q2K,
    ];

    /// As llama.cpp names it.
    pub fn label(self) -> &'static str {
        match self {
            QuantType::Q8_0 => "Q8_0",
            QuantType::Q6K => "Q6_K",
            QuantType::Q5KM => "Q5_K_M",
            QuantType::Q4KM => "Q4_K_M",
            QuantType::Q4_0 => "Q4_0",
            QuantType::Iq4Xs => "IQ4_XS",
            QuantType::Q3KM => "Q3_K_M",
            QuantType::Q2K => "Q2_K",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.label().eq_ignore_ascii_case(text.trim()))
    }

    /// The type's bits per weight as llama.cpp documents it (mixed types vary by model).
    pub fn nominal_bits(self) -> f32 {
        match self {
            QuantType::Q8_0 => 8.5,
            QuantType::Q6K => 6.56,
            QuantType::Q5KM => 5.69,
            QuantType::Q4KM => 4.89,
            QuantType::Q4_0 => 4.5,
            QuantType::Iq4Xs => 4.25,
            QuantType::Q3KM => 3.91,
            QuantType::Q2K => 2.96,
        }
    }

    /// llama.cpp's `llama_ftype` for this type.
    fn ftype(self) -> llama_cpp_sys_2::llama_ftype {
        use llama_cpp_sys_2::*;
        match self {
            QuantType::Q8_0 => LLAMA_FTYPE_MOSTLY_Q8_0,
            QuantType::Q6K => LLAMA_FTYPE_MOSTLY_Q6_K,
            QuantType::Q5KM => LLAMA_FTYPE_MOSTLY_Q5_K_M,
            QuantType::Q4KM => LLAMA_FTYPE_MOSTLY_Q4_K_M,
            QuantType::Q4_0 => LLAMA_FTYPE_MOSTLY_Q4_0,
            QuantType::Iq4Xs => LLAMA_FTYPE_MOSTLY_IQ4_XS,
            QuantType::Q3KM => LLAMA_FTYPE_MOSTLY_Q3_K_M,
            QuantType::Q2K => LLAMA_FTYPE_MOSTLY_Q2_K,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error("{path}: {source}")]
    Input {
        path: String,
        source: gguf::GgufError,
    },
    #[error(
        "{path} is already quantized ({from}): quantizing it again loses quality twice (the rounding of {from}, then of {to}). Start from an F16/BF16/F32 file, or allow requantizing to accept the loss"
    )]
    Requantize {
        path: String,
        from: String,
        to: &'static str,
    },
    #[error("{0} already exists: delete it first, or choose another name")]
    OutputExists(String),
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("a path with a NUL byte cannot be passed to llama.cpp: {0}")]
    BadPath(String),
    #[error("llama.cpp could not quantize {path} (code {code}); its log has the reason")]
    Failed { path: String, code: u32 },
    #[error("llama.cpp backend: {0}")]
    Backend(String),
}

/// What a quantization produced.
#[derive(Clone, Debug)]
pub struct Quantized {
    pub path: PathBuf,
    pub bytes: u64,
    /// The source's own type, as its metadata names it.
    pub from: String,
    pub requantized: bool,
}

/// Writes `input` as `kind` to `output` with `threads` threads, calling `on_tensor(done,
/// total)` as llama.cpp finishes each tensor. A source that is already quantized is refused
/// unless `allow_requantize`.
///
/// # Errors
/// A damaged or non-GGUF input, a refused requantization, an existing output, or llama.cpp's
/// failure; no file is left at `output` in any of these cases.
pub fn quantize(
    input: &Path,
    output: &Path,
    kind: QuantType,
    threads: usize,
    allow_requantize: bool,
    on_tensor: &(dyn Fn(u64, u64) + Sync),
) -> Result<Quantized, QuantizeError> {
    let display = |path: &Path| path.display().to_string();
    let checked = gguf::open(input).map_err(|source| QuantizeError::Input {
        path: display(input),
        source,
    })?;
    let file_type = match checked.content.metadata.get("general.file_type") {
        Some(Value::U32(t)) => Some(*t),
        Some(Value::I32(t)) => u32::try_from(*t).ok(),
        _ => None,
    };
    drop(checked);
    let from = file_type.map_or_else(|| "unknown type".to_string(), file_type_name);
    // 0, 1 and 32 are F32, F16 and BF16: full precision, nothing rounded yet.
    let requantized = !matches!(file_type, Some(0 | 1 | 32));
    if requantized && !allow_requantize {
        return Err(QuantizeError::Requantize {
            path: display(input),
            from,
            to: kind.label(),
        });
    }
    if output.exists() {
        return Err(QuantizeError::OutputExists(display(output)));
    }
    let partial = partial_path(output);
    let c_path = |path: &Path| {
        CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| QuantizeError::BadPath(display(path)))
    };
    let (c_input, c_partial) = (c_path(input)?, c_path(&partial)?);
    backend().map_err(|e| QuantizeError::Backend(e.to_string()))?;

    // SAFETY: the default parameters are plain data; the pointers inside stay null (no
    // importance matrix, overrides or pruning), and both paths are NUL-terminated strings that
    // outlive the call.
    let code = {
        let _watch = TensorWatch::install(&on_tensor);
        // SAFETY: as above; `_watch` keeps the log hook's target alive until after the call.
        unsafe {
            let mut params = llama_cpp_sys_2::llama_model_quantize_default_params();
            params.nthread = i32::try_from(threads.max(1)).unwrap_or(1);
            params.ftype = kind.ftype();
            params.allow_requantize = allow_requantize;
            llama_cpp_sys_2::llama_model_quantize(c_input.as_ptr(), c_partial.as_ptr(), &params)
        }
    };
    if code != 0 {
        let _ = std::fs::remove_file(&partial);
        return Err(QuantizeError::Failed {
            path: display(input),
            code,
        });
    }
    let io = |source| QuantizeError::Io {
        path: display(output),
        source,
    };
    // The result must read back as a whole GGUF before it takes the final name (types only
    // llama.cpp reads, such as IQ4_XS, pass: the header and sizes were checked by then).
    match gguf::open(&partial) {
        Ok(_) | Err(gguf::GgufError::UnsupportedType { .. }) => {}
        Err(source) => {
            let _ = std::fs::remove_file(&partial);
            return Err(QuantizeError::Input {
                path: display(&partial),
                source,
            });
        }
    }
    std::fs::rename(&partial, output).map_err(io)?;
    let bytes = std::fs::metadata(output).map_err(io)?.len();
    Ok(Quantized {
        path: output.to_path_buf(),
        bytes,
        from,
        requantized,
    })
}

/// llama.cpp's quantizer has no progress hook, but it logs `[  12/ 272] name - ...` as it
/// starts each tensor; while installed, this reads those lines (and passes every line on to
/// `tracing`, where llama.cpp's log normally goes).
struct TensorWatch<'a> {
    _target: std::marker::PhantomData<&'a ()>,
}

impl<'a> TensorWatch<'a> {
    /// `on_tensor` is a reference to the caller's `&dyn Fn`: a thin pointer C can carry.
    fn install(on_tensor: &'a &'a (dyn Fn(u64, u64) + Sync)) -> Self {
        let target: *const &(dyn Fn(u64, u64) + Sync) = on_tensor;
        // SAFETY: `on_tensor` outlives the watch, and `drop` restores the tracing logger
        // before it can dangle.
        unsafe { llama_cpp_sys_2::llama_log_set(Some(tensor_log), target as *mut _) };
        Self {
            _target: std::marker::PhantomData,
        }
    }
}

impl Drop for TensorWatch<'_> {
    fn drop(&mut self) {
        llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
    }
}

extern "C" fn tensor_log(
    _level: llama_cpp_sys_2::ggml_log_level,
    text: *const std::os::raw::c_char,
    data: *mut std::os::raw::c_void,
) {
    if text.is_null() || data.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string and the pointer `install` registered.
    let (text, on_tensor) = unsafe {
        (
            std::ffi::CStr::from_ptr(text).to_string_lossy(),
            &*(data as *const &(dyn Fn(u64, u64) + Sync)),
        )
    };
    if let Some((done, total)) = tensor_counter(&text) {
        on_tensor(done, total);
    }
    tracing::debug!(target: "llama.cpp", "{}", text.trim_end());
}

/// `(12, 272)` from a line that starts `[  12/ 272]`.
fn tensor_counter(line: &str) -> Option<(u64, u64)> {
    let inner = line.trim_start().strip_prefix('[')?;
    let (counter, _) = inner.split_once(']')?;
    let (done, total) = counter.split_once('/')?;
    Some((done.trim().parse().ok()?, total.trim().parse().ok()?))
}

/// Bits per weight of a GGUF as stored: tensor bytes × 8 ÷ tensor elements. `None` when the
/// header cannot be read here (types only llama.cpp knows); callers then use
/// [`QuantType::nominal_bits`].
pub fn measured_bits_per_weight(path: &Path) -> Option<f32> {
    let checked = gguf::open(path).ok()?;
    let (mut bytes, mut elements) = (0u64, 0u64);
    for info in checked.content.tensor_infos.values() {
        let count = info.shape.elem_count() as u64;
        let block = info.ggml_dtype.block_size() as u64;
        elements += count;
        bytes += count / block * info.ggml_dtype.type_size() as u64;
    }
    (elements > 0).then(|| (bytes as f64 * 8.0 / elements as f64) as f32)
}

/// Where a quantization is written until it is complete.
pub fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    output.with_file_name(name)
}

/// llama.cpp's name for a `general.file_type`.
pub fn file_type_name(file_type: u32) -> String {
    let name = match file_type {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        other => return format!("file type {other}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_parse_as_llama_cpp_names_them() {
        for kind in QuantType::ALL {
            assert_eq!(QuantType::parse(kind.label()), Some(kind));
        }
        assert_eq!(QuantType::parse("q4_k_m"), Some(QuantType::Q4KM));
        assert_eq!(QuantType::parse("Q1_0"), None);
        assert_eq!(file_type_name(3), "Q4_1");
        assert_eq!(
            tensor_counter("[  12/ 272]  blk.0.attn_q.weight - [ 576, 576]"),
            Some((12, 272))
        );
        assert_eq!(
            tensor_counter("llama_model_quantize_impl: model size"),
            None
        );
        assert_eq!(
            partial_path(Path::new("/m/a.gguf")),
            Path::new("/m/a.gguf.partial")
        );
    }
}
