//! Recording download throughput: btic's appliance client against `curl`, both fetching
//! the same recording from the same `btic simulate` process in the same run, plus the
//! peak RSS of each. Size: `BTIC_BENCH_MB` (default 256). Run with
//! `cargo bench --bench download`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use btic::appliance::{ApplianceClient, Window, WindowBy};
use btic::config::{Proxy, Secret, SecretSource, Site};
use btic::model::Recording;
use btic::parse::SessionReader;

const ROUNDS: usize = 3;

struct Sim(Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs curl under `/usr/bin/time -v`: (seconds, peak RSS in KiB).
fn curl(ca: &Path, token: &str, url: &str, out: &Path) -> Option<(f64, u64)> {
    let started = Instant::now();
    let output = Command::new("/usr/bin/time")
        .arg("-v")
        .args(["curl", "-sS", "--fail", "-o"])
        .arg(out)
        .arg("--cacert")
        .arg(ca)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(url)
        .output()
        .ok()?;
    let seconds = started.elapsed().as_secs_f64();
    if !output.status.success() {
        eprintln!("curl failed: {}", String::from_utf8_lossy(&output.stderr));
        return None;
    }
    let rss = String::from_utf8_lossy(&output.stderr)
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes):")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0);
    Some((seconds, rss))
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is understood.
    let mb: u64 = std::env::var("BTIC_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let bytes = mb * 1024 * 1024;
    let have_curl = Command::new("curl").arg("--version").output().is_ok()
        && Path::new("/usr/bin/time").exists();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let mut child = Command::new(env!("CARGO_BIN_EXE_btic"))
        .args(["simulate", "--listen", "127.0.0.1:0", "--ca-out"])
        .arg(&ca)
        .args(["--sessions-per-day", "100", "--days", "1"])
        .args(["--recording-bytes", &bytes.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _sim = Sim(child);
    let addr = line
        .trim()
        .strip_prefix("listening on https://")
        .expect("the simulator's address")
        .to_string();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let site = Site {
        name: "bench".into(),
        host: addr.clone(),
        client_id: "demo".into(),
        client_secret: SecretSource::Plain(Secret::new("demo-secret")),
        ca_file: Some(ca.clone()),
        insecure_http: false,
        backup_password: None,
        requests_per_second: 100.0,
        requests_per_hour: 10_000,
        live_reserve: 1000,
        proxy: Proxy::Environment,
        max_in_flight: 1,
        timeout: Duration::from_secs(3600),
    };
    let spool = dir.path().join("spool");
    let client = ApplianceClient::new(&site, Secret::new("demo-secret"), &spool).unwrap();
    let lsid = runtime.block_on(async {
        let report = client
            .support_sessions(Window {
                by: WindowBy::End,
                from: client.appliance_now() - chrono::TimeDelta::days(1),
                duration: Duration::ZERO,
            })
            .await
            .unwrap();
        let path = report.body.unwrap().path;
        let file = BufReader::new(std::fs::File::open(&path).unwrap());
        let lsid = SessionReader::new(file)
            .map(|s| s.unwrap().session)
            .find(|s| s.has_screen_recording())
            .unwrap()
            .lsid;
        let _ = std::fs::remove_file(path);
        lsid
    });
    let url =
        format!("https://{addr}/api/reporting?generate_report=SupportSessionRecording&lsid={lsid}");
    // curl needs its own token (the client's is private to it).
    let token = if have_curl {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&ca)
            .args([
                "-u",
                "demo:demo-secret",
                "-d",
                "grant_type=client_credentials",
            ])
            .arg(format!("https://{addr}/oauth2/token"))
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["access_token"].as_str().unwrap_or_default().to_string()
    } else {
        String::new()
    };

    let mut client_secs = Vec::new();
    let mut curl_secs = Vec::new();
    let mut curl_rss = 0;
    let rss_before = status_kb("VmRSS:");
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let fetched = runtime
            .block_on(client.recording(Recording::Screen, &lsid))
            .unwrap();
        client_secs.push(started.elapsed().as_secs_f64());
        let body = fetched.body.unwrap();
        assert_eq!(body.bytes, bytes);
        let _ = std::fs::remove_file(&body.path);
        if have_curl {
            let out = dir.path().join("curl.bin");
            if let Some((secs, rss)) = curl(&ca, &token, &url, &out) {
                assert_eq!(std::fs::metadata(&out).unwrap().len(), bytes);
                curl_secs.push(secs);
                curl_rss = curl_rss.max(rss);
            }
            let _ = std::fs::remove_file(&out);
        }
    }
    let client_hwm = status_kb("VmHWM:");
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let client_mbps = mb as f64 / best(&client_secs);
    println!("recording download, {mb} MiB over HTTPS from `btic simulate`, best of {ROUNDS}");
    println!(
        "  btic client  {client_mbps:8.1} MiB/s   peak RSS {:6.1} MiB (whole bench process; {:.1} MiB before the downloads)   (writes, fsyncs and SHA-256s the file)",
        client_hwm as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
    if curl_secs.is_empty() {
        println!("  curl         SKIPPED: curl or /usr/bin/time is not available");
        return;
    }
    let curl_mbps = mb as f64 / best(&curl_secs);
    println!(
        "  curl         {curl_mbps:8.1} MiB/s   peak RSS {:6.1} MiB   (writes the file)",
        curl_rss as f64 / 1024.0
    );
    println!(
        "  ratio client/curl  {:.2}  (goal >= 0.8)",
        client_mbps / curl_mbps
    );
}
