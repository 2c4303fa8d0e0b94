//! SQL destinations: SQL Server, PostgreSQL and SQLite, writing the Integration Client's
//! schema idempotently.
//!
//! The shared layer owns everything that is not dialect: the schema (`schema`), the
//! mapping of a `Session` to rows (`rows`), and the delivery algorithm below. The dialect
//! modules (`postgres`, `sqlite`, `sqlserver`) only connect, migrate, and write one batch
//! in one transaction.
//!
//! # Delivery
//!
//! `SqlSink::deliver` takes the sessions of one site. Sessions repeated in the call are
//! written once (the last copy wins). The rest are sorted by `lsid`, so two writers of
//! overlapping batches take their row locks in the same order and cannot deadlock, and
//! cut into transactions of `batch_size` sessions. In each transaction every session row
//! is upserted by (`host_name`, `lsid`), its child rows are deleted and written again;
//! delivering a session any number of times leaves one copy of it and its children. A
//! concurrent writer of the same session waits on the session row's lock (PostgreSQL,
//! SQLite's single writer, SQL Server's `HOLDLOCK`), then replaces what the first wrote.
//!
//! When the database refuses a transaction's data (a value too long, a constraint), the
//! transaction is rolled back and its sessions are split in halves until the bad session
//! is alone: it fails with a permanent error and every other session is delivered. A
//! retryable error (connection lost, timeout, deadlock or serialization failure) rolls
//! back the transaction and ends the call: the sessions not yet committed carry that
//! error, and their next delivery is harmless because it is idempotent.
//!
//! # Data without a column in the guide
//!
//! Additional columns (after the guide's columns of the same table):
//! `session.file_move_count`, `file_delete_count`, `chat_view_url`, `chat_download_url`,
//! `recording_view_url`, `recording_download_url`, `command_shell_recordings` and
//! `show_my_screen_recordings` (JSON arrays of `{"instance", "download_url",
//! "view_url"}`); `customer.user_name` and `is_primary`; `representative.private_display_name`
//! and `is_invited`. The primary customer and representative are the rows with
//! `is_primary = 1`.
//!
//! `session_event_data` holds each event's `data/value` pairs in document order, then
//! these pairs when the event has them: `body`, `encoded_body` (decoded text), `filename`,
//! `filesize`, `file.N.name` and `file.N.size` (N from 0 per `files/file`),
//! `performed_by.gsnumber`, `performed_by.id`, `destination.gsnumber`, `destination.id`.
//!
//! `system_information.information` is one category's content as JSON:
//! `{"columns":[{"name":..,"text":..}],"rows":[[{"name":..,"value":..}, ..], ..]}`,
//! written only when the destination's `store_system_information` is true.
//!
//! Identifiers (`gs_number`, `user_id`, `team_id`, `public_site_id`, `jump_group_id`)
//! are text because appliances have been seen writing non-numeric ones. Times are UTC:
//! `timestamptz` in PostgreSQL, `datetime2(0)` in SQL Server, `YYYY-MM-DD HH:MM:SS` text
//! in SQLite.

mod postgres;
pub mod rows;
pub mod schema;
mod sqlite;
mod sqlserver;
pub mod tsql;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Secret, SqlConnection, SqlDestination, SqlDialect};
use crate::model::Session;

pub use rows::SessionRows;
pub use schema::{Dialect, SCHEMA_VERSION};

/// Longest time one transaction may take before its connection is dropped and the
/// batch reported retryable.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(300);

/// A failure talking to a SQL destination. `what` says what was being done with what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    /// The destination's settings cannot be used (missing URL, bad connection string).
    #[error("{what}: {message}")]
    Config {
        /// What was being done.
        what: String,
        /// Why it failed.
        message: String,
    },
    /// The database could not be reached or the connection broke.
    #[error("{what}: connection failed: {message}")]
    Connection {
        /// What was being done.
        what: String,
        /// Why it failed.
        message: String,
    },
    /// A connect or a transaction took too long.
    #[error("{what}: timed out: {message}")]
    Timeout {
        /// What was being done.
        what: String,
        /// Why it failed.
        message: String,
    },
    /// A deadlock, serialization failure or lock timeout rolled the transaction back.
    #[error("{what}: transaction conflict: {message}")]
    Conflict {
        /// What was being done.
        what: String,
        /// Why it failed.
        message: String,
    },
    /// The database refused the data (value too long, constraint, invalid value).
    #[error("{what}: the database refused the data: {message}")]
    Rejected {
        /// What was being done.
        what: String,
        /// Why it failed.
        message: String,
    },
    /// The database's schema is newer than this build knows.
    #[error(
        "{what}: the database schema is version {found}, newer than version {supported} that this btic writes; upgrade btic"
    )]
    SchemaTooNew {
        /// What was being done.
        what: String,
        /// The version in `btic_schema_version`.
        found: i32,
        /// `SCHEMA_VERSION`.
        supported: i32,
    },
    /// Any other database failure (permissions, missing objects, disk full).
    #[error("{what}: {message}")]
    Database {
        /// What was being done.
        what: String,
        /// Why it failed.
        message: String,
    },
}

