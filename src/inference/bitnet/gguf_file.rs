//! A GGUF reader for bitnet.cpp's files. candle's reader refuses tensor types it does not know,
//! and bitnet.cpp stores its ternary projections as `I2_S` (type 36, a type of its llama.cpp
//! fork), so the header is read here: metadata, tensor directory and data offsets, every count,
//! length and offset checked against the file before anything is allocated or sliced.

use std::{collections::HashMap, fs::File, path::Path};

use memmap2::Mmap;

/// bitnet.cpp's ternary type: 2-bit codes in 128-value blocks and one f32 scale per tensor.
pub const TYPE_I2_S: u32 = 36;
pub const TYPE_F32: u32 = 0;
pub const TYPE_F16: u32 = 1;
pub const TYPE_BF16: u32 = 30;
/// llama.cpp's 6-bit blocks, bitnet.cpp's type for the token embedding since 2026.
pub const TYPE_Q6_K: u32 = 14;

#[derive(Debug, thiserror::Error)]
pub enum GgufFileError {
    #[error("cannot read {path}: {detail}")]
    Io { path: String, detail: String },
    #[error(
        "not a valid GGUF file ({0}); the download may be incomplete or damaged: fetch it again"
    )]
    Corrupt(String),
    #[error("tensor `{name}` has type {kind} ({}), which the BitNet engine does not read (it reads I2_S, F32, F16, BF16, and Q6_K for the embedding and head)", type_name(*.kind))]
    UnsupportedType { name: String, kind: u32 },
    #[error("tensor `{0}` is missing from the file")]
    Missing(String),
    #[error("metadata `{0}` is missing or has the wrong type")]
    MissingKey(String),
}

fn type_name(kind: u32) -> &'static str {
    match kind {
        2 => "Q4_0",
        8 => "Q8_0",
        12 => "Q4_K",
        14 => "Q6_K",
        34 => "TQ1_0",
        35 => "TQ2_0",
        _ => "not read here",
    }
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
    List(Vec<Value>),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(v) => Some(*v),
            Value::Int(v) => Some(*v as f64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(text) => Some(text),
            _ => None,
        }
    }
}

/// One tensor's entry in the directory; `dims` as GGUF writes them (fastest-varying first).
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub dims: Vec<u64>,
    pub kind: u32,
    /// Byte range inside the file.
    pub start: usize,
    pub end: usize,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A GGUF file, memory-mapped, with its header read and checked.
pub struct GgufFile {
    map: Mmap,
    pub metadata: HashMap<String, Value>,
    pub tensors: HashMap<String, TensorInfo>,
}

/// The longest key or string we accept (the chat templates of real models are a few KiB; a
/// tokenizer's merges are many short strings).
const MAX_STRING: u64 = 1 << 24;
const MAX_DIMS: u32 = 4;

struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufFileError> {
        let n = usize::try_from(n).map_err(|_| corrupt(what))?;
        let end = self.at.checked_add(n).ok_or_else(|| corrupt(what))?;
        let bytes = self
            .data
            .get(self.at..end)
            .ok_or_else(|| GgufFileError::Corrupt(format!("the file ends inside {what}")))?;
        self.at = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufFileError> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufFileError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufFileError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, GgufFileError> {
        let len = self.u64(what)?;
        if len > MAX_STRING {
            return Err(GgufFileError::Corrupt(format!("{what} claims {len} bytes")));
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| GgufFileError::Corrupt(format!("{what} is not UTF-8")))
    }

    fn remaining(&self) -> u64 {
        (self.data.len() - self.at) as u64
    }

    fn value(&mut self, kind: u32, what: &str, depth: u32) -> Result<Value, GgufFileError> {
        Ok(match kind {
            0 => Value::Int(i64::from(self.array::<1>(what)?[0])),
            1 => Value::Int(i64::from(i8::from_le_bytes(self.array(what)?))),
            2 => Value::Int(i64::from(u16::from_le_bytes(self.array(what)?))),
            3 => Value::Int(i64::from(i16::from_le_bytes(self.array(what)?))),
            4 => Value::Int(i64::from(self.u32(what)?)),
            5 => Value::Int(i64::from(i32::from_le_bytes(self.array(what)?))),
            6 => Value::Float(f64::from(f32::from_le_bytes(self.array(what)?))),
            7 => Value::Bool(self.array::<1>(what)?[0] != 0),
            8 => Value::Text(self.string(what)?),
            9 if depth == 0 => {
                let element = self.u32(what)?;
                let count = self.u64(what)?;
                // Every element takes at least one byte: a count beyond the bytes left is a lie.
                if count > self.remaining() {
                    return Err(GgufFileError::Corrupt(format!(
                        "{what} claims {count} elements"
                    )));
                }
                let mut list = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    list.push(self.value(element, what, depth + 1)?);
                }
                Value::List(list)
            }
            10 => Value::Int(i64::try_from(self.u64(what)?).map_err(|_| corrupt(what))?),
            11 => Value::Int(i64::from_le_bytes(self.array(what)?)),
            12 => Value::Float(f64::from_le_bytes(self.array(what)?)),
            other => {
                return Err(GgufFileError::Corrupt(format!(
                    "{what} has value type {other}"
                )))
            }
        })
    }
}

fn corrupt(what: &str) -> GgufFileError {
    GgufFileError::Corrupt(format!("{what} is out of range"))
}

/// Bytes a tensor of `kind` with `elements` values takes, for the types this engine reads
/// (`None` for the others: they are refused when read, after the architecture was checked, so
/// a llama GGUF is told it is not a BitNet one).
fn data_bytes(kind: u32, elements: u64) -> Option<Option<u64>> {
    match kind {
        TYPE_F32 => Some(elements.checked_mul(4)),
        TYPE_F16 | TYPE_BF16 => Some(elements.checked_mul(2)),
        // The codes, then the f32 scale in a 32-byte tail.
        TYPE_I2_S => Some(Some(elements / 4 + 32)),
        TYPE_Q6_K => Some(
            elements
                .is_multiple_of(crate::inference::bitnet::q6k::BLOCK as u64)
                .then_some(elements / 256 * crate::inference::bitnet::q6k::BLOCK_BYTES as u64),
        ),
        _ => None,
    }
}

impl GgufFile {
    /// Maps and reads `path`.
    ///
    /// # Errors
    /// An unreadable file, a damaged header, or a tensor of a type this engine does not read.
    pub fn open(path: &Path) -> Result<Self, GgufFileError> {
        let io = |e: std::io::Error| GgufFileError::Io {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: read-only; the map lives as long as this value and is only read.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let (metadata, tensors) = read_header(&map)?;
        Ok(Self {
            map,
            metadata,
            tensors,
        })
    }

    /// The bytes of tensor `name`.
    ///
    /// # Errors
    /// It is not in the file.
    pub fn tensor(&self, name: &str) -> Result<(&TensorInfo, &[u8]), GgufFileError> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| GgufFileError::Missing(name.to_string()))?;
        if data_bytes(info.kind, 0).is_none() {
            return Err(GgufFileError::UnsupportedType {
                name: name.to_string(),
                kind: info.kind,
            });
        }
        // Bounds were checked when the header was read.
        let data = self
            .map
            .get(info.start..info.end)
            .ok_or_else(|| corrupt(name))?;
        Ok((info, data))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// A metadata integer.
    ///
    /// # Errors
    /// Missing or not an unsigned integer.
    pub fn usize(&self, key: &str) -> Result<usize, GgufFileError> {
        self.get(key)
            .and_then(Value::as_u64)
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| GgufFileError::MissingKey(key.to_string()))
    }

    /// A list of strings (a tokenizer's tokens or merges).
    ///
    /// # Errors
    /// Missing, or not a list of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<&str>, GgufFileError> {
        match self.get(key) {
            Some(Value::List(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| GgufFileError::MissingKey(key.to_string()))
                })
                .collect(),
            _ => Err(GgufFileError::MissingKey(key.to_string())),
        }
    }
}

