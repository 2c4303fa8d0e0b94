//! Crash test of the durable queue: a child process (this binary again, selected by an
//! environment variable) pushes items and hands them off between three queues and a
//! "delivered" sink, printing an acknowledgement only after each call returned (that
//! is, after the flush). The parent SIGKILLs it at a random moment, reopens the
//! database and checks that every acknowledged item is present exactly once across the
//! queues, the dead letter and the sink, that everything decodes, and that ids never go
//! backwards. Then it starts the next child on the same database.
//!
//! `BTIC_CRASH_ITERATIONS` (default 100) sets the number of kills, `BTIC_CRASH_SEED`
//! replays a run. A last round stops the child cleanly instead of killing it.
//!
//! Then the same with power cuts instead of kills: the database on the power-cut file
//! system (`tests/powercut/`), which at each cut forgets everything not fsynced, the
//! child killed right after; `BTIC_CRASH_POWER_CUTS` (default 100) cuts. A kill keeps
//! every write in the page cache, a cut only what was fsynced, so this is the test of
//! "durable before reported". Needs root and /dev/fuse: skipped with a reason
//! elsewhere, failed under `CI`.

mod powercut;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use btic::queue::{Changes, DeadLetterFilter, Queue, QueueError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

const CHILD_DIR: &str = "BTIC_CRASH_CHILD_DIR";
const CHILD_SEED: &str = "BTIC_CRASH_CHILD_SEED";
const CHILD_TAG_BASE: &str = "BTIC_CRASH_CHILD_TAG_BASE";
const CHILD_CLEAN_MS: &str = "BTIC_CRASH_CHILD_CLEAN_MS";

/// Tags of probe items the parent pushes to check id growth; never touched by children.
const PROBE_QUEUE: &str = "probe";
const QUEUES: [&str; 3] = ["a", "b", "c"];
const SINK_PREFIX: &str = "delivered/";

/// The item moved around. The padding varies the record sizes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Token {
    tag: u64,
    padding: Vec<u8>,
}

fn main() -> ExitCode {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        return child(Path::new(&dir));
    }
    parent()
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------- child

fn child(dir: &Path) -> ExitCode {
    let seed = env_u64(CHILD_SEED).unwrap_or(0);
    let tag_base = env_u64(CHILD_TAG_BASE).unwrap_or(0);
    let clean_ms = env_u64(CHILD_CLEAN_MS);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let queue = match Queue::open(dir) {
            Ok(queue) => queue,
            Err(error) => {
                ack(&format!("open-failed {error}"));
                return ExitCode::from(3);
            }
        };
        ack("opened");
        let mut tasks = tokio::task::JoinSet::new();
        for producer in 0..2u64 {
            let (queue, mut rng) = (queue.clone(), StdRng::seed_from_u64(seed ^ producer));
            let base = tag_base + producer * 500_000_000;
            tasks.spawn(async move { produce(queue, &mut rng, base).await });
        }
        for (i, (from, to)) in [("a", "b"), ("a", "b"), ("b", "c"), ("b", "c")]
            .into_iter()
            .enumerate()
        {
            let (queue, mut rng) = (
                queue.clone(),
                StdRng::seed_from_u64(seed ^ (100 + i as u64)),
            );
            tasks.spawn(async move { forward(queue, &mut rng, from, to).await });
        }
        {
            let queue = queue.clone();
            tasks.spawn(async move { sink(queue).await });
        }
        {
            let queue = queue.clone();
            tasks.spawn(async move { replayer(queue).await });
        }
        let limit = Duration::from_millis(clean_ms.unwrap_or(30_000));
        let failed = tokio::select! {
            Some(result) = tasks.join_next() => Some(match result {
                Ok(Err(error)) => error.to_string(),
                Ok(Ok(())) => "a worker ended".to_owned(),
                Err(join) => join.to_string(),
            }),
            _ = tokio::time::sleep(limit) => None,
        };
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        if let Some(error) = failed {
            ack(&format!("worker-failed {error}"));
            return ExitCode::from(4);
        }
        match queue.close().await {
            Ok(()) => {
                ack("closed");
                ExitCode::SUCCESS
            }
            Err(error) => {
                ack(&format!("close-failed {error}"));
                ExitCode::from(5)
            }
        }
    })
}

