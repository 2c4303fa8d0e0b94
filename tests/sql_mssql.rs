//! SQL Server (or Azure SQL, or Babelfish), live. Runs only when `BTIC_MSSQL_URL` holds
//! an ADO.NET connection string for a login that may create databases (for example
//! `server=tcp:127.0.0.1,1433;user=sa;password=...;TrustServerCertificate=true`);
//! otherwise each test reports itself ignored (skipped) in the test summary — never
//! passed. Each test makes its own database and drops it after with a plain
//! `DROP DATABASE` once its connections are closed, which every target supports. A test
//! binary of its own (`harness = false`) so that a skip is counted as one.
//!
//! Besides the delivery rules, two tests hold SQL Server to PostgreSQL (127.0.0.1:5432,
//! user `postgres`): `btic import` of the real capture and the SQL fixture, and
//! `btic run` against the simulator, into both, leave the same rows in all eight tables,
//! compared row by row without ids (each child row named by its session's lsid and its
//! position).

mod rig;
mod sql_support;

use rig::skip;
use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::time::{Duration, Instant};

use btic::config::{Secret, SecretSource, SqlConnection, SqlDestination, SqlDialect};
use btic::deliver::sql::SqlSink;
use btic::deliver::sql::schema::{ColumnType, Parent, TABLES, Table};
use rig::{Daemon, Sim, free_port};
use sql_support::{HOST, Target, expected_counts, pg_client, postgres, session, text_rows};
use tiberius::{Client, Config};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

type Conn = Client<Compat<TcpStream>>;

async fn client(ado: &str) -> Conn {
    let config = Config::from_ado_string(ado).expect("BTIC_MSSQL_URL is an ADO.NET string");
    let tcp = TcpStream::connect(config.get_addr())
        .await
        .expect("reach SQL Server");
    tcp.set_nodelay(true).unwrap();
    Client::connect(config, tcp.compat_write())
        .await
        .expect("log in to SQL Server")
}

async fn exec(ado: &str, sql: &str) {
    client(ado)
        .await
        .simple_query(sql)
        .await
        .expect(sql)
        .into_results()
        .await
        .expect(sql);
}

/// Every row of a query, each value as text (`NULL` for NULL).
async fn strings(ado: &str, sql: &str) -> Vec<Vec<String>> {
    try_strings(ado, sql).await.expect(sql)
}

async fn try_strings(ado: &str, sql: &str) -> tiberius::Result<Vec<Vec<String>>> {
    let rows = client(ado)
        .await
        .simple_query(sql)
        .await?
        .into_first_result()
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<&str, _>(i).unwrap_or("NULL").to_string())
                .collect()
        })
        .collect())
}

async fn counts(ado: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for t in TABLES {
        let sql = format!("SELECT CAST(COUNT(*) AS nvarchar(20)) FROM [{}]", t.name);
        out.push(strings(ado, &sql).await[0][0].parse().unwrap());
    }
    out
}

/// A database of this test's own on the server of `BTIC_MSSQL_URL`.
struct MsDb {
    admin: String,
    name: String,
}

impl MsDb {
    async fn create(admin: &str, test: &str) -> MsDb {
        let name = format!("btic_{test}_{}", std::process::id());
        exec(admin, &format!("CREATE DATABASE [{name}]")).await;
        MsDb {
            admin: admin.to_string(),
            name,
        }
    }

    /// The connection string for this database.
    fn ado(&self) -> String {
        format!(
            "{};Database={}",
            self.admin.trim_end_matches(';'),
            self.name
        )
    }

