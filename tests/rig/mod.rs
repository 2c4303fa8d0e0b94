//! A test rig for whole-pipeline tests: `btic simulate` and `btic run` as child
//! processes, a fresh PostgreSQL database, a pipeline file in a temp directory, and the
//! oracle — the simulator's ground truth compared with what the destinations hold.

#![allow(dead_code)]

#[path = "../skip/mod.rs"]
pub mod skip;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

#[path = "relay.rs"]
mod relay;
#[allow(unused_imports)]
pub use relay::Relay;

/// The binary under test: this build's, or `BTIC_BIN` (another build measured by the
/// same test).
pub fn btic() -> Command {
    match std::env::var_os("BTIC_BIN") {
        Some(bin) => Command::new(bin),
        None => Command::new(env!("CARGO_BIN_EXE_btic")),
    }
}

/// A `btic simulate` child process.
pub struct Sim {
    child: Child,
    pub host: String,
    pub ca: PathBuf,
    client: reqwest::Client,
}

impl Sim {
    /// Starts `btic simulate --truth` on a free port with `args`.
    pub fn start(dir: &Path, args: &[&str]) -> Sim {
        let ca = dir.join("ca.pem");
        let mut child = btic()
            .args(["simulate", "--listen", "127.0.0.1:0", "--truth", "--ca-out"])
            .arg(&ca)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting btic simulate");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let host = line
            .trim()
            .rsplit("://")
            .next()
            .expect("simulate prints its address")
            .to_string();
        let pem = std::fs::read(&ca).expect("simulate writes its CA");
        let client = reqwest::Client::builder()
            .tls_certs_merge([reqwest::Certificate::from_pem(&pem).unwrap()])
            .build()
            .unwrap();
        Sim {
            child,
            host,
            ca,
            client,
        }
    }

    /// `GET /_sim/sessions`, optionally `?closed_before=`, as JSON.
    async fn ground_truth(&self, closed_before: Option<i64>) -> serde_json::Value {
        let mut url = format!("https://{}/_sim/sessions", self.host);
        if let Some(t) = closed_before {
            url.push_str(&format!("?closed_before={t}"));
        }
        let v: serde_json::Value = self
            .client
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v
    }

    /// The closed sessions that ended before `closed_before` (appliance time), and the
    /// appliance's now: `(now, lsid -> digest)`.
    pub async fn truth(&self, closed_before: Option<i64>) -> (i64, BTreeMap<String, String>) {
        let v = self.ground_truth(closed_before).await;
        let sessions = v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["lsid"].as_str().unwrap().to_string(),
                    s["digest"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        (v["appliance_now"].as_i64().unwrap(), sessions)
    }

    /// Makes the simulator refuse every report window that contains one of `refused`,
    /// and answer those that contain one of `malformed` with a broken body (appliance
    /// time, UNIX seconds), from now on; `&[], &[]` does neither.
    pub async fn window_faults(&self, refused: &[i64], malformed: &[i64]) {
        self.refusals(serde_json::json!({ "windows": refused, "malformed": malformed }))
            .await;
    }

    /// Makes the simulator refuse every report window that contains one of `refused`
    /// with `message` as the appliance's text.
    pub async fn refuse_with(&self, refused: &[i64], message: &str) {
        self.refusals(serde_json::json!({ "windows": refused, "message": message }))
            .await;
    }

    async fn refusals(&self, body: serde_json::Value) {
        let response = self
            .client
            .post(format!("https://{}/_sim/refusals", self.host))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }

    /// `GET /_sim/stats`: what the simulator was asked and answered.
    pub async fn stats(&self) -> serde_json::Value {
        self.client
            .get(format!("https://{}/_sim/stats", self.host))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `POST /_sim/budget` with `settings` (the account's limits, another client, a storm).
    pub async fn budget(&self, settings: serde_json::Value) {
        let response = self
            .client
            .post(format!("https://{}/_sim/budget", self.host))
            .json(&settings)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }

    /// The presentations that ended before `closed_before` (appliance time), by lsid.
    pub async fn presentations(&self, closed_before: i64) -> BTreeMap<String, Presentation> {
        let v = self.ground_truth(Some(closed_before)).await;
        v["presentations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["lsid"].as_str().unwrap().to_string(),
                    Presentation {
                        xml: p["xml"].as_str().unwrap().to_string(),
                        recorded: p["has_recording"].as_bool().unwrap(),
                        end_time: p["end_time"].as_i64().unwrap(),
                    },
                )
            })
            .collect()
    }

    /// The LSIDs of the sessions with a recording that ended before `closed_before`.
    pub async fn recorded(&self, closed_before: i64) -> BTreeSet<String> {
        let v = self.ground_truth(Some(closed_before)).await;
        v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["has_recording"].as_bool() == Some(true))
            .map(|s| s["lsid"].as_str().unwrap().to_string())
            .collect()
    }

