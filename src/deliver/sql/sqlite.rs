//! SQLite with rusqlite: one connection in WAL mode, used on tokio's blocking threads.
//!
//! Each batch runs in a `BEGIN IMMEDIATE` transaction, which takes the database's one
//! write lock up front, so two writers (two sinks, two processes) queue on the busy
//! timeout instead of deadlocking on a lock upgrade. Sessions new to the database skip
//! the child deletes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, Value as SqliteValue};
use rusqlite::{Connection, ErrorCode, OptionalExtension, ToSql, Transaction, TransactionBehavior};

use super::rows::{Row, SessionRows, Value};
use super::schema::{self, Dialect, SCHEMA_VERSION, SESSION_EVENT};
use super::{CheckReport, PROBE_HOST, SqlError, btic_version};

const D: Dialect = Dialect::Sqlite;

/// How long a writer waits for another's write lock before failing retryably.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Owned(SqliteValue::Null),
            Value::Text(s) => ToSqlOutput::from(s.as_str()),
            Value::Int(n) => ToSqlOutput::Owned(SqliteValue::Integer(*n)),
            Value::Time(t) => {
                ToSqlOutput::Owned(SqliteValue::Text(t.format("%Y-%m-%d %H:%M:%S").to_string()))
            }
        })
    }
}

/// Maps a rusqlite error to the one classification.
fn classify(what: String, e: &rusqlite::Error) -> SqlError {
    let message = e.to_string();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            SqlError::Conflict { what, message }
        }
        Some(ErrorCode::ConstraintViolation | ErrorCode::TooBig | ErrorCode::TypeMismatch) => {
            SqlError::Rejected { what, message }
        }
        // The file system is full or failing, or the file went away: worth waiting for.
        Some(
            ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::OutOfMemory,
        ) => SqlError::Connection { what, message },
        _ => SqlError::Database { what, message },
    }
}

/// One SQLite destination.
pub(super) struct Sqlite {
    name: String,
    path: PathBuf,
    /// The connection; the lock serializes this sink's transactions.
    conn: Arc<Mutex<Connection>>,
}

impl Sqlite {
    pub(super) async fn open(name: &str, path: &Path) -> Result<Self, SqlError> {
        let what = format!("opening destination {name:?} at {}", path.display());
        let owned = path.to_path_buf();
        let conn = run_blocking(&what, move || {
            let mut conn = Connection::open(&owned)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            // WAL lets readers (reports) run while btic writes; FULL makes each commit
            // durable before the queue lets go of its items.
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            migrate(&mut conn)?;
            Ok(conn)
        })
        .await?;
        Ok(Sqlite {
            name: name.to_string(),
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub(super) async fn write(
        &self,
        rows: &Arc<Vec<SessionRows>>,
        group: &[usize],
    ) -> Result<u64, SqlError> {
        let what = format!(
            "writing {} sessions to destination {:?} at {}",
            group.len(),
            self.name,
            self.path.display()
        );
        let conn = Arc::clone(&self.conn);
        let rows = Arc::clone(rows);
        let group = group.to_vec();
        run_blocking(&what, move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let sessions: Vec<&SessionRows> = group.iter().map(|&k| &rows[k]).collect();
            let n = write_in(&tx, &sessions)?;
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    pub(super) async fn check(&self, probe: SessionRows) -> Result<CheckReport, SqlError> {
        let what = format!("checking destination {:?}", self.name);
        let conn = Arc::clone(&self.conn);
        let (server, schema_version, found) = run_blocking(&what, move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            let server: String = conn.query_row("SELECT sqlite_version()", [], |r| r.get(0))?;
            let version: i32 = conn.query_row(
                "SELECT max(version) FROM btic_schema_version",
                [],
                |r| r.get(0),
            )?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            write_in(&tx, &[&probe])?;
            let found: i64 = tx.query_row(
                "SELECT count(*) FROM \"session\" s JOIN \"session_event\" e ON e.session_id = s.id WHERE s.host_name = ?1 AND s.lsid = ?2",
                rusqlite::params![PROBE_HOST, probe.lsid()],
                |r| r.get(0),
            )?;
            tx.rollback()?;
            Ok((format!("SQLite {server}"), version, found))
        })
        .await?;
        if found != 1 {
            return Err(SqlError::Database {
                what,
                message: format!("the probe session read back {found} events instead of 1"),
            });
        }
        Ok(CheckReport {
            schema_version,
            server,
        })
    }
}

/// Runs SQLite work on a blocking thread and classifies its error.
async fn run_blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T, MigrateError> + Send + 'static,
) -> Result<T, SqlError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(MigrateError::Sqlite(e))) => Err(classify(what.to_string(), &e)),
        Ok(Err(MigrateError::TooNew(found))) => Err(SqlError::SchemaTooNew {
            what: what.to_string(),
            found,
            supported: SCHEMA_VERSION,
        }),
        Err(join) => Err(SqlError::Database {
            what: what.to_string(),
            message: format!("the database thread failed: {join}"),
        }),
    }
}

