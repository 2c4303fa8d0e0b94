//! PostgreSQL with tokio-postgres: `sslmode=require` connects over TLS (rustls, the
//! system's trusted roots), `disable` and `prefer` without (see the README).
//!
//! The bulk path: session rows go by binary COPY into a per-connection temporary staging
//! table and are merged with one `INSERT .. SELECT .. ON CONFLICT DO UPDATE` in `lsid`
//! order (the lock order), which returns each session's id and whether it was new. Only
//! sessions that existed before get their children deleted. Event ids are taken from the
//! identity sequence in one query, so every child table is then filled by binary COPY
//! straight into its final table, with no second pass.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Config, NoTls, Transaction, config::SslMode};

use super::rows::{Row, SessionRows, Value};
use super::schema::{
    self, ColumnType, Dialect, EVENT_CHILDREN, SCHEMA_VERSION, SESSION, SESSION_CHILDREN,
    SESSION_EVENT, Table,
};
use super::{CheckReport, PROBE_HOST, SqlError, btic_version};
use crate::config::Secret;

const D: Dialect = Dialect::Postgres;

/// Key of the advisory lock that serializes migrations between btic processes.
const MIGRATION_LOCK: i64 = 0x6274_6963; // "btic"

/// An integer too large for its 32-bit column; the session cannot be stored as it is.
#[derive(Debug, thiserror::Error)]
#[error("integer {0} does not fit a 32-bit column")]
struct OutOfRange(i64);

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Int(n) if *ty == Type::INT4 => i32::try_from(*n)
                .map_err(|_| Box::new(OutOfRange(*n)))?
                .to_sql(ty, out),
            Value::Int(n) => n.to_sql(ty, out),
            Value::Time(t) => t.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn pg_type(ty: ColumnType) -> Type {
    match ty {
        ColumnType::Key(_) | ColumnType::Text => Type::TEXT,
        ColumnType::Int => Type::INT4,
        ColumnType::BigInt => Type::INT8,
        ColumnType::Time => Type::TIMESTAMPTZ,
    }
}

/// Maps a tokio-postgres error to the one classification.
pub(super) fn classify(what: String, e: &tokio_postgres::Error) -> SqlError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let mut message = format!("{} (SQLSTATE {code})", db.message());
        if let Some(detail) = db.detail() {
            message.push_str(": ");
            message.push_str(detail);
        }
        return match (&code[..2], code) {
            (_, "57014") => SqlError::Timeout { what, message },
            (_, "55P03") | ("40", _) => SqlError::Conflict { what, message },
            // Connection exceptions, operator intervention (shutdown, terminated
            // backend), insufficient resources and system errors pass.
            ("08" | "57" | "53" | "58", _) => SqlError::Connection { what, message },
            ("22" | "23", _) => SqlError::Rejected { what, message },
            _ => SqlError::Database { what, message },
        };
    }
    let mut message = e.to_string();
    if let Some(source) = e.source() {
        if source.downcast_ref::<OutOfRange>().is_some() {
            return SqlError::Rejected {
                what,
                message: source.to_string(),
            };
        }
        message = format!("{message}: {source}");
    }
    if message.starts_with("invalid connection string")
        || message.starts_with("invalid configuration")
    {
        return SqlError::Config { what, message };
    }
    // A value the driver could not encode is this code's fault, not the network's.
    if message.starts_with("error serializing") {
        return SqlError::Database { what, message };
    }
    if message.starts_with("timeout") {
        return SqlError::Timeout { what, message };
    }
    SqlError::Connection { what, message }
}

struct Conn {
    client: Client,
    /// `nextval(...)` expression of `session_event.id`'s identity sequence.
    event_id_seq: String,
}

/// One PostgreSQL destination: its settings and at most one open connection, which is
/// dropped on a connection error and opened again by the next write.
/// TLS for `sslmode=require`: the system's trusted roots, certificate and host name
/// verified.
fn tls_config() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

pub(super) struct Postgres {
    name: String,
    config: Config,
    /// The connection; the lock also serializes transactions on it.
    conn: tokio::sync::Mutex<Option<Conn>>,
}

