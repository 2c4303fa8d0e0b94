//! The API accounts' request budgets, kept in the state area (`budget/<site>`): every
//! few seconds while the daemon runs, so that a restart goes on counting the rolling
//! hour instead of starting it afresh (the appliance would not), and `status` shows
//! each site's budget with or without a daemon.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use super::fetch_worker::FetchStage;
use crate::appliance::{BudgetSnapshot, account_of};
use crate::keys::{self, BudgetRecord};
use crate::queue::{Queue, QueueError};

/// How often the budgets are written.
const EVERY: Duration = Duration::from_secs(5);

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The record of a budget as it is now.
pub fn record_of(b: &BudgetSnapshot) -> BudgetRecord {
    BudgetRecord {
        written_at: unix_ms(SystemTime::now()) / 1000,
        sent_ms: b.sent_at.iter().map(|t| unix_ms(*t)).collect(),
        per_hour: b.per_hour,
        live_reserve: b.live_reserve,
        appliance: b
            .appliance_limit
            .zip(b.appliance_remaining)
            .map(|(l, r)| (l, r, b.appliance_seen_at.map_or(0, |t| unix_ms(t) / 1000))),
        paused: b
            .paused
            .as_ref()
            .map(|(until, why)| (unix_ms(*until) / 1000, why.clone())),
        held_by_appliance: b.held_by_appliance,
        refused: b.refused,
    }
}

/// Counts the requests of the last hour, as recorded before a restart, in each
/// account's budget (once per account, from the latest record of its sites).
pub async fn restore(
    queue: &Queue,
    fetchers: &BTreeMap<String, FetchStage>,
) -> Result<(), QueueError> {
    let mut latest: BTreeMap<String, (BudgetRecord, &FetchStage)> = BTreeMap::new();
    for (site, stage) in fetchers {
        let Some(record) = queue.state_get::<BudgetRecord>(&keys::budget(site)).await? else {
            continue;
        };
        let account = account_of(stage.fetcher().site());
        if latest
            .get(&account)
            .is_none_or(|(r, _)| r.written_at < record.written_at)
        {
            latest.insert(account, (record, stage));
        }
    }
    for (record, stage) in latest.into_values() {
        let sent: Vec<SystemTime> = record
            .sent_ms
            .iter()
            .map(|ms| UNIX_EPOCH + Duration::from_millis((*ms).max(0) as u64))
            .collect();
        stage.fetcher().client().budget().restore(&sent);
    }
    Ok(())
}

/// Writes every site's budget record now (for `status` through the daemon).
pub async fn record_all(
    queue: &Queue,
    fetchers: &BTreeMap<String, FetchStage>,
) -> Result<(), QueueError> {
    for (site, stage) in fetchers {
        let record = record_of(&stage.fetcher().client().budget().snapshot());
        queue.state_put(&keys::budget(site), &record).await?;
    }
    Ok(())
}

/// Writes the records every few seconds while requests are made, until `shutdown`,
/// and once more then.
pub async fn keep(
    queue: Queue,
    fetchers: BTreeMap<String, FetchStage>,
    shutdown: CancellationToken,
) {
    // What was written last, without its time: nothing is written while nothing changes.
    let mut written: BTreeMap<String, BudgetRecord> = BTreeMap::new();
    let mut failed = BTreeSet::new();
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tokio::time::sleep(EVERY) => false,
        };
        for (site, stage) in &fetchers {
            let mut record = record_of(&stage.fetcher().client().budget().snapshot());
            let unchanged = written.get(site).is_some_and(|w| {
                record.written_at = w.written_at;
                *w == record
            });
            if unchanged {
                continue;
            }
            record.written_at = unix_ms(SystemTime::now()) / 1000;
            match queue.state_put(&keys::budget(site), &record).await {
                Ok(()) => {
                    failed.remove(site);
                    written.insert(site.clone(), record);
                }
                Err(e) => {
                    if failed.insert(site.clone()) {
                        tracing::warn!(site = %site, "recording the API budget: {e}");
                    }
                }
            }
        }
        if stopping {
            return;
        }
    }
}
