//! The last hours of the daemon, in memory, for the console's charts: every
//! [`Trends::every`] a sample of what each destination has delivered, each site's
//! watermark lag and API requests, and the queues' depths by stage — at most six hours
//! of samples, the oldest going first. Lost at a restart, like the charts of a `top`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::status::Status;
use crate::config::Config;
use crate::keys::{self, BudgetRecord};
use crate::queue::Queue;

/// How far back the charts reach.
const SPAN: Duration = Duration::from_secs(6 * 3600);

/// One sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// When (UNIX seconds).
    pub at: i64,
    /// Items delivered per destination since the process started.
    pub delivered: BTreeMap<String, u64>,
    /// Per site, the largest watermark lag, in seconds.
    pub lag: BTreeMap<String, f64>,
    /// Items waiting per stage (`fetch`, `fetched`, `download`, `deliver`, `rejected`).
    pub depth: BTreeMap<String, u64>,
    /// Per site, API requests sent since the previous sample.
    pub requests: BTreeMap<String, u64>,
}

/// The samples, shared between the sampler and the console.
#[derive(Debug)]
pub struct Trends {
    /// How often a sample is taken.
    pub every: Duration,
    samples: Mutex<VecDeque<Sample>>,
}

impl Default for Trends {
    fn default() -> Self {
        Trends::new(every_from_env())
    }
}

/// A minute, or `BTIC_TREND_SECONDS` (for tests that cannot wait minutes).
fn every_from_env() -> Duration {
    std::env::var("BTIC_TREND_SECONDS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(Duration::from_secs(60), Duration::from_secs)
}

impl Trends {
    /// No samples yet, one taken every `every`.
    pub fn new(every: Duration) -> Trends {
        Trends {
            every,
            samples: Mutex::new(VecDeque::new()),
        }
    }

    fn capacity(&self) -> usize {
        (SPAN.as_secs() / self.every.as_secs().max(1)).max(2) as usize
    }

    /// Adds `sample`, forgetting the oldest beyond six hours' worth.
    pub fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() >= self.capacity() {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Every sample, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.iter().cloned().collect()
    }

    /// Takes a sample every [`Trends::every`] until `stop`.
    pub async fn run(self: Arc<Self>, queue: Queue, config: Arc<Config>, stop: CancellationToken) {
        let mut previous = Utc::now().timestamp_millis();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.every) => {}
            }
            let now = Utc::now().timestamp_millis();
            match sample(&queue, &config, previous, now).await {
                Ok(s) => self.push(s),
                Err(e) => tracing::debug!("sampling the charts: {e}"),
            }
            previous = now;
        }
    }
}

/// A queue's stage: `fetch/main` → `fetch`.
fn stage_of(queue: &str) -> &str {
    queue.split('/').next().unwrap_or(queue)
}

async fn sample(
    queue: &Queue,
    config: &Config,
    since_ms: i64,
    now_ms: i64,
) -> Result<Sample, crate::queue::QueueError> {
    let status = Status::gather(config, queue, true).await?;
    let mut depth: BTreeMap<String, u64> = BTreeMap::new();
    for q in &status.queues {
        *depth.entry(stage_of(&q.name).to_string()).or_default() += q.depth;
    }
    let lag = status
        .sites
        .iter()
        .filter_map(|s| {
            let most = s
                .watermarks
                .iter()
                .map(|w| w.lag_seconds)
                .reduce(f64::max)?;
            Some((s.name.clone(), most))
        })
        .collect();
    let mut requests = BTreeMap::new();
    for site in &config.sites {
        let record: Option<BudgetRecord> = queue.state_get(&keys::budget(&site.name)).await?;
        let sent = record.map_or(0, |r| {
            r.sent_ms
                .iter()
                .filter(|ms| **ms > since_ms && **ms <= now_ms)
                .count() as u64
        });
        requests.insert(site.name.clone(), sent);
    }
    Ok(Sample {
        at: now_ms / 1000,
        delivered: super::counts::delivered_so_far(),
        lag,
        depth,
        requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_hours_of_samples_are_kept_and_no_more() {
        let trends = Trends::new(Duration::from_secs(60));
        for at in 0..400 {
            trends.push(Sample {
                at,
                ..Sample::default()
            });
        }
        let kept = trends.samples();
        assert_eq!(kept.len(), 360);
        assert_eq!(kept[0].at, 40);
        assert_eq!(stage_of("deliver/pg"), "deliver");
        assert_eq!(stage_of("fetched"), "fetched");
    }
}
