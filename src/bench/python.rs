//! Reference runtimes that live in Python (llama-cpp-python, onnxruntime): a script from
//! `bench/` gets the job as JSON on stdin and answers JSON on stdout.

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;

/// Runs `bench/<script>` with `python`, feeding it `job`; its last stderr line on failure.
pub fn run_script<T: DeserializeOwned>(
    python: &str,
    script: &str,
    job: &serde_json::Value,
) -> anyhow::Result<T> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("bench")
        .join(script);
    let mut child = Command::new(python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {python}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(job.to_string().as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!("{}", stderr.lines().last().unwrap_or("failed"));
    }
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("reading the result of {}", script.display()))
}
