//! SQL delivery against real databases: PostgreSQL at 127.0.0.1:5432 (a fresh database
//! per test, dropped after) and SQLite files in temporary directories.

mod skip;
mod sql_support;

use std::time::Duration;

use btic::deliver::sql::{SqlError, SqlSink};
use btic::model::Session;
use sql_support::{HOST, Target, expected_counts, pg_client, postgres, session, sqlite};

fn sessions(n: usize, ended: bool) -> Vec<Session> {
    (0..n).map(|i| session(i, ended)).collect()
}

async fn delivering_three_times_leaves_one_copy(target: Target) {
    let sink = target.sink().await;
    let batch = sessions(5, true);
    let first = sink.deliver(HOST, &batch).await;
    assert_eq!(first.delivered(), 5, "{first:?}");
    let counts = target.counts().await;
    assert_eq!(counts, expected_counts(5, true));
    let dump = target.dump().await;
    for _ in 0..2 {
        let again = sink.deliver(HOST, &batch).await;
        assert_eq!(again.delivered(), 5, "{again:?}");
        assert_eq!(target.counts().await, counts);
        assert_eq!(target.dump().await, dump);
    }
    // A new sink (a restarted btic) finds the schema in place and changes nothing.
    let sink = target.sink().await;
    assert_eq!(sink.deliver(HOST, &batch).await.delivered(), 5);
    assert_eq!(target.dump().await, dump);
    let versions = target
        .query_strings("SELECT CAST(count(*) AS TEXT) FROM btic_schema_version")
        .await;
    assert_eq!(versions[0][0], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_delivering_the_same_sessions_three_times_leaves_one_copy() {
    let Some(target) = postgres("three_times").await else {
        return;
    };
    delivering_three_times_leaves_one_copy(target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_delivering_the_same_sessions_three_times_leaves_one_copy() {
    delivering_three_times_leaves_one_copy(sqlite()).await;
}

async fn an_ended_session_replaces_its_earlier_version(target: Target) {
    let sink = target.sink().await;
    let running = sessions(3, false);
    assert_eq!(sink.deliver(HOST, &running).await.delivered(), 3);
    assert_eq!(target.counts().await, expected_counts(3, false));
    let end_times = "SELECT CAST(count(*) AS TEXT) FROM \"session\" WHERE end_time IS NOT NULL";
    assert_eq!(target.query_strings(end_times).await[0][0], "0");
    let ended = sessions(3, true);
    assert_eq!(sink.deliver(HOST, &ended).await.delivered(), 3);
    assert_eq!(target.counts().await, expected_counts(3, true));
    assert_eq!(target.query_strings(end_times).await[0][0], "3");
    let last = target
        .query_strings(
            "SELECT e.type FROM session_event e WHERE e.id = (SELECT max(id) FROM session_event)",
        )
        .await;
    assert_eq!(last[0][0], "Session End");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_session_that_ended_since_replaces_its_earlier_version() {
    let Some(target) = postgres("ended").await else {
        return;
    };
    an_ended_session_replaces_its_earlier_version(target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_session_that_ended_since_replaces_its_earlier_version() {
    an_ended_session_replaces_its_earlier_version(sqlite()).await;
}

async fn a_poisoned_session_fails_alone(target: Target) {
    let sink = target.sink().await;
    // A constrained schema: company names of at most 12 characters.
    if target.is_postgres() {
        target
            .exec("ALTER TABLE customer ALTER COLUMN company_name TYPE varchar(12)")
            .await;
    } else {
        target
            .exec(
                "CREATE TRIGGER short_company BEFORE INSERT ON customer WHEN length(NEW.company_name) > 12 BEGIN SELECT RAISE(ABORT, 'company_name too long'); END",
            )
            .await;
    }
    let mut batch = sessions(9, true);
    batch[5].customers[0].company = Some("A company name far too long".into());
    let outcome = sink.deliver(HOST, &batch).await;
    assert_eq!(outcome.delivered(), 8, "{outcome:?}");
    assert_eq!(outcome.rejected(), 1);
    let err = outcome.sessions[5].as_ref().unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.to_string().contains(batch[5].lsid.as_str()),
        "the error names the session: {err}"
    );
    let mut counts = expected_counts(8, true);
    assert_eq!(target.counts().await, counts);
    // Fixed, it lands too, and nothing is doubled.
    batch[5].customers[0].company = Some("Short Inc".into());
    assert_eq!(sink.deliver(HOST, &batch).await.delivered(), 9);
    counts = expected_counts(9, true);
    assert_eq!(target.counts().await, counts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_poisoned_session_fails_alone_and_the_others_land() {
    let Some(target) = postgres("poisoned").await else {
        return;
    };
    a_poisoned_session_fails_alone(target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_poisoned_session_fails_alone_and_the_others_land() {
    a_poisoned_session_fails_alone(sqlite()).await;
}

async fn hostile_values_are_stored_verbatim(target: Target) {
    let sink = target.sink().await;
    let nasty = [
        "'; DROP TABLE session; --",
        "O'Brien \"quoted\" \\back\\slash",
        "emoji 🎉👩‍💻 and ünïcödé ✓",
        "control \u{1}\u{7}\u{8}\t\r\n\u{1b}[0m\u{7f} end",
        "",
    ];
    let mut batch = sessions(nasty.len(), true);
    for (s, v) in batch.iter_mut().zip(nasty) {
        s.external_key = Some(v.to_string().into());
        s.events[1].body = Some(v.to_string().into());
        s.custom_attributes[0].value = v.to_string().into();
    }
    assert_eq!(sink.deliver(HOST, &batch).await.delivered(), nasty.len());
    let keys = target
        .query_strings("SELECT lsid, external_key FROM \"session\" ORDER BY lsid")
        .await;
    let bodies = target
        .query_strings(
            "SELECT s.lsid, d.value FROM session_event_data d JOIN session_event e ON e.id = d.session_event_id JOIN \"session\" s ON s.id = e.session_id WHERE d.name = 'body' ORDER BY s.lsid",
        )
        .await;
    let attrs = target
        .query_strings(
            "SELECT s.lsid, a.value FROM custom_attribute a JOIN \"session\" s ON s.id = a.session_id ORDER BY s.lsid",
        )
        .await;
    for (i, v) in nasty.iter().enumerate() {
        for rows in [&keys, &bodies, &attrs] {
            assert_eq!(rows[i][0], batch[i].lsid);
            assert_eq!(rows[i][1], *v);
        }
    }
    assert_eq!(target.counts().await[0], nasty.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_quotes_injection_emoji_and_control_characters_are_stored_verbatim() {
    let Some(target) = postgres("verbatim").await else {
        return;
    };
    hostile_values_are_stored_verbatim(target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_quotes_injection_emoji_and_control_characters_are_stored_verbatim() {
    hostile_values_are_stored_verbatim(sqlite()).await;
}

async fn concurrent_deliveries_leave_one_copy(target: Target) {
    let a = target.sink_with(true, 7).await.unwrap();
    let b = target.sink_with(true, 11).await.unwrap();
    let forward = sessions(40, true);
    let mut backward = forward.clone();
    backward.reverse();
    for _ in 0..3 {
        let (x, y) = tokio::time::timeout(Duration::from_secs(60), async {
            tokio::join!(a.deliver(HOST, &forward), b.deliver(HOST, &backward))
        })
        .await
        .expect("no deadlock: both deliveries finish");
        assert_eq!(x.delivered(), 40, "{x:?}");
        assert_eq!(y.delivered(), 40, "{y:?}");
        assert_eq!(target.counts().await, expected_counts(40, true));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_concurrent_deliveries_of_the_same_sessions_leave_one_copy() {
    let Some(target) = postgres("concurrent").await else {
        return;
    };
    concurrent_deliveries_leave_one_copy(target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_concurrent_deliveries_of_the_same_sessions_leave_one_copy() {
    concurrent_deliveries_leave_one_copy(sqlite()).await;
}

async fn repeated_lsids_in_one_call_are_written_once(target: Target) {
    let sink = target.sink().await;
    let mut batch = sessions(3, false);
    batch.push(session(1, true));
    let outcome = sink.deliver(HOST, &batch).await;
    assert_eq!(outcome.delivered(), 4, "{outcome:?}");
    let ended = target
        .query_strings("SELECT lsid FROM \"session\" WHERE end_time IS NOT NULL")
        .await;
    assert_eq!(
        ended,
        vec![vec![batch[3].lsid.clone()]],
        "the last copy wins"
    );
    assert_eq!(target.counts().await[0], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_repeated_lsids_in_one_call_are_written_once_with_the_last_copy() {
    let Some(target) = postgres("repeated").await else {
        return;
    };
    repeated_lsids_in_one_call_are_written_once(target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_repeated_lsids_in_one_call_are_written_once_with_the_last_copy() {
    repeated_lsids_in_one_call_are_written_once(sqlite()).await;
}

async fn system_information_only_when_asked(target: Target) {
    let sink = target.sink_with(false, 500).await.unwrap();
    assert_eq!(sink.deliver(HOST, &sessions(2, true)).await.delivered(), 2);
    let mut expected = expected_counts(2, true);
    expected[3] = 0;
    assert_eq!(target.counts().await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_system_information_is_stored_only_when_the_destination_asks() {
    let Some(target) = postgres("sysinfo").await else {
        return;
    };
    system_information_only_when_asked(target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_system_information_is_stored_only_when_the_destination_asks() {
    system_information_only_when_asked(sqlite()).await;
}

async fn a_newer_schema_is_refused(target: Target) {
    drop(target.sink().await);
    target
        .exec("INSERT INTO btic_schema_version (version, applied_at, btic_version) VALUES (99, '2030-01-01 00:00:00', 'btic 9')")
        .await;
    let err = target.sink_with(true, 500).await.unwrap_err();
    assert!(
        matches!(err, SqlError::SchemaTooNew { found: 99, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(
        text.contains("version 99") && text.contains("upgrade btic"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_older_btic_refuses_a_newer_schema_with_a_clear_message() {
    let Some(target) = postgres("newer").await else {
        return;
    };
    a_newer_schema_is_refused(target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_older_btic_refuses_a_newer_schema_with_a_clear_message() {
    a_newer_schema_is_refused(sqlite()).await;
}

async fn check_leaves_nothing(target: Target) {
    let sink = target.sink().await;
    let report = sink.check().await.expect("check passes");
    assert_eq!(report.schema_version, 1);
    assert!(!report.server.is_empty());
    assert_eq!(target.counts().await, vec![0; 8]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_check_round_trips_a_probe_row_and_leaves_nothing_behind() {
    let Some(target) = postgres("check").await else {
        return;
    };
    check_leaves_nothing(target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_check_round_trips_a_probe_row_and_leaves_nothing_behind() {
    check_leaves_nothing(sqlite()).await;
}

/// The same sessions read back the same from PostgreSQL and SQLite, and as the golden
/// file says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_dialects_store_a_session_as_the_golden_rows_say() {
    let golden_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/sql/model_rows.txt"
    );
    let batch = vec![session(0, true), session(1, false)];
    let lite = sqlite();
    assert_eq!(lite.sink().await.deliver(HOST, &batch).await.delivered(), 2);
    let dump = lite.dump().await.join("\n") + "\n";
    if std::env::var_os("BTIC_BLESS").is_some() {
        std::fs::write(golden_path, &dump).unwrap();
    }
    let golden = std::fs::read_to_string(golden_path).expect("golden file");
    pretty_assertions::assert_eq!(dump, golden);
    let Some(pg) = postgres("golden_model").await else {
        return;
    };
    assert_eq!(pg.sink().await.deliver(HOST, &batch).await.delivered(), 2);
    pretty_assertions::assert_eq!(pg.dump().await.join("\n") + "\n", golden);
}

/// The connection is killed while a transaction waits half-way (on a lock the test
/// holds): the batch is retryable, nothing of it is visible, and the next delivery
/// reconnects and lands everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_killed_connection_is_retryable_and_leaves_nothing_half_written() {
    let Some(target) = postgres("killed").await else {
        return;
    };
    let Target::Postgres(db) = &target else {
        unreachable!()
    };
    let app = format!("btic_kill_{}", db.name);
    let (mut d, _) = target.destination(true);
    d.batch_size = 1000;
    let url = btic::config::Secret::new(format!("{}?application_name={app}", db.url()));
    let sink = SqlSink::connect("killed", &d, Some(&url)).await.unwrap();
    let batch = sessions(50, true);

    let blocker = pg_client(&db.url()).await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE customer IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let delivery = tokio::spawn(async move {
        let outcome = sink.deliver(HOST, &batch).await;
        (sink, batch, outcome)
    });
    let killer = pg_client(&db.url()).await;
    let mut killed = false;
    for _ in 0..200 {
        let rows = killer
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
                &[&app],
            )
            .await
            .unwrap();
        if !rows.is_empty() {
            killed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(killed, "the delivery reached the locked table");
    blocker.batch_execute("ROLLBACK").await.unwrap();
    let (sink, batch, outcome) = delivery.await.unwrap();
    assert_eq!(outcome.delivered(), 0);
    let err = outcome.retryable_error().expect("a retryable error");
    assert!(err.is_retryable(), "{err}");
    assert!(
        outcome
            .sessions
            .iter()
            .all(|r| r.as_ref().is_err_and(SqlError::is_retryable))
    );
    assert_eq!(target.counts().await, vec![0; 8], "nothing half-written");

    let again = sink.deliver(HOST, &batch).await;
    assert_eq!(again.delivered(), 50, "{again:?}");
    assert_eq!(target.counts().await, expected_counts(50, true));
}

/// A database that cannot be reached is a retryable failure, not a permanent one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_unreachable_server_is_a_retryable_connection_error() {
    let d = btic::config::SqlDestination {
        dialect: btic::config::SqlDialect::Postgres,
        connection: btic::config::SqlConnection::Path("unused".into()),
        store_system_information: false,
        batch_size: 10,
    };
    // Port 1 on loopback: nothing listens there.
    let url = btic::config::Secret::new("postgres://postgres:hunter2@127.0.0.1:1/btic");
    let err = SqlSink::connect("down", &d, Some(&url)).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

/// Sessions from the simulator's generator (all shapes it makes) read back row for row
/// the same from SQLite and PostgreSQL, and every row the mapping makes is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_sessions_read_back_the_same_from_sqlite_and_postgres() {
    use btic::deliver::sql::SessionRows;
    use btic::simulator::sessions::{Sessions, epoch};
    let batch: Vec<Session> = Sessions::new(11, epoch()).take(300).collect();
    let rows: u64 = batch
        .iter()
        .map(|s| SessionRows::new(HOST, s, true).row_count())
        .sum();
    let lite = sqlite();
    let outcome = lite
        .sink_with(true, 64)
        .await
        .unwrap()
        .deliver(HOST, &batch)
        .await;
    assert_eq!(outcome.delivered(), 300, "{:?}", outcome.retryable_error());
    assert_eq!(outcome.rows, rows);
    assert_eq!(lite.counts().await.iter().sum::<i64>() as u64, rows);
    let Some(pg) = postgres("generated").await else {
        return;
    };
    let outcome = pg
        .sink_with(true, 64)
        .await
        .unwrap()
        .deliver(HOST, &batch)
        .await;
    assert_eq!(outcome.delivered(), 300, "{:?}", outcome.retryable_error());
    assert_eq!(outcome.rows, rows);
    let (a, b) = (lite.dump().await, pg.dump().await);
    assert_eq!(a.len() as u64, rows);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y);
    }
    assert_eq!(a.len(), b.len());
}

/// `sslmode=require` speaks TLS and verifies the server's certificate against the
/// system's roots: the local server's self-signed certificate is refused, with a clear
/// error and without the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sslmode_require_speaks_tls_and_verifies_the_server_certificate() {
    if postgres("tls_probe").await.is_none() {
        return;
    }
    let d = btic::config::SqlDestination {
        dialect: btic::config::SqlDialect::Postgres,
        connection: btic::config::SqlConnection::Path("unused".into()),
        store_system_information: false,
        batch_size: 10,
    };
    let url = btic::config::Secret::new(
        "postgres://postgres:hunter2@127.0.0.1:5432/postgres?sslmode=require",
    );
    let err = SqlSink::connect("tls", &d, Some(&url)).await.unwrap_err();
    let text = err.to_string();
    println!("{text}");
    assert!(
        text.contains("certificate") || text.contains("TLS") || text.contains("tls"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}
