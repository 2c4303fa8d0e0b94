//! `btic import`: parse previously downloaded `SupportSession` XML files and deliver their
//! sessions to one destination, as the pipeline would (same rows, same idempotency).

use std::fs::File;
use std::io::{BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::CliError;
use crate::config::{
    Config, Destination, DestinationKind, FilesDestination, SqlConnection, SqlDestination,
};
use crate::deliver::files::{FilesSink, Outcome};
use crate::deliver::sql::SqlSink;
use crate::model::Naming;
use crate::model::Session;
use crate::parse::SessionReader;

/// Attempts per batch when the destination fails retryably (connection lost, deadlock).
const ATTEMPTS: u32 = 4;

/// Counts for the summary line.
#[derive(Debug, Default)]
struct Tally {
    sessions: u64,
    rows: u64,
    skipped: u64,
    failed: u64,
    bad_files: u64,
    /// Files destinations: files written (the rest were already there).
    new_files: u64,
}

/// Runs `btic import`.
pub fn import(
    config_path: &Path,
    destination: &str,
    site: Option<&str>,
    files: &[PathBuf],
) -> Result<(), CliError> {
    let config = Config::load(config_path).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("error: {e}");
        }
        CliError::config(format!(
            "{}: {} error(s) in the pipeline file",
            config_path.display(),
            errors.0.len()
        ))
    })?;
    let dest = config.destination(destination).ok_or_else(|| {
        CliError::config(format!(
            "no destination {destination:?} in {}; it has {}",
            config_path.display(),
            names(config.destinations.iter().map(|d| d.name.as_str()))
        ))
    })?;
    let host_name = site_host_name(&config, site)?;
    if files.is_empty() {
        return Err(CliError::config("no XML files to import were given"));
    }
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| CliError::failed(format!("starting the runtime: {e}")))?;
    let tally = match &dest.kind {
        DestinationKind::Sql(sql) => {
            runtime.block_on(import_sql(&config, dest, sql, &host_name, files))?
        }
        DestinationKind::Files(files_dest) => import_files(files_dest, &host_name, files)?,
    };
    let written = match &dest.kind {
        DestinationKind::Files(_) => format!("{} new files", tally.new_files),
        DestinationKind::Sql(_) => format!("{} rows", tally.rows),
    };
    println!(
        "imported {} sessions ({written}) into destination {destination:?} from {} file{}: {} skipped, {} failed",
        tally.sessions,
        files.len(),
        if files.len() == 1 { "" } else { "s" },
        tally.skipped,
        tally.failed
    );
    if tally.failed > 0 || tally.skipped > 0 || tally.bad_files > 0 {
        return Err(CliError::failed(format!(
            "{} sessions failed, {} skipped, {} file(s) unreadable",
            tally.failed, tally.skipped, tally.bad_files
        )));
    }
    Ok(())
}

