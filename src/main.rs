//! The `btic` command line: parse arguments, set up logging, call the library, map
//! errors to exit codes. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use btic::cli;

/// Exports BeyondTrust Remote Support session data, recordings and site backups into
/// SQL databases and file systems, continuously and without loss.
#[derive(Debug, Parser)]
#[command(name = "btic", version, about, long_about = None)]
struct Cli {
    /// Log format on stderr; the level comes from RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a pipeline file and print what goes where.
    Check {
        /// The pipeline file.
        #[arg(long)]
        config: PathBuf,
        /// Only validate the file; contact no site or destination.
        #[arg(long)]
        offline: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Deliver previously downloaded SupportSession XML files to a destination.
    Import {
        /// The pipeline file.
        #[arg(long)]
        config: PathBuf,
        /// The destination to write to.
        #[arg(long)]
        destination: String,
        /// The site the files came from (its host name is stored); optional with one site.
        #[arg(long)]
        site: Option<String>,
        /// The XML files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the sessions of saved SupportSession XML bodies as JSON lines.
    Inspect {
        /// The XML files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let args = Cli::parse();
    init_logging(args.log_format);
    let outcome = match args.command {
        Command::Check {
            config,
            offline,
            json,
        } => cli::check(&config, offline, json),
        Command::Import {
            config,
            destination,
            site,
            files,
        } => cli::import(&config, &destination, site.as_deref(), &files),
        Command::Inspect { files } => cli::inspect(&files),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("btic: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}
