//! Microsoft SQL Server, Azure SQL and Babelfish with tiberius over tokio (tokio-util
//! compat), from an ADO.NET connection string.
//!
//! Statements come from `tsql` (every text listed there and parsed by the T-SQL grammar
//! in the tests); this module connects, migrates, bulk loads the batch into the
//! session's staging tables and runs `tsql::apply` in the batch's transaction (the
//! write path in `tsql`'s module doc).

use std::sync::Arc;

use chrono::NaiveDateTime;
use tiberius::{Client, ColumnData, Config, IntoSql, Query, TokenRow};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use super::rows::{EventRows, Row, SessionRows, Value};
use super::schema::{
    self, ColumnType, Dialect, EVENT_CHILDREN, SCHEMA_VERSION, SESSION, SESSION_CHILDREN,
    SESSION_EVENT, TABLES, Table,
};
use super::tsql;
use super::{CheckReport, PROBE_HOST, SqlError, TRANSACTION_TIMEOUT, btic_version};
use crate::config::Secret;

const D: Dialect = Dialect::SqlServer;

type Conn = Client<Compat<TcpStream>>;

/// A staged value as its staging column takes it: text as `nvarchar(max)`, every integer
/// as `bigint`, times as `datetime2(0)`. A NULL takes its column's type: the bulk load
/// encodes each value with the staging column's metadata.
fn column_data(v: &Value, ty: ColumnType) -> ColumnData<'_> {
    match (v, ty) {
        (Value::Text(s), _) => ColumnData::String(Some(s.as_str().into())),
        (Value::Int(n), _) => ColumnData::I64(Some(*n)),
        (Value::Time(t), _) => t.naive_utc().into_sql(),
        (Value::Null, ColumnType::Key(_) | ColumnType::Text) => ColumnData::String(None),
        (Value::Null, ColumnType::Int | ColumnType::BigInt) => ColumnData::I64(None),
        (Value::Null, ColumnType::Time) => Option::<NaiveDateTime>::None.into_sql(),
    }
}

/// Maps a tiberius error to the one classification.
pub(super) fn classify(what: String, e: &tiberius::error::Error) -> SqlError {
    use tiberius::error::Error as E;
    let message = e.to_string();
    match e {
        E::Server(t) => match t.code() {
            // Deadlock victim, lock timeout, and a key inserted by a concurrent writer.
            1205 | 1222 | 2601 | 2627 | 3960 => SqlError::Conflict { what, message },
            // String or binary data truncated, conversion and overflow failures, NULL
            // into NOT NULL, check and foreign key constraints.
            8152 | 2628 | 241 | 242 | 245 | 8114 | 8115 | 220 | 232 | 515 | 547 => {
                SqlError::Rejected { what, message }
            }
            // Transient failures of the server or service (Azure SQL's list).
            233 | 4060 | 10053 | 10054 | 10060 | 10928 | 10929 | 40143 | 40197 | 40501 | 40613
            | 49918 | 49919 | 49920 => SqlError::Connection { what, message },
            _ => SqlError::Database { what, message },
        },
        E::Io { kind, .. } if *kind == std::io::ErrorKind::TimedOut => {
            SqlError::Timeout { what, message }
        }
        E::Io { .. } | E::Protocol(_) | E::Tls(_) | E::Routing { .. } => {
            SqlError::Connection { what, message }
        }
        E::Conversion(_) | E::Utf8 | E::Utf16 | E::ParseInt(_) | E::BulkInput(_) => {
            SqlError::Rejected { what, message }
        }
        _ => SqlError::Database { what, message },
    }
}

/// One SQL Server destination and at most one open connection.
pub(super) struct SqlServer {
    name: String,
    config: Config,
    /// The connection; the lock also serializes transactions on it.
    conn: tokio::sync::Mutex<Option<Conn>>,
}

impl SqlServer {
    pub(super) async fn connect(name: &str, ado: Secret) -> Result<Self, SqlError> {
        let mut config = Config::from_ado_string(ado.expose()).map_err(|e| SqlError::Config {
            what: format!("connecting to destination {name:?}"),
            // tiberius's parse errors name keys, not values.
            message: format!("the url is not an ADO.NET connection string: {e}"),
        })?;
        config.command_timeout(Some(TRANSACTION_TIMEOUT));
        let sink = SqlServer {
            name: name.to_string(),
            config,
            conn: tokio::sync::Mutex::new(None),
        };
        let conn = sink.open().await?;
        *sink.conn.lock().await = Some(conn);
        Ok(sink)
    }

