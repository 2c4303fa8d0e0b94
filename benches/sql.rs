//! SQL delivery throughput against the databases' own bulk loaders.
//!
//! Delivers 10 000 generated sessions (simulator seed 7, with events, people, teams,
//! attributes and system information) through `SqlSink` into a fresh PostgreSQL
//! database and a fresh SQLite file, then loads exactly the same rows from CSV with
//! `psql \copy` and `sqlite3 .import`, once into plain tables (same columns, no keys, no
//! indexes) and once into tables with btic's schema (same keys and indexes), neither
//! idempotent, and prints rows/s and the ratios. A second delivery
//! of the same sessions (every session replaced) is timed too.
//!
//! With `BTIC_MSSQL_URL` set (an ADO.NET string for a login that may create databases),
//! the same sessions go through the SQL Server path too, into a database of their own
//! that is dropped after: SQL Server, Azure SQL or Babelfish, beside PostgreSQL on the
//! same rows in the same run.
//!
//! Run: `cargo bench --bench sql` (PostgreSQL at 127.0.0.1:5432 as `postgres`, `psql`
//! and `sqlite3` on the PATH; what is missing is reported SKIPPED). `BTIC_BENCH_SESSIONS`
//! changes the number of sessions.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use btic::config::{Secret, SecretSource, SqlConnection, SqlDestination, SqlDialect};
use btic::deliver::sql::SqlSink;
use btic::deliver::sql::schema::{Dialect, TABLES, schema_v1};
use btic::model::Session;
use btic::simulator::sessions::{Sessions, epoch};

const HOST: &str = "bench.example.com";

fn main() {
    let n: usize = std::env::var("BTIC_BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let sessions: Vec<Session> = Sessions::new(7, epoch()).take(n).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("SQL delivery of {n} generated sessions");
    runtime.block_on(postgres(&sessions));
    runtime.block_on(sqlite(&sessions));
    match std::env::var("BTIC_MSSQL_URL") {
        Ok(admin) => runtime.block_on(sqlserver(&admin, &sessions)),
        Err(_) => println!("SKIPPED: SQL Server: BTIC_MSSQL_URL not set"),
    }
}

fn rate(rows: u64, took: Duration) -> f64 {
    rows as f64 / took.as_secs_f64()
}

fn report(what: &str, rows: u64, took: Duration) -> f64 {
    let r = rate(rows, took);
    println!(
        "  {what:<44} {rows:>8} rows in {:>7.3} s = {r:>9.0} rows/s",
        took.as_secs_f64()
    );
    r
}

fn psql(db: &str, script: &str) -> std::process::Output {
    Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
        ])
        .arg("-c")
        .arg(script)
        .output()
        .expect("run psql")
}

async fn postgres(sessions: &[Session]) {
    let db = format!("btic_bench_{}", std::process::id());
    let created = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-q",
            "-d",
            "postgres",
            "-c",
        ])
        .arg(format!("CREATE DATABASE {db}"))
        .output();
    if !matches!(&created, Ok(o) if o.status.success()) {
        println!("SKIPPED: PostgreSQL: cannot create a database with psql at 127.0.0.1:5432");
        return;
    }
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let sink = connect(SqlDialect::Postgres, &url).await;
    println!("PostgreSQL");
    let (ours, rows) = deliver_twice(&sink, sessions).await;
    drop(sink);

    // The same rows as CSV, loaded by psql into plain tables.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut export = String::new();
    let mut load = String::new();
    for t in TABLES {
        let file = dir.path().join(format!("{}.csv", t.name));
        export.push_str(&format!(
            "\\copy (SELECT * FROM \"{0}\") TO '{1}' CSV\nCREATE TABLE plain_{0} (LIKE \"{0}\");\n",
            t.name,
            file.display()
        ));
        load.push_str(&format!(
            "\\copy plain_{} FROM '{}' CSV\n",
            t.name,
            file.display()
        ));
    }
    let out = run_psql_script(&db, dir.path(), "export.sql", &export);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = Instant::now();
    let out = run_psql_script(&db, dir.path(), "load.sql", &load);
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plain = report("psql \\copy from CSV into plain tables", rows, took);

    // The same CSV into a second database with btic's schema (keys and indexes).
    let same = format!("{db}_same");
    let out = psql("postgres", &format!("CREATE DATABASE {same}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ddl = schema_v1(Dialect::Postgres).join(";\n") + ";\n";
    let out = run_psql_script(&same, dir.path(), "schema.sql", &ddl);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let into_same = load.replace("\\copy plain_", "\\copy ");
    let start = Instant::now();
    let out = run_psql_script(&same, dir.path(), "load_same.sql", &into_same);
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keyed = report("psql \\copy from CSV into btic's schema", rows, took);
    println!(
        "  ratio btic / psql \\copy: {:.2} (plain tables), {:.2} (btic's schema)",
        ours / plain,
        ours / keyed
    );
    let _ = psql("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"));
    let _ = psql("postgres", &format!("DROP DATABASE {same} WITH (FORCE)"));
}

