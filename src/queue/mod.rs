//! The durable staged queue: named FIFO queues, an atomic hand-off between them, retries,
//! a dead letter with replay, and a small typed state area, all in one sled database.
//!
//! This module knows nothing about sessions, SQL or metrics. Items are any serde type;
//! queue names are free-form strings (the pipeline uses `fetched`, `deliver/<destination>`
//! and `download/<site>`).
//!
//! # Guarantees
//!
//! - **Atomic hand-off.** [`Queue::hand_off`] removes an item and pushes its outputs to
//!   other queues and/or writes state keys in one sled transaction: after a crash either
//!   all of it happened or none of it did. An item is never in two places.
//! - **Durable before reported.** Every writing call (`push`, `commit`, `hand_off`,
//!   `retry_later`, `dead_letter`, `replay`, `purge`, `state_put`) returns only after the
//!   transaction it ran has been fsynced. Whatever the caller does after the `.await` (an
//!   HTTP acknowledgement, a "delivered" log line, a metric) describes durable state.
//! - **At least once.** A crash loses no acknowledged write. Work that was in progress
//!   (taken with `next_ready` but not yet handed off) is simply still in its queue after a
//!   restart and is done again; consumers must be idempotent.
//! - **Order.** A queue hands out items in push order (which is commit order: ids are
//!   allocated inside the pushing transaction). Exceptions, by design: an item sent back
//!   with `retry_later` waits in a separate index and, once due, goes before fresh items;
//!   replayed dead letters go to the front.
//! - **Ids** ([`ItemId`]) are unique across all queues and grow monotonically, also
//!   across restarts and crashes (sled's id generator persists ahead of what it hands
//!   out). An item keeps its id in the dead letter and when replayed.
//! - **Bad data is data.** A value with an unknown format-version byte, or one that does
//!   not decode as the requested type, is an error naming the queue and key, never a
//!   panic; `next_ready` moves such an item to the dead letter (with the error as reason)
//!   and goes on with the next one, so one bad item never blocks its queue.
//!
//! # Trees and key layout
//!
//! One sled database (the directory given to [`Queue::open`]; the pipeline uses
//! `<state_dir>/queue`) with four trees. Every value starts with a format-version byte
//! (currently 2) followed by postcard. The caller's payload inside an item or dead
//! letter is packed: a tag byte, then postcard either as is or, from 512 bytes on, as
//! one zstd frame (level 1). `q` below is a queue name as u16 big-endian length
//! then its UTF-8 bytes, so no queue's keys are a prefix of another's; numbers are u64
//! big-endian so keys sort numerically.
//!
//! | tree    | key                    | value                                                  |
//! |---------|------------------------|--------------------------------------------------------|
//! | `items` | `q 'i' id`             | the item: payload, attempts, errors, times, its slot   |
//! | `items` | `q 'r' position`       | id — the ready index, scanned from the front           |
//! | `items` | `q 'w' due_ms id`      | id — the waiting index (retries), by due time          |
//! | `dead`  | `id`                   | dead letter: queue, attempts, first/last error, times, metadata, payload |
//! | `state` | the caller's key       | the caller's small record                              |
//! | `meta`  | `format`               | the storage format version                             |
//! | `meta`  | `'d' queue name`       | the queue's depth (u64), kept in every transaction     |
//!
//! A pushed item's position is `2^63 + id` (behind everything); a replayed one gets
//! `2^63 - 1 - fresh id` (in front of everything, later replays further in front; a
//! multi-item replay is walked from the highest id down so the items keep their order).
//! The `'i'` records sort by id, so the first one is the item that has waited longest,
//! which is what [`Queue::oldest_age`] reads. Depth is a counter so [`Queue::depth`] costs
//! one read however long the queue is.
//!
//! # The hand-off transaction
//!
//! One serializable sled transaction over all four trees (sled runs transactions one at a
//! time): for each consumed item, read its `'i'` record (gone: the call fails with
//! [`QueueError::ItemGone`] and changes nothing), remove it and its index entry; for each
//! output, allocate an id inside the transaction, write its `'i'` record and its `'r'`
//! entry; write or delete the state keys; adjust the depth counters of every queue
//! touched. Then the caller waits for the flush. `commit` is the same transaction with
//! nothing consumed ("advance this watermark in the transaction that enqueues the batch
//! covering it"). An output may also go straight to the dead letter
//! ([`Changes::bury`]: a fresh id, a dead record naming the queue a replay moves it to),
//! so work that failed before it was ever an item is dead-lettered in the same
//! transaction as the progress that moves past it.
//!
//! # When it flushes
//!
//! A flush is sled's `flush` (which writes the log but ends in `sync_file_range`, no
//! promise across a power cut) followed by real fsyncs of what it wrote: new blob files
//! and their directory, the log file, new files sled made and the queue directory
//! (`storage.rs`, `OnDisk`; ARCHITECTURE.md lists every fsync btic makes). sled's own
//! periodic flush is off; every flush is the group commit's (`flush.rs`). A
//! writer commits its transaction and, on the same blocking thread, either starts an
//! fsync itself (none is running: no thread hand-off, so an idle system pays one fsync
//! per call and nothing more) or marks one as pending (one is running). When an fsync
//! ends, a dedicated flusher thread starts the next one for everyone who queued up
//! meanwhile, so under load one fsync covers many transactions and throughput does not
//! fall to one fsync per item. At most one fsync runs at a time; each covers every
//! transaction committed before it started. [`QueueOptions::flush_interval`] (default 0)
//! can space fsyncs further apart to cap their rate. If an fsync fails, that call and
//! every later durable call fails with [`QueueError::FlushFailed`]: nothing can be
//! called durable any more and the process should restart.
//!
//! # What a crash can and cannot do
//!
//! sled recovers its log up to the last complete flush, and recovers each transaction
//! atomically. So a crash (SIGKILL, power loss) can undo transactions that were committed
//! but not yet flushed — exactly the ones whose callers had not yet been told — and
//! cannot undo a flushed one, split a hand-off, or duplicate an item. Claims (below) live
//! in memory and vanish, which puts in-progress items back in play. `tests/queue_crash.rs`
//! checks this by killing a writer hundreds of times, then by cutting its power on a file
//! system that keeps only what was fsynced.
//!
//! # Workers, claims and waiting
//!
//! Several workers may take items from the same queue. [`Queue::next_ready`] claims the
//! item it returns (an in-memory set of ids, guarded by one lock) and skips items other
//! workers hold, so two workers never get the same item. The claim is the [`Ticket`]: it
//! is released when the ticket is consumed by `hand_off`/`retry_later`/`dead_letter` (after
//! the transaction) or dropped (a worker that gives up leaves the item where it was).
//! Only one process can open the database (sled locks it), so an in-memory claim is
//! enough. [`Queue::wait_ready`] waits without polling: a `tokio::sync::Notify` per queue
//! is signalled after any durable write that adds items to it and when a claim is
//! released, and the waiter sleeps until the earliest retry is due otherwise.
//!
//! # Threads
//!
//! sled is synchronous and a transaction or read can block on disk, so every sled call
//! runs on tokio's blocking pool (`spawn_blocking`); the async executor threads never
//! touch the disk. The fsync runs on that same blocking thread or on the flusher thread
//! (see above). The cost, one thread hand-off per call, is small next to the fsync each
//! writing call waits for; a dedicated sled thread with a channel would cost the same
//! hand-off and add a queue of its own.

