//! Machine-readable progress for `quantlab models fetch|quantize --progress json`: the server's
//! model jobs run those commands as child processes and read one JSON object per line from
//! their standard output. A child process can be killed at once, which llama.cpp's quantizer
//! (no cancel hook) and pip need.

use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// One progress report: what is happening and how far along it is (`total` 0 = unknown).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgressLine {
    pub phase: String,
    pub done: u64,
    pub total: u64,
    /// The job's result in words, on its last line (what a verification proved, what an
    /// addition listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// How the CLI shows progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressFormat {
    /// Progress bars on the terminal.
    #[default]
    Bars,
    /// One JSON object per line on standard output, for programs.
    Json,
}

static JSON: AtomicBool = AtomicBool::new(false);
/// The last line written, with when, so a stream of byte counts is thinned to a few per second.
static LAST: Mutex<Option<(String, Instant)>> = Mutex::new(None);
const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// Chooses the format for this process (the CLI sets it once, before any work).
pub fn set_format(format: ProgressFormat) {
    JSON.store(format == ProgressFormat::Json, Ordering::Relaxed);
}

/// Whether progress goes out as JSON lines (terminal bars are then hidden).
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Reports progress when the format is JSON: a new phase and a phase's last step always, other
/// steps at most every 200 ms (a phase of unknown size only at that pace).
pub fn report(phase: &str, done: u64, total: u64) {
    if !json() {
        return;
    }
    let Ok(mut last) = LAST.lock() else { return };
    let now = Instant::now();
    let same_phase_recently = last
        .as_ref()
        .is_some_and(|(p, at)| p == phase && now.duration_since(*at) < MIN_INTERVAL);
    if same_phase_recently && (total == 0 || done < total) {
        return;
    }
    *last = Some((phase.to_string(), now));
    write_line(&ProgressLine {
        phase: phase.to_string(),
        done,
        total,
        outcome: None,
    });
}

/// Reports the job's result in words (JSON format only), as its last line.
pub fn outcome(message: &str) {
    if json() {
        write_line(&ProgressLine {
            phase: "done".to_string(),
            done: 0,
            total: 0,
            outcome: Some(message.to_string()),
        });
    }
}

fn write_line(line: &ProgressLine) {
    if let Ok(text) = serde_json::to_string(line) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

/// Reads a line a child wrote; anything else (a human message) is `None`.
pub fn parse(line: &str) -> Option<ProgressLine> {
    serde_json::from_str(line.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_prose_is_not_progress() {
        let line = ProgressLine {
            phase: "quantize".into(),
            done: 3,
            total: 272,
            outcome: None,
        };
        let text = serde_json::to_string(&line).unwrap();
        assert_eq!(parse(&text), Some(line));
        assert_eq!(parse("smollm2: ready at models/x.gguf"), None);
    }
}