    /// Like `truth`, with each session's end time: `lsid -> (digest, end_time)`.
    pub async fn truth_with_end(&self, closed_before: i64) -> BTreeMap<String, (String, i64)> {
        let v = self.ground_truth(Some(closed_before)).await;
        v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["lsid"].as_str().unwrap().to_string(),
                    (
                        s["digest"].as_str().unwrap().to_string(),
                        s["end_time"].as_i64().unwrap(),
                    ),
                )
            })
            .collect()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh PostgreSQL database, dropped at the end.
pub struct Pg {
    pub name: String,
    pub url: String,
}

static NEXT_DB: AtomicU32 = AtomicU32::new(0);

async fn admin_client() -> Option<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
        tokio_postgres::NoTls,
    )
    .await
    .ok()?;
    tokio::spawn(connection);
    Some(client)
}

impl Pg {
    /// A new database, or `None` (with a SKIPPED line) when PostgreSQL is not there.
    pub async fn create(test: &str) -> Option<Pg> {
        let Some(admin) = admin_client().await else {
            skip::missing(test, "PostgreSQL is not reachable at 127.0.0.1:5432");
            return None;
        };
        let name = format!(
            "btic_pipeline_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        Some(Pg {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            name,
        })
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }

    /// LSIDs in `session` and how often each appears.
    pub async fn lsids(&self) -> BTreeMap<String, i64> {
        let client = self.client().await;
        let rows = client
            .query("SELECT lsid, count(*) FROM session GROUP BY lsid", &[])
            .await
            .unwrap_or_default();
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    }

    pub async fn drop_now(&self) {
        // Two statements: DROP DATABASE refuses to run inside the implicit transaction
        // of a multi-statement batch.
        if let Some(admin) = admin_client().await {
            let _ = admin
                .batch_execute(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
                    self.name
                ))
                .await;
            let outcome = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {}", self.name))
                .await;
            if let Err(e) = outcome {
                println!("dropping test database {}: {e}", self.name);
            }
        }
    }
}

/// A `btic run` child process.
pub struct Daemon {
    pub child: Child,
}

impl Daemon {
    pub fn start(config: &Path, log: &Path) -> Daemon {
        Daemon::start_with(config, log, &[])
    }

    /// `btic run` with more environment (`BTIC_BUDGET_HOUR_SECONDS`, say).
    pub fn start_with(config: &Path, log: &Path, env: &[(&str, &str)]) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = btic()
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env("BTIC_TEST_SECRET", "demo-secret")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting btic run");
        Daemon { child }
    }

    fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status();
    }

    /// Its resident memory (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .ok()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM; returns the exit code and how long the exit took.
    pub fn terminate(mut self) -> (Option<i32>, Duration) {
        let started = Instant::now();
        self.signal("TERM");
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                return (None, started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// LSIDs in a SQLite destination and how often each appears.
pub fn sqlite_lsids(path: &Path) -> BTreeMap<String, i64> {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return BTreeMap::new();
    };
    let Ok(mut stmt) = conn.prepare("SELECT lsid, count(*) FROM session GROUP BY lsid") else {
        return BTreeMap::new();
    };
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map(|rows| rows.flatten().collect())
        .unwrap_or_default()
}

/// A presentation of the simulator's ground truth.
#[derive(Debug, Clone)]
pub struct Presentation {
    /// Its element as the report writes it.
    pub xml: String,
    /// Whether it was recorded.
    pub recorded: bool,
    /// When it ended (appliance time, UNIX seconds).
    pub end_time: i64,
}

/// Session JSON files in a files destination: lsid -> digest of the content (without
/// the trailing newline), plus the names that carry a conflict number (`x.1.json`).
pub fn json_files(dir: &Path) -> (BTreeMap<String, String>, Vec<String>) {
    let mut files = BTreeMap::new();
    let mut numbered = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (files, numbered);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        if stem
            .rsplit('.')
            .next()
            .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
            && stem.contains('.')
        {
            numbered.push(name.clone());
            continue;
        }
        let content = std::fs::read(entry.path()).unwrap_or_default();
        let content = content.strip_suffix(b"\n").unwrap_or(&content);
        let lsid = stem.rsplit('-').next().unwrap_or(stem).to_string();
        files.insert(lsid, hex::encode(Sha256::digest(content)));
    }
    (files, numbered)
}