    async fn open(&self) -> Result<Conn, SqlError> {
        let what = || format!("connecting to destination {:?}", self.name);
        let tcp = TcpStream::connect(self.config.get_addr())
            .await
            .map_err(|e| SqlError::Connection {
                what: what(),
                message: e.to_string(),
            })?;
        tcp.set_nodelay(true).map_err(|e| SqlError::Connection {
            what: what(),
            message: e.to_string(),
        })?;
        let mut client = Client::connect(self.config.clone(), tcp.compat_write())
            .await
            .map_err(|e| classify(what(), &e))?;
        batch(&mut client, tsql::XACT_ABORT_ON)
            .await
            .map_err(|e| classify(what(), &e))?;
        migrate(&mut client).await.map_err(|e| {
            e.context(format!(
                "migrating the schema of destination {:?}",
                self.name
            ))
        })?;
        // The staging tables live as long as the connection (`#` tables are the
        // session's own), emptied by each batch.
        let staging: Vec<String> = TABLES.iter().map(tsql::create_staging).collect();
        batch(&mut client, &staging.join(";\n"))
            .await
            .map_err(|e| classify(what(), &e))?;
        Ok(client)
    }

    pub(super) async fn discard(&self) {
        *self.conn.lock().await = None;
    }

    pub(super) async fn write(
        &self,
        rows: &Arc<Vec<SessionRows>>,
        group: &[usize],
    ) -> Result<u64, SqlError> {
        let what = format!(
            "writing {} sessions to destination {:?}",
            group.len(),
            self.name
        );
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            *guard = Some(self.open().await?);
        }
        let Some(client) = guard.as_mut() else {
            unreachable!("the connection was just opened")
        };
        let sessions: Vec<&SessionRows> = group.iter().map(|&k| &rows[k]).collect();
        let mut loading = false;
        let result = async {
            batch(client, tsql::BEGIN).await?;
            let n = write_in(client, &sessions, &mut loading).await?;
            batch(client, tsql::COMMIT).await?;
            Ok::<u64, tiberius::error::Error>(n)
        }
        .await;
        match result {
            Ok(n) => Ok(n),
            Err(e) => {
                let err = classify(what, &e);
                // A bulk load cut short leaves the server waiting for the rest of it:
                // only a new connection is safe (the server rolls this one back).
                if loading
                    || matches!(err, SqlError::Connection { .. } | SqlError::Timeout { .. })
                    || batch(client, tsql::ROLLBACK_IF_OPEN).await.is_err()
                {
                    *guard = None;
                }
                Err(err)
            }
        }
    }

    pub(super) async fn check(&self, probe: SessionRows) -> Result<CheckReport, SqlError> {
        let what = || format!("checking destination {:?}", self.name);
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            *guard = Some(self.open().await?);
        }
        let Some(client) = guard.as_mut() else {
            unreachable!("the connection was just opened")
        };
        let lsid = probe.lsid().to_string();
        let mut loading = false;
        let result = async {
            let server = scalar_string(client, tsql::SERVER_VERSION).await?;
            let version = scalar_i32(client, tsql::SCHEMA_VERSION).await?;
            batch(client, tsql::BEGIN).await?;
            write_in(client, &[&probe], &mut loading).await?;
            let mut q = Query::new(tsql::PROBE_EVENTS);
            q.bind(PROBE_HOST);
            q.bind(lsid.as_str());
            let found: i32 = q
                .query(client)
                .await?
                .into_row()
                .await?
                .and_then(|r| r.get::<i32, _>(0))
                .unwrap_or(0);
            batch(client, tsql::ROLLBACK).await?;
            Ok::<_, tiberius::error::Error>((server, version, found))
        }
        .await;
        let (server, schema_version, found) = match result {
            Ok(v) => v,
            Err(e) => {
                if loading || batch(client, tsql::ROLLBACK_IF_OPEN).await.is_err() {
                    *guard = None;
                }
                return Err(classify(what(), &e));
            }
        };
        if found != 1 {
            return Err(SqlError::Database {
                what: what(),
                message: format!("the probe session read back {found} events instead of 1"),
            });
        }
        Ok(CheckReport {
            schema_version,
            server: server.lines().next().unwrap_or_default().to_string(),
        })
    }
}

/// Runs a statement batch without parameters and drains its results.
async fn batch(client: &mut Conn, sql: &str) -> tiberius::Result<()> {
    client.simple_query(sql).await?.into_results().await?;
    Ok(())
}

async fn scalar_string(client: &mut Conn, sql: &str) -> tiberius::Result<String> {
    let row = client.simple_query(sql).await?.into_row().await?;
    Ok(row
        .and_then(|r| r.get::<&str, _>(0).map(str::to_string))
        .unwrap_or_default())
}

async fn scalar_i32(client: &mut Conn, sql: &str) -> tiberius::Result<i32> {
    let row = client.simple_query(sql).await?.into_row().await?;
    Ok(row.and_then(|r| r.get::<i32, _>(0)).unwrap_or(0))
}

