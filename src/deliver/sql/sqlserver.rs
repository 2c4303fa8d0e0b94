//! Microsoft SQL Server with tiberius over tokio (tokio-util compat), from an ADO.NET
//! connection string.
//!
//! Statements come from `schema` (T-SQL text tested there); this module binds values and
//! runs them. A batch is one transaction with `XACT_ABORT ON`, so any error rolls it back
//! whole. The session upsert is a `MERGE .. WITH (HOLDLOCK)`: the key-range lock is held
//! to commit, so two writers of the same new session serialize. Event rows go one by one
//! (their ids come back through `OUTPUT`); all other child rows go as multi-row inserts
//! within SQL Server's 2100-parameter limit.

use std::sync::Arc;

use chrono::NaiveDateTime;
use tiberius::{Client, ColumnData, Config, IntoSql, Query};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use super::rows::{Row, SessionRows, Value};
use super::schema::{self, ColumnType, Dialect, SCHEMA_VERSION, SESSION, SESSION_EVENT, Table};
use super::{CheckReport, PROBE_HOST, SqlError, TRANSACTION_TIMEOUT, btic_version};
use crate::config::Secret;

const D: Dialect = Dialect::SqlServer;

/// Parameters per statement, below SQL Server's limit of 2100.
const MAX_PARAMS: usize = 2000;

/// Rows per `VALUES` list, SQL Server's limit.
const MAX_VALUES_ROWS: usize = 1000;

type Conn = Client<Compat<TcpStream>>;

/// A value bound to a parameter, typed by its column so that NULLs carry a type.
fn bind(q: &mut Query<'_>, v: &Value, ty: ColumnType) {
    q.bind(column_data(v, ty));
}