impl SqlError {
    /// Whether trying the same thing again later can succeed: connection loss, timeouts,
    /// deadlocks and serialization failures. Refused data, schema and settings problems
    /// are permanent.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SqlError::Connection { .. } | SqlError::Timeout { .. } | SqlError::Conflict { .. }
        )
    }

    /// Whether the database refused the data itself (the batch is split to find the
    /// session at fault).
    pub fn is_rejection(&self) -> bool {
        matches!(self, SqlError::Rejected { .. })
    }

    /// The same error, saying it happened while doing `what`.
    pub fn context(mut self, new: String) -> Self {
        match &mut self {
            SqlError::Config { what, .. }
            | SqlError::Connection { what, .. }
            | SqlError::Timeout { what, .. }
            | SqlError::Conflict { what, .. }
            | SqlError::Rejected { what, .. }
            | SqlError::SchemaTooNew { what, .. }
            | SqlError::Database { what, .. } => *what = new,
        }
        self
    }
}

/// What became of each session of one `deliver` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// One entry per input session, in input order: `Ok` when it is in the database;
    /// `Err` with `is_retryable()` true when it should be delivered again later, false
    /// when it can never be written as it is (dead letter).
    pub sessions: Vec<Result<(), SqlError>>,
    /// Rows written over all tables by the committed transactions.
    pub rows: u64,
}

impl BatchOutcome {
    /// Sessions now in the database.
    pub fn delivered(&self) -> usize {
        self.sessions.iter().filter(|r| r.is_ok()).count()
    }

    /// Sessions refused for good.
    pub fn rejected(&self) -> usize {
        self.sessions
            .iter()
            .filter(|r| matches!(r, Err(e) if !e.is_retryable()))
            .count()
    }

    /// The retryable error that ended the call early, if any.
    pub fn retryable_error(&self) -> Option<&SqlError> {
        self.sessions.iter().find_map(|r| match r {
            Err(e) if e.is_retryable() => Some(e),
            _ => None,
        })
    }
}

/// What `SqlSink::check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The schema version in the database after connecting (and migrating).
    pub schema_version: i32,
    /// A description of the server (its version string where the dialect gives one).
    pub server: String,
}

enum Backend {
    Postgres(Box<postgres::Postgres>),
    Sqlite(sqlite::Sqlite),
    SqlServer(Box<sqlserver::SqlServer>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Postgres(_) => "Postgres",
            Backend::Sqlite(_) => "Sqlite",
            Backend::SqlServer(_) => "SqlServer",
        })
    }
}

/// A connected SQL destination with its schema in place. Deliveries through one sink
/// run one after another on one connection; open several sinks for parallel writers.
#[derive(Debug)]
pub struct SqlSink {
    name: String,
    store_system_information: bool,
    batch_size: usize,
    backend: Backend,
}

