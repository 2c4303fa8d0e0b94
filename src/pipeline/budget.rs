//! The disk budget: fetch and download pause — no new bodies — while the state directory
//! (the queue database and the spool, as they take up the disk, sled's space
//! amplification included) is larger than `pipeline.max_state_bytes`, or while its file
//! system has less free space than `pipeline.min_free_bytes`; parse and deliver go on, so
//! the backlog drains, and the pause ends by itself.
//!
//! [`DiskBudget`] is shared: a monitor task measures every [`CHECK`] and publishes the
//! verdict (metrics, one WARN per change, the notifier's condition); fetch and download
//! ask [`DiskBudget::wait_clear`] before each request. The measure is the blocks the
//! files take (`st_blocks`), not their lengths, so sparse and preallocated files count
//! as what they cost.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

use crate::metrics;
use crate::queue::Queue;

/// How often the monitor measures.
pub const CHECK: Duration = Duration::from_secs(1);

/// Why fetching is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pause {
    /// The state directory is larger than `max_state_bytes`.
    StateBytes,
    /// Its file system has less free space than `min_free_bytes`.
    FreeBytes,
}

impl Pause {
    /// The metric label and `status` word.
    pub fn as_str(self) -> &'static str {
        match self {
            Pause::StateBytes => "state_bytes",
            Pause::FreeBytes => "free_bytes",
        }
    }
}

/// One measurement of the state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Measure {
    /// Bytes the state directory takes on disk.
    pub state_bytes: u64,
    /// Free bytes of its file system, for an unprivileged writer.
    pub free_bytes: u64,
}

/// The limits, and what the last measurement said.
#[derive(Debug)]
pub struct DiskBudget {
    state_dir: PathBuf,
    max_state_bytes: Option<u64>,
    min_free_bytes: u64,
    /// The current pause, if any; `None` until measured means "not paused".
    verdict: watch::Sender<Option<Pause>>,
}

impl DiskBudget {
    /// The budget of `state_dir` (`min_free_bytes` 0: no floor).
    pub fn new(state_dir: &Path, max_state_bytes: Option<u64>, min_free_bytes: u64) -> Arc<Self> {
        Arc::new(DiskBudget {
            state_dir: state_dir.to_path_buf(),
            max_state_bytes,
            min_free_bytes,
            verdict: watch::Sender::new(None),
        })
    }

    /// The budget of `config`'s state directory, with its pipeline limits.
    pub fn of(config: &Config) -> Arc<Self> {
        Self::new(
            &config.state_dir,
            config.pipeline.max_state_bytes,
            config.pipeline.min_free_bytes,
        )
    }

    /// A budget that never pauses (tests, tools).
    pub fn unlimited(state_dir: &Path) -> Arc<Self> {
        DiskBudget::new(state_dir, None, 0)
    }

    /// Measures the state directory now.
    pub fn measure(&self) -> std::io::Result<Measure> {
        measure(&self.state_dir)
    }

    /// What a measurement means under the limits, given the pause in force: a pause ends
    /// only a tenth below the limit that caused it (a tenth above the floor), so that
    /// the budget does not flap while sled compacts and the spool empties.
    pub fn judge(&self, m: &Measure, current: Option<Pause>) -> Option<Pause> {
        let over_max = |slack: u64| {
            self.max_state_bytes
                .is_some_and(|max| m.state_bytes > max - slack)
        };
        let under_floor =
            |slack: u64| self.min_free_bytes > 0 && m.free_bytes < self.min_free_bytes + slack;
        let max_slack = match current {
            Some(Pause::StateBytes) => self.max_state_bytes.unwrap_or(0) / 10,
            _ => 0,
        };
        let floor_slack = match current {
            Some(Pause::FreeBytes) => self.min_free_bytes / 10,
            _ => 0,
        };
        if under_floor(floor_slack) {
            Some(Pause::FreeBytes)
        } else if over_max(max_slack) {
            Some(Pause::StateBytes)
        } else {
            None
        }
    }

    /// The pause in force, if any.
    pub fn paused(&self) -> Option<Pause> {
        *self.verdict.borrow()
    }

