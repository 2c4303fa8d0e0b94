//! The gauges an operator reads, computed when they are read: before
//! every `/metrics` answer (the metrics router's refresh hook) and every few seconds for
//! `/healthz`. Every queue the daemon knows — each stage's, each site's and each
//! destination's, and the dead letter — reports its depth and oldest age, 0 when empty;
//! dead letters are counted per destination or queue, 0 once replayed; a watermark's lag
//! is appliance-now (the host's clock plus the skew last measured) minus the watermark,
//! so it grows while a site cannot be reached.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, TimeDelta, Utc};

use super::fetch_worker::FetchStage;
use super::items::{FETCHED, REJECTED, deliver_queue, download_queue, fetch_queue};
use crate::config::Config;
use crate::keys::{self, SkewRecord};
use crate::metrics;
use crate::model::Report;
use crate::queue::{Queue, QueueDepth};

/// The name the dead letter's own depth and age are published under.
pub const DEAD_LETTER: &str = "dead_letter";

/// What the gauges are computed from.
#[derive(Debug)]
pub struct Gauges {
    queue: Queue,
    /// Every queue the pipeline file makes.
    known: BTreeSet<String>,
    /// The dead-letter labels every destination and stage queue starts at 0 with.
    dead_labels: BTreeSet<String>,
    /// Each site's fetch stage (for its clock), by site.
    fetchers: BTreeMap<String, FetchStage>,
    /// Labels published with a non-zero dead-letter count, set back to 0 when drained.
    reported_dead: Mutex<BTreeSet<String>>,
}

/// The dead-letter gauge's label for a queue: the destination's name for its delivery
/// queue, else the queue itself (`fetch/<site>`, `download/<site>`, `fetched`).
fn dead_label(queue: &str) -> String {
    queue
        .strip_prefix("deliver/")
        .map_or_else(|| queue.to_string(), str::to_string)
}

impl Gauges {
    /// The gauges of `config`'s pipeline.
    pub fn new(queue: Queue, config: &Config, fetchers: BTreeMap<String, FetchStage>) -> Gauges {
        let mut known: BTreeSet<String> = [FETCHED, REJECTED].map(String::from).into();
        for site in &config.sites {
            known.insert(fetch_queue(&site.name));
            known.insert(download_queue(&site.name));
        }
        for d in &config.destinations {
            known.insert(deliver_queue(&d.name));
        }
        let dead_labels = known.iter().map(|q| dead_label(q)).collect();
        Gauges {
            queue,
            known,
            dead_labels,
            fetchers,
            reported_dead: Mutex::new(BTreeSet::new()),
        }
    }

    /// Publishes every gauge; returns the queues' depths (for `/healthz`).
    pub async fn publish(&self) -> Vec<QueueDepth> {
        let depths = self.publish_queues().await;
        self.publish_dead_letters().await;
        self.publish_lags().await;
        self.publish_budgets();
        depths
    }

    /// Each site's API account budget, as its client counts it now.
    fn publish_budgets(&self) {
        for (site, stage) in &self.fetchers {
            let b = stage.fetcher().client().budget().snapshot();
            metrics::api_budget(site, b.used, b.remaining, b.paused.is_some(), b.refused);
        }
    }

    async fn publish_queues(&self) -> Vec<QueueDepth> {
        let mut names = self.known.clone();
        if let Ok(queues) = self.queue.queues().await {
            names.extend(queues.into_iter().map(|q| q.name));
        }
        let mut depths = Vec::with_capacity(names.len());
        for name in names {
            let Ok(depth) = self.queue.depth(&name).await else {
                continue;
            };
            let oldest = match depth {
                0 => None,
                _ => self.queue.oldest_age(&name).await.ok().flatten(),
            };
            metrics::queue_state(&name, depth, oldest);
            depths.push(QueueDepth { name, depth });
        }
        depths
    }

    async fn publish_dead_letters(&self) {
        type Acc = (BTreeMap<String, u64>, u64, Option<SystemTime>);
        let summary = self
            .queue
            .fold_dead_letters(
                (BTreeMap::new(), 0, None),
                |(counts, total, oldest): &mut Acc, letter| {
                    *counts.entry(dead_label(&letter.queue)).or_default() += 1;
                    *total += 1;
                    let seen = letter.first_seen;
                    if oldest.is_none_or(|o| seen < o) {
                        *oldest = Some(seen);
                    }
                },
            )
            .await;
        let Ok((counts, total, oldest)) = summary else {
            return;
        };
        let age = oldest.map(|t| SystemTime::now().duration_since(t).unwrap_or_default());
        metrics::queue_state(DEAD_LETTER, total, age);
        let mut reported = self.reported_dead.lock().expect("gauges lock");
        for label in self.dead_labels.iter().chain(reported.iter()) {
            if !counts.contains_key(label) {
                metrics::dead_letters(label, 0);
            }
        }
        for (label, n) in &counts {
            metrics::dead_letters(label, *n);
        }
        *reported = counts.into_keys().collect();
    }

    async fn publish_lags(&self) {
        for (site, stage) in &self.fetchers {
            let client = stage.fetcher().client();
            // The client's clock once it has measured; else the skew last recorded.
            let now = match client.skew() {
                Some(_) => client.appliance_now(),
                None => {
                    let skew: Option<SkewRecord> =
                        self.queue.state_get(&keys::skew(site)).await.ok().flatten();
                    Utc::now() + TimeDelta::milliseconds(skew.map_or(0, |s| s.skew_ms))
                }
            };
            for report in Report::ALL {
                let key = keys::watermark(site, report);
                let Ok(Some(at)) = self.queue.state_get::<i64>(&key).await else {
                    continue;
                };
                let Some(watermark) = DateTime::from_timestamp(at, 0) else {
                    continue;
                };
                let lag = (now - watermark).to_std().unwrap_or(Duration::ZERO);
                metrics::watermark(site, report.as_str(), at, lag);
            }
        }
    }
}