fn names<'a>(mut list: impl Iterator<Item = &'a str>) -> String {
    let first = list.next();
    match first {
        None => "none".into(),
        Some(f) => std::iter::once(f)
            .chain(list)
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The `host_name` the sessions are stored under: the named site's, or the only site's.
fn site_host_name(config: &Config, site: Option<&str>) -> Result<String, CliError> {
    let site = match site {
        Some(name) => config.site(name).ok_or_else(|| {
            CliError::config(format!(
                "no site {name:?} in the pipeline file; it has {}",
                names(config.sites.iter().map(|s| s.name.as_str()))
            ))
        })?,
        None => match config.sites.as_slice() {
            [only] => only,
            _ => {
                return Err(CliError::config(format!(
                    "--site is needed: the pipeline file has {} sites ({})",
                    config.sites.len(),
                    names(config.sites.iter().map(|s| s.name.as_str()))
                )));
            }
        },
    };
    Ok(site.host_name().to_string())
}

/// Writes each session of `inputs` as its own file; the same sessions imported again
/// leave the directory as it was (the destination's conflict rule decides).
fn import_files(
    dest: &FilesDestination,
    host_name: &str,
    inputs: &[PathBuf],
) -> Result<Tally, CliError> {
    let sink = FilesSink::open(dest).map_err(|e| CliError::failed(e.to_string()))?;
    let progress = progress_bar(inputs);
    let mut tally = Tally::default();
    let mut done_bytes = 0u64;
    for path in inputs {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                progress.suspend(|| eprintln!("error: reading {}: {e}", path.display()));
                tally.bad_files += 1;
                continue;
            }
        };
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut reader = SessionReader::new(BufReader::with_capacity(1 << 16, file));
        while let Some(item) = reader.next() {
            // The fragments keep their meaning only with the report root's namespace
            // declarations, read in the same pass.
            let root = reader.root().cloned().unwrap_or_default();
            let parsed = match item {
                Ok(parsed) => parsed,
                Err(e) => {
                    progress.suspend(|| eprintln!("error: {}: {e}", path.display()));
                    if e.is_fatal() {
                        tally.bad_files += 1;
                    } else {
                        tally.skipped += 1;
                    }
                    continue;
                }
            };
            progress.set_position(done_bytes + parsed.offset);
            let naming = Naming::of(host_name, &parsed.session);
            let mut attempt = 1;
            let delivered = loop {
                match sink.deliver_session(&naming, &parsed.session, &parsed.raw, &root) {
                    Err(e) if e.is_retryable() && attempt < ATTEMPTS => {
                        progress.suspend(|| eprintln!("warning: {e}; trying again"));
                        std::thread::sleep(Duration::from_secs(1 << (attempt - 1)));
                        attempt += 1;
                    }
                    other => break other,
                }
            };
            match delivered {
                Ok(d) => {
                    tally.sessions += 1;
                    if matches!(d.outcome, Outcome::Written | Outcome::Replaced) {
                        tally.new_files += 1;
                    }
                }
                Err(e) if e.is_retryable() => {
                    return Err(CliError::failed(format!(
                        "{e}; {} sessions imported before giving up after {ATTEMPTS} attempts",
                        tally.sessions
                    )));
                }
                Err(e) => {
                    progress.suspend(|| eprintln!("error: {e}"));
                    tally.failed += 1;
                }
            }
            progress.set_message(format!("{} sessions", tally.sessions));
        }
        done_bytes += file_len;
        progress.set_position(done_bytes);
    }
    progress.finish_and_clear();
    Ok(tally)
}

/// A byte progress bar over `files` on a terminal; hidden in pipes.
fn progress_bar(files: &[PathBuf]) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {msg} ({elapsed}, {eta} left)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

async fn import_sql(
    config: &Config,
    dest: &Destination,
    sql: &SqlDestination,
    host_name: &str,
    files: &[PathBuf],
) -> Result<Tally, CliError> {
    let url = match &sql.connection {
        // Only this destination's url is needed: the file's other secrets (the sites')
        // may well be unset where the import runs.
        SqlConnection::Url(_) => {
            let (mut secrets, errors) = config.resolve_available_secrets();
            let key = config
                .destinations
                .iter()
                .position(|d| d.name == dest.name)
                .map(|i| format!("destination[{i}].url"))
                .unwrap_or_default();
            match secrets.urls.remove(&dest.name) {
                Some(url) => Some(url),
                None => {
                    let why = errors
                        .iter()
                        .map(ToString::to_string)
                        .find(|e| e.contains(&key))
                        .unwrap_or_else(|| "it could not be read".to_string());
                    return Err(CliError::config(format!(
                        "reading the url of destination {:?}: {why}",
                        dest.name
                    )));
                }
            }
        }
        SqlConnection::Path(_) => None,
    };
    let sink = SqlSink::connect(&dest.name, sql, url.as_ref())
        .await
        .map_err(|e| CliError::failed(e.to_string()))?;
    let total_bytes: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let progress = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(total_bytes);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {msg} ({elapsed}, {eta} left)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut tally = Tally::default();
    // Parsing runs on a thread of its own, a batch ahead of delivery, so the parse of
    // the next batch overlaps the database's work on this one.
    let (sender, mut batches) = tokio::sync::mpsc::channel(1);
    let reader = {
        let files = files.to_vec();
        let batch_size = sql.batch_size.max(1);
        std::thread::Builder::new()
            .name("btic-import-parse".to_owned())
            .spawn(move || read_batches(&files, batch_size, &sender))
            .map_err(|e| CliError::failed(format!("starting the parse thread: {e}")))?
    };
    let mut outcome = Ok(());
    while let Some(read) = batches.recv().await {
        match read {
            Read::Batch {
                mut sessions,
                position,
            } => {
                progress.set_position(position);
                outcome = deliver(&sink, host_name, &mut sessions, &mut tally, &progress).await;
                if outcome.is_err() {
                    break;
                }
            }
            Read::Problem { text, unreadable } => {
                progress.suspend(|| eprintln!("error: {text}"));
                if unreadable {
                    tally.bad_files += 1;
                } else {
                    tally.skipped += 1;
                }
            }
        }
    }
    // Ends the reader (its next send fails) if delivery gave up early.
    drop(batches);
    if reader.join().is_err() {
        return Err(CliError::failed("the parse thread panicked"));
    }
    outcome?;
    progress.finish_and_clear();
    Ok(tally)
}

