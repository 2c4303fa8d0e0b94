//! The crash test of the whole daemon: `btic run` is SIGKILLed at random moments and
//! restarted, again and again, while it fetches, parses, downloads and delivers. At the
//! end the destinations hold exactly the simulator's ground truth: every session once,
//! no duplicate rows, no numbered duplicate files — also of two windows the appliance
//! refused meanwhile, which wait in the dead letter until replayed. Iterations: `BTIC_CRASH_ITERATIONS`
//! (default 20); the seed is printed and can be fixed with `BTIC_CRASH_SEED`.

mod rig;

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rig::{
    Daemon, Pg, Sim, eventually, free_port, json_files, other_files, pipeline, sqlite_lsids,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_daemon_at_random_moments_loses_nothing_and_duplicates_nothing() {
    let iterations: u32 = std::env::var("BTIC_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("BTIC_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("crash test: {iterations} kills, BTIC_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let pg = Pg::create("killing_the_daemon_at_random_moments").await;
    let dir = tempfile::tempdir().unwrap();
    // Two windows the appliance refuses while the daemon is being killed: their requests
    // go to the dead letter in the transactions that move the watermark past them.
    let now = chrono::Utc::now().timestamp();
    let refused = [now - 30 * 3600, now - 10 * 3600].map(|t| t.to_string());
    let sim = Sim::start(
        dir.path(),
        &[
            "--days",
            "2",
            "--sessions-per-day",
            "300",
            "--recording-bytes",
            "65536",
            "--refuse-window",
            &refused[0],
            "--refuse-window",
            &refused[1],
        ],
    );
    let mut destinations = format!(
        "[[destination]]\nname = \"archive\"\ntype = \"files\"\ndirectory = \"{}\"\nformat = \"json\"\n\n[[destination]]\nname = \"lite\"\ntype = \"sqlite\"\npath = \"{}\"\n",
        dir.path().join("archive").display(),
        dir.path().join("btic.sqlite").display()
    );
    let mut transfers = String::from(
        "[[schedule.transfer]]\nsite = \"sim\"\ndestination = \"archive\"\ndata = [\"sessions\", \"recordings\"]\n[[schedule.transfer]]\nsite = \"sim\"\ndestination = \"lite\"\ndata = [\"sessions\"]\n",
    );
    if let Some(pg) = &pg {
        destinations.push_str(&format!(
            "\n[[destination]]\nname = \"pg\"\ntype = \"postgres\"\nurl = \"{}\"\n",
            pg.url
        ));
        transfers.push_str(
            "[[schedule.transfer]]\nsite = \"sim\"\ndestination = \"pg\"\ndata = [\"sessions\"]\n",
        );
    }
    let config = pipeline(dir.path(), &sim, free_port(), &destinations, &transfers);
    let log = dir.path().join("run.log");

    for i in 0..iterations {
        let daemon = Daemon::start(&config, &log);
        let wait = rng.random_range(150..1500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        daemon.kill();
        if i % 5 == 4 {
            let (files, _) = json_files(&dir.path().join("archive"));
            println!("after {} kills: {} session files", i + 1, files.len());
        }
    }

    // The appliance answers those windows again; the dead letter is replayed with no
    // daemon running (the command opens the state itself).
    sim.window_faults(&[], &[]).await;
    println!("{}", rig::replay_all(&config));

    let daemon = Daemon::start(&config, &log);
    let (now, _) = sim.truth(None).await;
    let (_, truth) = sim.truth(Some(now - 10)).await;
    let archive = dir.path().join("archive");
    let sqlite = dir.path().join("btic.sqlite");
    let complete = eventually(Duration::from_secs(180), async || {
        let (files, _) = json_files(&archive);
        let rows = sqlite_lsids(&sqlite);
        let pg_ok = match &pg {
            Some(pg) => {
                let rows = pg.lsids().await;
                truth.keys().all(|l| rows.contains_key(l))
            }
            None => true,
        };
        pg_ok
            && truth.iter().all(|(l, d)| files.get(l) == Some(d))
            && truth.keys().all(|l| rows.contains_key(l))
    })
    .await;
    let (code, took) = daemon.terminate();
    assert!(
        complete,
        "the destinations do not hold the ground truth after {iterations} kills (seed {seed}):\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");

    let (files, numbered) = json_files(&archive);
    assert!(
        numbered.is_empty(),
        "numbered duplicate session files (seed {seed}): {numbered:?}"
    );
    let (_, numbered) = other_files(&archive);
    assert!(
        numbered.is_empty(),
        "numbered duplicate recordings (seed {seed}): {numbered:?}"
    );
    let rows = sqlite_lsids(&sqlite);
    assert!(
        rows.values().all(|n| *n == 1),
        "duplicate rows in sqlite (seed {seed})"
    );
    let (_, closed) = sim.truth(None).await;
    assert!(files.keys().all(|l| closed.contains_key(l)));
    assert!(rows.keys().all(|l| closed.contains_key(l)));
    if let Some(pg) = &pg {
        let rows = pg.lsids().await;
        assert!(
            rows.values().all(|n| *n == 1),
            "duplicate rows in postgres (seed {seed})"
        );
        assert!(rows.keys().all(|l| closed.contains_key(l)));
        pg.drop_now().await;
    }
    // Nothing went to the dead letter on the way.
    let out = rig::btic()
        .args(["dead-letter", "list", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let letters: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        letters.as_array().map(Vec::len),
        Some(0),
        "dead letters: {letters}"
    );
}
