//! The two servers a load bench drives: the `quantlab` binary itself and upstream llama.cpp's
//! `llama-server`, each a child process on a free loopback port, with the same GGUF, threads,
//! slots and context per slot. Dropping one stops it.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::cli::CommonArgs;

pub struct Server {
    pub name: &'static str,
    pub url: String,
    child: Child,
    log: tempfile::NamedTempFile,
    _scratch: Option<tempfile::TempDir>,
}

/// What both servers are started with.
pub struct Shape {
    pub threads: u32,
    pub slots: usize,
    pub context_per_slot: u32,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Server {
    /// `quantlab serve` from this very binary, conversations in a throwaway folder, no database.
    /// `--lazy`: only the measured model is loaded, by the warm-up request.
    pub fn quantlab(common: &CommonArgs, shape: &Shape) -> anyhow::Result<Self> {
        let scratch = tempfile::tempdir()?;
        let port = free_port()?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .env_remove("DATABASE_URL")
            .env_remove("QUANTLAB_API_KEY")
            .arg("--models-file")
            .arg(&common.models_file)
            .arg("--models-dir")
            .arg(&common.models_dir)
            .arg("--conversations-dir")
            .arg(scratch.path())
            .arg("--threads")
            .arg(shape.threads.to_string())
            .arg("serve")
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .arg("--lazy")
            .args(["--parallel", &shape.slots.to_string()])
            .args(["--context", &shape.context_per_slot.to_string()])
            // Every client of the heaviest level may wait; the queue limit is not what is measured.
            .args(["--queue", "64"]);
        Self::spawn("quantlab", command, port, Some(scratch))
    }

    /// Upstream `llama-server`: its context is shared by the slots, so it gets slots × ours.
    pub fn llama_server(binary: &Path, gguf: &Path, shape: &Shape) -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut command = Command::new(binary);
        command
            .arg("-m")
            .arg(gguf)
            .args(["-t", &shape.threads.to_string()])
            .args(["-tb", &shape.threads.to_string()])
            .args(["-np", &shape.slots.to_string()])
            .args([
                "-c",
                &(shape.context_per_slot as usize * shape.slots).to_string(),
            ])
            .args(["-b", "512", "-ub", "512"])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        Self::spawn("llama-server", command, port, None)
    }

    fn spawn(
        name: &'static str,
        mut command: Command,
        port: u16,
        scratch: Option<tempfile::TempDir>,
    ) -> anyhow::Result<Self> {
        let log = tempfile::NamedTempFile::new()?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.reopen()?)
            .stderr(log.reopen()?)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name,
            url: format!("http://127.0.0.1:{port}"),
            child,
            log,
            _scratch: scratch,
        })
    }

    /// Waits until the server answers HTTP at all, at most two minutes; the model may still
    /// be loading (the warm-up request waits for that).
    pub async fn wait_listening(&mut self, client: &reqwest::Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let listening = client
                .get(format!("{}/health", self.url))
                .send()
                .await
                .is_ok();
            if listening {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}):\n{}", self.name, self.log_tail());
            }
            if Instant::now() > deadline {
                bail!("{} did not get ready:\n{}", self.name, self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Fails with the end of the server's log if it has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}):\n{}", self.name, self.log_tail());
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where `scripts/build-llama-server.sh` puts `llama-server` by default.
pub fn default_llama_server() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let upstream = Path::new(&home).join(".cache/quantlab/upstream");
    let mut builds: Vec<PathBuf> = std::fs::read_dir(&upstream)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin/llama-server"))
        .filter(|p| p.is_file())
        .collect();
    builds.sort();
    builds.pop()
}
