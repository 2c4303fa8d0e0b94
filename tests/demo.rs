//! `btic demo`, the README's first command: the simulator and the pipeline in one
//! process, data in `./btic-demo/`, metrics on 127.0.0.1:9464 (the built-in demo
//! pipeline's fixed addresses).

mod rig;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::BTreeSet;
use std::path::Path;

use rig::{btic, eventually, sqlite_lsids};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_fills_sqlite_and_files_with_the_same_sessions_and_serves_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo.out");
    let mut child = btic()
        .arg("demo")
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let demo = dir.path().join("btic-demo");
    // Three days of 300 sessions a day: the history reaches both destinations.
    let arrived = eventually(Duration::from_secs(180), async || {
        let rows = sqlite_lsids(&demo.join("btic.sqlite"));
        let (files, _) = session_files(&demo.join("files"));
        rows.len() >= 600 && rows.keys().eq(files.iter())
    })
    .await;
    let metrics = reqwest::get("http://127.0.0.1:9464/metrics")
        .await
        .and_then(|r| r.error_for_status());
    let metrics = match metrics {
        Ok(answer) => answer.text().await.unwrap_or_default(),
        Err(e) => format!("no metrics: {e}"),
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if stopping.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let banner = std::fs::read_to_string(&out).unwrap_or_default();
    let rows = sqlite_lsids(&demo.join("btic.sqlite"));
    let (files, numbered) = session_files(&demo.join("files"));
    assert!(
        arrived,
        "{} sessions in SQLite, {} files\n{banner}",
        rows.len(),
        files.len()
    );
    assert!(rows.values().all(|&n| n == 1), "a session twice in SQLite");
    assert!(numbered.is_empty(), "numbered duplicates: {numbered:?}");
    assert!(
        banner.contains("metrics              http://127.0.0.1:9464/metrics"),
        "{banner}"
    );
    assert!(
        metrics.contains("btic_sessions_parsed_total{") && metrics.contains("btic_build_info"),
        "{metrics}"
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "the demo did not stop cleanly within 15 s of SIGTERM: {status:?}"
    );
}

/// The LSIDs of the session XML files in the demo's files destination (not the
/// presentations), and the names that carry a conflict number (`x.1.xml`).
fn session_files(dir: &Path) -> (BTreeSet<String>, Vec<String>) {
    let mut lsids = BTreeSet::new();
    let mut numbered = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".xml") else {
            continue;
        };
        if stem
            .rsplit_once('.')
            .is_some_and(|(_, n)| n.chars().all(|c| c.is_ascii_digit()))
        {
            numbered.push(name);
        } else if !stem.contains("-presentation-") {
            lsids.insert(stem.rsplit('-').next().unwrap_or(stem).to_string());
        }
    }
    (lsids, numbered)
}