/// Prints one acknowledgement line (stdout is line-buffered: one write per line).
fn ack(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

fn token(rng: &mut StdRng, tag: u64) -> Token {
    let len = rng.random_range(0..600);
    Token {
        tag,
        padding: vec![(tag % 251) as u8; len],
    }
}

async fn produce(queue: Queue, rng: &mut StdRng, base: u64) -> Result<(), QueueError> {
    let mut next = base;
    loop {
        let n = rng.random_range(1..4);
        let tokens: Vec<Token> = (0..n).map(|i| token(rng, next + i)).collect();
        next += n;
        let ids = if rng.random_bool(0.3) {
            // A batch pushed together with a state record, as the scheduler does.
            let mut changes = Changes::new();
            for t in &tokens {
                changes.push("a", t)?;
            }
            changes.put_state("watermark", &next)?;
            queue.commit(changes).await?
        } else {
            queue.push_many("a", &tokens).await?
        };
        for (t, id) in tokens.iter().zip(ids) {
            ack(&format!("push {} {}", t.tag, id));
        }
        // Leave the stages room to keep up, so items flow all the way to the sink.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..3))).await;
    }
}

async fn forward(queue: Queue, rng: &mut StdRng, from: &str, to: &str) -> Result<(), QueueError> {
    loop {
        let claimed = queue.wait_ready::<Token>(from).await?;
        let roll = rng.random_range(0..100);
        if to == "c" && roll < 10 {
            let delay = Duration::from_millis(rng.random_range(0..4));
            queue.retry_later(claimed.ticket, "flaky", delay).await?;
        } else if to == "c" && roll < 15 {
            queue
                .dead_letter(claimed.ticket, "hopeless", &[("stage", "crash-test")])
                .await?;
        } else {
            let mut changes = Changes::new();
            changes.push(to, &claimed.item)?;
            queue.hand_off(claimed.ticket, changes).await?;
        }
    }
}

async fn sink(queue: Queue) -> Result<(), QueueError> {
    loop {
        let claimed = queue.wait_ready::<Token>("c").await?;
        let tag = claimed.item.tag;
        let mut changes = Changes::new();
        changes.put_state(&format!("{SINK_PREFIX}{tag:020}"), &tag)?;
        queue.hand_off(claimed.ticket, changes).await?;
        ack(&format!("delivered {tag}"));
    }
}

async fn replayer(queue: Queue) -> Result<(), QueueError> {
    loop {
        tokio::time::sleep(Duration::from_millis(15)).await;
        queue.replay(DeadLetterFilter::All).await?;
    }
}

// ---------------------------------------------------------------- parent

/// What the parent knows from all children's acknowledgements so far.
#[derive(Debug, Default)]
struct Ledger {
    /// Acknowledged pushes: tag -> id.
    pushed: BTreeMap<u64, u64>,
    /// Acknowledged deliveries.
    delivered: BTreeSet<u64>,
    /// The highest id seen anywhere so far.
    max_id: Option<u64>,
}

struct Run {
    lines: Vec<String>,
    exit: std::process::ExitStatus,
}

fn run_child(
    exe: &Path,
    dir: &Path,
    seed: u64,
    tag_base: u64,
    kill_after: Option<Duration>,
    before_kill: impl FnOnce(),
) -> Run {
    let mut command = Command::new(exe);
    command
        .env(CHILD_DIR, dir)
        .env(CHILD_SEED, seed.to_string())
        .env(CHILD_TAG_BASE, tag_base.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if kill_after.is_none() {
        command.env(CHILD_CLEAN_MS, "300");
    }
    let mut child = command.spawn().expect("spawning the crash child");
    let stdout = child.stdout.take().expect("piped stdout");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        })
    };
    if let Some(delay) = kill_after {
        std::thread::sleep(delay);
        before_kill();
        // `Child::kill` sends SIGKILL on Unix: no destructor, no flush, no goodbye.
        let _ = child.kill();
    }
    let exit = child.wait().expect("waiting for the crash child");
    reader.join().expect("stdout reader");
    let lines = std::mem::take(&mut *lines.lock().unwrap());
    Run { lines, exit }
}