mod codec;
mod error;
mod flush;
mod storage;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

pub use error::QueueError;

use codec::{DeadRecord, ItemRecord};
use flush::Flusher;
use storage::{Buried, Candidate, Store};

/// How the database is opened.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// The shortest time between the starts of two fsyncs (default 0: back to back).
    /// Larger values mean fewer fsyncs and more transactions per fsync under load, at
    /// the cost of latency.
    pub flush_interval: Duration,
    /// Memory sled may use for its page cache, in bytes.
    pub cache_capacity_bytes: u64,
    /// How long to wait for another process that has the database open (default 10 s):
    /// `btic status` and the other commands open it for a moment when no daemon
    /// answers, which must not stop a daemon that is starting.
    pub lock_wait: Duration,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            flush_interval: Duration::ZERO,
            cache_capacity_bytes: 8 * 1024 * 1024,
            lock_wait: Duration::from_secs(10),
        }
    }
}

/// An item's id: unique across queues and the dead letter, growing across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemId(pub u64);

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Outputs of a transaction: pushes to queues, items put straight into the dead letter,
/// and writes to the state area, in order. Values are encoded when added, so building
/// the set is where encoding fails.
#[derive(Debug, Default)]
pub struct Changes {
    pushes: Vec<(String, Vec<u8>)>,
    buried: Vec<Buried>,
    state: Vec<(String, Option<Vec<u8>>)>,
}

impl Changes {
    /// An empty set of changes.
    pub fn new() -> Changes {
        Changes::default()
    }

    /// Adds an item to push to the back of `queue`.
    pub fn push<T: Serialize + ?Sized>(
        &mut self,
        queue: &str,
        item: &T,
    ) -> Result<&mut Changes, QueueError> {
        codec::check_name(queue)?;
        let payload = codec::encode_payload(item, &format!("item for queue {queue:?}"))?;
        self.pushes.push((queue.to_owned(), payload));
        Ok(self)
    }

    /// Adds an item that goes straight to the dead letter, as if it had been pushed to
    /// `queue` and had failed there for good with `reason` after `attempts` attempts:
    /// `replay` moves it to `queue`. For work that failed before it was ever an item (a
    /// request refused by its source), so that it is dead-lettered in the same
    /// transaction as the progress that moves past it.
    pub fn bury<T: Serialize + ?Sized>(
        &mut self,
        queue: &str,
        item: &T,
        reason: &str,
        attempts: u32,
        metadata: &[(&str, &str)],
    ) -> Result<&mut Changes, QueueError> {
        codec::check_name(queue)?;
        let payload = codec::encode_payload(item, &format!("dead letter for queue {queue:?}"))?;
        self.buried.push(Buried {
            queue: queue.to_owned(),
            payload,
            reason: reason.to_owned(),
            attempts: attempts.max(1),
            metadata: metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        });
        Ok(self)
    }

    /// Adds a state record to write under `key`.
    pub fn put_state<T: Serialize + ?Sized>(
        &mut self,
        key: &str,
        value: &T,
    ) -> Result<&mut Changes, QueueError> {
        let bytes = codec::encode(value, &format!("state key {key:?}"))?;
        self.state.push((key.to_owned(), Some(bytes)));
        Ok(self)
    }

