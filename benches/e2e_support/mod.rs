//! What the end-to-end benchmarks share: `btic simulate` and `btic run` as child
//! processes of the release build, fresh PostgreSQL databases, the pipeline file, and
//! readings of a process's memory and CPU time, the daemon's queue depths and the load
//! average.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `btic` binary of this build profile.
pub fn btic() -> Command {
    Command::new(env!("CARGO_BIN_EXE_btic"))
}

/// The client secret the simulator and the pipeline file agree on.
pub const SECRET: &str = "demo-secret";

/// A positive number from the environment, or `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// A `btic simulate --truth` child process.
#[derive(Debug)]
pub struct Sim {
    child: Child,
    pub host: String,
    pub ca: PathBuf,
    client: reqwest::Client,
}

impl Sim {
    /// The simulator's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts the simulator on a free port with one day of `sessions` sessions.
    pub fn start(dir: &Path, sessions: u64) -> Sim {
        let ca = dir.join("ca.pem");
        let mut child = btic()
            .args(["simulate", "--listen", "127.0.0.1:0", "--truth", "--ca-out"])
            .arg(&ca)
            .args(["--days", "1", "--sessions-per-day"])
            .arg(sessions.to_string())
            .args(["--recording-bytes", "4096"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting btic simulate");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("reading the simulator's address");
        let host = line
            .trim()
            .rsplit("://")
            .next()
            .expect("simulate prints its address")
            .to_string();
        let pem = std::fs::read(&ca).expect("simulate writes its CA");
        let client = reqwest::Client::builder()
            .tls_certs_merge([reqwest::Certificate::from_pem(&pem).expect("a PEM CA")])
            .timeout(Duration::from_secs(600))
            .build()
            .expect("an HTTP client");
        Sim {
            child,
            host,
            ca,
            client,
        }
    }

    /// The appliance's now and the LSIDs of the sessions closed before `closed_before`.
    pub async fn truth(&self, closed_before: Option<i64>) -> (i64, Vec<String>) {
        let mut url = format!("https://{}/_sim/sessions", self.host);
        if let Some(t) = closed_before {
            url.push_str(&format!("?closed_before={t}"));
        }
        let v: serde_json::Value = self
            .client
            .get(url)
            .send()
            .await
            .expect("asking the simulator for its truth")
            .json()
            .await
            .expect("the truth is JSON");
        let lsids = v["sessions"]
            .as_array()
            .expect("a session list")
            .iter()
            .map(|s| s["lsid"].as_str().expect("an lsid").to_string())
            .collect();
        (v["appliance_now"].as_i64().expect("appliance_now"), lsids)
    }

    /// The closed sessions that ended 10 s or more before the appliance's now.
    pub async fn settled_truth(&self) -> (i64, Vec<String>) {
        let (now, _) = self.truth(Some(0)).await;
        let (_, lsids) = self.truth(Some(now - 10)).await;
        (now, lsids)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn admin() -> Option<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
        tokio_postgres::NoTls,
    )
    .await
    .ok()?;
    tokio::spawn(connection);
    Some(client)
}

/// A fresh PostgreSQL database, dropped by `drop_now`.
#[derive(Debug)]
pub struct Pg {
    pub name: String,
    pub url: String,
}

impl Pg {
    /// A new database, or `None` (with a SKIPPED line) when PostgreSQL is not there.
    pub async fn create(tag: &str) -> Option<Pg> {
        let Some(admin) = admin().await else {
            println!("SKIPPED: PostgreSQL is not reachable at 127.0.0.1:5432");
            return None;
        };
        let name = format!("btic_bench_{tag}_{}", std::process::id());
        // Two statements: CREATE DATABASE cannot share an implicit transaction.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .await
            .expect("dropping a leftover benchmark database");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("creating the benchmark database");
        Some(Pg {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            name,
        })
    }

    async fn client(&self) -> Option<tokio_postgres::Client> {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .ok()?;
        tokio::spawn(connection);
        Some(client)
    }

    /// Rows in `session` (0 before the schema exists).
    pub async fn count(&self) -> i64 {
        let Some(client) = self.client().await else {
            return 0;
        };
        client
            .query_one("SELECT count(*) FROM session", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(0)
    }

    /// LSIDs in `session` and how often each appears.
    pub async fn lsids(&self) -> BTreeMap<String, i64> {
        let Some(client) = self.client().await else {
            return BTreeMap::new();
        };
        client
            .query("SELECT lsid, count(*) FROM session GROUP BY lsid", &[])
            .await
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            .unwrap_or_default()
    }

    pub async fn drop_now(&self) {
        if let Some(admin) = admin().await {
            // Separate statements: DROP DATABASE cannot run in an implicit transaction.
            let _ = admin
                .batch_execute(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
                    self.name
                ))
                .await;
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {}", self.name))
                .await;
        }
    }
}

/// A `btic run` child process; killed when dropped.
///
/// `BTIC_BENCH_WRAPPER` (a command and its arguments, split at spaces) runs the daemon
/// under another program, a heap profiler say (`heaptrack -o /tmp/hold`); readings and
/// signals then go to the `btic` process the wrapper started.
#[derive(Debug)]
pub struct Daemon {
    pub child: Child,
    pid: u32,
}

impl Daemon {
    pub fn start(config: &Path, log: &Path) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("opening the daemon's log");
        let wrapper = std::env::var("BTIC_BENCH_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(env!("CARGO_BIN_EXE_btic"));
                c
            }
            None => btic(),
        };
        let child = command
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env("BTIC_BENCH_SECRET", SECRET)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting btic run");
        let pid = if wrapper.trim().is_empty() {
            child.id()
        } else {
            wrapped_btic(child.id())
        };
        Daemon { child, pid }
    }