/// The power-cut rounds: each child runs on the power-cut mount, the power is cut at a
/// random moment and the child killed; the database is checked on the next mount, which
/// holds only what was fsynced. Returns the cuts that passed.
fn power_cuts(
    exe: &Path,
    runtime: &tokio::runtime::Runtime,
    rng: &mut StdRng,
    seed: u64,
) -> Result<u64, ()> {
    if let Err(why) = powercut::PowerCut::available() {
        if std::env::var_os("CI").is_some() {
            println!("test power_cuts ... FAILED: FUSE is needed under CI: {why}");
            return Err(());
        }
        println!("test power_cuts ... SKIPPED: {why}");
        return Ok(0);
    }
    let cuts = env_u64("BTIC_CRASH_POWER_CUTS").unwrap_or(100);
    println!("running queue power-cut test: {cuts} cuts, BTIC_CRASH_SEED={seed}");
    let temp = tempfile::tempdir().expect("temp dir");
    let (backing, mnt) = (temp.path().join("backing"), temp.path().join("mnt"));
    let dir = mnt.join("queue");
    let mut ledger = Ledger::default();
    let mut fsyncs = (0, 0);
    for cut in 0..cuts {
        let fs = powercut::PowerCut::mount(&backing, &mnt).expect("mounting");
        let after = Duration::from_millis(rng.random_range(0..400));
        let run = run_child(
            exe,
            &dir,
            rng.random(),
            (1000 + cut) * 1_000_000_000_000,
            Some(after),
            || fs.cut(),
        );
        let counts = fs.unmount().expect("unmounting");
        fsyncs = (fsyncs.0 + counts.file_fsyncs, fsyncs.1 + counts.dir_fsyncs);
        let fs = powercut::PowerCut::mount(&backing, &mnt).expect("mounting");
        let problems = check(runtime, &dir, &mut ledger, &run);
        fs.unmount().expect("unmounting");
        if !problems.is_empty() {
            println!(
                "test power_cut_{cut}_after_{}ms ... FAILED (BTIC_CRASH_SEED={seed})",
                after.as_millis()
            );
            for problem in problems.iter().take(20) {
                println!("    {problem}");
            }
            return Err(());
        }
        if cut % 25 == 0 || cut + 1 == cuts {
            println!(
                "test power_cut_{cut}_after_{}ms ... ok ({} acknowledged pushes, {} deliveries so far; {} file and {} directory fsyncs)",
                after.as_millis(),
                ledger.pushed.len(),
                ledger.delivered.len(),
                fsyncs.0,
                fsyncs.1
            );
        }
    }
    Ok(cuts)
}