    /// Adds the deletion of the state record under `key`.
    pub fn delete_state(&mut self, key: &str) -> &mut Changes {
        self.state.push((key.to_owned(), None));
        self
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.pushes.is_empty() && self.buried.is_empty() && self.state.is_empty()
    }

    fn queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = self.pushes.iter().map(|(q, _)| q.clone()).collect();
        queues.sort();
        queues.dedup();
        queues
    }
}

/// Which dead letters an operation applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterFilter {
    /// Every dead letter.
    All,
    /// The one with this id.
    Id(ItemId),
    /// Those that came from this queue (`deliver/<destination>` selects a destination).
    Queue(String),
}

impl DeadLetterFilter {
    fn matches(&self, queue: &str) -> bool {
        match self {
            DeadLetterFilter::All | DeadLetterFilter::Id(_) => true,
            DeadLetterFilter::Queue(name) => name == queue,
        }
    }
}

/// An item in the dead letter, without its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The item's id (also its dead-letter id).
    pub id: ItemId,
    /// The queue it came from and returns to on replay.
    pub queue: String,
    /// Failed attempts, counting the one that dead-lettered it.
    pub attempts: u32,
    /// The first error it met.
    pub first_error: String,
    /// Why it was dead-lettered.
    pub last_error: String,
    /// When it entered the queue it came from.
    pub first_seen: SystemTime,
    /// When it was last tried (the moment it was dead-lettered).
    pub last_tried: SystemTime,
    /// Context given by the caller (stage, destination, ...).
    pub metadata: Vec<(String, String)>,
    /// Size of the payload as stored (compressed, if it was large).
    pub payload_bytes: usize,
}

/// A dead letter with its payload, as `dead_letter_show` returns it.
#[derive(Debug, Clone)]
pub struct DeadLetterItem {
    /// Everything but the payload.
    pub letter: DeadLetter,
    /// The payload as stored (packed: tag byte, postcard, maybe compressed).
    pub payload: Vec<u8>,
}

impl DeadLetterItem {
    /// Decodes the payload as the type that was pushed to `letter.queue`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, QueueError> {
        codec::decode_payload(
            &self.payload,
            || "dead letter".to_owned(),
            || format!("item {}", self.letter.id),
        )
    }
}

/// A queue and how many items it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    /// The queue's name.
    pub name: String,
    /// Items in it, ready or waiting for a retry.
    pub depth: u64,
}

/// One item as the `verify` hook sees it.
#[derive(Debug)]
pub struct VerifyEntry<'a> {
    /// The queue it is in, or came from if `dead`.
    pub queue: &'a str,
    /// Whether it is in the dead letter.
    pub dead: bool,
    /// Its id.
    pub id: ItemId,
    /// Its payload as stored (packed: tag byte, postcard, maybe compressed).
    pub payload: &'a [u8],
}

impl VerifyEntry<'_> {
    /// Decodes the payload as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, QueueError> {
        codec::decode_payload(
            self.payload,
            || format!("queue {:?}", self.queue),
            || format!("item {}", self.id),
        )
    }
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Items in queues.
    pub items: u64,
    /// Items in the dead letter.
    pub dead_letters: u64,
    /// Everything wrong, one sentence each; empty when all is well.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// Whether no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The right to finish one item: consumed by `hand_off`, `retry_later` or `dead_letter`.
/// While it lives no other worker gets the item; dropping it unused releases the item.
#[derive(Debug)]
pub struct Ticket {
    queue: String,
    id: ItemId,
    attempts: u32,
    first_seen: SystemTime,
    last_error: Option<String>,
    _claim: Claim,
}

impl Ticket {
    /// The queue the item is in.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The item's id.
    pub fn id(&self) -> ItemId {
        self.id
    }

    /// Failed attempts so far (0 for an item never retried).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// When the item entered this queue.
    pub fn first_seen(&self) -> SystemTime {
        self.first_seen
    }

    /// The error recorded by the latest `retry_later`, if any.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
}

/// An item taken from a queue, with the ticket to finish it.
#[derive(Debug)]
pub struct Claimed<T> {
    /// The decoded value.
    pub item: T,
    /// Hand this to `hand_off`, `retry_later` or `dead_letter`.
    pub ticket: Ticket,
}

impl<T> Claimed<T> {
    /// The item's id.
    pub fn id(&self) -> ItemId {
        self.ticket.id
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.ticket.attempts
    }
}

/// An item's payload as stored (packed: tag byte, postcard, maybe compressed), taken
/// with [`Queue::next_ready_many_packed`] and decoded when the caller wants it.
#[derive(Debug, Clone)]
pub struct Packed {
    queue: String,
    id: ItemId,
    bytes: Vec<u8>,
}

impl Packed {
    /// Decodes the payload as the type that was pushed; may be called more than once.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, QueueError> {
        codec::decode_payload(
            &self.bytes,
            || format!("queue {:?}", self.queue),
            || format!("item {}", self.id),
        )
    }
}

/// Ids currently held by a `Ticket`, over all queues (ids are unique across queues).
type Claims = Arc<Mutex<HashSet<u64>>>;

