//! GPT-2's byte-level alphabet, used by byte-level BPE vocabularies (GPT-2, Llama 3, Qwen2,
//! SmolLM2): every byte is written as a printable character in token strings.

use std::collections::HashMap;

/// Character → byte: the inverse of GPT-2's `bytes_to_unicode`.
pub fn decoder() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut shifted = 0u32;
    (0u8..=255)
        .map(|b| {
            let c = if printable(b) {
                char::from(b)
            } else {
                shifted += 1;
                char::from_u32(255 + shifted).unwrap_or('\u{FFFD}')
            };
            (c, b)
        })
        .collect()
}

/// The bytes a byte-level token string stands for; characters outside the alphabet (added
/// tokens written as plain text) keep their UTF-8 bytes.
pub fn token_bytes(text: &str, decoder: &HashMap<char, u8>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(text.len());
    for c in text.chars() {
        match decoder.get(&c) {
            Some(b) => bytes.push(*b),
            None => bytes.extend_from_slice(c.to_string().as_bytes()),
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_alphabet_covers_every_byte_once() {
        let decoder = super::decoder();
        assert_eq!(decoder.len(), 256);
        // 'Ġ' is the space, 'Ċ' the newline, as in every GPT-2 vocabulary.
        assert_eq!(super::token_bytes("Ġhi\u{10A}", &decoder), b" hi\n");
    }
}
