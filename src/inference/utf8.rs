//! Turns a stream of token bytes into whole UTF-8 characters. A token can end in the middle of a
//! multi-byte character (emoji, CJK), so its bytes wait until the character is complete.

#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds a token's bytes and returns the text that is now complete (possibly empty).
    /// Bytes that can never be valid UTF-8 become U+FFFD rather than being dropped silently.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(text) => {
                    out.push_str(text);
                    self.pending.clear();
                    return out;
                }
                Err(err) => {
                    let valid = err.valid_up_to();
                    // SAFETY of the slice: `valid_up_to` marks a UTF-8 boundary.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match err.error_len() {
                        // Incomplete character at the end: keep it for the next token.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left at the end of the reply (an unfinished character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multibyte_characters_split_across_tokens_come_out_whole() {
        let text = "Größe 🦀 東京";
        let bytes = text.as_bytes();
        // Feed one byte at a time: the worst case a tokenizer can produce.
        let mut stream = Utf8Stream::default();
        let mut out = String::new();
        for b in bytes {
            let piece = stream.push(std::slice::from_ref(b));
            assert!(!piece.contains('\u{FFFD}'));
            out.push_str(&piece);
        }
        out.push_str(&stream.finish());
        assert_eq!(out, text);
    }

    #[test]
    fn the_crab_arrives_only_when_its_fourth_byte_does() {
        let crab = "🦀".as_bytes();
        let mut stream = Utf8Stream::default();
        assert_eq!(stream.push(&crab[..2]), "");
        assert_eq!(stream.push(&crab[2..3]), "");
        assert_eq!(stream.push(&crab[3..]), "🦀");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters_and_text_continues() {
        let mut stream = Utf8Stream::default();
        assert_eq!(stream.push(b"a\xffb"), "a\u{FFFD}b");
        assert_eq!(stream.push(&"é".as_bytes()[..1]), "");
        assert_eq!(stream.finish(), "\u{FFFD}");
    }
}
