//! Damaged GGUF files get a clear error from the header check and from both engines, never a
//! panic or a hang: truncated at many points, and with bits flipped all over the header.

mod common;

use std::io::Cursor;

use quantlab::inference::{candle::CandleEngine, gguf, llama_cpp::LlamaCppEngine};

fn default_model_bytes() -> Vec<u8> {
    let registry = common::registry();
    let path = registry.file_path(registry.get(common::MODEL).unwrap());
    std::fs::read(path).expect("the default model is readable")
}

/// A small deterministic generator, so a failure names a reproducible case.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn every_truncation_is_reported_as_an_error() {
    let bytes = default_model_bytes();
    let whole = gguf::check(Cursor::new(&bytes[..])).expect("the intact file passes");
    let header_len = whole.content.tensor_data_offset as usize;
    assert!(header_len > 1000 && header_len < bytes.len());
    let mut cuts: Vec<usize> = (0..60).map(|i| i * header_len / 60).collect();
    cuts.extend([header_len, header_len + 1, bytes.len() / 2, bytes.len() - 1]);
    for cut in cuts {
        let result = gguf::check(Cursor::new(&bytes[..cut]));
        assert!(
            result.is_err(),
            "a file cut at byte {cut} of {} passed",
            bytes.len()
        );
    }
    // Past the header, the message says which tensor is cut off.
    let message = gguf::check(Cursor::new(&bytes[..bytes.len() - 1]))
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("truncated"), "{message}");
}

#[test]
fn flipped_bits_in_the_header_never_panic() {
    let mut bytes = default_model_bytes();
    let header_len = gguf::check(Cursor::new(&bytes[..]))
        .unwrap()
        .content
        .tensor_data_offset as usize;
    let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
    let (mut rejected, mut accepted) = (0, 0);
    // The structural fields (counts, lengths, types, shapes, offsets) sit in the first bytes
    // and in the tensor table at the end of the header: aim half of the flips there.
    let table_start = header_len.saturating_sub(40_000);
    for case in 0..240 {
        let at = match case % 3 {
            0 => random.below(64),
            1 => table_start + random.below(header_len - table_start),
            _ => random.below(header_len),
        };
        let bit = 1u8 << random.below(8);
        bytes[at] ^= bit;
        let outcome = std::panic::catch_unwind(|| gguf::check(Cursor::new(&bytes[..])).is_ok());
        bytes[at] ^= bit;
        match outcome {
            Ok(true) => accepted += 1,
            Ok(false) => rejected += 1,
            Err(_) => panic!("flipping bit {bit:#04x} of byte {at} made the check panic"),
        }
    }
    println!("{rejected} damaged headers rejected, {accepted} still well-formed");
    assert!(rejected > 40, "only {rejected} of 240 flips were caught");
}

#[test]
fn both_engines_refuse_a_truncated_file_with_a_clear_message() {
    let bytes = default_model_bytes();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truncated.gguf");
    std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
    for message in [
        CandleEngine::load(&path, 512, 1).err().unwrap().to_string(),
        LlamaCppEngine::load(&path, 512, 1)
            .err()
            .unwrap()
            .to_string(),
    ] {
        assert!(
            message.contains("truncated") && message.contains("fetch it again"),
            "{message}"
        );
    }
    let not_gguf = dir.path().join("notes.gguf");
    std::fs::write(&not_gguf, b"these are not model weights").unwrap();
    let message = CandleEngine::load(&not_gguf, 512, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("not a valid GGUF"), "{message}");
}

/// The position right after the first occurrence of `needle`.
fn after(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
        + needle.len()
}

#[test]
fn unsupported_architectures_and_tensor_types_are_named() {
    let bytes = default_model_bytes();
    let dir = tempfile::tempdir().unwrap();

    // general.architecture: key, value type (u32 8 = string), length (u64 5), "llama".
    let mut other_arch = bytes.clone();
    let value = after(&other_arch, b"general.architecture") + 4 + 8;
    assert_eq!(&other_arch[value..value + 5], b"llama");
    other_arch[value..value + 5].copy_from_slice(b"bloom");
    let path = dir.path().join("bloom.gguf");
    std::fs::write(&path, &other_arch).unwrap();
    let message = CandleEngine::load(&path, 512, 1).err().unwrap().to_string();
    assert!(
        message.contains("architecture `bloom`") && message.contains("llama.cpp"),
        "{message}"
    );

    // The first tensor's type: name, dimension count (u32), dimensions (u64 each), type (u32).
    let mut iq = bytes;
    let header_len = gguf::check(Cursor::new(&iq[..]))
        .unwrap()
        .content
        .tensor_data_offset as usize;
    let table = header_len - 60_000;
    let name_end = table + after(&iq[table..header_len], b".weight");
    let dims = u32::from_le_bytes(iq[name_end..name_end + 4].try_into().unwrap()) as usize;
    let type_at = name_end + 4 + 8 * dims;
    iq[type_at..type_at + 4].copy_from_slice(&16u32.to_le_bytes()); // IQ2_XXS
    let path = dir.path().join("iq.gguf");
    std::fs::write(&path, &iq).unwrap();
    let message = CandleEngine::load(&path, 512, 1).err().unwrap().to_string();
    assert!(
        message.contains("IQ2_XXS") && message.contains("run it on llama.cpp"),
        "{message}"
    );
}
