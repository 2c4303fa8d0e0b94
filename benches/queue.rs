//! Queue throughput: durable hand-offs of ~2 KiB items against raw sled
//! insert + remove + flush + fsync of the log file of the same bytes, and durable pushes
//! from 1, 8 and 64 concurrent producers. Every queue figure includes waiting for the
//! group-commit flush. sled's flush alone ends in `sync_file_range`, which survives a
//! kill but not a power cut; the queue fsyncs the log file after it, and so does the
//! raw sled anchor (its flush-only figure is printed too, for what the fsync costs).
//!
//! `cargo bench --bench queue` runs the criterion groups and then prints a one-line
//! summary per figure and the ratio of durable hand-offs to raw sled operations, and to
//! bare sled transactions of a hand-off's shape (the design's own floor).

use std::time::{Duration, Instant};

use btic::queue::{Changes, Queue};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use tokio::runtime::Runtime;

const ITEM_BYTES: usize = 2048;
const PRODUCERS: [usize; 3] = [1, 8, 64];

fn payload(i: u64) -> Vec<u8> {
    let mut bytes = vec![(i % 251) as u8; ITEM_BYTES];
    bytes[..8].copy_from_slice(&i.to_be_bytes());
    bytes
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Times `count` durable hand-offs of 2 KiB items from `in` to `out` in a fresh
/// database (filling `in` is not timed).
fn durable_hand_offs(runtime: &Runtime, count: u64) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    runtime.block_on(async {
        let queue = Queue::open(dir.path().join("queue")).expect("open queue");
        let items: Vec<Vec<u8>> = (0..count).map(payload).collect();
        for chunk in items.chunks(256) {
            queue.push_many("in", chunk).await.expect("fill");
        }
        let started = Instant::now();
        for _ in 0..count {
            let claimed = queue
                .next_ready::<Vec<u8>>("in")
                .await
                .expect("next_ready")
                .expect("an item");
            let mut changes = Changes::new();
            changes.push("out", &claimed.item).expect("encode");
            queue
                .hand_off(claimed.ticket, changes)
                .await
                .expect("hand_off");
        }
        let elapsed = started.elapsed();
        queue.close().await.expect("close");
        elapsed
    })
}

/// Times `count` rounds of raw sled insert + remove + flush of the same bytes, each
/// flush followed by an fsync of sled's log file (the durability the queue gives).
fn raw_sled(count: u64) -> Duration {
    raw_sled_with(count, true)
}

/// `raw_sled` with or without the fsync after sled's flush.
fn raw_sled_with(count: u64, fsync: bool) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = sled::Config::new()
        .path(dir.path().join("raw"))
        .flush_every_ms(None)
        .open()
        .expect("open sled");
    let log = std::fs::File::open(dir.path().join("raw/db")).expect("sled's log file");
    let tree = db.open_tree("items").expect("tree");
    let items: Vec<Vec<u8>> = (0..count).map(payload).collect();
    let started = Instant::now();
    for (i, item) in items.into_iter().enumerate() {
        let key = (i as u64).to_be_bytes();
        tree.insert(key, item).expect("insert");
        tree.remove(key).expect("remove");
        db.flush().expect("flush");
        if fsync {
            log.sync_all().expect("fsync");
        }
    }
    started.elapsed()
}

