//! The command line: parse, call one operation, map the result to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::ops;

/// Hot-update the plugins of a running Rust host from a declarative `plugins.yaml`.
#[derive(Debug, Parser)]
#[command(name = "plugsync", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a live trading desk in-process and hot-update its plugins under load.
    Demo(DemoArgs),
    /// Print a built plugin's metadata, read from the file without running it.
    Inspect(InspectArgs),
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Directory holding the built plugin libraries (default: beside this binary, built on
    /// demand under `cargo run`).
    #[arg(long, value_name = "DIR")]
    plugins: Option<PathBuf>,
    /// Feed threads calling the plugins.
    #[arg(long, default_value_t = 3)]
    threads: usize,
    /// Milliseconds each step soaks before it is committed.
    #[arg(long, value_name = "MS", default_value_t = 600)]
    soak_ms: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct InspectArgs {
    /// The plugin library (`.so`).
    library: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("PLUGSYNC_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let ansi = std::env::var_os("NO_COLOR").is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

/// Runs the `plugsync` command line; `main` only calls this.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Demo(args) => {
            let options = ops::DemoOptions {
                plugins: args.plugins,
                threads: args.threads,
                soak: Duration::from_millis(args.soak_ms),
                ..ops::DemoOptions::default()
            };
            ops::demo(&options, &mut std::io::stdout()).map(|outcome| outcome.passed())
        }
        Command::Inspect(args) => {
            let format = match args.output {
                Output::Text => ops::InspectFormat::Text,
                Output::Json => ops::InspectFormat::Json,
            };
            ops::inspect(&args.library, format).map(|text| {
                print!("{text}");
                true
            })
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