impl SqlSink {
    /// Connects to the destination `name` and creates or migrates its schema. `url` is
    /// the resolved `url` secret (PostgreSQL URL or SQL Server ADO string); SQLite uses
    /// the destination's `path`.
    pub async fn connect(
        name: &str,
        destination: &SqlDestination,
        url: Option<&Secret>,
    ) -> Result<SqlSink, SqlError> {
        let what = format!("connecting to destination {name:?}");
        let need_url = || {
            url.cloned().ok_or_else(|| SqlError::Config {
                what: what.clone(),
                message: "no connection url was given".into(),
            })
        };
        let backend = match (destination.dialect, &destination.connection) {
            (SqlDialect::Sqlite, SqlConnection::Path(path)) => {
                Backend::Sqlite(sqlite::Sqlite::open(name, path).await?)
            }
            (SqlDialect::Postgres, _) => Backend::Postgres(Box::new(
                postgres::Postgres::connect(name, need_url()?).await?,
            )),
            (SqlDialect::SqlServer, _) => Backend::SqlServer(Box::new(
                sqlserver::SqlServer::connect(name, need_url()?).await?,
            )),
            (SqlDialect::Sqlite, SqlConnection::Url(_)) => {
                return Err(SqlError::Config {
                    what,
                    message: "a sqlite destination needs a path".into(),
                });
            }
        };
        Ok(SqlSink {
            name: name.to_string(),
            store_system_information: destination.store_system_information,
            batch_size: destination.batch_size.max(1),
            backend,
        })
    }

    /// The destination's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The dialect spoken.
    pub fn dialect(&self) -> Dialect {
        match self.backend {
            Backend::Postgres(_) => Dialect::Postgres,
            Backend::Sqlite(_) => Dialect::Sqlite,
            Backend::SqlServer(_) => Dialect::SqlServer,
        }
    }

    /// Writes `sessions` seen on the site `host_name`, idempotently, and says what became
    /// of each (see the module doc).
    pub async fn deliver(&self, host_name: &str, sessions: &[Session]) -> BatchOutcome {
        let rows = sessions.iter().map(|s| self.rows(host_name, s)).collect();
        self.deliver_rows(rows).await
    }

    /// The rows this destination writes for `session` seen on the site `host_name`.
    pub fn rows(&self, host_name: &str, session: &Session) -> SessionRows {
        SessionRows::new(host_name, session, self.store_system_information)
    }

    /// Writes sessions already mapped with [`rows`](Self::rows), idempotently, and says
    /// what became of each, in order. A caller that maps each session and drops it holds
    /// only the rows of a batch, not the sessions too.
    pub async fn deliver_rows(&self, rows: Vec<SessionRows>) -> BatchOutcome {
        let lsids: Vec<String> = rows.iter().map(|r| r.lsid().to_string()).collect();
        // The last copy of a repeated lsid wins; the others share its outcome.
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (i, lsid) in lsids.iter().enumerate() {
            if !lsid.is_empty() {
                last.insert(lsid.as_str(), i);
            }
        }
        let mut unique: Vec<usize> = last.values().copied().collect();
        unique.sort_by(|&a, &b| lsids[a].cmp(&lsids[b]));
        let mut slots: Vec<Option<SessionRows>> = rows.into_iter().map(Some).collect();
        let rows: Arc<Vec<SessionRows>> =
            Arc::new(unique.iter().filter_map(|&i| slots[i].take()).collect());
        drop(slots);
        let mut results: Vec<Option<Result<(), SqlError>>> = vec![None; rows.len()];
        let mut written = 0u64;
        let mut pending: VecDeque<Vec<usize>> = (0..rows.len())
            .collect::<Vec<_>>()
            .chunks(self.batch_size)
            .map(<[usize]>::to_vec)
            .collect();
        while let Some(group) = pending.pop_front() {
            match self.write_with_timeout(&rows, &group).await {
                Ok(n) => {
                    written += n;
                    for &k in &group {
                        results[k] = Some(Ok(()));
                    }
                }
                Err(e) if e.is_rejection() && group.len() > 1 => {
                    let (a, b) = group.split_at(group.len() / 2);
                    pending.push_front(b.to_vec());
                    pending.push_front(a.to_vec());
                }
                Err(e) if e.is_retryable() => {
                    for k in group.iter().copied().chain(pending.drain(..).flatten()) {
                        results[k] = Some(Err(e.clone()));
                    }
                }
                Err(e) => {
                    let e = if group.len() == 1 {
                        e.context(format!(
                            "delivering session {} to destination {:?}",
                            rows[group[0]].lsid(),
                            self.name
                        ))
                    } else {
                        e
                    };
                    for &k in &group {
                        results[k] = Some(Err(e.clone()));
                    }
                }
            }
        }
        let by_lsid: HashMap<&str, usize> = unique
            .iter()
            .enumerate()
            .map(|(k, &i)| (lsids[i].as_str(), k))
            .collect();
        let sessions = lsids
            .iter()
            .map(|lsid| {
                let Some(&k) = by_lsid.get(lsid.as_str()) else {
                    // Without an lsid there is no key to make the write idempotent.
                    return Err(SqlError::Rejected {
                        what: format!("delivering to destination {:?}", self.name),
                        message: "the session has no lsid".into(),
                    });
                };
                results[k].clone().unwrap_or_else(|| {
                    Err(SqlError::Database {
                        what: format!("delivering to destination {:?}", self.name),
                        message: "the session was not attempted".into(),
                    })
                })
            })
            .collect();
        BatchOutcome {
            sessions,
            rows: written,
        }
    }