/// One claimed id; releases it and wakes the queue's waiters when dropped.
#[derive(Debug)]
struct Claim {
    claims: Claims,
    id: u64,
    notify: Arc<Notify>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&self.claims).remove(&self.id);
        self.notify.notify_waiters();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Both guarded collections stay consistent even if a holder panicked.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn letter(id: u64, record: &DeadRecord) -> DeadLetter {
    DeadLetter {
        id: ItemId(id),
        queue: record.queue.clone(),
        attempts: record.attempts,
        first_error: record.first_error.clone(),
        last_error: record.last_error.clone(),
        first_seen: from_millis(record.first_seen_ms),
        last_tried: from_millis(record.last_tried_ms),
        metadata: record.metadata.clone(),
        payload_bytes: record.payload.len(),
    }
}

#[derive(Debug)]
struct Inner {
    store: Arc<Store>,
    flusher: Arc<Flusher>,
    claims: Claims,
    /// One `Notify` per queue name ever waited on or pushed to; bounded by the
    /// configuration's queues.
    notifiers: Mutex<HashMap<String, Arc<Notify>>>,
    /// The first write or fsync the disk refused, once one was (see `storage_failure`).
    failure: Mutex<Option<String>>,
    /// Woken when `failure` is set.
    failed: Notify,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.flusher.stop();
    }
}

/// The queue database. Cheap to clone; all clones share one database, flusher and set
/// of claims. The database closes when the last clone is dropped (after a last flush).
#[derive(Debug, Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

