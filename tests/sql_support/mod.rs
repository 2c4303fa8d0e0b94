//! Shared helpers of the SQL tests: a fresh PostgreSQL database per test (dropped after),
//! a fresh SQLite file per test, sample sessions, and a dump of all eight tables that
//! reads the same in both dialects.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use btic::config::{Secret, SecretSource, SqlConnection, SqlDestination, SqlDialect};
use btic::deliver::sql::schema::{ColumnType, Parent, TABLES, Table};
use btic::deliver::sql::{SqlError, SqlSink};
use btic::model::{
    CustomAttribute, Customer, DataValue, Event, JumpGroup, Party, PublicSite, RecordingLink,
    Representative, Session, SystemInfoCategory, Team, TransferredFile,
};
use chrono::{TimeZone, Utc};

pub const PG_ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";
pub const HOST: &str = "support.example.com";

/// A destination under test.
pub enum Target {
    /// A PostgreSQL database made for this test.
    Postgres(PgDb),
    /// A SQLite file in a temporary directory.
    Sqlite(tempfile::TempDir),
}

/// A uniquely named PostgreSQL database, dropped when this goes away.
pub struct PgDb {
    pub name: String,
}

impl PgDb {
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-q",
                "-c",
            ])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A new database, or `None` (after printing SKIPPED) when no PostgreSQL answers.
pub async fn postgres(test: &str) -> Option<Target> {
    let admin = match tokio_postgres::connect(PG_ADMIN, tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            client
        }
        Err(e) => {
            crate::skip::missing(
                test,
                &format!("PostgreSQL is not reachable at 127.0.0.1:5432 ({e})"),
            );
            return None;
        }
    };
    let name = format!(
        "btic_t_{}_{}_{}",
        test,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the test database");
    Some(Target::Postgres(PgDb { name }))
}

pub fn sqlite() -> Target {
    Target::Sqlite(tempfile::tempdir().expect("temp dir"))
}

impl Target {
    pub fn destination(&self, store_system_information: bool) -> (SqlDestination, Option<Secret>) {
        match self {
            Target::Postgres(db) => (
                SqlDestination {
                    dialect: SqlDialect::Postgres,
                    connection: SqlConnection::Url(SecretSource::Plain(Secret::new(db.url()))),
                    store_system_information,
                    batch_size: 500,
                },
                Some(Secret::new(db.url())),
            ),
            Target::Sqlite(dir) => (
                SqlDestination {
                    dialect: SqlDialect::Sqlite,
                    connection: SqlConnection::Path(dir.path().join("btic.db")),
                    store_system_information,
                    batch_size: 500,
                },
                None,
            ),
        }
    }

    pub async fn sink(&self) -> SqlSink {
        self.sink_with(true, 500).await.expect("connect")
    }

