//! A reply's text as the client sees it: whole UTF-8 characters, ending before the first stop
//! sequence (OpenAI's `stop`). Text that could be the start of a stop sequence is held back
//! until the next tokens show it is not, so a client never sees part of one.

use super::utf8::Utf8Stream;

/// Stop sequences one request may give (OpenAI's limit).
pub const MAX_STOP_SEQUENCES: usize = 4;
/// Characters in one stop sequence.
pub const MAX_STOP_CHARS: usize = 64;

/// What one token added to the reply.
#[derive(Debug, PartialEq, Eq)]
pub struct Pushed {
    /// Text the client may now see.
    pub text: String,
    /// A stop sequence was reached: the reply ends here, without it.
    pub stopped: bool,
}

#[derive(Default)]
pub struct ReplyText {
    utf8: Utf8Stream,
    stops: Vec<String>,
    /// Text that may begin a stop sequence.
    held: String,
    stopped: bool,
}

impl ReplyText {
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            ..Self::default()
        }
    }

    /// Adds a token's bytes.
    pub fn push(&mut self, bytes: &[u8]) -> Pushed {
        if self.stopped {
            return Pushed {
                text: String::new(),
                stopped: true,
            };
        }
        let piece = self.utf8.push(bytes);
        self.take(&piece)
    }

    /// The reply ended: what is left to show.
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let rest = self.utf8.finish();
        let pushed = self.take(&rest);
        let mut text = pushed.text;
        if !pushed.stopped {
            text.push_str(&std::mem::take(&mut self.held));
        }
        text
    }

    fn take(&mut self, piece: &str) -> Pushed {
        if self.stops.is_empty() {
            return Pushed {
                text: piece.to_string(),
                stopped: false,
            };
        }
        self.held.push_str(piece);
        let first_stop = self
            .stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()))
            .min();
        if let Some(at) = first_stop {
            self.held.truncate(at);
            self.stopped = true;
            return Pushed {
                text: std::mem::take(&mut self.held),
                stopped: true,
            };
        }
        let keep = self
            .stops
            .iter()
            .map(|stop| held_prefix(&self.held, stop))
            .max()
            .unwrap_or(0);
        let shown = self.held.len() - keep;
        let text = self.held[..shown].to_string();
        self.held.drain(..shown);
        Pushed {
            text,
            stopped: false,
        }
    }
}

/// The length of the longest end of `text` that is a proper beginning of `stop`.
fn held_prefix(text: &str, stop: &str) -> usize {
    stop.char_indices()
        .map(|(at, _)| at)
        .skip(1)
        .filter(|&len| text.ends_with(&stop[..len]))
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool, String) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut reply = ReplyText::new(&stops);
        let mut shown = Vec::new();
        for piece in pieces {
            let pushed = reply.push(piece.as_bytes());
            shown.push(pushed.text);
            if pushed.stopped {
                return (shown, true, String::new());
            }
        }
        let rest = reply.finish();
        (shown, false, rest)
    }

    #[test]
    fn without_stop_sequences_text_passes_straight_through() {
        assert_eq!(
            run(&[], &["Hello", " world"]),
            (vec!["Hello".into(), " world".into()], false, String::new())
        );
    }

    #[test]
    fn a_stop_split_across_tokens_is_held_back_and_never_shown() {
        let (shown, stopped, _) = run(&["END"], &["one E", "N", "D two"]);
        assert!(stopped);
        assert_eq!(shown.concat(), "one ");
        assert_eq!(shown[0], "one ", "the possible start is held back");
    }

    #[test]
    fn held_text_that_turns_out_not_to_stop_is_released() {
        let (shown, stopped, rest) = run(&["END"], &["a E", "Nx", " b E"]);
        assert!(!stopped);
        assert_eq!(shown, ["a ", "ENx", " b "]);
        assert_eq!(rest, "E", "what was held comes out at the end");
    }

    #[test]
    fn the_earliest_of_several_stops_wins_and_characters_stay_whole() {
        let (shown, stopped, _) = run(&["é!", "\n\n"], &["café", "\n", "\nthen é!"]);
        assert!(stopped);
        assert_eq!(shown.concat(), "café");
        // A stop that starts in the middle of a multi-byte character never splits it.
        assert_eq!(held_prefix("caf\u{e9}", "\u{e9}!"), 2);
    }
}