impl Queue {
    /// Opens (or creates) the database in `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<Queue, QueueError> {
        Queue::open_with(dir, QueueOptions::default())
    }

    /// Opens (or creates) the database in `dir`. Recovery after a crash happens here and
    /// needs no manual step. Fails if another process still has the database open after
    /// `options.lock_wait` (blocking the calling thread until then).
    pub fn open_with(dir: impl AsRef<Path>, options: QueueOptions) -> Result<Queue, QueueError> {
        let started = std::time::Instant::now();
        let store = loop {
            match Store::open(dir.as_ref(), options.cache_capacity_bytes) {
                Err(e) if e.is_lock_held() && started.elapsed() < options.lock_wait => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => break Arc::new(other?),
            }
        };
        let flusher = Arc::new(Flusher::start(store.clone(), options.flush_interval)?);
        Ok(Queue {
            inner: Arc::new(Inner {
                store,
                flusher,
                claims: Arc::default(),
                notifiers: Mutex::default(),
                failure: Mutex::default(),
                failed: Notify::new(),
            }),
        })
    }

    /// Flushes and closes this handle. The database itself closes when no clone remains.
    pub async fn close(self) -> Result<(), QueueError> {
        self.flush().await
    }

    /// Waits until everything committed so far is durable.
    pub async fn flush(&self) -> Result<(), QueueError> {
        self.durably(|_| Ok(())).await
    }

    /// Pushes one item to the back of `queue`; returns once it is durable.
    pub async fn push<T: Serialize + ?Sized>(
        &self,
        queue: &str,
        item: &T,
    ) -> Result<ItemId, QueueError> {
        let mut changes = Changes::new();
        changes.push(queue, item)?;
        Ok(self.commit(changes).await?[0])
    }

    /// Pushes several items to the back of `queue` in one transaction, in order.
    pub async fn push_many<T: Serialize>(
        &self,
        queue: &str,
        items: &[T],
    ) -> Result<Vec<ItemId>, QueueError> {
        let mut changes = Changes::new();
        for item in items {
            changes.push(queue, item)?;
        }
        self.commit(changes).await
    }

    /// Applies `changes` in one transaction; returns the pushed ids once durable.
    pub async fn commit(&self, changes: Changes) -> Result<Vec<ItemId>, QueueError> {
        self.hand_off_many(Vec::new(), changes).await
    }

    /// Removes the ticket's item from its queue and applies `changes`, in one transaction;
    /// returns the pushed ids once durable. If the item is no longer there, nothing
    /// changes and the error is [`QueueError::ItemGone`].
    pub async fn hand_off(
        &self,
        ticket: Ticket,
        changes: Changes,
    ) -> Result<Vec<ItemId>, QueueError> {
        self.hand_off_many(vec![ticket], changes).await
    }

    /// Like `hand_off` for several items at once (a batch delivered together).
    pub async fn hand_off_many(
        &self,
        tickets: Vec<Ticket>,
        changes: Changes,
    ) -> Result<Vec<ItemId>, QueueError> {
        let consumed: Vec<(String, u64)> =
            tickets.iter().map(|t| (t.queue.clone(), t.id.0)).collect();
        let queues = changes.queues();
        let Changes {
            pushes,
            buried,
            state,
        } = changes;
        let now = millis(SystemTime::now());
        let ids = self
            .durably(move |store| store.apply(&consumed, &pushes, &buried, &state, now))
            .await?;
        drop(tickets);
        self.wake(queues);
        Ok(ids.into_iter().map(ItemId).collect())
    }

    /// Records a failed attempt (`error`) and makes the item wait `delay` before it is
    /// handed out again; returns once durable.
    pub async fn retry_later(
        &self,
        ticket: Ticket,
        error: &str,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let (queue, id, error) = (ticket.queue.clone(), ticket.id.0, error.to_owned());
        let now = SystemTime::now();
        // A delay too long to represent waits "forever" rather than panicking.
        let century = Duration::from_secs(100 * 365 * 24 * 3600);
        let due = now.checked_add(delay.min(century)).unwrap_or(now);
        let (now_ms, due_ms) = (millis(now), millis(due));
        let name = queue.clone();
        self.durably(move |store| store.retry_later(&name, id, &error, due_ms, now_ms))
            .await?;
        drop(ticket);
        self.wake([queue]);
        Ok(())
    }

    /// Moves the item to the dead letter with `reason` and free-form `metadata` (stage,
    /// destination, ...); returns once durable.
    pub async fn dead_letter(
        &self,
        ticket: Ticket,
        reason: &str,
        metadata: &[(&str, &str)],
    ) -> Result<(), QueueError> {
        self.dead_letter_with(ticket, reason, metadata, Changes::new())
            .await
    }

    /// [`Queue::dead_letter`] that also writes the state keys of `state` in the same
    /// transaction (its pushes, if any, are refused: nothing may leave a dead item).
    pub async fn dead_letter_with(
        &self,
        ticket: Ticket,
        reason: &str,
        metadata: &[(&str, &str)],
        state: Changes,
    ) -> Result<(), QueueError> {
        if !state.pushes.is_empty() || !state.buried.is_empty() {
            return Err(QueueError::Encode {
                what: format!("dead letter of item {}", ticket.id),
                reason: "a dead-lettered item cannot push items".to_owned(),
            });
        }
        let state = state.state;
        let (queue, id, reason) = (ticket.queue.clone(), ticket.id.0, reason.to_owned());
        let metadata: Vec<(String, String)> = metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let now = millis(SystemTime::now());
        self.durably(move |store| store.dead_letter(&queue, id, &reason, &metadata, &state, now))
            .await?;
        drop(ticket);
        Ok(())
    }

    /// Takes the next item of `queue` that is due now; see `next_ready_at`.
    pub async fn next_ready<T: DeserializeOwned + Send + 'static>(
        &self,
        queue: &str,
    ) -> Result<Option<Claimed<T>>, QueueError> {
        self.next_ready_at(queue, SystemTime::now()).await
    }

    /// Takes the next item of `queue` as of `now`: the retried item that has been due
    /// longest, else the front of the queue; items held by other tickets are skipped.
    /// An item that does not decode as `T` is moved to the dead letter (reason: the
    /// decoding error) and the next one is tried. Returns `None` when nothing is ready.
    pub async fn next_ready_at<T: DeserializeOwned + Send + 'static>(
        &self,
        queue: &str,
        now: SystemTime,
    ) -> Result<Option<Claimed<T>>, QueueError> {
        codec::check_name(queue)?;
        let now_ms = millis(now);
        loop {
            let claims = self.inner.claims.clone();
            let name = queue.to_owned();
            let found = self
                .blocking(move |store| {
                    let mut held = lock(&claims);
                    let found = store.next_ready(&name, now_ms, &mut |id| held.contains(&id))?;
                    if let Some(Candidate::Item { id, .. } | Candidate::Broken { id, .. }) = &found
                    {
                        held.insert(*id);
                    }
                    Ok(found)
                })
                .await?;
            let Some(candidate) = found else {
                return Ok(None);
            };
            let (id, record, broken) = match candidate {
                Candidate::Item { id, record } => (id, Some(record), None),
                Candidate::Broken { id, raw, error } => (id, None, Some((raw, error))),
            };
            let claim = Claim {
                claims: self.inner.claims.clone(),
                id,
                notify: self.notifier(queue),
            };
            if let Some((raw, error)) = broken {
                self.bury(queue, id, raw, error, claim).await?;
                continue;
            }
            let Some(record) = record else { continue };
            let ticket = ticket(queue, id, &record, claim);
            match codec::decode_payload::<T>(
                &record.payload,
                || format!("queue {queue:?}"),
                || format!("item {id}"),
            ) {
                Ok(item) => return Ok(Some(Claimed { item, ticket })),
                Err(error) => self.dead_letter_undecodable(ticket, &error).await?,
            }
        }
    }

    /// Takes up to `max` items of `queue` that are due now, in the order repeated
    /// `next_ready` calls would take them, with one pass over the queue's indexes on one
    /// blocking thread (repeated calls each rescan past the items already held). Broken
    /// and undecodable items go to the dead letter as with `next_ready` and are not
    /// counted. Returns an empty list when nothing is ready.
    pub async fn next_ready_many<T: DeserializeOwned + Send + 'static>(
        &self,
        queue: &str,
        max: usize,
    ) -> Result<Vec<Claimed<T>>, QueueError> {
        let packed = self.next_ready_many_packed(queue, max).await?;
        let mut claimed = Vec::with_capacity(packed.len());
        let mut failure = None;
        for Claimed { item, ticket } in packed {
            if failure.is_some() {
                // Released with its ticket.
                continue;
            }
            match item.decode::<T>() {
                Ok(item) => claimed.push(Claimed { item, ticket }),
                Err(error) => {
                    if let Err(e) = self.dead_letter_undecodable(ticket, &error).await {
                        failure = Some(e);
                    }
                }
            }
        }
        match failure {
            // The items taken so far are released with their tickets.
            Some(e) => Err(e),
            None => Ok(claimed),
        }
    }

    /// Like [`next_ready_many`](Self::next_ready_many), but leaves the payloads as
    /// stored: a caller that decodes and drops them one at a time holds the batch in its
    /// compact form. A payload that then does not decode goes to the dead letter with
    /// [`dead_letter_undecodable`](Self::dead_letter_undecodable). Broken records (not
    /// even a payload) are buried here, as `next_ready` does.
    pub async fn next_ready_many_packed(
        &self,
        queue: &str,
        max: usize,
    ) -> Result<Vec<Claimed<Packed>>, QueueError> {
        codec::check_name(queue)?;
        let now_ms = millis(SystemTime::now());
        let claims = self.inner.claims.clone();
        let name = queue.to_owned();
        let found = self
            .blocking(move |store| {
                let mut held = lock(&claims);
                let found =
                    store.next_ready_many(&name, now_ms, max, &mut |id| held.contains(&id))?;
                for candidate in &found {
                    let (Candidate::Item { id, .. } | Candidate::Broken { id, .. }) = candidate;
                    held.insert(*id);
                }
                Ok(found)
            })
            .await?;
        // Every candidate is held from here on; each becomes a ticket (or is buried) so
        // its claim is released whatever happens below.
        let mut claimed = Vec::with_capacity(found.len());
        let mut failure = None;
        for candidate in found {
            let (id, record, broken) = match candidate {
                Candidate::Item { id, record } => (id, Some(record), None),
                Candidate::Broken { id, raw, error } => (id, None, Some((raw, error))),
            };
            let claim = Claim {
                claims: self.inner.claims.clone(),
                id,
                notify: self.notifier(queue),
            };
            if failure.is_some() {
                drop(claim);
                continue;
            }
            if let Some((raw, error)) = broken {
                if let Err(e) = self.bury(queue, id, raw, error, claim).await {
                    failure = Some(e);
                }
                continue;
            }
            let Some(record) = record else { continue };
            let ticket = ticket(queue, id, &record, claim);
            let item = Packed {
                queue: queue.to_owned(),
                id: ItemId(id),
                bytes: record.payload,
            };
            claimed.push(Claimed { item, ticket });
        }
        match failure {
            // The items taken so far are released with their tickets.
            Some(e) => Err(e),
            None => Ok(claimed),
        }
    }

    /// Moves an item whose payload did not decode (`error`, as [`Packed::decode`]
    /// returned it) to the dead letter, as `next_ready` does with such items.
    pub async fn dead_letter_undecodable(
        &self,
        ticket: Ticket,
        error: &QueueError,
    ) -> Result<(), QueueError> {
        tracing::error!("{error}; moving the item to the dead letter");
        let queue = ticket.queue.clone();
        self.dead_letter(ticket, &error.to_string(), &[("queue", &queue)])
            .await
    }

    async fn bury(
        &self,
        queue: &str,
        id: u64,
        raw: Vec<u8>,
        error: QueueError,
        claim: Claim,
    ) -> Result<(), QueueError> {
        tracing::error!("{error}; moving the raw record to the dead letter");
        let (name, reason, now) = (
            queue.to_owned(),
            error.to_string(),
            millis(SystemTime::now()),
        );
        self.durably(move |store| store.bury_broken(&name, id, &raw, &reason, now))
            .await?;
        drop(claim);
        Ok(())
    }

    /// Waits until an item of `queue` is ready and takes it. Waits without polling (see
    /// the module doc). Cancel-safe: dropping the future claims nothing.
    pub async fn wait_ready<T: DeserializeOwned + Send + 'static>(
        &self,
        queue: &str,
    ) -> Result<Claimed<T>, QueueError> {
        let notify = self.notifier(queue);
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            // Registered before looking, so a push that lands after the look still wakes us.
            notified.as_mut().enable();
            if let Some(claimed) = self.next_ready(queue).await? {
                return Ok(claimed);
            }
            let claims = self.inner.claims.clone();
            let name = queue.to_owned();
            let due = self
                .blocking(move |store| {
                    let held = lock(&claims);
                    store.next_due(&name, &mut |id| held.contains(&id))
                })
                .await?;
            let now = millis(SystemTime::now());
            match due {
                Some(due) if due > now => {
                    // Wall-clock due times: re-check at least every minute in case the
                    // clock jumps.
                    let wait = Duration::from_millis(due - now).min(Duration::from_secs(60));
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                _ => notified.await,
            }
        }
    }

    /// Lists dead letters matching `filter`, in id order.
    pub async fn dead_letters(
        &self,
        filter: DeadLetterFilter,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        self.blocking(move |store| {
            let mut found = Vec::new();
            store.dead_letters(&filter, &mut |id, record| found.push(letter(id, &record)))?;
            Ok(found)
        })
        .await
    }

    /// How many dead letters came from each queue (queues without any are absent).
    /// Reads one record at a time, so a large dead letter costs time, not memory.
    pub async fn dead_letter_counts(&self) -> Result<BTreeMap<String, u64>, QueueError> {
        self.blocking(move |store| {
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            store.dead_letters(&DeadLetterFilter::All, &mut |_, record| {
                *counts.entry(record.queue).or_default() += 1;
            })?;
            Ok(counts)
        })
        .await
    }

    /// Folds every dead letter (without its payload) into `acc`, in id order, one record
    /// at a time: summarising a large dead letter costs time, not memory.
    pub async fn fold_dead_letters<A, F>(&self, acc: A, mut fold: F) -> Result<A, QueueError>
    where
        A: Send + 'static,
        F: FnMut(&mut A, DeadLetter) + Send + 'static,
    {
        self.blocking(move |store| {
            let mut acc = acc;
            store.dead_letters(&DeadLetterFilter::All, &mut |id, record| {
                fold(&mut acc, letter(id, &record));
            })?;
            Ok(acc)
        })
        .await
    }

    /// One dead letter with its payload.
    pub async fn dead_letter_show(&self, id: ItemId) -> Result<DeadLetterItem, QueueError> {
        let record = self
            .blocking(move |store| store.dead_letter_record(id.0))
            .await?
            .ok_or(QueueError::DeadLetterNotFound { id: id.0 })?;
        Ok(DeadLetterItem {
            letter: letter(id.0, &record),
            payload: record.payload,
        })
    }

    /// Moves matching dead letters back to the front of their queues with attempts reset
    /// (keeping their order); returns how many, once durable. Replaying a single id that
    /// does not exist is [`QueueError::DeadLetterNotFound`].
    pub async fn replay(&self, filter: DeadLetterFilter) -> Result<u64, QueueError> {
        let single = match &filter {
            DeadLetterFilter::Id(id) => Some(id.0),
            _ => None,
        };
        let moved = self.durably(move |store| store.replay(&filter)).await?;
        let count = moved.values().sum();
        if let (Some(id), 0) = (single, count) {
            return Err(QueueError::DeadLetterNotFound { id });
        }
        self.wake(moved.into_keys());
        Ok(count)
    }

    /// Deletes matching dead letters for good; returns how many, once durable.
    pub async fn purge(&self, filter: DeadLetterFilter) -> Result<u64, QueueError> {
        let purged = self.durably(move |store| store.purge(&filter)).await?;
        Ok(purged)
    }

    /// Items in `queue`, ready or waiting for a retry (claimed ones included).
    pub async fn depth(&self, queue: &str) -> Result<u64, QueueError> {
        let name = queue.to_owned();
        self.blocking(move |store| store.depth(&name)).await
    }

    /// How long the longest-waiting item of `queue` has been in it; `None` when empty.
    pub async fn oldest_age(&self, queue: &str) -> Result<Option<Duration>, QueueError> {
        let name = queue.to_owned();
        let first_seen = self
            .blocking(move |store| store.oldest_first_seen(&name))
            .await?;
        Ok(first_seen.map(|ms| {
            SystemTime::now()
                .duration_since(from_millis(ms))
                .unwrap_or_default()
        }))
    }

    /// Every queue that holds items, with its depth, by name.
    pub async fn queues(&self) -> Result<Vec<QueueDepth>, QueueError> {
        let queues = self.blocking(|store| store.queues()).await?;
        Ok(queues
            .into_iter()
            .map(|(name, depth)| QueueDepth { name, depth })
            .collect())
    }

    /// Reads the state record under `key`.
    pub async fn state_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, QueueError> {
        let name = key.to_owned();
        let bytes = self.blocking(move |store| store.state_get(&name)).await?;
        bytes
            .map(|b| codec::decode(&b, || "state".to_owned(), || key.to_owned()))
            .transpose()
    }

    /// Reads the state records under `keys` (in one trip to the database), in order.
    pub async fn state_get_many<T: DeserializeOwned>(
        &self,
        keys: Vec<String>,
    ) -> Result<Vec<Option<T>>, QueueError> {
        let (keys, values) = self
            .blocking(move |store| {
                let values = keys
                    .iter()
                    .map(|k| store.state_get(k))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((keys, values))
            })
            .await?;
        keys.iter()
            .zip(values)
            .map(|(key, bytes)| {
                bytes
                    .map(|b| codec::decode(&b, || "state".to_owned(), || key.clone()))
                    .transpose()
            })
            .collect()
    }

    /// Reads every state record whose key starts with `prefix`, in key order.
    pub async fn state_list<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, QueueError> {
        let name = prefix.to_owned();
        let entries = self.blocking(move |store| store.state_scan(&name)).await?;
        entries
            .into_iter()
            .map(|(key, bytes)| {
                let value = codec::decode(&bytes, || "state".to_owned(), || key.clone())?;
                Ok((key, value))
            })
            .collect()
    }

    /// The first `limit` keys (in key order) of the state records under `prefix` that
    /// sort below `below`, if given; nothing of the records beyond them is read.
    pub async fn state_keys_range(
        &self,
        prefix: &str,
        below: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, QueueError> {
        let (prefix, below) = (prefix.to_owned(), below.map(str::to_owned));
        self.blocking(move |store| store.state_keys_range(&prefix, below.as_deref(), limit))
            .await
    }

    /// The keys of every state record that starts with `prefix`, in key order, whatever
    /// their types.
    pub async fn state_keys(&self, prefix: &str) -> Result<Vec<String>, QueueError> {
        let name = prefix.to_owned();
        let entries = self.blocking(move |store| store.state_scan(&name)).await?;
        Ok(entries.into_iter().map(|(key, _)| key).collect())
    }

    /// Writes a state record on its own; returns once durable. To tie it to queue
    /// changes, use `Changes::put_state` with `commit` or `hand_off`.
    pub async fn state_put<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), QueueError> {
        let mut changes = Changes::new();
        changes.put_state(key, value)?;
        self.commit(changes).await.map(drop)
    }

    /// Deletes a state record; returns once durable.
    pub async fn state_delete(&self, key: &str) -> Result<(), QueueError> {
        let mut changes = Changes::new();
        changes.delete_state(key);
        self.commit(changes).await.map(drop)
    }

    /// Checks the whole database: every record decodes, every index entry and item
    /// match, depth counters are right, state values carry a known version. `check`
    /// sees every item (queued and dead) and returns a problem for what it finds wrong,
    /// e.g. a spool path the item references that no longer exists.
    pub async fn verify<F>(&self, mut check: F) -> Result<VerifyReport, QueueError>
    where
        F: FnMut(&VerifyEntry<'_>) -> Result<(), String> + Send + 'static,
    {
        let (items, dead_letters, problems) = self
            .blocking(move |store| {
                store.verify(&mut |visit| {
                    check(&VerifyEntry {
                        queue: visit.queue,
                        dead: visit.dead,
                        id: ItemId(visit.id),
                        payload: visit.payload,
                    })
                })
            })
            .await?;
        Ok(VerifyReport {
            items,
            dead_letters,
            problems,
        })
    }

    /// Hands every item of the queues `which` selects (by name), and every dead letter
    /// that came from such a queue, to `visit`, one record at a time. Unlike `verify`,
    /// the other queues are not read at all: with a large backlog in a queue that does
    /// not matter to the caller this costs neither time nor sled's memory for its pages.
    pub async fn visit_items<F>(
        &self,
        which: impl Fn(&str) -> bool + Send + 'static,
        mut visit: F,
    ) -> Result<(), QueueError>
    where
        F: FnMut(&VerifyEntry<'_>) + Send + 'static,
    {
        self.blocking(move |store| {
            for (queue, _) in store.queues()? {
                if !which(&queue) {
                    continue;
                }
                store.items_of(&queue, &mut |id, record| {
                    visit(&VerifyEntry {
                        queue: &queue,
                        dead: false,
                        id: ItemId(id),
                        payload: &record.payload,
                    });
                })?;
            }
            store.dead_letters(&DeadLetterFilter::All, &mut |id, record| {
                if which(&record.queue) {
                    visit(&VerifyEntry {
                        queue: &record.queue,
                        dead: true,
                        id: ItemId(id),
                        payload: &record.payload,
                    });
                }
            })
        })
        .await
    }

    /// Runs `work` on the blocking pool and returns once what it committed is durable.
    async fn durably<R, F>(&self, work: F) -> Result<R, QueueError>
    where
        R: Send + 'static,
        F: FnOnce(&Store) -> Result<R, QueueError> + Send + 'static,
    {
        let flusher = self.inner.flusher.clone();
        let outcome = async {
            let (result, epoch) = self
                .blocking(move |store| {
                    let result = work(store)?;
                    Ok((result, flusher.after_commit()?))
                })
                .await?;
            self.inner.flusher.wait(epoch).await?;
            Ok::<R, QueueError>(result)
        }
        .await;
        if let Err(e) = &outcome
            && e.is_storage_failure()
        {
            let mut failure = lock(&self.inner.failure);
            if failure.is_none() {
                *failure = Some(e.to_string());
                self.inner.failed.notify_waiters();
            }
        }
        outcome
    }

    /// The first write or fsync the disk refused (ENOSPC, EIO), if one was. From then on
    /// nothing can be called durable: the process should stop and start again (the
    /// state is intact as of the last fsync).
    pub fn storage_failure(&self) -> Option<String> {
        lock(&self.inner.failure).clone()
    }

    /// Waits until a write or fsync fails (returns at once if one has); returns why.
    pub async fn storage_failed(&self) -> String {
        loop {
            let notified = self.inner.failed.notified();
            if let Some(reason) = self.storage_failure() {
                return reason;
            }
            notified.await;
        }
    }

    async fn blocking<R, F>(&self, work: F) -> Result<R, QueueError>
    where
        R: Send + 'static,
        F: FnOnce(&Store) -> Result<R, QueueError> + Send + 'static,
    {
        let store = self.inner.store.clone();
        let run = move || {
            let result = work(&store);
            storage::release_deferred_frees();
            result
        };
        match tokio::task::spawn_blocking(run).await {
            Ok(result) => result,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(_) => Err(QueueError::Closed),
        }
    }

    fn notifier(&self, queue: &str) -> Arc<Notify> {
        lock(&self.inner.notifiers)
            .entry(queue.to_owned())
            .or_default()
            .clone()
    }

    fn wake(&self, queues: impl IntoIterator<Item = String>) {
        let notifiers = lock(&self.inner.notifiers);
        for queue in queues {
            if let Some(notify) = notifiers.get(&queue) {
                notify.notify_waiters();
            }
        }
    }
}

fn ticket(queue: &str, id: u64, record: &ItemRecord, claim: Claim) -> Ticket {
    Ticket {
        queue: queue.to_owned(),
        id: ItemId(id),
        attempts: record.attempts,
        first_seen: from_millis(record.first_seen_ms),
        last_error: record.last_error.clone(),
        _claim: claim,
    }
}

#[cfg(test)]
mod tests;
