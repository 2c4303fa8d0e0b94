//! Group commit: at most one fsync at a time, each covering every transaction committed
//! before it started, awaited by everyone who needs it.
//!
//! A writer calls `after_commit` on its blocking thread right after its transaction
//! commits and gets an epoch number; it is durable once that epoch is reported done.
//! Epochs are taken when a flush *starts*, so a flush covers every commit whose
//! `after_commit` ran before it. If no flush is running, the writer runs it itself on
//! the thread it already has (no thread hand-off on an idle system). If one is running,
//! the writer marks a flush as pending and returns; when the running flush ends, the
//! flusher thread starts the next one for all writers that queued up meanwhile, so one
//! fsync serves many transactions under load. With `interval` set, consecutive fsyncs
//! start at least that far apart.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::QueueError;
use super::storage::{Store, release_deferred_frees};

/// What has been made durable so far.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// The highest epoch whose flush finished.
    durable: u64,
    /// Set when a flush failed; every later wait fails with it.
    failed: Option<String>,
}

#[derive(Debug)]
struct State {
    /// The epoch the next flush to start will have.
    next_epoch: u64,
    /// Whether a flush is running (by a writer or by the flusher thread).
    flushing: bool,
    /// Whether a writer waits for a flush that has not started yet.
    pending: bool,
    /// When the last flush started, for the minimum interval.
    last_start: Option<Instant>,
    /// Set on close: the flusher thread ends and new requests fail.
    stopped: bool,
}

#[derive(Debug)]
struct Shared {
    store: Arc<Store>,
    interval: Duration,
    state: Mutex<State>,
    /// Wakes the flusher thread: set when `pending` is set or a flush ends.
    wake: Condvar,
    progress: watch::Sender<Progress>,
}

/// The group commit of one database.
#[derive(Debug)]
pub(crate) struct Flusher {
    shared: Arc<Shared>,
    /// Serves pending flushes; ends when `stop` sets `stopped`, joined there.
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded state is a few flags and counters that stay consistent even if a
    // holder panicked.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Flusher {
    /// Starts the flusher thread for `store`.
    pub(crate) fn start(store: Arc<Store>, interval: Duration) -> Result<Flusher, QueueError> {
        let shared = Arc::new(Shared {
            store,
            interval,
            state: Mutex::new(State {
                next_epoch: 1,
                flushing: false,
                pending: false,
                last_start: None,
                stopped: false,
            }),
            wake: Condvar::new(),
            progress: watch::channel(Progress::default()).0,
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("btic-queue-flush".to_owned())
            .spawn(move || serve_pending(&thread_shared))
            .map_err(|e| QueueError::FlushFailed {
                reason: format!("starting the flusher thread: {e}"),
            })?;
        Ok(Flusher {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Call on a blocking thread after a commit: flushes right here if no flush runs,
    /// else queues for the next one. Returns the epoch to `wait` for.
    pub(crate) fn after_commit(&self) -> Result<u64, QueueError> {
        let shared = &self.shared;
        let mut state = lock(&shared.state);
        if state.stopped {
            return Err(QueueError::Closed);
        }
        let epoch = state.next_epoch;
        if state.flushing {
            state.pending = true;
            shared.wake.notify_one();
            return Ok(epoch);
        }
        run_flush(shared, state);
        Ok(epoch)
    }

    /// Waits until `epoch` is durable.
    pub(crate) async fn wait(&self, epoch: u64) -> Result<(), QueueError> {
        let mut progress = self.shared.progress.subscribe();
        let seen = progress
            .wait_for(|p| p.durable >= epoch || p.failed.is_some())
            .await
            .map_err(|_| QueueError::Closed)?;
        match &seen.failed {
            Some(reason) if seen.durable < epoch => Err(QueueError::FlushFailed {
                reason: reason.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Stops the flusher thread after the flushes already asked for, and waits for it.
    pub(crate) fn stop(&self) {
        lock(&self.shared.state).stopped = true;
        self.shared.wake.notify_all();
        if let Some(thread) = lock(&self.thread).take() {
            // A panicked flusher has nothing left to clean up; the waiters see `Closed`.
            let _ = thread.join();
        }
    }
}

/// Runs one flush: takes the next epoch, fsyncs outside the lock, publishes the result
/// and wakes the flusher thread if writers queued up meanwhile.
fn run_flush<'a>(shared: &'a Shared, mut state: MutexGuard<'a, State>) {
    state.flushing = true;
    if let Some(since) = state.last_start.map(|t| t.elapsed())
        && since < shared.interval
    {
        drop(state);
        std::thread::sleep(shared.interval - since);
        state = lock(&shared.state);
    }
    let epoch = state.next_epoch;
    state.next_epoch += 1;
    state.pending = false;
    state.last_start = Some(Instant::now());
    drop(state);

    let outcome = shared.store.flush();
    shared.progress.send_modify(|progress| match outcome {
        Ok(()) => progress.durable = epoch,
        Err(error) => {
            // Once is enough: every flush after the first refused one fails the same way.
            if progress.failed.is_none() {
                tracing::error!("{error}");
            }
            // `FlushFailed` says "flushing queue database" itself: keep the cause.
            let cause = match &error {
                QueueError::Storage { source, .. } => source.to_string(),
                other => other.to_string(),
            };
            progress.failed.get_or_insert(cause);
        }
    });

    lock(&shared.state).flushing = false;
    shared.wake.notify_one();
}

/// The flusher thread: starts a flush whenever one is pending and none runs.
fn serve_pending(shared: &Shared) {
    loop {
        let mut state = lock(&shared.state);
        while !state.pending || state.flushing {
            if state.stopped && !state.pending {
                return;
            }
            state = shared
                .wake
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        run_flush(shared, state);
        // A flush run in place by a writer is released by `Queue::blocking`.
        release_deferred_frees();
    }
}
