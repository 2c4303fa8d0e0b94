//! The commands behind `btic`'s subcommands: each takes parsed arguments, prints for a
//! person (or as JSON), and returns a `CliError` carrying the exit code.

mod arenas;
mod backfill;
mod check;
mod daemon;
mod healthcheck;
mod import;
mod inspect;
mod notify;
mod simulate;
mod state;
mod status_text;
mod tap;

pub use arenas::{trim_freed_memory, tune_malloc};
pub use backfill::{BackfillArgs, backfill};
pub use check::check;
pub use daemon::{demo, open_log_file, run};
pub use healthcheck::healthcheck;
pub use import::import;
pub use inspect::inspect;
pub use notify::notify_test;
pub use simulate::{SimulateArgs, simulate};
pub use state::{dead_letter_discard, dead_letter_list, dead_letter_show, history, replay, status};
pub use tap::tap;

/// Runs `ask` with an HTTP client for this machine's daemon (never through a proxy; at
/// most `timeout` a request when given) on a single-threaded runtime.
fn ask_daemon<T>(
    url: &str,
    timeout: Option<std::time::Duration>,
    ask: impl AsyncFnOnce(reqwest::Client) -> Result<T, CliError>,
) -> Result<T, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("starting the runtime: {e}")))?;
    let mut client = reqwest::Client::builder().no_proxy();
    if let Some(timeout) = timeout {
        client = client.timeout(timeout);
    }
    let client = client
        .build()
        .map_err(|e| CliError::failed(format!("{url}: {e}")))?;
    runtime.block_on(ask(client))
}

/// A command's failure: a one-line reason and the process exit code.
#[derive(Debug)]
pub struct CliError {
    /// The exit code (2 for bad configuration or usage, 1 otherwise).
    pub code: u8,
    /// One line, printed after `btic: ` on stderr.
    pub message: String,
}

impl CliError {
    /// A bad pipeline file or bad arguments (exit 2).
    pub fn config(message: impl Into<String>) -> Self {
        CliError {
            code: 2,
            message: message.into(),
        }
    }

    /// Anything else (exit 1).
    pub fn failed(message: impl Into<String>) -> Self {
        CliError {
            code: 1,
            message: message.into(),
        }
    }
}
