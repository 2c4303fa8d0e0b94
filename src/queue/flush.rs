//! Group commit: one thread that fsyncs the database on behalf of every waiting writer.
//!
//! A writer commits its transaction, then `request`s a flush and gets an epoch number;
//! it is durable once the flusher reports that epoch done. The flusher takes the next
//! epoch only when it starts a flush, so every transaction committed before a writer's
//! `request` returned is covered by the flush of the epoch it got. Requests that arrive
//! while an fsync runs share the next one; at most one fsync runs at a time and,
//! when `interval` is set, consecutive fsyncs start at least `interval` apart.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::QueueError;
use super::storage::Store;

/// What the flusher has made durable so far.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// The highest epoch whose flush finished.
    durable: u64,
    /// Set when a flush failed; every later wait fails with it.
    failed: Option<String>,
}

#[derive(Debug, Default)]
struct Requests {
    /// The epoch the next flush will cover.
    next_epoch: u64,
    /// Whether someone waits for `next_epoch`.
    pending: bool,
    /// Set by `stop`: finish pending work, flush once more and end.
    stop: bool,
}

#[derive(Debug, Default)]
struct Shared {
    requests: Mutex<Requests>,
    /// Wakes the flusher thread when `pending` or `stop` is set.
    wake: Condvar,
}

/// The handle writers use; owns the flusher thread.
#[derive(Debug)]
pub(crate) struct Flusher {
    shared: Arc<Shared>,
    progress: watch::Receiver<Progress>,
    /// The flusher thread; ends after `stop`, joined by `stop`.
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Flusher {
    /// Starts the flusher thread for `store`.
    pub(crate) fn start(store: Arc<Store>, interval: Duration) -> Result<Flusher, QueueError> {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Requests {
                next_epoch: 1,
                ..Requests::default()
            }),
            wake: Condvar::new(),
        });
        let (sender, progress) = watch::channel(Progress::default());
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("btic-queue-flush".to_owned())
            .spawn(move || run(&thread_shared, &store, interval, &sender))
            .map_err(|e| QueueError::FlushFailed {
                reason: format!("starting the flusher thread: {e}"),
            })?;
        Ok(Flusher {
            shared,
            progress,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Asks for a flush covering everything committed so far; returns the epoch to wait for.
    pub(crate) fn request(&self) -> Result<u64, QueueError> {
        let mut requests = lock(&self.shared.requests);
        if requests.stop {
            return Err(QueueError::Closed);
        }
        requests.pending = true;
        self.shared.wake.notify_one();
        Ok(requests.next_epoch)
    }

    /// Waits until `epoch` is durable.
    pub(crate) async fn wait(&self, epoch: u64) -> Result<(), QueueError> {
        let mut progress = self.progress.clone();
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

    /// Requests a flush and waits for it.
    pub(crate) async fn flush(&self) -> Result<(), QueueError> {
        let epoch = self.request()?;
        self.wait(epoch).await
    }

    /// Stops the thread after a last flush and waits for it to end.
    pub(crate) fn stop(&self) {
        lock(&self.shared.requests).stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = lock(&self.thread).take() {
            // A panicking flusher has already reported through `Progress` being dropped.
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded data stays consistent even if a holder panicked: plain counters.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn run(shared: &Shared, store: &Store, interval: Duration, sender: &watch::Sender<Progress>) {
    let mut last_start: Option<Instant> = None;
    loop {
        {
            let mut requests = lock(&shared.requests);
            while !requests.pending && !requests.stop {
                requests = shared
                    .wake
                    .wait(requests)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if !requests.pending {
                break;
            }
        }
        if let Some(started) = last_start {
            let since = started.elapsed();
            if since < interval {
                std::thread::sleep(interval - since);
            }
        }
        let epoch = {
            let mut requests = lock(&shared.requests);
            requests.pending = false;
            requests.next_epoch += 1;
            requests.next_epoch - 1
        };
        last_start = Some(Instant::now());
        let outcome = store.flush();
        sender.send_modify(|progress| match outcome {
            Ok(()) => progress.durable = epoch,
            Err(error) => {
                tracing::error!("{error}");
                progress.failed.get_or_insert(error.to_string());
            }
        });
    }
    if let Err(error) = store.flush() {
        tracing::error!("closing queue database: {error}");
    }
}
