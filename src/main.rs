//! The `quantlab` binary: the web server and the model tools.

use clap::Parser;
use quantlab::cli::{self, Cli};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli::configure_engine_threads(&cli.common);
    cli::init_tracing();
    cli::run(cli)
}