/// A sink of `dialect` at `url` (a URL, or an ADO.NET string for SQL Server).
async fn connect(dialect: SqlDialect, url: &str) -> SqlSink {
    let dest = SqlDestination {
        dialect,
        connection: SqlConnection::Url(SecretSource::Plain(Secret::new(url.to_string()))),
        store_system_information: true,
        batch_size: 1000,
    };
    SqlSink::connect("bench", &dest, Some(&Secret::new(url.to_string())))
        .await
        .expect("connect")
}

/// Delivers `sessions` into an empty database, then again (every session replaced);
/// reports both and returns the first's rows/s and its row count.
async fn deliver_twice(sink: &SqlSink, sessions: &[Session]) -> (f64, u64) {
    let start = Instant::now();
    let outcome = sink.deliver(HOST, sessions).await;
    let took = start.elapsed();
    assert_eq!(
        outcome.delivered(),
        sessions.len(),
        "{:?}",
        outcome.retryable_error()
    );
    let rate = report("btic deliver (new sessions)", outcome.rows, took);
    let start = Instant::now();
    let again = sink.deliver(HOST, sessions).await;
    report(
        "btic deliver again (every session replaced)",
        again.rows,
        start.elapsed(),
    );
    (rate, outcome.rows)
}

/// Runs one T-SQL batch on a connection of its own.
async fn tsql(ado: &str, sql: &str) -> Result<(), tiberius::error::Error> {
    use tokio_util::compat::TokioAsyncWriteCompatExt;
    let config = tiberius::Config::from_ado_string(ado)?;
    let tcp = tokio::net::TcpStream::connect(config.get_addr()).await?;
    tcp.set_nodelay(true)?;
    let mut client = tiberius::Client::connect(config, tcp.compat_write()).await?;
    client.simple_query(sql).await?.into_results().await?;
    Ok(())
}

async fn sqlserver(admin: &str, sessions: &[Session]) {
    let db = format!("btic_bench_{}", std::process::id());
    if let Err(e) = tsql(admin, &format!("CREATE DATABASE [{db}]")).await {
        println!("SKIPPED: SQL Server: cannot create a database: {e}");
        return;
    }
    let ado = format!("{};Database={db}", admin.trim_end_matches(';'));
    let sink = connect(SqlDialect::SqlServer, &ado).await;
    println!(
        "SQL Server ({})",
        sink.check().await.map(|r| r.server).unwrap_or_default()
    );
    deliver_twice(&sink, sessions).await;
    drop(sink);
    // The server may take a moment to end the sessions of the connection just closed.
    for _ in 0..20 {
        if tsql(admin, &format!("DROP DATABASE [{db}]")).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("could not drop database {db}");
}

fn run_psql_script(db: &str, dir: &Path, name: &str, script: &str) -> std::process::Output {
    let path = dir.join(name);
    std::fs::write(&path, script).expect("write script");
    Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-f",
        ])
        .arg(&path)
        .output()
        .expect("run psql")
}

async fn sqlite(sessions: &[Session]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.db");
    let dest = SqlDestination {
        dialect: SqlDialect::Sqlite,
        connection: SqlConnection::Path(path.clone()),
        store_system_information: true,
        batch_size: 1000,
    };
    let sink = SqlSink::connect("bench", &dest, None).await.expect("open");
    println!("SQLite");
    let (ours, rows) = deliver_twice(&sink, sessions).await;
    drop(sink);

    if Command::new("sqlite3").arg("-version").output().is_err() {
        println!("SKIPPED: sqlite3 .import: no sqlite3 on the PATH");
        return;
    }
    let plain = dir.path().join("plain.db");
    let mut export = String::from(".mode csv\n");
    let mut schema = String::new();
    let mut load = String::new();
    for t in TABLES {
        let file = dir.path().join(format!("{}.csv", t.name));
        export.push_str(&format!(
            ".output '{}'\nSELECT * FROM \"{}\";\n",
            file.display(),
            t.name
        ));
        let mut cols = vec!["id".to_string()];
        cols.extend(t.parent.column().map(str::to_string));
        cols.extend(t.columns.iter().map(|c| c.name.to_string()));
        schema.push_str(&format!(
            "CREATE TABLE \"{}\" ({});\n",
            t.name,
            cols.iter()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        load.push_str(&format!(".import --csv '{}' {}\n", file.display(), t.name));
    }
    sqlite3(&path, &export);
    sqlite3(&plain, &schema);
    let start = Instant::now();
    sqlite3(&plain, &load);
    let took = start.elapsed();
    let plain_rate = report("sqlite3 .import from CSV into plain tables", rows, took);
    let same = dir.path().join("same.db");
    sqlite3(&same, &(schema_v1(Dialect::Sqlite).join(";\n") + ";\n"));
    let start = Instant::now();
    sqlite3(&same, &load);
    let took = start.elapsed();
    let keyed = report("sqlite3 .import from CSV into btic's schema", rows, took);
    println!(
        "  ratio btic / sqlite3 .import: {:.2} (plain tables), {:.2} (btic's schema)",
        ours / plain_rate,
        ours / keyed
    );
}

fn sqlite3(db: &Path, script: &str) {
    use std::io::Write;
    let mut child = Command::new("sqlite3")
        .arg(db)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run sqlite3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write script");
    let status = child.wait().expect("wait for sqlite3");
    assert!(status.success(), "sqlite3 failed");
}