    async fn write_with_timeout(
        &self,
        rows: &Arc<Vec<SessionRows>>,
        group: &[usize],
    ) -> Result<u64, SqlError> {
        let write = async {
            match &self.backend {
                Backend::Postgres(b) => b.write(rows, group).await,
                Backend::Sqlite(b) => b.write(rows, group).await,
                Backend::SqlServer(b) => b.write(rows, group).await,
            }
        };
        match tokio::time::timeout(TRANSACTION_TIMEOUT, write).await {
            Ok(r) => r,
            Err(_) => {
                // The transaction may still be open on the server: drop the connection
                // so the server rolls it back, and reconnect on the next call.
                match &self.backend {
                    Backend::Postgres(b) => b.discard().await,
                    Backend::Sqlite(_) => {}
                    Backend::SqlServer(b) => b.discard().await,
                }
                Err(SqlError::Timeout {
                    what: format!(
                        "writing {} sessions to destination {:?}",
                        group.len(),
                        self.name
                    ),
                    message: format!("no commit within {} s", TRANSACTION_TIMEOUT.as_secs()),
                })
            }
        }
    }

    /// Proves the destination works: the schema is in place (connecting migrated it)
    /// and a probe session with one event can be written and read back in a transaction
    /// that is then rolled back, leaving nothing behind.
    pub async fn check(&self) -> Result<CheckReport, SqlError> {
        let probe = probe_rows();
        match &self.backend {
            Backend::Postgres(b) => b.check(probe).await,
            Backend::Sqlite(b) => b.check(probe).await,
            Backend::SqlServer(b) => b.check(probe).await,
        }
    }
}

/// Host name of the probe row `check` writes and rolls back (`.invalid` cannot be a
/// real site).
pub const PROBE_HOST: &str = "btic-check.invalid";

fn probe_rows() -> SessionRows {
    let session = Session {
        lsid: format!("btic-check-{}", std::process::id()).into(),
        session_type: "support".into(),
        start_time: Some(chrono::Utc::now()),
        events: vec![crate::model::Event {
            event_type: "Session Start".into(),
            ..Default::default()
        }],
        ..Session::default()
    };
    SessionRows::new(PROBE_HOST, &session, false)
}

/// The name of the running btic, recorded with each migration.
fn btic_version() -> String {
    format!("btic {}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pipeline shares one sink between tasks and spawns its deliveries.
    #[test]
    fn a_sink_and_its_deliveries_can_cross_threads() {
        fn is_send_sync<T: Send + Sync>() {}
        fn is_send<T: Send>(_: &T) {}
        is_send_sync::<SqlSink>();
        fn deliveries(sink: &SqlSink, sessions: &[Session]) {
            is_send(&sink.deliver("h", sessions));
            is_send(&sink.check());
        }
        let _ = deliveries;
    }

    #[test]
    fn only_connection_timeout_and_conflict_errors_are_retryable() {
        let e = |f: fn(String, String) -> SqlError| f("w".into(), "m".into());
        let cases: [(SqlError, bool); 7] = [
            (
                e(|what, message| SqlError::Connection { what, message }),
                true,
            ),
            (e(|what, message| SqlError::Timeout { what, message }), true),
            (
                e(|what, message| SqlError::Conflict { what, message }),
                true,
            ),
            (
                e(|what, message| SqlError::Rejected { what, message }),
                false,
            ),
            (e(|what, message| SqlError::Config { what, message }), false),
            (
                e(|what, message| SqlError::Database { what, message }),
                false,
            ),
            (
                SqlError::SchemaTooNew {
                    what: "w".into(),
                    found: 2,
                    supported: 1,
                },
                false,
            ),
        ];
        for (error, retryable) in cases {
            assert_eq!(error.is_retryable(), retryable, "{error:?}");
        }
    }
}