/// Times `count` sled transactions of the shape a hand-off commits — over four trees,
/// removing an item, inserting the next, updating two counters — each followed by
/// sled's flush and an fsync of its log: what the queue's own design costs before any
/// of its code runs (claims, encoding, thread hand-offs, the group commit).
fn raw_sled_transactions(count: u64) -> Duration {
    use sled::Transactional;
    use sled::transaction::ConflictableTransactionError;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = sled::Config::new()
        .path(dir.path().join("raw"))
        .flush_every_ms(None)
        .open()
        .expect("open sled");
    let log = std::fs::File::open(dir.path().join("raw/db")).expect("sled's log file");
    let trees: Vec<sled::Tree> = ["items", "dead", "state", "meta"]
        .iter()
        .map(|name| db.open_tree(name).expect("tree"))
        .collect();
    let (items, dead, state, meta) = (&trees[0], &trees[1], &trees[2], &trees[3]);
    for i in 0..count {
        items.insert(i.to_be_bytes(), payload(i)).expect("fill");
    }
    db.flush().expect("flush");
    let started = Instant::now();
    for i in 0..count {
        let (from, to) = (i.to_be_bytes(), (count + i).to_be_bytes());
        (items, dead, state, meta)
            .transaction(|(items, _, _, meta)| {
                let item = items.remove(&from)?.unwrap_or_default();
                items.insert(&to, item)?;
                meta.insert(b"depth/in", &from)?;
                meta.insert(b"depth/out", &to)?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .expect("transaction");
        db.flush().expect("flush");
        log.sync_all().expect("fsync");
    }
    started.elapsed()
}

/// Times `count` durable pushes of 2 KiB items spread over `producers` tasks.
fn concurrent_pushes(runtime: &Runtime, producers: usize, count: u64) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    runtime.block_on(async {
        let queue = Queue::open(dir.path().join("queue")).expect("open queue");
        let per_producer = count.div_ceil(producers as u64);
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for p in 0..producers as u64 {
            let queue = queue.clone();
            tasks.spawn(async move {
                for i in 0..per_producer {
                    let item = payload(p * per_producer + i);
                    queue.push("in", &item).await.expect("push");
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("producer");
        }
        let elapsed = started.elapsed();
        queue.close().await.expect("close");
        elapsed
    })
}

fn bench(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("queue_2KiB");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    group.bench_function("durable_hand_off", |b| {
        b.iter_custom(|iters| durable_hand_offs(&runtime, iters))
    });
    group.bench_function("raw_sled_insert_remove_flush_fsync", |b| {
        b.iter_custom(raw_sled)
    });
    for producers in PRODUCERS {
        group.bench_with_input(
            BenchmarkId::new("durable_push_producers", producers),
            &producers,
            |b, &producers| b.iter_custom(|iters| concurrent_pushes(&runtime, producers, iters)),
        );
    }
    group.finish();
}

/// Measures each figure again in alternating rounds and prints the medians and the
/// ratio, so one run gives the numbers the README quotes and load from other processes
/// hits both sides of the ratio alike.
fn summary() {
    let runtime = runtime();
    let (count, rounds) = (1000u64, 7);
    let rate = |elapsed: Duration| count as f64 / elapsed.as_secs_f64();
    let median = |mut rates: Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let (mut hand_offs, mut raws, mut flush_only) = (Vec::new(), Vec::new(), Vec::new());
    let mut transactions = Vec::new();
    for _ in 0..rounds {
        hand_offs.push(rate(durable_hand_offs(&runtime, count)));
        raws.push(rate(raw_sled(count)));
        flush_only.push(rate(raw_sled_with(count, false)));
        transactions.push(rate(raw_sled_transactions(count)));
    }
    let (hand_off, raw) = (median(hand_offs), median(raws));
    println!("summary: durable hand-offs {hand_off:.0} items/s (median of {rounds} rounds)");
    println!(
        "summary: raw sled insert+remove+flush+fsync {raw:.0} items/s (median of {rounds} rounds)"
    );
    println!(
        "summary: raw sled insert+remove+flush without the fsync {:.0} items/s (what the fsync costs)",
        median(flush_only)
    );
    let transaction = median(transactions);
    println!(
        "summary: raw sled transaction over four trees (a hand-off's shape)+flush+fsync {transaction:.0} items/s, ratio to raw sled {:.2}",
        transaction / raw
    );
    println!("summary: ratio {:.2} (goal >= 0.8)", hand_off / raw);
    println!(
        "summary: durable hand-offs / raw sled transactions {:.2} (what the queue's code costs)",
        hand_off / transaction
    );
    for producers in PRODUCERS {
        let pushes = median(
            (0..3)
                .map(|_| rate(concurrent_pushes(&runtime, producers, count * 3)) * 3.0)
                .collect(),
        );
        println!("summary: durable pushes, {producers} producers: {pushes:.0} items/s");
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    // `cargo test --benches` runs each benchmark once as a smoke test; the summary is
    // for real benchmark runs only.
    if std::env::args().any(|arg| arg == "--bench") {
        summary();
    }
    Criterion::default().configure_from_args().final_summary();
}
