//! The built `quantlab` binary as a user runs it: `serve` on a free loopback port with the real
//! models folder, its log kept in a file for assertions and for the failure message.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

pub struct Binary {
    child: Child,
    pub url: String,
    pub port: u16,
    log: tempfile::NamedTempFile,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `quantlab` with the test environment: run from the checkout (models.toml), the test models
/// folder, and nothing inherited that would change where data goes.
pub fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quantlab"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("QUANTLAB_MODELS_DIR", super::models_dir())
        .env_remove("RUST_LOG")
        .env_remove("DATABASE_URL")
        .env_remove("QUANTLAB_API_KEY")
        .env_remove("QUANTLAB_ADDR");
    command
}

impl Binary {
    /// Starts `quantlab <args> serve <serve_args> --addr 127.0.0.1:<port>` from `command`.
    pub fn serve(mut command: Command, serve_args: &[&str]) -> Self {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = command
            .arg("serve")
            .args(serve_args)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log"))
            .stderr(log.reopen().expect("log"))
            .spawn()
            .expect("start quantlab");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            port,
            log,
        }
    }

    /// Waits until the server answers HTTP (any status), failing with its log if it exits.
    pub async fn wait_listening(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if client
                .get(format!("{}/health", self.url))
                .send()
                .await
                .is_ok()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "quantlab exited ({status}) before listening:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "quantlab did not start:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `/health` says the default model is loaded.
    pub async fn wait_ready(&mut self) {
        self.wait_listening().await;
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !client
            .get(format!("{}/health", self.url))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                Instant::now() < deadline,
                "the default model did not load:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        let mut text = String::new();
        let _ = std::fs::File::open(self.log.path()).and_then(|mut f| f.read_to_string(&mut text));
        text
    }

    pub fn log_path(&self) -> &Path {
        self.log.path()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal (SIGTERM, SIGINT) to the server.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the process to exit, at most `limit`; `None` if it is still running.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- quantlab log ---\n{}", self.log());
        }
    }
}

/// Files directly in `dir` whose names end with `suffix`.
pub fn files_in(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}