fn column_data(v: &Value, ty: ColumnType) -> ColumnData<'static> {
    match (v, ty) {
        (Value::Text(s), _) => ColumnData::String(Some(s.clone().into())),
        (Value::Int(n), ColumnType::Int) => match i32::try_from(*n) {
            Ok(n) => ColumnData::I32(Some(n)),
            // Too large for its column: SQL Server refuses it as data, per session.
            Err(_) => ColumnData::I64(Some(*n)),
        },
        (Value::Int(n), _) => ColumnData::I64(Some(*n)),
        (Value::Time(t), _) => t.naive_utc().into_sql(),
        (Value::Null, ColumnType::Int) => ColumnData::I32(None),
        (Value::Null, ColumnType::BigInt) => ColumnData::I64(None),
        (Value::Null, ColumnType::Time) => Option::<NaiveDateTime>::None.into_sql(),
        (Value::Null, ColumnType::Key(_) | ColumnType::Text) => ColumnData::String(None),
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
        batch(&mut client, "SET XACT_ABORT ON")
            .await
            .map_err(|e| classify(what(), &e))?;
        migrate(&mut client).await.map_err(|e| {
            e.context(format!(
                "migrating the schema of destination {:?}",
                self.name
            ))
        })?;
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
        let result = async {
            batch(client, "BEGIN TRANSACTION").await?;
            let n = write_in(client, &sessions).await?;
            batch(client, "COMMIT TRANSACTION").await?;
            Ok::<u64, tiberius::error::Error>(n)
        }
        .await;
        match result {
            Ok(n) => Ok(n),
            Err(e) => {
                let err = classify(what, &e);
                if matches!(err, SqlError::Connection { .. } | SqlError::Timeout { .. })
                    || batch(client, "IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION")
                        .await
                        .is_err()
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
        let result = async {
            let server = scalar_string(client, "SELECT CAST(@@VERSION AS nvarchar(4000))").await?;
            let version = scalar_i32(client, "SELECT MAX([version]) FROM [btic_schema_version]")
                .await?;
            batch(client, "BEGIN TRANSACTION").await?;
            write_in(client, &[&probe]).await?;
            let mut q = Query::new(
                "SELECT CAST(COUNT(*) AS int) FROM [session] s JOIN [session_event] e ON e.[session_id] = s.[id] WHERE s.[host_name] = @P1 AND s.[lsid] = @P2",
            );
            q.bind(PROBE_HOST);
            q.bind(lsid.as_str());
            let found: i32 = q
                .query(client)
                .await?
                .into_row()
                .await?
                .and_then(|r| r.get::<i32, _>(0))
                .unwrap_or(0);
            batch(client, "ROLLBACK TRANSACTION").await?;
            Ok::<_, tiberius::error::Error>((server, version, found))
        }
        .await;
        let (server, schema_version, found) = match result {
            Ok(v) => v,
            Err(e) => {
                if batch(client, "IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION")
                    .await
                    .is_err()
                {
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
    batch(client, "BEGIN TRANSACTION").await.map_err(err)?;
    let result = async {
        // Two btic processes starting at once take turns; the second finds the work done.
        batch(
            client,
            "EXEC sp_getapplock @Resource = N'btic_schema', @LockMode = N'Exclusive', @LockOwner = N'Transaction'",
        )
        .await
        .map_err(err)?;
        batch(client, &schema::create_version_table(D))
            .await
            .map_err(err)?;
        let found = scalar_i32(client, "SELECT ISNULL(MAX([version]), 0) FROM [btic_schema_version]")
            .await
            .map_err(err)?;
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
            let mut q = Query::new(
                "INSERT INTO [btic_schema_version] ([version], [applied_at], [btic_version]) VALUES (@P1, SYSUTCDATETIME(), @P2)",
            );
            q.bind(version);
            q.bind(btic_version());
            q.execute(client).await.map_err(err)?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => batch(client, "COMMIT TRANSACTION").await.map_err(err),
        Err(e) => {
            let _ = batch(client, "IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION").await;
            Err(e)
        }
    }
}

/// Writes sessions inside the open transaction and returns the number of rows.
async fn write_in(client: &mut Conn, sessions: &[&SessionRows]) -> tiberius::Result<u64> {
    let upsert = schema::upsert_session(D);
    let deletes = schema::delete_children(D);
    let insert_event = schema::insert_row(D, &SESSION_EVENT);
    let mut n = 0u64;
    for s in sessions {
        let mut q = Query::new(upsert.as_str());
        for (v, c) in s.session.iter().zip(SESSION.columns) {
            bind(&mut q, v, c.ty);
        }
        let id: i64 = q
            .query(client)
            .await?
            .into_row()
            .await?
            .and_then(|r| r.get::<i64, _>(0))
            .ok_or_else(|| tiberius::error::Error::Protocol("MERGE returned no id".into()))?;
        for d in &deletes {
            let mut q = Query::new(d.as_str());
            q.bind(id);
            q.execute(client).await?;
        }
        for e in &s.events {
            let mut q = Query::new(insert_event.as_str());
            q.bind(id);
            for (v, c) in e.event.iter().zip(SESSION_EVENT.columns) {
                bind(&mut q, v, c.ty);
            }
            let event_id: i64 = q
                .query(client)
                .await?
                .into_row()
                .await?
                .and_then(|r| r.get::<i64, _>(0))
                .ok_or_else(|| tiberius::error::Error::Protocol("INSERT returned no id".into()))?;
            for (t, rows) in e.children() {
                insert_many(client, t, event_id, rows).await?;
            }
        }
        for (t, rows) in s.session_children() {
            insert_many(client, t, id, rows).await?;
        }
        n += s.row_count();
    }
    Ok(n)
}

/// Inserts child rows of one parent in as few statements as the limits allow.
async fn insert_many(
    client: &mut Conn,
    t: &Table,
    parent: i64,
    rows: &[Row],
) -> tiberius::Result<()> {
    let width = t.columns.len() + 1;
    let per_statement = (MAX_PARAMS / width).min(MAX_VALUES_ROWS);
    for chunk in rows.chunks(per_statement) {
        let sql = schema::insert_rows(D, t, chunk.len());
        let mut q = Query::new(sql);
        for r in chunk {
            q.bind(parent);
            for (v, c) in r.iter().zip(t.columns) {
                bind(&mut q, v, c.ty);
            }
        }
        q.execute(client).await?;
    }
    Ok(())
}
