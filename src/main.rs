//! Entry point: parses the command line, then starts the studio window or runs a
//! subcommand headless.

use clap::Parser;
use finetune_studio::cli::{self, Cli};

fn main() {
    finetune_studio::ops::runtime::tune_runtime();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "finetune_studio=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Cli::parse();
    if let Err(e) = args.check() {
        e.exit();
    }
    let code = match args.command {
        Some(command) => match cli::run(command) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        },
        None => match finetune_studio::app::run(args.model, args.dataset.map(absolute)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        },
    };
    std::process::exit(code);
}

/// The path made absolute against the working directory, so that Recent files and the
/// reopened last dataset still find it when the studio starts elsewhere.
fn absolute(path: std::path::PathBuf) -> std::path::PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}