    /// Records a verdict; returns whether it changed.
    pub fn set(&self, verdict: Option<Pause>) -> bool {
        self.verdict.send_if_modified(|now| {
            let changed = *now != verdict;
            *now = verdict;
            changed
        })
    }

    /// Waits while fetching is paused; `false` if `stop` fired first.
    pub async fn wait_clear(&self, stop: &CancellationToken) -> bool {
        let mut verdict = self.verdict.subscribe();
        loop {
            if verdict.borrow_and_update().is_none() {
                return true;
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                changed = verdict.changed() => if changed.is_err() { return true },
            }
        }
    }

    /// The limits as `status` shows them.
    pub fn limits(&self) -> (Option<u64>, u64) {
        (self.max_state_bytes, self.min_free_bytes)
    }

    /// Measures every `CHECK` until `stop`, publishing the measure and the verdict: the
    /// metrics at every round, a WARN (and `on_change`, for the notifier) at each change.
    ///
    /// Over `max_state_bytes` with nothing queued, fetching goes on (with one WARN):
    /// sled keeps the file space it once used, so waiting for the state to shrink would
    /// wait for ever, and there is no backlog a pause could let drain.
    pub async fn monitor(
        self: Arc<Self>,
        queue: Queue,
        stop: CancellationToken,
        mut on_change: impl FnMut(Option<Pause>, &Measure) + Send,
    ) {
        let mut told_empty = false;
        loop {
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.measure()).await {
                Ok(Ok(m)) => {
                    metrics::state_disk(m.state_bytes, m.free_bytes);
                    let mut verdict = self.judge(&m, self.paused());
                    if verdict == Some(Pause::StateBytes) && nothing_queued(&queue).await {
                        if !told_empty {
                            tracing::warn!(
                                state_dir = %self.state_dir.display(),
                                state_bytes = m.state_bytes,
                                max_state_bytes = self.max_state_bytes.unwrap_or(0),
                                "the state directory is over pipeline.max_state_bytes with nothing queued (the queue database keeps the space it once used): fetching goes on; raise the budget if this persists"
                            );
                            told_empty = true;
                        }
                        verdict = None;
                    } else if verdict.is_none() {
                        told_empty = false;
                    }
                    for reason in [Pause::StateBytes, Pause::FreeBytes] {
                        metrics::paused(reason.as_str(), verdict == Some(reason));
                    }
                    if self.set(verdict) {
                        match verdict {
                            Some(Pause::StateBytes) => tracing::warn!(
                                state_dir = %self.state_dir.display(),
                                state_bytes = m.state_bytes,
                                max_state_bytes = self.max_state_bytes.unwrap_or(0),
                                "the state directory is over pipeline.max_state_bytes: fetching and downloading pause until the backlog drains"
                            ),
                            Some(Pause::FreeBytes) => tracing::warn!(
                                state_dir = %self.state_dir.display(),
                                free_bytes = m.free_bytes,
                                min_free_bytes = self.min_free_bytes,
                                "the state directory's file system is under pipeline.min_free_bytes: fetching and downloading pause until space is free"
                            ),
                            None => tracing::info!(
                                state_bytes = m.state_bytes,
                                free_bytes = m.free_bytes,
                                "the state directory is within its disk budget again: fetching and downloading go on"
                            ),
                        }
                        on_change(verdict, &m);
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(state_dir = %self.state_dir.display(), "measuring the state directory: {e}");
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(CHECK) => {}
            }
        }
    }
}

/// Whether no stage queue holds an item (the dead letter aside: it waits for an
/// operator, not for a destination). A queue that cannot be read counts as holding some.
async fn nothing_queued(queue: &Queue) -> bool {
    queue
        .queues()
        .await
        .is_ok_and(|queues| queues.iter().all(|q| q.depth == 0))
}

/// The bytes a directory tree takes on disk, and its file system's free space.
pub fn measure(dir: &Path) -> std::io::Result<Measure> {
    Ok(Measure {
        state_bytes: disk_usage(dir)?,
        free_bytes: free_space(dir)?,
    })
}

/// The blocks the files under `dir` take, in bytes (what `du` counts).
fn disk_usage(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Not made yet, or removed meanwhile: it takes nothing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            // A file removed between listing and looking is simply not counted.
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total += blocks_bytes(&meta);
            }
        }
    }
    Ok(total)
}