impl Postgres {
    pub(super) async fn connect(name: &str, url: Secret) -> Result<Self, SqlError> {
        let what = format!("connecting to destination {name:?}");
        let mut config: Config =
            url.expose()
                .parse()
                .map_err(|e: tokio_postgres::Error| SqlError::Config {
                    what: what.clone(),
                    message: format!("the url is not a PostgreSQL connection url: {e}"),
                })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(30));
        }
        if config.get_application_name().is_none() {
            config.application_name("btic");
        }
        let pg = Postgres {
            name: name.to_string(),
            config,
            conn: tokio::sync::Mutex::new(None),
        };
        let conn = pg.open().await?;
        *pg.conn.lock().await = Some(conn);
        Ok(pg)
    }

    /// Drives a connection in the background. The task ends when the client is dropped
    /// or the server goes away; the client then reports itself closed and the next write
    /// reconnects.
    fn watch<F>(&self, connection: F)
    where
        F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
    {
        let name = self.name.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(destination = %name, error = %e, "postgres connection ended");
            }
        });
    }

    /// Opens a connection, migrates the schema and prepares the staging table.
    async fn open(&self) -> Result<Conn, SqlError> {
        let what = || format!("connecting to destination {:?}", self.name);
        // TLS only when the URL asks for it (`sslmode=require`): `prefer`, the default,
        // would otherwise try TLS against servers whose certificate no one can verify
        // (a self-signed one), and fail where plain connections work.
        let mut client = if self.config.get_ssl_mode() == SslMode::Require {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config());
            let (client, connection) = self
                .config
                .connect(tls)
                .await
                .map_err(|e| classify(what(), &e))?;
            self.watch(connection);
            client
        } else {
            let (client, connection) = self
                .config
                .connect(NoTls)
                .await
                .map_err(|e| classify(what(), &e))?;
            self.watch(connection);
            client
        };
        migrate(&mut client).await.map_err(|e| {
            e.context(format!(
                "migrating the schema of destination {:?}",
                self.name
            ))
        })?;
        let staging = format!(
            "CREATE TEMPORARY TABLE IF NOT EXISTS btic_stage_session ({}) ON COMMIT DELETE ROWS",
            SESSION
                .columns
                .iter()
                .map(|c| format!("{} {}", D.quote(c.name), D.type_name(c.ty)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        client
            .batch_execute(&staging)
            .await
            .map_err(|e| classify(what(), &e))?;
        let seq: String = client
            .query_one(
                "SELECT pg_get_serial_sequence('\"session_event\"', 'id')",
                &[],
            )
            .await
            .map_err(|e| classify(what(), &e))?
            .get(0);
        Ok(Conn {
            client,
            event_id_seq: format!("nextval('{}')", seq.replace('\'', "''")),
        })
    }

    /// Drops the connection (after a timeout, when a transaction may still be open).
    pub(super) async fn discard(&self) {
        *self.conn.lock().await = None;
    }

    pub(super) async fn write(
        &self,
        rows: &Arc<Vec<SessionRows>>,
        group: &[usize],
    ) -> Result<u64, SqlError> {
        let what = || {
            format!(
                "writing {} sessions to destination {:?}",
                group.len(),
                self.name
            )
        };
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
            *guard = None;
            *guard = Some(self.open().await?);
        }
        let Some(conn) = guard.as_mut() else {
            unreachable!("the connection was just opened")
        };
        let sessions: Vec<&SessionRows> = group.iter().map(|&k| &rows[k]).collect();
        let result = async {
            let tx = conn.client.transaction().await?;
            let n = write_in(&tx, &conn.event_id_seq, &sessions).await?;
            tx.commit().await?;
            Ok::<u64, tokio_postgres::Error>(n)
        }
        .await;
        let closed = conn.client.is_closed();
        result.map_err(|e| {
            let err = classify(what(), &e);
            if matches!(err, SqlError::Connection { .. }) || closed {
                *guard = None;
            }
            err
        })
    }

    pub(super) async fn check(&self, probe: SessionRows) -> Result<CheckReport, SqlError> {
        let what = || format!("checking destination {:?}", self.name);
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
            *guard = None;
            *guard = Some(self.open().await?);
        }
        let Some(conn) = guard.as_mut() else {
            unreachable!("the connection was just opened")
        };
        let lsid = probe.lsid().to_string();
        let result = async {
            let server: String = conn.client.query_one("SELECT version()", &[]).await?.get(0);
            let version: i32 = conn
                .client
                .query_one("SELECT max(version) FROM btic_schema_version", &[])
                .await?
                .get(0);
            let tx = conn.client.transaction().await?;
            write_in(&tx, &conn.event_id_seq, &[&probe]).await?;
            let found: i64 = tx
                .query_one(
                    "SELECT count(*) FROM \"session\" s JOIN \"session_event\" e ON e.session_id = s.id WHERE s.host_name = $1 AND s.lsid = $2",
                    &[&PROBE_HOST, &lsid],
                )
                .await?
                .get(0);
            tx.rollback().await?;
            Ok::<_, tokio_postgres::Error>((server, version, found))
        }
        .await;
        let (server, schema_version, found) = result.map_err(|e| classify(what(), &e))?;
        if found != 1 {
            return Err(SqlError::Database {
                what: what(),
                message: format!("the probe session read back {found} events instead of 1"),
            });
        }
        Ok(CheckReport {
            schema_version,
            server,
        })
    }
}

