//! The history: the last runs of each schedule and backfill job — windows, bodies,
//! bytes, sessions, dead letters, outcome, duration — in the state database, at most
//! [`KEEP`] of them (the oldest go first). `btic history` and the console read it.

use crate::keys::{self, RunRecord};
use crate::queue::{Changes, Queue, QueueError};

/// Runs kept; each schedule running every minute fills this in a few hours, a daily one
/// in years.
pub const KEEP: usize = 1000;

/// Records `run`, and forgets the oldest runs beyond [`KEEP`], in one transaction.
pub async fn record(queue: &Queue, run: &RunRecord) -> Result<(), QueueError> {
    let mut changes = Changes::new();
    changes.put_state(&keys::history(run.started_ms, &run.name), run)?;
    let kept = queue.state_keys(keys::HISTORY).await?;
    let over = (kept.len() + 1).saturating_sub(KEEP);
    for key in kept.iter().take(over) {
        changes.delete_state(key);
    }
    queue.commit(changes).await?;
    Ok(())
}

/// Every run kept, newest first.
pub async fn list(queue: &Queue) -> Result<Vec<RunRecord>, QueueError> {
    let mut runs: Vec<RunRecord> = queue
        .state_list::<RunRecord>(keys::HISTORY)
        .await?
        .into_iter()
        .map(|(_, run)| run)
        .collect();
    runs.reverse();
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::RunKind;

    fn run(started_ms: i64) -> RunRecord {
        RunRecord {
            kind: RunKind::Schedule,
            name: "often".into(),
            started_ms,
            duration_ms: 5,
            windows: 1,
            bodies: 1,
            bytes: 10,
            sessions: None,
            dead_lettered: 0,
            outcome: "ok".into(),
        }
    }

    #[tokio::test]
    async fn the_history_keeps_the_newest_runs_first_and_no_more_than_it_may() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().join("q")).unwrap();
        for i in 0..(KEEP as i64 + 5) {
            record(&queue, &run(1_000 + i)).await.unwrap();
        }
        let runs = list(&queue).await.unwrap();
        assert_eq!(runs.len(), KEEP);
        assert_eq!(runs[0].started_ms, 1_000 + KEEP as i64 + 4, "newest first");
        assert_eq!(runs[KEEP - 1].started_ms, 1_005, "the five oldest are gone");
        // Keys sort by time even across digit counts.
        record(&queue, &run(99_999_999_999)).await.unwrap();
        assert_eq!(list(&queue).await.unwrap()[0].started_ms, 99_999_999_999);
    }
}