/// Recording files (anything but `.json`) in a files destination, and the numbered ones.
pub fn other_files(dir: &Path) -> (BTreeSet<String>, Vec<String>) {
    let mut files = BTreeSet::new();
    let mut numbered = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".json") || name.starts_with('.') {
            continue;
        }
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() >= 3 && parts[parts.len() - 2].chars().all(|c| c.is_ascii_digit()) {
            numbered.push(name);
        } else {
            files.insert(name);
        }
    }
    (files, numbered)
}

/// Polls `check` every 200 ms until it returns true or `limit` passes.
pub async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if started.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A pipeline file for `sim` with the given destinations (TOML snippets) and transfers.
pub fn pipeline(
    dir: &Path,
    sim: &Sim,
    metrics_port: u16,
    destinations: &str,
    transfers: &str,
) -> PathBuf {
    let text = format!(
        r#"state_dir = "{state}"
start_from = "3d"

[metrics]
listen = "127.0.0.1:{metrics_port}"

[pipeline]
overlap = "2m"
settle_lag = "5s"
max_window = "12h"
retry = {{ max_attempts = 4, initial = "200ms", max_interval = "1s" }}

[[site]]
name = "sim"
host = "{host}"
client_id = "demo"
client_secret = {{ env = "BTIC_TEST_SECRET" }}
ca_file = "{ca}"
requests_per_second = 15
max_in_flight = 4

{destinations}

[[schedule]]
name = "often"
every = "1m"
{transfers}
"#,
        state = dir.join("state").display(),
        host = sim.host,
        ca = sim.ca.display(),
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A free loopback port (for the metrics and admin listener).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `btic dead-letter list --json`: every dead letter, as the command prints it.
pub fn dead_letters(config: &Path) -> Vec<serde_json::Value> {
    let out = btic()
        .args(["dead-letter", "list", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "btic dead-letter list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("dead-letter list --json prints a JSON array")
}

/// `btic replay --all`: asserts it succeeded and returns what it printed.
pub fn replay_all(config: &Path) -> String {
    let out = btic()
        .args(["replay", "--all", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "btic replay --all: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A tmpfs of a given size mounted for the test (root only), unmounted at the end.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a `size_mib` tmpfs at `path`, or says why it cannot (not root, no mount).
    pub fn mount(path: &Path, size_mib: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed (the test needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    /// Grows (or shrinks) the file system in place, keeping its files.
    pub fn resize(&self, size_mib: u64) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size_mib}m")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success(), "remounting {}", self.path.display());
    }

    /// Bytes used on the file system.
    pub fn used(&self) -> u64 {
        let total = fs4::total_space(&self.path).unwrap();
        let free = fs4::free_space(&self.path).unwrap();
        total - free
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// `GET /metrics` of the daemon listening on `port`, as text (empty if it did not answer).
pub async fn scrape_text(port: u16) -> String {
    match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
        Ok(answer) => answer.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// `GET /metrics` of the daemon listening on `port`: `name{labels}` -> value.
pub async fn scrape(port: u16) -> BTreeMap<String, f64> {
    scrape_text(port)
        .await
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}