    /// The `btic` process (under a wrapper, the wrapper's `btic` descendant).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// SIGTERM, and wait (at most 60 s) for the exit.
    pub fn terminate(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first process named `btic` among the descendants of `wrapper` (waits up to 30 s
/// for it to start); `wrapper` itself when there is none.
fn wrapped_btic(wrapper: u32) -> u32 {
    fn children(pid: u32) -> Vec<u32> {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let mut pending = vec![wrapper];
        while let Some(pid) = pending.pop() {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if pid != wrapper && name.trim() == "btic" {
                return pid;
            }
            pending.extend(children(pid));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    wrapper
}

/// A pipeline file for `sim` with one PostgreSQL destination `pg` at `url`; one-hour
/// windows keep report bodies at a few MB even for large days.
pub fn pipeline(dir: &Path, sim: &Sim, metrics_port: u16, url: &str) -> PathBuf {
    let text = format!(
        r#"state_dir = "{state}"
start_from = "2d"

[metrics]
listen = "127.0.0.1:{metrics_port}"

[pipeline]
overlap = "2m"
settle_lag = "5s"
max_window = "1h"
retry = {{ max_attempts = 4, initial = "200ms", max_interval = "2s" }}

[[site]]
name = "sim"
host = "{host}"
client_id = "demo"
client_secret = {{ env = "BTIC_BENCH_SECRET" }}
ca_file = "{ca}"
requests_per_second = 15
max_in_flight = 4

[[destination]]
name = "pg"
type = "postgres"
url = "{url}"

[[schedule]]
name = "often"
every = "1m"

[[schedule.transfer]]
site = "sim"
destination = "pg"
data = ["sessions"]
"#,
        state = dir.join("state").display(),
        host = sim.host,
        ca = sim.ca.display(),
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).expect("writing the pipeline file");
    path
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `Vm*` line of `/proc/PID/status`, in KiB.
pub fn vm_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Clock ticks per second of `/proc`'s CPU times.
fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
        .filter(|ticks: &f64| *ticks > 0.0)
        .unwrap_or(100.0)
}

/// The name of a process and its user + system CPU ticks and those of its waited-for
/// children, from `/proc/PID/stat`.
fn proc_ticks(pid: &str) -> Option<(String, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat[open + 1..close].to_owned();
    // Fields after the name, from the state (field 3): utime is field 14, cutime 16.
    let fields: Vec<u64> = stat[close + 1..]
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let own = fields.get(10)? + fields.get(11)?;
    let children = fields.get(12)? + fields.get(13)?;
    Some((name, own, children))
}

/// CPU seconds (user + system) process `pid` has used so far, its threads included.
pub fn cpu_seconds(pid: u32) -> f64 {
    proc_ticks(&pid.to_string()).map_or(0.0, |(_, own, _)| own as f64) / ticks_per_second()
}

/// CPU seconds used so far by every PostgreSQL process, including backends that have
/// ended (their time is counted in the postmaster's waited-for children).
pub fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let ticks: u64 = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|pid| proc_ticks(&pid))
        .filter(|(name, _, _)| name.starts_with("postgres"))
        .map(|(_, own, children)| own + children)
        .sum();
    ticks as f64 / ticks_per_second()
}

/// Busy CPU seconds of the whole machine so far (all CPUs, from `/proc/stat`: every
/// state but idle and iowait).
pub fn machine_busy_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let busy: u64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    busy as f64 / ticks_per_second()
}

/// The number of CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The 1-minute load average.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// `btic_queue_depth` per queue, from the daemon's `/metrics`.
pub async fn queue_depths(metrics_port: u16) -> BTreeMap<String, u64> {
    let Ok(answer) = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics")).await else {
        return BTreeMap::new();
    };
    let text = answer.text().await.unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("btic_queue_depth{")?;
            let queue = rest.split("queue=\"").nth(1)?.split('"').next()?;
            let value = line.rsplit(' ').next()?.parse::<f64>().ok()?;
            Some((queue.to_string(), value as u64))
        })
        .collect()
}

/// Sessions in progress the daemon asks for again at each run, and the requests its API
/// accounts sent in the rolling hour, summed over sites (`/admin/status`; 0 while the
/// daemon does not answer).
pub async fn open_sessions_and_requests(metrics_port: u16) -> (u64, u64) {
    let url = format!("http://127.0.0.1:{metrics_port}/admin/status");
    let Ok(answer) = reqwest::get(url).await else {
        return (0, 0);
    };
    let status: serde_json::Value = answer.json().await.unwrap_or_default();
    let sites = status["sites"].as_array().cloned().unwrap_or_default();
    let sum = |f: &dyn Fn(&serde_json::Value) -> Option<u64>| sites.iter().filter_map(f).sum();
    (
        sum(&|s| s["open_sessions"].as_u64()),
        sum(&|s| s["budget"]["used"].as_u64()),
    )
}

/// `btic_sessions_parsed_total` summed over sites (0 while the daemon does not answer).
pub async fn sessions_parsed(metrics_port: u16) -> u64 {
    let Ok(answer) = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics")).await else {
        return 0;
    };
    let text = answer.text().await.unwrap_or_default();
    text.lines()
        .filter(|line| line.starts_with("btic_sessions_parsed_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// MiB from KiB, one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}
