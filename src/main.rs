//! The `quantlab` binary: the web server and the model tools.

use clap::Parser;
use quantlab::cli::{self, Cli};

fn main() -> anyhow::Result<()> {
    // A file over a size limit (RLIMIT_FSIZE) must fail that write, not kill the server: the
    // store then answers 507 and keeps the old file.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to "ignore" before any thread starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = Cli::parse();
    cli::configure_engine_threads(&cli.common);
    cli::init_tracing();
    cli::run(cli)
}
