//! The console's weight and speed: the overview with 10 sites (each with both
//! watermarks, a clock skew and a full hour of API requests), 1,000 dead letters across
//! ten queues and six hours of chart samples, and the dead-letter list of those 1,000 —
//! each asked 50 times over HTTP on loopback from this process's own server, printing
//! the page's size and the median and 95th-percentile answer times. The goal: the
//! overview at most 100 KB and answered within 50 ms.
//!
//! Run: `cargo bench --bench console`. Figures are in `benches/README.md`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use btic::config::{Config, ResolvedSecrets};
use btic::keys::{self, BudgetRecord, SkewRecord};
use btic::metrics::Health;
use btic::model::Report;
use btic::pipeline::access::Access;
use btic::pipeline::admin::Context;
use btic::pipeline::backfill::Backfills;
use btic::pipeline::trends::{Sample, Trends};
use btic::queue::Queue;
use tokio_util::sync::CancellationToken;

const SITES: usize = 10;
const DEAD_LETTERS: usize = 1000;
const ROUNDS: usize = 50;

fn pipeline(state: &std::path::Path) -> Config {
    let mut text = format!("state_dir = \"{}\"\n", state.display());
    for i in 0..SITES {
        text.push_str(&format!(
            "[[site]]\nname = \"site-{i}\"\nhost = \"appliance-{i}.example.com\"\nclient_id = \"c\"\nclient_secret = \"s\"\n"
        ));
    }
    text.push_str(
        "[[destination]]\nname = \"pg\"\ntype = \"sqlite\"\npath = \"/tmp/unused.sqlite\"\n",
    );
    text.push_str("[[schedule]]\nname = \"often\"\nevery = \"1m\"\n");
    for i in 0..SITES {
        text.push_str(&format!(
            "[[schedule.transfer]]\nsite = \"site-{i}\"\ndestination = \"pg\"\ndata = [\"sessions\"]\n"
        ));
    }
    Config::from_toml(std::path::Path::new("bench.toml"), &text).expect("a valid pipeline")
}

/// The state a busy daemon of 10 sites leaves: marks, skews, budgets, dead letters.
async fn fill(queue: &Queue, config: &Config) {
    let now = chrono::Utc::now();
    for site in &config.sites {
        for report in Report::ALL {
            let at = now.timestamp() - 120;
            queue
                .state_put(&keys::watermark(&site.name, report), &at)
                .await
                .unwrap();
        }
        let skew = SkewRecord {
            skew_ms: -350,
            measured_at: now.timestamp(),
        };
        queue
            .state_put(&keys::skew(&site.name), &skew)
            .await
            .unwrap();
        let ms = now.timestamp_millis();
        let budget = BudgetRecord {
            written_at: now.timestamp(),
            sent_ms: (0..1000).map(|i| ms - i * 3_000).collect(),
            per_hour: 10_000,
            live_reserve: 1_000,
            appliance: Some((15_000, 12_000, now.timestamp())),
            paused: None,
            held_by_appliance: false,
            refused: 0,
        };
        queue
            .state_put(&keys::budget(&site.name), &budget)
            .await
            .unwrap();
    }
    for i in 0..DEAD_LETTERS {
        let name = format!("fetch/site-{}", i % SITES);
        queue.push(&name, &vec![7u8; 512]).await.unwrap();
        let claimed = queue.next_ready::<Vec<u8>>(&name).await.unwrap().unwrap();
        let reason = format!(
            "SupportSession for site \"site-{}\": the appliance answered with an error: The report could not be generated for the requested range. (window {i})",
            i % SITES
        );
        queue
            .dead_letter(claimed.ticket, &reason, &[("stage", "fetch")])
            .await
            .unwrap();
    }
}

/// Six hours of samples, one a minute, for every site, destination and stage.
fn trends() -> Trends {
    let trends = Trends::new(Duration::from_secs(60));
    let start = chrono::Utc::now().timestamp() - 6 * 3600;
    for m in 0..360i64 {
        let names = |prefix: &str, f: &dyn Fn(usize) -> f64| -> BTreeMap<String, f64> {
            (0..SITES).map(|i| (format!("{prefix}{i}"), f(i))).collect()
        };
        trends.push(Sample {
            at: start + m * 60,
            delivered: [("pg".to_string(), (m * 137) as u64)].into(),
            lag: names("site-", &|i| (120 + (m as usize * 7 + i * 13) % 300) as f64),
            depth: ["fetch", "fetched", "download", "deliver"]
                .iter()
                .map(|s| (s.to_string(), ((m * 3) % 40) as u64))
                .collect(),
            requests: (0..SITES)
                .map(|i| (format!("site-{i}"), ((m as usize + i) % 17) as u64))
                .collect(),
        });
    }
    trends
}

async fn measure(client: &reqwest::Client, url: &str) -> (usize, Duration, Duration) {
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let body = client.get(url).send().await.unwrap().bytes().await.unwrap();
        times.push(started.elapsed());
        size = body.len();
    }
    times.sort();
    (size, times[ROUNDS / 2], times[ROUNDS * 95 / 100])
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(pipeline(&dir.path().join("state")));
        let queue = Queue::open(dir.path().join("state/queue")).unwrap();
        fill(&queue, &config).await;
        let stop = CancellationToken::new();
        let context = Context {
            queue: queue.clone(),
            config: config.clone(),
            secrets: Arc::new(ResolvedSecrets::default()),
            backfills: Arc::new(Backfills {
                queue: queue.clone(),
                config: config.clone(),
                fetchers: BTreeMap::new(),
                stop: stop.clone(),
                jobs: Default::default(),
                cancels: Default::default(),
            }),
            access: Arc::new(Access::new(None)),
            health: Arc::new(Health::new(Duration::from_secs(900))),
            trends: Arc::new(trends()),
            stop: stop.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = btic::console::router(context);
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        for (name, path) in [("overview", "/"), ("dead letters", "/dead-letters")] {
            let url = format!("http://{addr}{path}");
            let (size, median, p95) = measure(&client, &url).await;
            println!(
                "console {name}: {size} bytes ({:.1} KB), median {:.1} ms, p95 {:.1} ms over {ROUNDS} requests ({SITES} sites, {DEAD_LETTERS} dead letters)",
                size as f64 / 1000.0,
                median.as_secs_f64() * 1000.0,
                p95.as_secs_f64() * 1000.0
            );
        }
        stop.cancel();
    });
}