#[cfg(unix)]
fn blocks_bytes(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.blocks() * 512
}

#[cfg(not(unix))]
fn blocks_bytes(meta: &std::fs::Metadata) -> u64 {
    meta.len()
}

/// Free bytes of the file system holding `dir` (available to an unprivileged writer).
fn free_space(dir: &Path) -> std::io::Result<u64> {
    // The nearest existing ancestor: the state directory may not exist yet.
    let mut at = dir;
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => {
                at = Path::new(".");
                break;
            }
        }
    }
    fs4::available_space(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_directory_is_measured_by_the_blocks_its_files_take() {
        let dir = tempfile::tempdir().unwrap();
        let before = measure(dir.path()).unwrap();
        assert!(before.free_bytes > 0);
        std::fs::create_dir_all(dir.path().join("spool/deep")).unwrap();
        std::fs::write(dir.path().join("spool/deep/a"), vec![7u8; 100_000]).unwrap();
        let after = measure(dir.path()).unwrap();
        assert!(
            after.state_bytes >= before.state_bytes + 100_000,
            "{before:?} -> {after:?}"
        );
        // A file that does not exist yet measures as nothing.
        assert_eq!(measure(&dir.path().join("absent")).unwrap().state_bytes, 0);
    }

    #[test]
    fn the_budget_pauses_for_free_space_first_then_for_size_and_a_zero_floor_is_off() {
        let dir = tempfile::tempdir().unwrap();
        let budget = DiskBudget::new(dir.path(), Some(1000), 500);
        let m = |state_bytes, free_bytes| Measure {
            state_bytes,
            free_bytes,
        };
        assert_eq!(budget.judge(&m(1001, 0), None), Some(Pause::FreeBytes));
        assert_eq!(budget.judge(&m(1001, 500), None), Some(Pause::StateBytes));
        assert_eq!(budget.judge(&m(1000, 499), None), Some(Pause::FreeBytes));
        assert_eq!(budget.judge(&m(1000, 500), None), None);
        let no_floor = DiskBudget::new(dir.path(), None, 0);
        assert_eq!(no_floor.judge(&m(u64::MAX, 0), None), None);
    }

    #[test]
    fn a_pause_ends_only_a_tenth_inside_the_limit_that_caused_it() {
        let dir = tempfile::tempdir().unwrap();
        let budget = DiskBudget::new(dir.path(), Some(1000), 500);
        let m = |state_bytes, free_bytes| Measure {
            state_bytes,
            free_bytes,
        };
        let size = Some(Pause::StateBytes);
        assert_eq!(
            budget.judge(&m(950, 10_000), size),
            size,
            "within the tenth"
        );
        assert_eq!(budget.judge(&m(900, 10_000), size), None);
        let free = Some(Pause::FreeBytes);
        assert_eq!(budget.judge(&m(0, 540), free), free, "within the tenth");
        assert_eq!(budget.judge(&m(0, 550), free), None);
        // Without a pause in force, the limits themselves count.
        assert_eq!(budget.judge(&m(950, 540), None), None);
    }

    #[tokio::test]
    async fn waiting_ends_when_the_pause_does_or_when_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let budget = DiskBudget::new(dir.path(), Some(1), 0);
        let stop = CancellationToken::new();
        assert!(budget.wait_clear(&stop).await, "not paused: at once");
        assert!(budget.set(Some(Pause::StateBytes)));
        assert!(!budget.set(Some(Pause::StateBytes)), "no change");
        let waiter = {
            let (budget, stop) = (budget.clone(), stop.clone());
            tokio::spawn(async move { budget.wait_clear(&stop).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        budget.set(None);
        assert!(waiter.await.unwrap());
        budget.set(Some(Pause::FreeBytes));
        stop.cancel();
        assert!(!budget.wait_clear(&stop).await);
    }
}