    pub async fn sink_with(&self, sysinfo: bool, batch_size: usize) -> Result<SqlSink, SqlError> {
        let (mut d, url) = self.destination(sysinfo);
        d.batch_size = batch_size;
        SqlSink::connect("test", &d, url.as_ref()).await
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Target::Postgres(_))
    }

    /// Runs statements outside btic (to constrain the schema or to look inside).
    pub async fn exec(&self, sql: &str) {
        match self {
            Target::Postgres(db) => pg_client(&db.url()).await.batch_execute(sql).await.unwrap(),
            Target::Sqlite(dir) => rusqlite::Connection::open(dir.path().join("btic.db"))
                .unwrap()
                .execute_batch(sql)
                .unwrap(),
        }
    }

    /// Rows per table, in `TABLES` order.
    pub async fn counts(&self) -> Vec<i64> {
        let mut out = Vec::new();
        for t in TABLES {
            let sql = format!("SELECT count(*) FROM \"{}\"", t.name);
            out.push(self.query_strings(&sql).await[0][0].parse().unwrap());
        }
        out
    }

    /// Every row of every table as text, without ids, each child row named by its
    /// session's lsid (and its event's position), in a stable order.
    pub async fn dump(&self) -> Vec<String> {
        let mut out = Vec::new();
        for t in TABLES {
            for row in self
                .query_strings(&dump_query(self.is_postgres(), &t))
                .await
            {
                out.push(format!("{}|{}", t.name, row.join("|")));
            }
        }
        out
    }

    pub async fn query_strings(&self, sql: &str) -> Vec<Vec<String>> {
        match self {
            Target::Postgres(db) => {
                let client = pg_client(&db.url()).await;
                text_rows(client.simple_query(sql).await.unwrap())
            }
            Target::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join("btic.db")).unwrap();
                let mut stmt = conn.prepare(sql).unwrap();
                let n = stmt.column_count();
                stmt.query_map([], |r| {
                    (0..n)
                        .map(|i| {
                            use rusqlite::types::ValueRef;
                            Ok(match r.get_ref(i)? {
                                ValueRef::Null => "NULL".to_string(),
                                ValueRef::Integer(n) => n.to_string(),
                                ValueRef::Real(f) => f.to_string(),
                                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                                ValueRef::Blob(b) => format!("{b:?}"),
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
            }
        }
    }
}

pub async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(conn);
    client
}

fn dump_query(pg: bool, t: &Table) -> String {
    let cols: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            let q = format!("c.\"{}\"", c.name);
            match (pg, c.ty) {
                (true, ColumnType::Time) => {
                    format!("to_char({q} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')")
                }
                _ => format!("CAST({q} AS TEXT)"),
            }
        })
        .collect();
    let cols = cols.join(", ");
    match t.parent {
        Parent::None => format!(
            "SELECT {cols} FROM \"{}\" c ORDER BY c.host_name, c.lsid",
            t.name
        ),
        Parent::Session => format!(
            "SELECT s.lsid, {cols} FROM \"{}\" c JOIN \"session\" s ON s.id = c.session_id ORDER BY s.lsid, c.id",
            t.name
        ),
        Parent::Event => format!(
            "SELECT s.lsid, CAST((SELECT count(*) FROM session_event e2 WHERE e2.session_id = e.session_id AND e2.id <= e.id) AS TEXT), {cols} FROM \"{}\" c JOIN session_event e ON e.id = c.session_event_id JOIN \"session\" s ON s.id = e.session_id ORDER BY s.lsid, e.id, c.id",
            t.name
        ),
    }
}

fn at(secs: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_717_412_400 + secs, 0).unwrap()
}

fn dv(name: &str, value: &str) -> DataValue {
    DataValue {
        name: name.into(),
        value: value.into(),
    }
}

