//! Reference runtimes that live in Python (llama-cpp-python, onnxruntime): a script from
//! `bench/` gets the job as JSON on stdin and answers JSON on stdout.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;

/// A reference script, compiled into the binary so `quantlab bench` runs from any folder and
/// from a binary built elsewhere (a path baked in at build time pointed at the build's checkout).
pub struct Script {
    pub name: &'static str,
    pub source: &'static str,
}

pub const UPSTREAM_LLAMA_CPP: Script = Script {
    name: "bench/upstream_llama_cpp.py",
    source: include_str!("../../bench/upstream_llama_cpp.py"),
};
pub const NER_ONNXRUNTIME: Script = Script {
    name: "bench/ner_onnxruntime.py",
    source: include_str!("../../bench/ner_onnxruntime.py"),
};
pub const OCR_RAPIDOCR: Script = Script {
    name: "bench/ocr_rapidocr.py",
    source: include_str!("../../bench/ocr_rapidocr.py"),
};

/// Runs `script` with `python -c`, feeding it `job`; its last stderr line on failure.
pub fn run_script<T: DeserializeOwned>(
    python: &str,
    script: &Script,
    job: &serde_json::Value,
) -> anyhow::Result<T> {
    let mut child = Command::new(python)
        .arg("-c")
        .arg(script.source)
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
        .with_context(|| format!("reading the result of {}", script.name))
}
