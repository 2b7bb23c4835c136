//! Stored bench runs: one JSON file per run in a folder (written to a temporary file, synced,
//! then renamed, so a crash never leaves half a result), and their CSV export.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use super::types::BenchRun;

/// Runs kept; older ones are deleted when a new one is saved.
pub const KEPT_RUNS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode the run: {0}")]
    Encode(#[from] serde_json::Error),
}

pub struct BenchResults {
    dir: PathBuf,
}

impl BenchResults {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn save(&self, run: &BenchRun) -> Result<PathBuf, ResultsError> {
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| ResultsError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(&self.dir).map_err(io("create", &self.dir))?;
        let bytes = serde_json::to_vec_pretty(run)?;
        let path = self
            .dir
            .join(format!("{:015}-{}.json", run.started_at_ms, run.id));
        let mut temp =
            tempfile::NamedTempFile::new_in(&self.dir).map_err(io("write in", &self.dir))?;
        temp.write_all(&bytes).map_err(io("write", temp.path()))?;
        temp.as_file().sync_all().map_err(io("sync", temp.path()))?;
        temp.persist(&path).map_err(|e| ResultsError::Io {
            action: "save",
            path: path.clone(),
            source: e.error,
        })?;
        self.prune();
        Ok(path)
    }

    /// Every readable run, newest first. Unreadable files are skipped with a warning, never
    /// deleted: they may be a newer version's format.
    pub fn list(&self) -> Vec<BenchRun> {
        let mut runs: Vec<BenchRun> = self
            .files()
            .into_iter()
            .filter_map(|path| {
                let parsed = std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
                parsed
                    .map_err(
                        |e| tracing::warn!(path = %path.display(), "skipping bench result: {e}"),
                    )
                    .ok()
            })
            .collect();
        runs.sort_by_key(|run| std::cmp::Reverse(run.started_at_ms));
        runs
    }

    /// The id of the newest run, from file names alone (cheap enough to poll).
    pub fn latest_id(&self) -> Option<String> {
        let newest = self.files().pop()?;
        let stem = newest.file_stem()?.to_str()?;
        stem.split_once('-').map(|(_, id)| id.to_string())
    }

    /// Result files, oldest first (their names start with the start time).
    fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    fn prune(&self) {
        let files = self.files();
        let excess = files.len().saturating_sub(KEPT_RUNS);
        for old in &files[..excess] {
            let _ = std::fs::remove_file(old);
        }
    }
}

/// One row per run, model and prompt: the medians with their extremes, and the model's totals.
pub fn to_csv(runs: &[BenchRun]) -> String {
    let header = [
        "run_id",
        "started_at_ms",
        "cpu",
        "threads",
        "model",
        "engine",
        "quantization",
        "bits_per_weight",
        "file_bytes",
        "load_ms",
        "resident_bytes",
        "peak_resident_bytes",
        "perplexity",
        "perplexity_tokens",
        "kl_reference",
        "mean_kl",
        "top1_agreement",
        "prompt",
        "prompt_tokens",
        "runs",
        "ttft_ms",
        "ttft_ms_min",
        "ttft_ms_max",
        "prefill_tok_s",
        "prefill_tok_s_min",
        "prefill_tok_s_max",
        "decode_tok_s",
        "decode_tok_s_min",
        "decode_tok_s_max",
        "error",
    ];
    let mut out = header.join(",");
    out.push('\n');
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
    let int = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    for run in runs {
        for model in &run.models {
            let model_cells = [
                run.id.clone(),
                run.started_at_ms.to_string(),
                run.machine.cpu.clone(),
                run.machine.threads.to_string(),
                model.model.clone(),
                model.engine.clone(),
                model.quantization.clone(),
                format!("{:.2}", model.bits_per_weight),
                int(model.file_bytes),
                opt(model.load_ms),
                int(model.resident_bytes),
                int(model.peak_resident_bytes),
                opt(model.perplexity.as_ref().map(|p| p.perplexity)),
                int(model
                    .perplexity
                    .as_ref()
                    .map(|p| u64::from(p.scored_tokens))),
                model
                    .divergence
                    .as_ref()
                    .map(|d| d.reference.clone())
                    .unwrap_or_default(),
                model
                    .divergence
                    .as_ref()
                    .map(|d| format!("{:.6e}", d.mean_kl))
                    .unwrap_or_default(),
                opt(model.divergence.as_ref().map(|d| d.top1_agreement)),
            ];
            let error = model.error.clone().unwrap_or_default();
            if model.prompts.is_empty() {
                let mut row: Vec<String> = model_cells.to_vec();
                // Every prompt column is blank; the last column is the error.
                row.resize(header.len() - 1, String::new());
                row.push(error.clone());
                push_row(&mut out, &row);
            }
            for prompt in &model.prompts {
                let stat = |s: Option<super::stats::Stat>| {
                    [
                        opt(s.map(|s| s.median)),
                        opt(s.map(|s| s.min)),
                        opt(s.map(|s| s.max)),
                    ]
                };
                let mut row: Vec<String> = model_cells.to_vec();
                row.push(prompt.prompt.clone());
                row.push(prompt.prompt_tokens.to_string());
                row.push(prompt.samples.len().to_string());
                row.extend(stat(prompt.ttft_ms));
                row.extend(stat(prompt.prefill_tok_s));
                row.extend(stat(prompt.decode_tok_s));
                row.push(error.clone());
                push_row(&mut out, &row);
            }
        }
    }
    out
}

/// Appends one CSV row (cells quoted as `csv_cell` does).
pub(crate) fn push_row(out: &mut String, cells: &[String]) {
    let quoted: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
    out.push_str(&quoted.join(","));
    out.push('\n');
}

/// RFC 4180 quoting; a leading formula character is defused so a spreadsheet shows it as text.
fn csv_cell(cell: &str) -> String {
    let cell = if cell.starts_with(['=', '+', '-', '@']) && cell.parse::<f64>().is_err() {
        format!("'{cell}")
    } else {
        cell.to_string()
    };
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_formulas_defused() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=cmd()"), "'=cmd()");
        assert_eq!(csv_cell("-1.5"), "-1.5");
    }
}