/// Failures on the blocking thread.
#[derive(Debug)]
enum MigrateError {
    /// SQLite said no.
    Sqlite(rusqlite::Error),
    /// The schema is newer than this build.
    TooNew(i32),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Sqlite(e)
    }
}

fn migrate(conn: &mut Connection) -> Result<(), MigrateError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(&schema::create_version_table(D))?;
    let found: Option<i32> =
        tx.query_row("SELECT max(version) FROM btic_schema_version", [], |r| {
            r.get(0)
        })?;
    let found = found.unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(MigrateError::TooNew(found));
    }
    for (version, statements) in schema::migrations(D) {
        if version <= found {
            continue;
        }
        for s in statements {
            tx.execute_batch(&s)?;
        }
        tx.execute(
            "INSERT INTO btic_schema_version (version, applied_at, btic_version) VALUES (?1, strftime('%Y-%m-%d %H:%M:%S', 'now'), ?2)",
            rusqlite::params![version, btic_version()],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Writes sessions inside `tx` (not committed) and returns the number of rows.
fn write_in(tx: &Transaction<'_>, sessions: &[&SessionRows]) -> rusqlite::Result<u64> {
    let mut exists = tx.prepare_cached(
        "SELECT \"id\" FROM \"session\" WHERE \"host_name\" = ?1 AND \"lsid\" = ?2",
    )?;
    let mut upsert = tx.prepare_cached(&schema::upsert_session(D))?;
    let mut insert_event = tx.prepare_cached(&schema::insert_row(D, &SESSION_EVENT))?;
    let deletes = schema::delete_children(D);
    let mut n = 0u64;
    for s in sessions {
        let existing: Option<i64> = exists
            .query_row([s.host_name(), s.lsid()], |r| r.get(0))
            .optional()?;
        let id: i64 =
            upsert.query_row(rusqlite::params_from_iter(s.session.iter()), |r| r.get(0))?;
        if existing.is_some() {
            for d in &deletes {
                tx.prepare_cached(d)?.execute([id])?;
            }
        }
        for e in &s.events {
            insert_child(&mut insert_event, id, &e.event)?;
            let event_id = tx.last_insert_rowid();
            for (t, rows) in e.children() {
                if rows.is_empty() {
                    continue;
                }
                let mut insert = tx.prepare_cached(&schema::insert_row(D, t))?;
                for r in rows {
                    insert_child(&mut insert, event_id, r)?;
                }
            }
        }
        for (t, rows) in s.session_children() {
            if rows.is_empty() {
                continue;
            }
            let mut insert = tx.prepare_cached(&schema::insert_row(D, t))?;
            for r in rows {
                insert_child(&mut insert, id, r)?;
            }
        }
        n += s.row_count();
    }
    Ok(n)
}

fn insert_child(
    stmt: &mut rusqlite::CachedStatement<'_>,
    parent: i64,
    row: &Row,
) -> rusqlite::Result<()> {
    let mut params: Vec<&dyn ToSql> = Vec::with_capacity(row.len() + 1);
    params.push(&parent);
    params.extend(row.iter().map(|v| v as &dyn ToSql));
    stmt.execute(params.as_slice())?;
    Ok(())
}