    /// Drops the database. Sessions of connections just closed may take a moment to end
    /// on the server, which refuses to drop a database in use (3702) until then.
    async fn drop_now(self) {
        let started = Instant::now();
        loop {
            let outcome = async {
                client(&self.admin)
                    .await
                    .simple_query(format!("DROP DATABASE [{}]", self.name))
                    .await?
                    .into_results()
                    .await
            }
            .await;
            match outcome {
                Ok(_) => return,
                Err(e) if started.elapsed() < Duration::from_secs(30) => {
                    println!("dropping test database {}: {e}; trying again", self.name);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("dropping test database {}: {e}", self.name),
            }
        }
    }
}

/// Runs `body` with a fresh database, drops the database, then passes on a failure.
async fn with_database<F>(admin: &str, test: &str, body: impl FnOnce(String) -> F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let db = MsDb::create(admin, test).await;
    let outcome = tokio::spawn(body(db.ado())).await;
    db.drop_now().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

fn destination(ado: &str, batch_size: usize) -> SqlDestination {
    SqlDestination {
        dialect: SqlDialect::SqlServer,
        connection: SqlConnection::Url(SecretSource::Plain(Secret::new(ado.to_string()))),
        store_system_information: true,
        batch_size,
    }
}

async fn delivery_is_idempotent_isolates_bad_sessions_and_check_leaves_nothing(admin: String) {
    with_database(&admin, "live", |ado| async move {
        let dest = destination(&ado, 3);
        let sink = SqlSink::connect("mssql", &dest, Some(&Secret::new(ado.clone())))
            .await
            .expect("connect and migrate");
        let mut batch: Vec<_> = (0..5).map(|i| session(i, i % 2 == 0)).collect();
        for _ in 0..3 {
            let outcome = sink.deliver(HOST, &batch).await;
            assert_eq!(outcome.delivered(), 5, "{outcome:?}");
        }
        // Sessions that end later replace their open copies.
        batch = (0..5).map(|i| session(i, true)).collect();
        let outcome = sink.deliver(HOST, &batch).await;
        assert_eq!(outcome.delivered(), 5, "{outcome:?}");
        assert_eq!(counts(&ado).await, expected_counts(5, true));
        let report = sink.check().await.expect("check");
        assert_eq!(report.schema_version, 1);
        assert_eq!(counts(&ado).await, expected_counts(5, true));

        // A value too long for its column and one too large for its column: each
        // session alone is refused, every other one of the batch is delivered.
        exec(
            &ado,
            "ALTER TABLE [customer] ALTER COLUMN [company_name] nvarchar(12)",
        )
        .await;
        batch.push(session(5, true));
        batch.push(session(6, true));
        batch.push(session(7, true));
        batch[6].customers[0].company = Some("A company name far too long".into());
        batch[7].file_transfer_count = Some(u32::MAX);
        let outcome = sink.deliver(HOST, &batch).await;
        assert_eq!(outcome.delivered(), 6, "{outcome:?}");
        assert_eq!(outcome.rejected(), 2, "{outcome:?}");
        assert!(outcome.sessions[6].is_err() && outcome.sessions[7].is_err());
        assert_eq!(counts(&ado).await, expected_counts(6, true));

        // A second btic starting finds the schema in place.
        drop(sink);
        let again = SqlSink::connect("mssql", &dest, Some(&Secret::new(ado.clone())))
            .await
            .expect("connect again");
        drop(again);
    })
    .await;
}

/// Two writers delivering the same new sessions at once leave one copy of each.
async fn two_writers_of_the_same_new_sessions_leave_one_copy(admin: String) {
    with_database(&admin, "writers", |ado| async move {
        let dest = destination(&ado, 50);
        let secret = Secret::new(ado.clone());
        let first = SqlSink::connect("a", &dest, Some(&secret)).await.unwrap();
        let second = SqlSink::connect("b", &dest, Some(&secret)).await.unwrap();
        let batch: Vec<_> = (0..40).map(|i| session(i, true)).collect();
        let mut conflicts = 0;
        for _ in 0..3 {
            let (a, b) = tokio::join!(first.deliver(HOST, &batch), second.deliver(HOST, &batch));
            // A writer that lost a race is told to retry (a conflict); its retry
            // replaces what the other wrote.
            for outcome in [a, b] {
                if outcome.delivered() < batch.len() {
                    conflicts += 1;
                    let e = outcome.retryable_error().expect("only retryable failures");
                    assert!(e.is_retryable(), "{e}");
                    let retried = first.deliver(HOST, &batch).await;
                    assert_eq!(retried.delivered(), batch.len(), "{retried:?}");
                }
            }
            assert_eq!(counts(&ado).await, expected_counts(40, true));
        }
        println!("  {conflicts} of 6 deliveries lost a race and were retried");
    })
    .await;
}

/// The text of each column of `t` in a dump (PostgreSQL or T-SQL), times as
/// `YYYY-MM-DD HH:MM:SS` UTC.
fn dump_columns(t: &Table, tsql: bool) -> String {
    t.columns
        .iter()
        .map(|c| match (tsql, c.ty) {
            (true, ColumnType::Time) => format!("CONVERT(nvarchar(19), c.[{}], 120)", c.name),
            (true, _) => format!("CAST(c.[{}] AS nvarchar(max))", c.name),
            (false, ColumnType::Time) => format!(
                "to_char(c.\"{}\" AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')",
                c.name
            ),
            (false, _) => format!("CAST(c.\"{}\" AS text)", c.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The dump query of `t`: each row's session lsid, its position among its parent's rows
/// of that table (and its event's position), then its columns. Written once for both
/// dialects: only the quotes and the text type differ.
fn dump_query(t: &Table, tsql: bool) -> String {
    let text = if tsql { "nvarchar(20)" } else { "text" };
    let pos = |partition: &str| {
        format!("CAST(ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY c.id) AS {text})")
    };
    let cols = dump_columns(t, tsql);
    let sql = match t.parent {
        Parent::None => format!("SELECT c.lsid, {cols} FROM session c"),
        Parent::Session => format!(
            "SELECT s.lsid, {}, {cols} FROM {} c JOIN session s ON s.id = c.session_id",
            pos("c.session_id"),
            t.name
        ),
        Parent::Event => format!(
            "SELECT s.lsid, CAST(e.pos AS {text}), {}, {cols} FROM {} c JOIN (SELECT id, session_id, ROW_NUMBER() OVER (PARTITION BY session_id ORDER BY id) AS pos FROM session_event) e ON e.id = c.session_event_id JOIN session s ON s.id = e.session_id",
            pos("c.session_event_id"),
            t.name
        ),
    };
    // `session` is a keyword in neither, but T-SQL and PostgreSQL both take it quoted.
    if tsql {
        sql.replace(" session ", " [session] ")
    } else {
        sql.replace(" session ", " \"session\" ")
    }
}

fn dump_lines(t: &Table, rows: Vec<Vec<String>>) -> Vec<String> {
    rows.into_iter()
        .map(|r| format!("{}|{}", t.name, r.join("|")))
        .collect()
}

/// Every row of every table of the SQL Server database, sorted.
async fn mssql_dump(ado: &str) -> Vec<String> {
    try_mssql_dump(ado)
        .await
        .expect("dumping the SQL Server database")
}

async fn try_mssql_dump(ado: &str) -> tiberius::Result<Vec<String>> {
    let mut out = Vec::new();
    for t in &TABLES {
        out.extend(dump_lines(t, try_strings(ado, &dump_query(t, true)).await?));
    }
    out.sort();
    Ok(out)
}

/// Every row of every table of the PostgreSQL database, sorted.
async fn postgres_dump(url: &str) -> Vec<String> {
    try_postgres_dump(url)
        .await
        .expect("dumping the PostgreSQL database")
}

async fn try_postgres_dump(url: &str) -> Result<Vec<String>, tokio_postgres::Error> {
    let client = pg_client(url).await;
    let mut out = Vec::new();
    for t in &TABLES {
        let rows = text_rows(client.simple_query(&dump_query(t, false)).await?);
        out.extend(dump_lines(t, rows));
    }
    out.sort();
    Ok(out)
}

/// The lines of `dump` that belong to the sessions `lsids`.
fn of_sessions(dump: &[String], lsids: &BTreeSet<String>) -> Vec<String> {
    dump.iter()
        .filter(|l| l.split('|').nth(1).is_some_and(|lsid| lsids.contains(lsid)))
        .cloned()
        .collect()
}

/// Says where two dumps differ (the first lines on either side only), or nothing.
fn difference(mssql: &[String], pg: &[String]) -> Option<String> {
    if mssql == pg {
        return None;
    }
    let a: BTreeSet<&String> = mssql.iter().collect();
    let b: BTreeSet<&String> = pg.iter().collect();
    let only_mssql: Vec<&&String> = a.difference(&b).take(10).collect();
    let only_pg: Vec<&&String> = b.difference(&a).take(10).collect();
    Some(format!(
        "{} rows in SQL Server, {} in PostgreSQL\nonly in SQL Server: {only_mssql:#?}\nonly in PostgreSQL: {only_pg:#?}",
        mssql.len(),
        pg.len()
    ))
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn destinations(ado: &str, pg_url: &str) -> String {
    format!(
        "[[destination]]\nname = \"mssql\"\ntype = \"sqlserver\"\nurl = {}\nstore_system_information = true\n\n[[destination]]\nname = \"pg\"\ntype = \"postgres\"\nurl = {}\nstore_system_information = true\n",
        toml_string(ado),
        toml_string(pg_url)
    )
}

const IMPORTED: [&str; 2] = [
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/captures/pra_access_session.xml"
    ),
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sql/sessions.xml"
    ),
];

fn import_config(dir: &Path, ado: &str, pg_url: &str) -> PathBuf {
    let text = format!(
        "state_dir = {}\n\n[[site]]\nname = \"support\"\nhost = \"support.example.com:8443\"\nclient_id = \"id\"\nclient_secret = {{ env = \"BTIC_TEST_UNUSED_SECRET\" }}\n\n{}",
        toml_string(&dir.join("state").display().to_string()),
        destinations(ado, pg_url)
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn import_of_the_captures_leaves_the_same_rows_as_in_postgres(admin: String) {
    let Some(Target::Postgres(pg)) = postgres("mssql_import").await else {
        panic!("PostgreSQL at 127.0.0.1:5432 is needed to compare with");
    };
    with_database(&admin, "import", |ado| async move {
        let dir = tempfile::tempdir().unwrap();
        let config = import_config(dir.path(), &ado, &pg.url());
        // Twice: the second import replaces every session.
        for _ in 0..2 {
            for destination in ["mssql", "pg"] {
                let out = Command::new(env!("CARGO_BIN_EXE_btic"))
                    .args(["import", "--config"])
                    .arg(&config)
                    .args(["--destination", destination])
                    .args(IMPORTED)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "import into {destination}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let mssql = mssql_dump(&ado).await;
        let postgres = postgres_dump(&pg.url()).await;
        assert!(mssql.len() > 30, "{} rows", mssql.len());
        if let Some(d) = difference(&mssql, &postgres) {
            panic!("{d}");
        }
        println!("  {} rows alike in SQL Server and PostgreSQL", mssql.len());
    })
    .await;
}

async fn run_against_the_simulator_leaves_the_same_rows_as_in_postgres(admin: String) {
    let Some(Target::Postgres(pg)) = postgres("mssql_run").await else {
        panic!("PostgreSQL at 127.0.0.1:5432 is needed to compare with");
    };
    with_database(&admin, "run", |ado| async move {
        let dir = tempfile::tempdir().unwrap();
        let sim = Sim::start(
            dir.path(),
            &["--days", "1", "--sessions-per-day", "150", "--recording-bytes", "4096"],
        );
        let transfers = ["mssql", "pg"]
            .map(|d| {
                format!("[[schedule.transfer]]\nsite = \"sim\"\ndestination = \"{d}\"\ndata = [\"sessions\"]\n")
            })
            .join("");
        let config = rig::pipeline(
            dir.path(),
            &sim,
            free_port(),
            &destinations(&ado, &pg.url()),
            &transfers,
        );
        let log = dir.path().join("run.log");
        let daemon = Daemon::start(&config, &log);
        let (now, _) = sim.truth(None).await;
        let (_, truth) = sim.truth(Some(now - 10)).await;
        assert!(truth.len() > 100, "history: {}", truth.len());
        let lsids: BTreeSet<String> = truth.into_keys().collect();
        // Closed sessions do not change: once both hold every one, they hold the same.
        let mut last;
        let started = Instant::now();
        let alike = loop {
            // Before the daemon has migrated, there are no tables to read.
            let dumps = (
                try_mssql_dump(&ado).await,
                try_postgres_dump(&pg.url()).await,
            );
            match dumps {
                (Ok(mssql), Ok(postgres)) => {
                    let mssql = of_sessions(&mssql, &lsids);
                    let postgres = of_sessions(&postgres, &lsids);
                    let present = mssql.iter().filter(|l| l.starts_with("session|")).count();
                    match difference(&mssql, &postgres) {
                        None if present == lsids.len() => {
                            last = format!("{} rows alike", mssql.len());
                            break true;
                        }
                        None => last = format!("{present} of {} sessions in both", lsids.len()),
                        Some(d) => last = d,
                    }
                }
                (Err(e), _) => last = format!("reading SQL Server: {e}"),
                (_, Err(e)) => last = format!("reading PostgreSQL: {e}"),
            }
            if started.elapsed() > Duration::from_secs(180) {
                break false;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        let (code, _) = daemon.terminate();
        assert!(
            alike,
            "{last}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert_eq!(code, Some(0));
        println!("  {} sessions: {last} in SQL Server and PostgreSQL", lsids.len());
    })
    .await;
}

type Case = fn(String) -> Pin<Box<dyn Future<Output = ()> + Send>>;

fn main() {
    let cases: [(&str, Case); 4] = [
        (
            "sqlserver_live_delivery_is_idempotent_isolates_bad_sessions_and_check_leaves_nothing",
            |a| Box::pin(delivery_is_idempotent_isolates_bad_sessions_and_check_leaves_nothing(a)),
        ),
        (
            "sqlserver_live_two_writers_of_the_same_new_sessions_leave_one_copy",
            |a| Box::pin(two_writers_of_the_same_new_sessions_leave_one_copy(a)),
        ),
        (
            "sqlserver_live_import_of_the_captures_leaves_the_same_rows_as_in_postgres",
            |a| {
                Box::pin(import_of_the_captures_leaves_the_same_rows_as_in_postgres(
                    a,
                ))
            },
        ),
        (
            "sqlserver_live_run_against_the_simulator_leaves_the_same_rows_as_in_postgres",
            |a| Box::pin(run_against_the_simulator_leaves_the_same_rows_as_in_postgres(a)),
        ),
    ];
    println!("\nrunning {} tests", cases.len());
    let Ok(admin) = std::env::var("BTIC_MSSQL_URL") else {
        for (name, _) in &cases {
            skip::opt_in(name, "BTIC_MSSQL_URL not set (a live SQL Server test)");
        }
        println!(
            "\ntest result: ok. 0 passed; 0 failed; {} ignored; 0 measured; 0 filtered out\n",
            cases.len()
        );
        return;
    };
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let (mut passed, mut failed, mut filtered) = (0, 0, 0);
    for (name, case) in cases {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            filtered += 1;
            continue;
        }
        let started = Instant::now();
        let admin = admin.clone();
        let outcome = runtime.block_on(async move { tokio::spawn(case(admin)).await });
        match outcome {
            Ok(()) => {
                passed += 1;
                println!(
                    "test {name} ... ok ({:.1} s)",
                    started.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                failed += 1;
                let message = e
                    .try_into_panic()
                    .ok()
                    .and_then(|p| {
                        p.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    })
                    .unwrap_or_default();
                println!("test {name} ... FAILED\n{message}");
            }
        }
    }
    let result = if failed == 0 { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {result}. {passed} passed; {failed} failed; 0 ignored; 0 measured; {filtered} filtered out\n"
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