/// Reopens the database and checks every invariant; returns a description of each
/// violation.
fn check(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    ledger: &mut Ledger,
    run: &Run,
) -> Vec<String> {
    let mut problems = Vec::new();
    let before_max = ledger.max_id;
    for line in &run.lines {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some("push"), Some(tag), Some(id)) => {
                let (tag, id): (u64, u64) = (tag.parse().unwrap(), id.parse().unwrap());
                if let Some(max) = before_max.filter(|max| id <= *max) {
                    problems.push(format!("id {id} acknowledged after id {max} existed"));
                }
                ledger.pushed.insert(tag, id);
                ledger.max_id = ledger.max_id.max(Some(id));
            }
            (Some("delivered"), Some(tag), None) => {
                ledger.delivered.insert(tag.parse().unwrap());
            }
            (Some("opened" | "closed"), None, None) => {}
            _ => problems.push(format!("child said: {line}")),
        }
    }
    let queue = match Queue::open(dir) {
        Ok(queue) => queue,
        Err(error) => {
            problems.push(format!("database does not reopen: {error}"));
            return problems;
        }
    };
    runtime.block_on(async {
        let seen: Arc<Mutex<Vec<(u64, String, u64)>>> = Arc::default();
        let report = {
            let seen = seen.clone();
            queue
                .verify(move |entry| {
                    if entry.queue == PROBE_QUEUE {
                        return Ok(());
                    }
                    let token: Token = entry.decode().map_err(|e| e.to_string())?;
                    let place = if entry.dead {
                        "dead letter"
                    } else {
                        entry.queue
                    };
                    seen.lock()
                        .unwrap()
                        .push((token.tag, place.to_owned(), entry.id.0));
                    Ok(())
                })
                .await
        };
        match report {
            Ok(report) => problems.extend(report.problems),
            Err(error) => problems.push(format!("verify failed: {error}")),
        }
        let mut places: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (tag, place, id) in seen.lock().unwrap().iter() {
            places.entry(*tag).or_default().push(place.clone());
            ledger.max_id = ledger.max_id.max(Some(*id));
        }
        match queue.state_list::<u64>(SINK_PREFIX).await {
            Ok(delivered) => {
                for (key, tag) in delivered {
                    if key != format!("{SINK_PREFIX}{tag:020}") {
                        problems.push(format!("sink key {key} holds tag {tag}"));
                    }
                    places.entry(tag).or_default().push("delivered".to_owned());
                }
            }
            Err(error) => problems.push(format!("reading the sink: {error}")),
        }
        for (tag, found) in &places {
            if found.len() > 1 {
                problems.push(format!("tag {tag} is in {} places: {found:?}", found.len()));
            }
        }
        for tag in ledger.pushed.keys() {
            if !places.contains_key(tag) {
                problems.push(format!("acknowledged push of tag {tag} is lost"));
            }
        }
        for tag in &ledger.delivered {
            if places.get(tag).is_none_or(|p| p != &["delivered"]) {
                problems.push(format!("acknowledged delivery of tag {tag} is lost"));
            }
        }
        for name in QUEUES {
            if let Err(error) = queue.depth(name).await {
                problems.push(format!("depth of {name}: {error}"));
            }
        }
        match queue.push(PROBE_QUEUE, &0u8).await {
            Ok(id) if Some(id.0) <= ledger.max_id => problems.push(format!(
                "new id {id} is not above the highest seen {:?}",
                ledger.max_id
            )),
            Ok(id) => ledger.max_id = Some(id.0),
            Err(error) => problems.push(format!("pushing a probe: {error}")),
        }
        if let Err(error) = queue.close().await {
            problems.push(format!("closing: {error}"));
        }
    });
    problems
}

fn parent() -> ExitCode {
    let iterations = env_u64("BTIC_CRASH_ITERATIONS").unwrap_or(100);
    let seed = env_u64("BTIC_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    println!("\nrunning queue crash test: {iterations} kills, BTIC_CRASH_SEED={seed}");
    let started = Instant::now();
    let exe: PathBuf = std::env::current_exe().expect("own executable");
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("queue");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ledger = Ledger::default();
    let (mut passed, mut failed) = (0u64, 0u64);
    for iteration in 0..=iterations {
        let clean = iteration == iterations;
        let kill_after = (!clean).then(|| Duration::from_millis(rng.random_range(0..250)));
        let child_seed: u64 = rng.random();
        let run = run_child(
            &exe,
            &dir,
            child_seed,
            iteration * 1_000_000_000_000,
            kill_after,
            || {},
        );
        let mut problems = check(&runtime, &dir, &mut ledger, &run);
        if clean && !run.exit.success() {
            problems.push(format!("clean shutdown exited with {}", run.exit));
        }
        let name = if clean {
            "clean_shutdown_then_reopen".to_owned()
        } else {
            format!(
                "kill_{iteration}_after_{}ms",
                kill_after.unwrap_or_default().as_millis()
            )
        };
        if problems.is_empty() {
            passed += 1;
            if clean || iteration % 25 == 0 {
                println!(
                    "test {name} ... ok ({} acknowledged pushes, {} deliveries so far)",
                    ledger.pushed.len(),
                    ledger.delivered.len()
                );
            }
        } else {
            failed += 1;
            println!("test {name} ... FAILED (BTIC_CRASH_SEED={seed}, iteration {iteration})");
            for problem in problems.iter().take(20) {
                println!("    {problem}");
            }
            // Later iterations would only repeat the damage; stop here with the seed.
            break;
        }
    }
    if failed == 0 {
        match power_cuts(&exe, &runtime, &mut rng, seed) {
            Ok(cuts) => passed += cuts,
            Err(()) => failed += 1,
        }
    }
    let status = if failed == 0 { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {status}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out; finished in {:.2}s\n",
        started.elapsed().as_secs_f64()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