/// A session with something in every table; `ended` decides whether it has an end.
pub fn session(i: usize, ended: bool) -> Session {
    let rep = Party {
        kind: Some("representative".into()),
        gsnumber: Some("1".into()),
        id: Some("7".into()),
        name: "Alex Rep".into(),
    };
    let cust = Party {
        kind: Some("customer".into()),
        gsnumber: Some("2".into()),
        id: None,
        name: "Jane Customer".into(),
    };
    let mut events = vec![
        Event {
            timestamp: Some(at(0)),
            event_type: "Session Start".into(),
            ..Event::default()
        },
        Event {
            timestamp: Some(at(60)),
            event_type: "Chat Message".into(),
            performed_by: Some(rep.clone()),
            destination: Some(cust.clone()),
            body: Some(format!("Hello number {i}").into()),
            ..Event::default()
        },
        Event {
            timestamp: Some(at(90)),
            event_type: "File Upload".into(),
            performed_by: Some(rep.clone()),
            data: vec![dv("Path", "C:\\temp")],
            filename: Some("notes.txt".into()),
            filesize: Some("1234".into()),
            files: vec![TransferredFile {
                name: "a.log".into(),
                size: Some("9".into()),
            }],
            ..Event::default()
        },
        Event {
            timestamp: Some(at(120)),
            event_type: "System Information Retrieved".into(),
            performed_by: Some(rep.clone()),
            system_information: vec![SystemInfoCategory {
                name: "Memory".into(),
                columns: vec![dv("Total", "Total Memory")],
                rows: vec![vec![dv("Total", "16 GB")]],
            }],
            ..Event::default()
        },
    ];
    if ended {
        events.push(Event {
            timestamp: Some(at(902)),
            event_type: "Session End".into(),
            performed_by: Some(rep.clone()),
            ..Event::default()
        });
    }
    Session {
        lsid: format!("{i:032x}").into(),
        session_type: "support".into(),
        lseq: Some(4800 + i as i64),
        start_time: Some(at(0)),
        end_time: ended.then(|| at(902)),
        duration: Some(if ended { "00:15:02" } else { "00:02:00" }.into()),
        public_site: Some(PublicSite {
            id: Some("1".into()),
            name: "Default".into(),
        }),
        external_key: Some(format!("INC{i:07}").into()),
        jump_group: (i % 2 == 1).then(|| JumpGroup {
            id: Some("3".into()),
            kind: Some("shared".into()),
            name: "Servers".into(),
        }),
        custom_attributes: vec![CustomAttribute {
            display_name: "Region".into(),
            code_name: "region".into(),
            value: "EMEA".into(),
        }],
        chat_view_url: ended.then(|| "https://support.example.com/chat?v".into()),
        chat_download_url: None,
        recording_view_url: None,
        recording_download_url: ended.then(|| "https://support.example.com/rec?d".into()),
        command_shell_recordings: vec![RecordingLink {
            instance: 0,
            download_url: Some("https://support.example.com/shell?0".into()),
            view_url: None,
        }],
        show_my_screen_recordings: Vec::new(),
        file_transfer_count: Some(1),
        file_move_count: Some(0),
        file_delete_count: None,
        primary_customer: Some(cust),
        primary_rep: Some(rep),
        customers: vec![Customer {
            gsnumber: Some("2".into()),
            username: Some("jane".into()),
            public_ip: Some("203.0.113.10:50522".into()),
            private_ip: Some("10.0.0.4".into()),
            hostname: Some("JANE-PC".into()),
            os: Some("Windows 11 Pro".into()),
            primary: Some(true),
            rpat: None,
            name: Some("Jane Customer".into()),
            company: Some("Example Corp".into()),
            company_code: Some("EX01".into()),
            issue: Some("Printer".into()),
            details: Some("Cannot print".into()),
        }],
        representatives: vec![Representative {
            gsnumber: Some("1".into()),
            id: Some("7".into()),
            username: Some("arep".into()),
            display_name: Some("Alex Rep".into()),
            public_display_name: Some("Alex".into()),
            private_display_name: None,
            display_number: Some("1".into()),
            public_ip: Some("198.51.100.7:61000".into()),
            private_ip: Some("Unknown".into()),
            hostname: None,
            os: Some("Unknown".into()),
            session_owner: Some(true),
            primary: Some(true),
            seconds_involved: Some(901),
            invited: Some(false),
        }],
        teams: vec![Team {
            id: Some("4".into()),
            name: "Help Desk".into(),
            primary: Some(true),
        }],
        events,
    }
}

/// Rows per table one `session(_, ended)` writes (with system information).
pub fn expected_counts(sessions: i64, ended: bool) -> Vec<i64> {
    let events = if ended { 5 } else { 4 };
    // session_event_data per session: body + performed_by.gsnumber/id + destination.gsnumber
    // (chat); Path + filename + filesize + file.0.name/size + performed_by x2 (upload);
    // performed_by x2 (system information); performed_by x2 (end).
    let data = 4 + 7 + 2 + if ended { 2 } else { 0 };
    vec![
        sessions,
        sessions * events,
        sessions * data,
        sessions,
        sessions,
        sessions,
        sessions,
        sessions,
    ]
}

/// The rows of a PostgreSQL simple query as text, NULL as `"NULL"`.
pub fn text_rows(messages: Vec<tokio_postgres::SimpleQueryMessage>) -> Vec<Vec<String>> {
    messages
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}