async fn migrate(client: &mut Conn) -> Result<(), SqlError> {
    let err = |e: tiberius::error::Error| classify(String::new(), &e);
    batch(client, tsql::BEGIN).await.map_err(err)?;
    let result = async {
        // Two btic processes starting at once take turns; the second finds the work done.
        batch(client, tsql::MIGRATION_LOCK).await.map_err(err)?;
        batch(client, &schema::create_version_table(D))
            .await
            .map_err(err)?;
        let found = scalar_i32(client, tsql::FOUND_VERSION).await.map_err(err)?;
        if found > SCHEMA_VERSION {
            return Err(SqlError::SchemaTooNew {
                what: String::new(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        for (version, statements) in schema::migrations(D) {
            if version <= found {
                continue;
            }
            for s in statements {
                batch(client, &s).await.map_err(err)?;
            }
            let mut q = Query::new(tsql::RECORD_VERSION);
            q.bind(version);
            q.bind(btic_version());
            q.execute(client).await.map_err(err)?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => batch(client, tsql::COMMIT).await.map_err(err),
        Err(e) => {
            let _ = batch(client, tsql::ROLLBACK_IF_OPEN).await;
            Err(e)
        }
    }
}

/// Writes sessions inside the open transaction and returns the number of rows: empties
/// the staging tables, bulk loads the batch into them and applies it (`tsql`'s module
/// doc). `loading` is true while a bulk load is under way.
async fn write_in(
    client: &mut Conn,
    sessions: &[&SessionRows],
    loading: &mut bool,
) -> tiberius::Result<u64> {
    let truncate: Vec<String> = TABLES.iter().map(tsql::truncate_staging).collect();
    batch(client, &truncate.join(";\n")).await?;
    let mut staged: Vec<&'static str> = Vec::new();

    // Staged rows are gathered before any load: each is its lead values (`seq`, then
    // `parent` and `n` where the table has them) and its row.
    let session_rows: Vec<Staged> = sessions
        .iter()
        .enumerate()
        .map(|(i, s)| (vec![seq(i)], &s.session))
        .collect();
    load(client, &SESSION, &session_rows, loading).await?;
    let mut events: Vec<&EventRows> = Vec::new();
    let mut event_rows: Vec<Staged> = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        for (n, e) in s.events.iter().enumerate() {
            event_rows.push((vec![seq(events.len()), seq(i), seq(n + 1)], &e.event));
            events.push(e);
        }
    }
    if load(client, &SESSION_EVENT, &event_rows, loading).await? > 0 {
        staged.push(SESSION_EVENT.name);
    }
    for (t_index, t) in EVENT_CHILDREN.iter().enumerate() {
        let mut rows: Vec<Staged> = Vec::new();
        for (k, e) in events.iter().enumerate() {
            for r in e.children()[t_index].1 {
                rows.push((vec![seq(rows.len()), seq(k)], r));
            }
        }
        if load(client, t, &rows, loading).await? > 0 {
            staged.push(t.name);
        }
    }
    for (t_index, t) in SESSION_CHILDREN[1..].iter().enumerate() {
        let mut rows: Vec<Staged> = Vec::new();
        for (i, s) in sessions.iter().enumerate() {
            for r in s.session_children()[t_index].1 {
                rows.push((vec![seq(rows.len()), seq(i)], r));
            }
        }
        if load(client, t, &rows, loading).await? > 0 {
            staged.push(t.name);
        }
    }

    let apply: Vec<String> = tsql::apply()
        .into_iter()
        .filter(|s| s.needs.is_none_or(|t| staged.contains(&t)))
        .map(|s| s.sql)
        .collect();
    batch(client, &apply.join(";\n")).await?;
    Ok(sessions.iter().map(|s| s.row_count()).sum())
}

/// A staging row number: batches are far below `i32::MAX` rows.
fn seq(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// One staging row: its lead values and the row.
type Staged<'r> = (Vec<i32>, &'r Row);

/// Bulk loads `rows` into `t`'s staging table and returns how many went. Sends nothing
/// when there are none.
async fn load(
    client: &mut Conn,
    t: &Table,
    rows: &[Staged<'_>],
    loading: &mut bool,
) -> tiberius::Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let table = tsql::staging(t);
    let columns = tsql::staging_columns(t);
    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
    *loading = true;
    let mut request = client.bulk_insert_columns(&table, &columns).await?;
    for (lead, row) in rows {
        let mut token = TokenRow::with_capacity(lead.len() + row.len());
        for &v in lead {
            token.push(ColumnData::I32(Some(v)));
        }
        for (v, c) in row.iter().zip(t.columns) {
            token.push(column_data(v, c.ty));
        }
        request.send(token).await?;
    }
    request.finalize().await?;
    *loading = false;
    Ok(rows.len() as u64)
}