/// What the parse thread hands to delivery, in file order.
enum Read {
    /// Up to a batch of sessions, and how far into the files they reach (bytes).
    Batch {
        sessions: Vec<Session>,
        position: u64,
    },
    /// A session skipped, or a file that could not be read (`unreadable`).
    Problem { text: String, unreadable: bool },
}

/// Parses `files` in order and sends their sessions in batches of `batch_size` (a file's
/// last batch may be smaller); stops early when the receiver is gone.
fn read_batches(files: &[PathBuf], batch_size: usize, out: &tokio::sync::mpsc::Sender<Read>) {
    let mut done_bytes = 0u64;
    let send = |read: Read| out.blocking_send(read).is_ok();
    for path in files {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                let text = format!("reading {}: {e}", path.display());
                if !send(Read::Problem {
                    text,
                    unreadable: true,
                }) {
                    return;
                }
                continue;
            }
        };
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut sessions: Vec<Session> = Vec::with_capacity(batch_size);
        // The SQL rows are made from the typed sessions alone.
        let reader = SessionReader::new(BufReader::with_capacity(1 << 16, file)).without_raw();
        for item in reader {
            let read = match item {
                Ok(parsed) => {
                    let position = done_bytes + parsed.offset;
                    sessions.push(parsed.session);
                    if sessions.len() < batch_size {
                        continue;
                    }
                    let full = std::mem::replace(&mut sessions, Vec::with_capacity(batch_size));
                    Read::Batch {
                        sessions: full,
                        position,
                    }
                }
                Err(e) => Read::Problem {
                    text: format!("{}: {e}", path.display()),
                    unreadable: e.is_fatal(),
                },
            };
            if !send(read) {
                return;
            }
        }
        done_bytes += file_len;
        if !sessions.is_empty()
            && !send(Read::Batch {
                sessions,
                position: done_bytes,
            })
        {
            return;
        }
    }
}

/// Delivers and empties `batch`, retrying retryable failures a few times; a batch that
/// still fails retryably ends the import (the destination is down), permanent failures
/// are counted and reported per session.
async fn deliver(
    sink: &SqlSink,
    host_name: &str,
    batch: &mut Vec<Session>,
    tally: &mut Tally,
    progress: &ProgressBar,
) -> Result<(), CliError> {
    let mut pending = std::mem::take(batch);
    for attempt in 1..=ATTEMPTS {
        if pending.is_empty() {
            return Ok(());
        }
        let outcome = sink.deliver(host_name, &pending).await;
        tally.rows += outcome.rows;
        let mut retry = Vec::new();
        let mut last_error = None;
        for (session, result) in pending.into_iter().zip(outcome.sessions) {
            match result {
                Ok(()) => tally.sessions += 1,
                Err(e) if e.is_retryable() => {
                    last_error = Some(e);
                    retry.push(session);
                }
                Err(e) => {
                    progress.suspend(|| eprintln!("error: {e}"));
                    tally.failed += 1;
                }
            }
        }
        progress.set_message(format!("{} sessions", tally.sessions));
        pending = retry;
        if let Some(e) = last_error {
            if attempt == ATTEMPTS {
                return Err(CliError::failed(format!(
                    "{e}; {} sessions imported before giving up after {ATTEMPTS} attempts",
                    tally.sessions
                )));
            }
            progress.suspend(|| eprintln!("warning: {e}; trying again"));
            tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
        }
    }
    Ok(())
}
