//! SQL Server, live. Runs only when `BTIC_MSSQL_URL` holds an ADO.NET connection string
//! for a login that may create databases (for example
//! `server=tcp:127.0.0.1,1433;user=sa;password=...;TrustServerCertificate=true`);
//! otherwise it reports itself ignored (skipped) in the test summary — never passed. It
//! makes its own database and drops it after. A test binary of its own (`harness =
//! false`) so that a skip is counted as one.

mod sql_support;

use btic::config::{Secret, SecretSource, SqlConnection, SqlDestination, SqlDialect};
use btic::deliver::sql::SqlSink;
use btic::deliver::sql::schema::TABLES;
use sql_support::{HOST, expected_counts, session};
use tiberius::{Client, Config};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

async fn client(ado: &str) -> Client<Compat<TcpStream>> {
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

async fn counts(ado: &str) -> Vec<i64> {
    let mut c = client(ado).await;
    let mut out = Vec::new();
    for t in TABLES {
        let row = c
            .simple_query(format!("SELECT CAST(COUNT(*) AS bigint) FROM [{}]", t.name))
            .await
            .unwrap()
            .into_row()
            .await
            .unwrap()
            .unwrap();
        out.push(row.get::<i64, _>(0).unwrap());
    }
    out
}

const TEST: &str =
    "sqlserver_live_delivery_is_idempotent_isolates_bad_sessions_and_check_leaves_nothing";

fn main() {
    let Ok(ado) = std::env::var("BTIC_MSSQL_URL") else {
        println!("\nrunning 1 test");
        println!("test {TEST} ... ignored, SKIPPED: BTIC_MSSQL_URL not set");
        println!("\ntest result: ok. 0 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out\n");
        return;
    };
    println!("\nrunning 1 test");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    // A failure panics, which ends the process with a non-zero status.
    runtime.block_on(live(ado));
    println!("test {TEST} ... ok");
    println!("\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n");
}

async fn live(ado: String) {
    let name = format!("btic_t_{}", std::process::id());
    exec(&ado, &format!("CREATE DATABASE [{name}]")).await;
    let db_ado = format!("{};Database={name}", ado.trim_end_matches(';'));
    let body = {
        let db_ado = db_ado.clone();
        tokio::spawn(async move {
            let dest = SqlDestination {
                dialect: SqlDialect::SqlServer,
                connection: SqlConnection::Url(SecretSource::Plain(Secret::new(db_ado.clone()))),
                store_system_information: true,
                batch_size: 3,
            };
            let sink = SqlSink::connect("mssql", &dest, Some(&Secret::new(db_ado.clone())))
                .await
                .expect("connect and migrate");
            let mut batch: Vec<_> = (0..5).map(|i| session(i, true)).collect();
            for _ in 0..3 {
                let outcome = sink.deliver(HOST, &batch).await;
                assert_eq!(outcome.delivered(), 5, "{outcome:?}");
                assert_eq!(counts(&db_ado).await, expected_counts(5, true));
            }
            let report = sink.check().await.expect("check");
            assert_eq!(report.schema_version, 1);
            assert_eq!(counts(&db_ado).await, expected_counts(5, true));

            exec(
                &db_ado,
                "ALTER TABLE [customer] ALTER COLUMN [company_name] nvarchar(12)",
            )
            .await;
            batch.push(session(5, true));
            batch.push(session(6, true));
            batch[6].customers[0].company = Some("A company name far too long".into());
            let outcome = sink.deliver(HOST, &batch).await;
            assert_eq!(outcome.delivered(), 6, "{outcome:?}");
            assert_eq!(outcome.rejected(), 1);
            assert_eq!(counts(&db_ado).await, expected_counts(6, true));

            // A second btic starting finds the schema in place.
            drop(sink);
            SqlSink::connect("mssql", &dest, Some(&Secret::new(db_ado.clone())))
                .await
                .expect("connect again");
        })
        .await
    };
    exec(
        &ado,
        &format!("ALTER DATABASE [{name}] SET SINGLE_USER WITH ROLLBACK IMMEDIATE; DROP DATABASE [{name}]"),
    )
    .await;
    if let Err(e) = body {
        std::panic::resume_unwind(e.into_panic());
    }
}
