//! The `btic` command line: parse arguments, set up logging, call the library, map
//! errors to exit codes. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

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
    /// Print the sessions of saved SupportSession XML bodies as JSON lines.
    Inspect {
        /// The XML files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
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
    /// Run the daemon: schedules, stages, metrics endpoint and admin API.
    Run {
        /// The pipeline file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Fetch a past range (or given LSIDs) of one site into destinations, in its own
    /// lane, without moving the live watermark; resumes when run again.
    Backfill {
        /// The pipeline file.
        #[arg(long)]
        config: PathBuf,
        /// The site.
        #[arg(long)]
        site: String,
        /// Start of the session end-time range (YYYY-MM-DD or RFC 3339).
        #[arg(long, requires = "to", conflicts_with = "lsid")]
        from: Option<String>,
        /// End of the range, exclusive.
        #[arg(long, requires = "from", conflicts_with = "lsid")]
        to: Option<String>,
        /// A session's LSID (repeatable) instead of a range.
        #[arg(long)]
        lsid: Vec<String>,
        /// A destination (repeatable; default: every destination a transfer names for the site).
        #[arg(long)]
        destination: Vec<String>,
        /// Data kinds, comma separated: sessions, recordings, presentations,
        /// presentation_recordings (default: sessions).
        #[arg(long)]
        data: Option<String>,
        /// Start even when the job needs more than an hour of the API account's budget.
        #[arg(long)]
        yes: bool,
    },
    /// Run the simulator and the demo pipeline into ./btic-demo/ (embedded defaults).
    Demo {
        /// The address of the metrics, health and admin listener (default 127.0.0.1:9464);
        /// 0.0.0.0:9464 to reach it from outside a container.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Ask a running daemon's /healthz (exit 0 when healthy, 1 otherwise): a container's
    /// health check without a shell.
    Healthcheck {
        /// The pipeline file whose metrics listener to ask (default 127.0.0.1:9464).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Show watermarks, clock skew, queue depths, dead letters and last runs.
    Status {
        /// The pipeline file.
        #[arg(long)]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the last runs of each schedule and backfill job, newest first.
    History {
        /// The pipeline file.
        #[arg(long)]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the sessions passing the running daemon's parse and deliver stages, live,
    /// as JSON Lines.
    Tap {
        /// The pipeline file.
        #[arg(long)]
        config: PathBuf,
        /// Only this site's sessions.
        #[arg(long)]
        site: Option<String>,
        /// Only this stage's events.
        #[arg(long, value_enum)]
        stage: Option<TapStageArg>,
    },
    /// Move dead letters back to their queues.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all"])))]
    Replay {
        /// The pipeline file.
        #[arg(long)]
        config: PathBuf,
        /// Only dead letters of this destination.
        #[arg(long)]
        destination: Option<String>,
        /// One dead letter.
        #[arg(long)]
        id: Option<u64>,
        /// Every dead letter (of `--destination` when given).
        #[arg(long)]
        all: bool,
    },
    /// List or show dead letters.
    DeadLetter {
        #[command(subcommand)]
        command: DeadLetterCommand,
    },
    /// Send notifications by hand.
    Notify {
        #[command(subcommand)]
        command: NotifyCommand,
    },
    /// Run the appliance simulator (tests, demos, benchmarks) until interrupted.
    Simulate(Box<cli::SimulateArgs>),
    /// Write the manual pages (btic(1) and one per subcommand, roff) into a directory,
    /// from these very definitions; the Debian package ships them.
    #[command(hide = true)]
    Manpages {
        /// The directory (it must exist).
        dir: PathBuf,
    },
}

/// `btic tap --stage`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum TapStageArg {
    Parse,
    Deliver,
}

#[derive(Debug, Subcommand)]
enum NotifyCommand {
    /// Send a test message through every notifier (or one) and print the outcome of each.
    Test {
        /// The pipeline file.
        #[arg(long)]
        config: PathBuf,
        /// Only the notifier of this name.
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum DeadLetterCommand {
    /// One line per dead letter.
    List {
        /// The pipeline file.
        #[arg(long)]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete dead letters for good: one, or all (of `--destination` when given).
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all"])))]
    Discard {
        /// The dead letter's id.
        id: Option<u64>,
        /// Every dead letter (of `--destination` when given).
        #[arg(long)]
        all: bool,
        /// Only dead letters of this destination.
        #[arg(long)]
        destination: Option<String>,
        /// The pipeline file.
        #[arg(long)]
        config: PathBuf,
    },
    /// One dead letter with its payload, as JSON.
    Show {
        /// The dead letter's id.
        id: u64,
        /// The pipeline file.
        #[arg(long)]
        config: PathBuf,
    },
}

/// Logs to stderr (in colour only on a terminal), or to `[log] file` for `btic run`, and
/// keeps the last lines in memory for the console.
fn init_logging(format: LogFormat, file: Option<btic::log_file::DailyFile>) {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let builder = match file {
        Some(file) => builder
            .with_writer(BoxMakeWriter::new(file))
            .with_ansi(false),
        // Colour only for a person at a terminal: not in a file, a pipe or journald, and
        // never when NO_COLOR is set (https://no-color.org).
        None => {
            use std::io::IsTerminal as _;
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder
                .with_writer(BoxMakeWriter::new(std::io::stderr))
                .with_ansi(colour)
        }
    };
    // The console's Log page reads the last lines from memory.
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let ring = btic::log_ring::RingLayer;
    match format {
        LogFormat::Text => builder.finish().with(ring).init(),
        LogFormat::Json => builder.json().finish().with(ring).init(),
    }
}

/// `btic manpages DIR`: btic.1 and btic-<subcommand>.1 in `dir`.
fn manpages(dir: &std::path::Path) -> Result<(), cli::CliError> {
    clap_mangen::generate_to(Cli::command(), dir).map_err(|e| {
        cli::CliError::failed(format!(
            "writing the manual pages to {}: {e}",
            dir.display()
        ))
    })
}

/// Runs the command.
fn dispatch(command: Command) -> Result<(), cli::CliError> {
    match command {
        Command::Check {
            config,
            offline,
            json,
        } => cli::check(&config, offline, json),
        Command::Inspect { files } => cli::inspect(&files),
        Command::Run { config } => cli::run(&config),
        Command::Demo { listen } => cli::demo(listen),
        Command::Healthcheck { config } => cli::healthcheck(config.as_deref()),
        Command::Backfill {
            config,
            site,
            from,
            to,
            lsid,
            destination,
            data,
            yes,
        } => cli::backfill(
            &config,
            &cli::BackfillArgs {
                site,
                from,
                to,
                lsids: lsid,
                destinations: destination,
                data,
                yes,
            },
        ),
        Command::Status { config, json } => cli::status(&config, json),
        Command::History { config, json } => cli::history(&config, json),
        Command::Tap {
            config,
            site,
            stage,
        } => {
            use btic::pipeline::{admin::TapFilter, tap::TapStage};
            let stage = stage.map(|s| match s {
                TapStageArg::Parse => TapStage::Parse,
                TapStageArg::Deliver => TapStage::Deliver,
            });
            cli::tap(&config, &TapFilter { site, stage })
        }
        Command::Replay {
            config,
            destination,
            id,
            all: _,
        } => cli::replay(&config, id, destination),
        Command::DeadLetter { command } => match command {
            DeadLetterCommand::List { config, json } => cli::dead_letter_list(&config, json),
            DeadLetterCommand::Show { id, config } => cli::dead_letter_show(&config, id),
            DeadLetterCommand::Discard {
                id,
                all: _,
                destination,
                config,
            } => cli::dead_letter_discard(&config, id, destination),
        },
        Command::Notify {
            command: NotifyCommand::Test { config, name },
        } => cli::notify_test(&config, name.as_deref()),
        Command::Simulate(args) => cli::simulate(&args),
        Command::Manpages { dir } => manpages(&dir),
        Command::Import {
            config,
            destination,
            site,
            files,
        } => cli::import(&config, &destination, site.as_deref(), &files),
    }
}

fn main() -> ExitCode {
    let args = Cli::parse();
    // The commands that run the pipeline for long get glibc tuned for a small RSS.
    let pipeline = matches!(
        args.command,
        Command::Run { .. } | Command::Demo { .. } | Command::Backfill { .. }
    );
    if pipeline {
        cli::tune_malloc();
    }
    // Only the daemon logs to the pipeline file's `[log] file`: the other commands are run
    // by a person (or a unit's pre-start check) who reads stderr.
    let log_file = match &args.command {
        Command::Run { config } => match cli::open_log_file(config) {
            Ok(file) => file,
            Err(e) => {
                eprintln!("btic: {}", e.message);
                return ExitCode::from(e.code);
            }
        },
        _ => None,
    };
    init_logging(args.log_format, log_file);
    if pipeline {
        cli::trim_freed_memory();
    }
    let outcome = dispatch(args.command);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("btic: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}