async fn migrate(client: &mut Client) -> Result<(), SqlError> {
    let what = String::new;
    let err = |e: tokio_postgres::Error| classify(what(), &e);
    let tx = client.transaction().await.map_err(err)?;
    // Two btic processes starting at once take turns; the second finds the work done.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    // Looked up first: `IF NOT EXISTS` alone would log a notice on every connect.
    let exists: bool = tx
        .query_one("SELECT to_regclass('btic_schema_version') IS NOT NULL", &[])
        .await
        .map_err(err)?
        .get(0);
    if !exists {
        tx.batch_execute(&schema::create_version_table(D))
            .await
            .map_err(err)?;
    }
    let found: Option<i32> = tx
        .query_one("SELECT max(version) FROM btic_schema_version", &[])
        .await
        .map_err(err)?
        .get(0);
    let found = found.unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(SqlError::SchemaTooNew {
            what: what(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, statements) in schema::migrations(D) {
        if version <= found {
            continue;
        }
        for s in statements {
            tx.batch_execute(&s).await.map_err(err)?;
        }
        tx.execute(
            "INSERT INTO btic_schema_version (version, applied_at, btic_version) VALUES ($1, now(), $2)",
            &[&version, &btic_version()],
        )
        .await
        .map_err(err)?;
    }
    tx.commit().await.map_err(err)
}

/// Writes sessions inside `tx` (not committed) and returns the number of rows.
async fn write_in(
    tx: &Transaction<'_>,
    event_id_seq: &str,
    sessions: &[&SessionRows],
) -> Result<u64, tokio_postgres::Error> {
    let names: Vec<String> = SESSION.columns.iter().map(|c| D.quote(c.name)).collect();
    let staged: Vec<(i64, &Row)> = sessions.iter().map(|s| (0, &s.session)).collect();
    copy_rows(tx, "btic_stage_session", &SESSION, false, &staged).await?;
    let set: Vec<String> = SESSION
        .columns
        .iter()
        .filter(|c| c.name != "host_name" && c.name != "lsid")
        .map(|c| format!("{q} = excluded.{q}", q = D.quote(c.name)))
        .collect();
    let merge = format!(
        "INSERT INTO \"session\" ({cols}) SELECT {cols} FROM btic_stage_session ORDER BY \"lsid\" ON CONFLICT (\"host_name\", \"lsid\") DO UPDATE SET {set} RETURNING \"id\", \"lsid\", (xmax = 0) AS inserted",
        cols = names.join(", "),
        set = set.join(", ")
    );
    let merged = tx.query(&merge, &[]).await?;
    let mut ids: HashMap<String, i64> = HashMap::with_capacity(merged.len());
    let mut replaced: Vec<i64> = Vec::new();
    for row in &merged {
        let id: i64 = row.get(0);
        ids.insert(row.get(1), id);
        if !row.get::<_, bool>(2) {
            replaced.push(id);
        }
    }
    // The staging rows go at commit (ON COMMIT DELETE ROWS) or with a rollback.
    if !replaced.is_empty() {
        for t in &EVENT_CHILDREN {
            tx.execute(
                &format!(
                    "DELETE FROM {} c USING \"session_event\" e WHERE c.\"session_event_id\" = e.\"id\" AND e.\"session_id\" = ANY($1)",
                    D.quote(t.name)
                ),
                &[&replaced],
            )
            .await?;
        }
        for t in &SESSION_CHILDREN {
            tx.execute(
                &format!(
                    "DELETE FROM {} WHERE \"session_id\" = ANY($1)",
                    D.quote(t.name)
                ),
                &[&replaced],
            )
            .await?;
        }
    }
    let session_ids: Vec<i64> = sessions.iter().map(|s| ids[s.lsid()]).collect();
    let event_count: usize = sessions.iter().map(|s| s.events.len()).sum();
    let mut event_ids: Vec<i64> = if event_count == 0 {
        Vec::new()
    } else {
        tx.query(
            &format!("SELECT {event_id_seq} FROM generate_series(1::bigint, $1::bigint)"),
            &[&(event_count as i64)],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    // Ids in document order, so `ORDER BY id` reads events as the appliance wrote them.
    event_ids.sort_unstable();
    let mut events: Vec<(i64, i64, &Row)> = Vec::with_capacity(event_count);
    let mut next = event_ids.iter();
    for (s, &sid) in sessions.iter().zip(&session_ids) {
        for e in &s.events {
            let Some(&eid) = next.next() else {
                unreachable!("one id was drawn per event")
            };
            events.push((eid, sid, &e.event));
        }
    }
    let mut n = sessions.len() as u64;
    n += copy_with_ids(tx, &SESSION_EVENT, &events).await?;
    for (t_index, t) in EVENT_CHILDREN.iter().enumerate() {
        let mut rows: Vec<(i64, &Row)> = Vec::new();
        let all_events = sessions.iter().flat_map(|s| s.events.iter());
        for ((eid, _, _), e) in events.iter().zip(all_events) {
            rows.extend(e.children()[t_index].1.iter().map(|r| (*eid, r)));
        }
        n += copy_rows(tx, t.name, t, true, &rows).await?;
    }
    for (t_index, t) in SESSION_CHILDREN[1..].iter().enumerate() {
        let mut rows: Vec<(i64, &Row)> = Vec::new();
        for (s, &sid) in sessions.iter().zip(&session_ids) {
            rows.extend(s.session_children()[t_index].1.iter().map(|r| (sid, r)));
        }
        n += copy_rows(tx, t.name, t, true, &rows).await?;
    }
    Ok(n)
}

/// Binary COPY of rows into `target` with `t`'s columns, each row preceded by its parent
/// id when `with_parent`. Writes nothing (and sends no COPY) when there are no rows.
async fn copy_rows(
    tx: &Transaction<'_>,
    target: &str,
    t: &Table,
    with_parent: bool,
    rows: &[(i64, &Row)],
) -> Result<u64, tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut names: Vec<String> = Vec::new();
    let mut types: Vec<Type> = Vec::new();
    if let Some(link) = t.parent.column().filter(|_| with_parent) {
        names.push(D.quote(link));
        types.push(Type::INT8);
    }
    for c in t.columns {
        names.push(D.quote(c.name));
        types.push(pg_type(c.ty));
    }
    let sink = tx
        .copy_in(&format!(
            "COPY {} ({}) FROM STDIN BINARY",
            D.quote(target),
            names.join(", ")
        ))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    let mut values: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(types.len());
    for (parent, row) in rows {
        values.clear();
        if with_parent {
            values.push(parent);
        }
        values.extend(row.iter().map(|v| v as &(dyn ToSql + Sync)));
        writer.as_mut().write(&values).await?;
    }
    writer.finish().await
}

/// Binary COPY of events with their pre-drawn ids.
async fn copy_with_ids(
    tx: &Transaction<'_>,
    t: &Table,
    rows: &[(i64, i64, &Row)],
) -> Result<u64, tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut names = vec![D.quote("id"), D.quote("session_id")];
    let mut types = vec![Type::INT8, Type::INT8];
    for c in t.columns {
        names.push(D.quote(c.name));
        types.push(pg_type(c.ty));
    }
    let sink = tx
        .copy_in(&format!(
            "COPY {} ({}) FROM STDIN BINARY",
            D.quote(t.name),
            names.join(", ")
        ))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    let mut values: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(types.len());
    for (id, sid, row) in rows {
        values.clear();
        values.push(id);
        values.push(sid);
        values.extend(row.iter().map(|v| v as &(dyn ToSql + Sync)));
        writer.as_mut().write(&values).await?;
    }
    writer.finish().await
}