type Header = (HashMap<String, Value>, HashMap<String, TensorInfo>);

fn read_header(data: &[u8]) -> Result<Header, GgufFileError> {
    let mut cursor = Cursor { data, at: 0 };
    if cursor.take(4, "the magic")? != b"GGUF" {
        return Err(GgufFileError::Corrupt("it does not start with GGUF".into()));
    }
    let version = cursor.u32("the version")?;
    if !(2..=3).contains(&version) {
        return Err(GgufFileError::Corrupt(format!(
            "version {version}; GGUF 2 and 3 are read"
        )));
    }
    let tensor_count = cursor.u64("the tensor count")?;
    let key_count = cursor.u64("the metadata count")?;
    if tensor_count > cursor.remaining() / 24 || key_count > cursor.remaining() / 12 {
        return Err(GgufFileError::Corrupt(format!(
            "{tensor_count} tensors and {key_count} metadata entries cannot fit in the file"
        )));
    }
    let mut metadata = HashMap::new();
    for _ in 0..key_count {
        let key = cursor.string("a metadata key")?;
        let kind = cursor.u32(&key)?;
        let value = cursor.value(kind, &key, 0)?;
        metadata.insert(key, value);
    }
    let alignment = match metadata.get("general.alignment").and_then(Value::as_u64) {
        None => 32,
        Some(a) if a.is_power_of_two() && a <= 1 << 20 => a,
        Some(a) => {
            return Err(GgufFileError::Corrupt(format!(
                "general.alignment is {a}, not a power of two"
            )))
        }
    };
    let mut directory = Vec::with_capacity(tensor_count as usize);
    for _ in 0..tensor_count {
        let name = cursor.string("a tensor name")?;
        let dim_count = cursor.u32(&name)?;
        if dim_count == 0 || dim_count > MAX_DIMS {
            return Err(GgufFileError::Corrupt(format!(
                "tensor `{name}` has {dim_count} dimensions"
            )));
        }
        let mut dims = Vec::with_capacity(dim_count as usize);
        for _ in 0..dim_count {
            dims.push(cursor.u64(&name)?);
        }
        let kind = cursor.u32(&name)?;
        let offset = cursor.u64(&name)?;
        directory.push((name, dims, kind, offset));
    }
    let data_start = (cursor.at as u64).div_ceil(alignment) * alignment;
    let file_len = data.len() as u64;
    let mut tensors = HashMap::with_capacity(directory.len());
    for (name, dims, kind, offset) in directory {
        let elements = dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .ok_or_else(|| {
                GgufFileError::Corrupt(format!("tensor `{name}` has an impossible shape"))
            })?;
        let Some(bytes) = data_bytes(kind, elements) else {
            let start = data_start.saturating_add(offset).min(file_len) as usize;
            tensors.insert(
                name,
                TensorInfo {
                    dims,
                    kind,
                    start,
                    end: start,
                },
            );
            continue;
        };
        let bytes = bytes.ok_or_else(|| corrupt(&name))?;
        let start = data_start.checked_add(offset);
        let end = start.and_then(|s| s.checked_add(bytes));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(corrupt(&name));
        };
        if end > file_len {
            return Err(GgufFileError::Corrupt(format!(
                "tensor `{name}` ends at byte {end} but the file has only {file_len}: it is truncated"
            )));
        }
        let info = TensorInfo {
            dims,
            kind,
            start: start as usize,
            end: end as usize,
        };
        if tensors.insert(name.clone(), info).is_some() {
            return Err(GgufFileError::Corrupt(format!(
                "tensor `{name}` is listed twice"
            )));
        }
    }
    Ok((metadata, tensors))
}
