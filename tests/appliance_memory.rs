//! A 300 MB recording downloaded through the client keeps the process's memory growth
//! under 30 MB. In its own test binary (one test) so nothing else disturbs the reading.

mod skip;

use std::time::{Duration, Instant};

use btic::appliance::{ApplianceClient, Window, WindowBy};
use btic::config::{Proxy, Secret, SecretSource, Site};
use btic::model::Recording;
use btic::parse::SessionReader;
use btic::simulator::{Options, Simulator};

/// `VmRSS` or `VmHWM` of this process, in bytes.
fn status_bytes(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn a_300_mb_recording_downloads_with_under_30_mb_of_memory_growth() {
    if status_bytes("VmRSS:").is_none() {
        skip::missing(
            "a_300_mb_recording_downloads_with_under_30_mb_of_memory_growth",
            "/proc/self/status is not available on this system",
        );
        return;
    }
    const SIZE: u64 = 300 * 1024 * 1024;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let sim = Simulator::start(Options {
            recording_bytes: SIZE,
            sessions_per_day: 100,
            days: 1,
            ..Options::default()
        })
        .await
        .unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, sim.ca_pem.as_ref().unwrap()).unwrap();
        let site = Site {
            name: "sim".into(),
            host: sim.host(),
            client_id: "demo".into(),
            client_secret: SecretSource::Plain(Secret::new("demo-secret")),
            ca_file: Some(ca),
            insecure_http: false,
            backup_password: None,
            requests_per_second: 10.0,
            requests_per_hour: 10_000,
            live_reserve: 1000,
            proxy: Proxy::Environment,
            max_in_flight: 1,
            timeout: Duration::from_secs(600),
        };
        let client =
            ApplianceClient::new(&site, Secret::new("demo-secret"), &dir.path().join("spool"))
                .unwrap();
        // Warm up: TLS, token, a small download, so that steady-state allocations exist.
        client.api_info().await.unwrap();
        let now = client.appliance_now();
        let report = client
            .support_sessions(Window {
                by: WindowBy::End,
                from: now - chrono::TimeDelta::days(1),
                duration: Duration::ZERO,
            })
            .await
            .unwrap();
        let file = std::fs::File::open(&report.body.unwrap().path).unwrap();
        let lsid = SessionReader::new(std::io::BufReader::new(file))
            .map(|s| s.unwrap().session)
            .find(|s| s.has_screen_recording())
            .expect("a session with a screen recording")
            .lsid;
        let baseline = status_bytes("VmRSS:").unwrap();
        let started = Instant::now();
        let fetched = client.recording(Recording::Screen, &lsid).await.unwrap();
        let elapsed = started.elapsed();
        let peak = status_bytes("VmHWM:").unwrap();
        let body = fetched.body.unwrap();
        assert_eq!(body.bytes, SIZE);
        assert_eq!(std::fs::metadata(&body.path).unwrap().len(), SIZE);
        let growth = peak.saturating_sub(baseline);
        println!(
            "downloaded {} MB in {:.1} s; VmRSS before {} MB, VmHWM after {} MB, growth {:.1} MB",
            SIZE >> 20,
            elapsed.as_secs_f64(),
            baseline >> 20,
            peak >> 20,
            growth as f64 / 1048576.0
        );
        assert!(
            growth < 30 * 1024 * 1024,
            "memory grew by {growth} bytes while downloading"
        );
        sim.shutdown().await;
    });
}
