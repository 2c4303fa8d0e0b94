//! Every sled call of the crate. Synchronous: the async `Queue` runs these on tokio's
//! blocking pool and the flusher runs `Store::flush` on its own thread.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sled::transaction::{
    ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
};
use sled::{IVec, Tree};

use super::codec::{
    self, DeadRecord, FORMAT_VERSION, ItemRecord, Slot, back_position, front_position, item_key,
    item_prefix, queue_prefix, read_u64, ready_prefix, slot_key, waiting_prefix,
};
use super::{DeadLetterFilter, QueueError};

/// Key in `meta` holding the storage format version byte.
const META_FORMAT: &[u8] = b"format";
/// Prefix in `meta` of the per-queue depth counters (`d` + queue name -> u64 BE).
const META_DEPTH: &[u8] = b"d";
/// Dead letters moved back or purged per transaction, so one replay of everything
/// never builds one huge transaction in memory.
const CHUNK: usize = 256;

/// A change to the state area inside a transaction.
pub(crate) type StateChange = (String, Option<Vec<u8>>);

/// An item that goes straight to the dead letter (`Changes::bury`).
#[derive(Debug)]
pub(crate) struct Buried {
    /// The queue a replay moves it to.
    pub queue: String,
    /// The packed payload.
    pub payload: Vec<u8>,
    /// Why it failed.
    pub reason: String,
    /// Attempts made before it was buried.
    pub attempts: u32,
    /// The caller's context.
    pub metadata: Vec<(String, String)>,
}

/// The open database and its four trees.
#[derive(Debug)]
pub(crate) struct Store {
    db: sled::Db,
    items: Tree,
    dead: Tree,
    state: Tree,
    meta: Tree,
    /// What `flush` fsyncs after sled's own flush.
    disk: Mutex<OnDisk>,
}

/// The database's files as far as fsyncs have covered them.
///
/// sled's flush writes its buffers and ends in `sync_file_range`, which is not an
/// fsync: it neither flushes the drive's cache nor persists the file's size or new
/// extents, so across a power cut it promises nothing. sled never fsyncs the large
/// values it writes as separate files under `blobs/` (nor that directory), writes its
/// `conf` file without an fsync, and renames snapshots into place without an fsync of
/// the directory. So after sled's flush, `Store::flush` fsyncs, in this order: every
/// blob file not fsynced yet, and `blobs/` if its names changed (a log entry must not
/// outlive the blob it points to); the log file `db`, where every transaction is
/// (an fsync through any descriptor of a file persists its data and size); every other
/// new file (`conf`, `snap.*`), and the database directory if its names changed.
#[derive(Debug)]
struct OnDisk {
    dir: PathBuf,
    /// sled's log file.
    log: File,
    /// Names in the directory as of the last fsync of it.
    names: BTreeSet<OsString>,
    /// Names in `blobs/` as of the last fsync of it.
    blobs: BTreeSet<OsString>,
}

/// sled's log file in the database directory.
const LOG_FILE: &str = "db";

impl OnDisk {
    /// Everything in `dir` fsynced, and `dir`'s own name in its parent.
    fn open(dir: &Path) -> std::io::Result<OnDisk> {
        let mut disk = OnDisk {
            dir: dir.to_owned(),
            log: File::open(dir.join(LOG_FILE))?,
            names: BTreeSet::new(),
            blobs: BTreeSet::new(),
        };
        disk.sync()?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
        Ok(disk)
    }

    /// The fsyncs described above.
    fn sync(&mut self) -> std::io::Result<()> {
        let blobs_dir = self.dir.join("blobs");
        let blobs = sync_new_files(&blobs_dir, &self.blobs, &[])?;
        if blobs != self.blobs {
            sync_dir_if_present(&blobs_dir)?;
            self.blobs = blobs;
        }
        self.log.sync_all()?;
        let names = sync_new_files(&self.dir, &self.names, &[LOG_FILE])?;
        if names != self.names {
            File::open(&self.dir)?.sync_all()?;
            self.names = names;
        }
        Ok(())
    }
}

/// The names in `dir` (none if it does not exist), after an fsync of every regular file
/// among them that is not in `known` or `skip`.
fn sync_new_files(
    dir: &Path,
    known: &BTreeSet<OsString>,
    skip: &[&str],
) -> std::io::Result<BTreeSet<OsString>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(e),
    };
    let mut names = BTreeSet::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if !known.contains(&name)
            && !skip.iter().any(|s| name == *s)
            && entry.file_type()?.is_file()
        {
            match File::open(entry.path()) {
                Ok(file) => file.sync_all()?,
                // Removed by sled meanwhile (an old snapshot, a collected blob).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        names.insert(name);
    }
    Ok(names)
}

fn sync_dir_if_present(dir: &Path) -> std::io::Result<()> {
    match File::open(dir) {
        Ok(d) => d.sync_all(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The four trees as seen inside one transaction.
struct Tx<'a> {
    items: &'a TransactionalTree,
    dead: &'a TransactionalTree,
    state: &'a TransactionalTree,
    meta: &'a TransactionalTree,
}

type TxResult<T> = Result<T, ConflictableTransactionError<QueueError>>;

/// What `Store::next_ready` found at the head of a queue.
#[derive(Debug)]
pub(crate) enum Candidate {
    /// A well-formed item.
    Item { id: u64, record: ItemRecord },
    /// An item whose record does not decode: it has to go to the dead letter raw.
    Broken {
        id: u64,
        raw: Vec<u8>,
        error: QueueError,
    },
}

/// One item as `Store::verify` hands it to the caller's hook.
#[derive(Debug)]
pub(crate) struct Visit<'a> {
    pub queue: &'a str,
    pub dead: bool,
    pub id: u64,
    pub payload: &'a [u8],
}

fn place(queue: &str) -> String {
    format!("queue {queue:?}")
}

fn storage(action: impl Into<String>) -> impl FnOnce(sled::Error) -> QueueError {
    let action = action.into();
    move |source| QueueError::Storage { action, source }
}

fn tx_error(action: impl Into<String>) -> impl FnOnce(TransactionError<QueueError>) -> QueueError {
    let action = action.into();
    move |error| match error {
        TransactionError::Abort(inner) => inner,
        TransactionError::Storage(source) => QueueError::Storage { action, source },
    }
}

fn abort<T>(error: QueueError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(error))
}

fn depth_key(queue: &str) -> Vec<u8> {
    let mut key = META_DEPTH.to_vec();
    key.extend_from_slice(queue.as_bytes());
    key
}

fn decode_item(queue: &str, id: u64, bytes: &[u8]) -> Result<ItemRecord, QueueError> {
    let mut record: ItemRecord = codec::decode(bytes, || place(queue), || format!("item {id}"))?;
    codec::upgrade_payload(bytes[0], &mut record.payload);
    Ok(record)
}

fn decode_dead(id: u64, bytes: &[u8]) -> Result<DeadRecord, QueueError> {
    let mut record: DeadRecord =
        codec::decode(bytes, || "dead letter".to_owned(), || format!("item {id}"))?;
    codec::upgrade_payload(bytes[0], &mut record.payload);
    Ok(record)
}

impl Tx<'_> {
    /// Writes or deletes state keys.
    fn write_state(&self, state: &[StateChange]) -> TxResult<()> {
        for (key, value) in state {
            match value {
                Some(bytes) => self.state.insert(key.as_bytes(), bytes.clone())?,
                None => self.state.remove(key.as_bytes())?,
            };
        }
        Ok(())
    }

    /// Removes an item and its index entry; the caller adjusts the depth.
    fn take_item(&self, queue: &str, id: u64) -> TxResult<ItemRecord> {
        let Some(bytes) = self.items.get(item_key(queue, id))? else {
            return abort(QueueError::ItemGone {
                queue: queue.to_owned(),
                id,
            });
        };
        let record = match decode_item(queue, id, &bytes) {
            Ok(record) => record,
            Err(error) => return abort(error),
        };
        self.items.remove(item_key(queue, id))?;
        self.items.remove(slot_key(queue, id, record.slot))?;
        Ok(record)
    }

    /// Writes an item record and its index entry; the caller adjusts the depth.
    fn put_item(&self, queue: &str, id: u64, record: &ItemRecord) -> TxResult<()> {
        let bytes = match codec::encode(record, &format!("item {id} of {}", place(queue))) {
            Ok(bytes) => bytes,
            Err(error) => return abort(error),
        };
        self.items.insert(item_key(queue, id), bytes)?;
        self.items
            .insert(slot_key(queue, id, record.slot), id.to_be_bytes().to_vec())?;
        Ok(())
    }

    /// Pushes a fresh item to the back of `queue`, returning its new id.
    fn push(&self, queue: &str, payload: &[u8], now_ms: u64) -> TxResult<u64> {
        let id = self.items.generate_id()?;
        let record = ItemRecord {
            first_seen_ms: now_ms,
            attempts: 0,
            slot: Slot::Ready(back_position(id)),
            first_error: None,
            last_error: None,
            last_tried_ms: None,
            payload: payload.to_vec(),
        };
        self.put_item(queue, id, &record)?;
        Ok(id)
    }

    fn adjust_depths(&self, deltas: &BTreeMap<&str, i64>) -> TxResult<()> {
        for (queue, delta) in deltas {
            if *delta == 0 {
                continue;
            }
            let key = depth_key(queue);
            let old = self
                .meta
                .get(&key)?
                .and_then(|v| read_u64(&v, 0))
                .unwrap_or(0);
            let new = (old as i64 + delta).max(0) as u64;
            if new == 0 {
                self.meta.remove(key)?;
            } else {
                self.meta.insert(key, new.to_be_bytes().to_vec())?;
            }
        }
        Ok(())
    }
}

/// Removes the snapshot files sled had not finished writing when its process died.
///
/// sled writes a snapshot to `snap.<lsn>.generating`, syncs it and renames it to
/// `snap.<lsn>`; but when it opens a database it reads the highest-named `snap.*` file,
/// the unfinished one included, and refuses to open if its checksum does not match
/// ("Read corrupted data at file offset None"). A process killed while writing one (as a
/// daemon can be at any moment, and sled writes one right after opening) would leave a
/// queue that never opens again. The unfinished file holds nothing the log does not:
/// the previous complete snapshot, or none, plus the log recover the same state.
fn remove_unfinished_snapshots(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(
                "removing {}: a queue snapshot left unfinished by an interrupted run",
                entry.path().display()
            );
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Hands the calling thread's crossbeam-epoch bag of deferred frees on, so that they can
/// be collected. sled frees the tree nodes and the 512 KiB log buffers it replaces (a
/// flush seals one) through deferred frees, which wait in a bag of 64 per thread until it
/// fills; on the blocking pool's many threads and on the flusher thread those bags kept
/// tens of MiB alive. Call after every piece of work a thread does on the store.
pub(crate) fn release_deferred_frees() {
    crossbeam_epoch::pin().flush();
}

impl Store {
    /// Opens (or creates) the database in `dir`. sled's own periodic flusher is off:
    /// every fsync comes from `Store::flush`, called by the group-commit flusher.
    pub(crate) fn open(dir: &Path, cache_capacity_bytes: u64) -> Result<Store, QueueError> {
        let open_error = |source| QueueError::Open {
            path: dir.to_owned(),
            source,
        };
        remove_unfinished_snapshots(dir).map_err(|e| QueueError::Open {
            path: dir.to_owned(),
            source: sled::Error::Io(e),
        })?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_capacity_bytes)
            .flush_every_ms(None)
            .open()
            .map_err(open_error)?;
        let tree = |name: &str| db.open_tree(name).map_err(open_error);
        let store = Store {
            items: tree("items")?,
            dead: tree("dead")?,
            state: tree("state")?,
            meta: tree("meta")?,
            db: db.clone(),
            disk: Mutex::new(OnDisk::open(dir).map_err(|e| open_error(sled::Error::Io(e)))?),
        };
        match store.meta.get(META_FORMAT).map_err(open_error)? {
            None => {
                store
                    .meta
                    .insert(META_FORMAT, vec![FORMAT_VERSION])
                    .map_err(open_error)?;
                store.flush()?;
            }
            // A version-1 database holds version-1 values, which this build reads.
            Some(v) if matches!(v.as_ref(), [v] if (codec::OLDEST_VERSION..=FORMAT_VERSION).contains(v)) =>
                {}
            Some(v) => {
                return Err(QueueError::UnknownVersion {
                    place: "queue database".to_owned(),
                    key: "format".to_owned(),
                    version: v.first().copied().unwrap_or(0),
                });
            }
        }
        Ok(store)
    }

    /// Makes everything written so far durable: sled's flush, then the fsyncs of
    /// [`OnDisk`].
    pub(crate) fn flush(&self) -> Result<(), QueueError> {
        self.db
            .flush()
            .map_err(storage("flushing queue database"))?;
        self.disk
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .sync()
            .map_err(|e| storage("syncing queue database files")(sled::Error::Io(e)))
    }

    /// Runs `body` as one serializable transaction over all four trees.
    fn transact<A>(
        &self,
        action: &str,
        body: impl Fn(&Tx<'_>) -> TxResult<A>,
    ) -> Result<A, QueueError> {
        (&self.items, &self.dead, &self.state, &self.meta)
            .transaction(|(items, dead, state, meta)| {
                body(&Tx {
                    items,
                    dead,
                    state,
                    meta,
                })
            })
            .map_err(tx_error(action))
    }

    /// Removes the `consumed` items and applies pushes and state changes, atomically.
    /// Returns the ids of the pushed items, in push order.
    pub(crate) fn apply(
        &self,
        consumed: &[(String, u64)],
        pushes: &[(String, Vec<u8>)],
        buried: &[Buried],
        state: &[StateChange],
        now_ms: u64,
    ) -> Result<Vec<u64>, QueueError> {
        let action = match consumed {
            [] => format!("pushing {} items", pushes.len()),
            [(queue, id)] => format!("handing off item {id} from {}", place(queue)),
            _ => format!("handing off {} items", consumed.len()),
        };
        self.transact(&action, |tx| {
            let mut deltas: BTreeMap<&str, i64> = BTreeMap::new();
            for (queue, id) in consumed {
                tx.take_item(queue, *id)?;
                *deltas.entry(queue).or_default() -= 1;
            }
            let mut ids = Vec::with_capacity(pushes.len());
            for (queue, payload) in pushes {
                ids.push(tx.push(queue, payload, now_ms)?);
                *deltas.entry(queue).or_default() += 1;
            }
            for b in buried {
                let id = tx.items.generate_id()?;
                let dead = DeadRecord {
                    queue: b.queue.clone(),
                    attempts: b.attempts,
                    first_seen_ms: now_ms,
                    last_tried_ms: now_ms,
                    first_error: b.reason.clone(),
                    last_error: b.reason.clone(),
                    metadata: b.metadata.clone(),
                    payload: b.payload.clone(),
                };
                let bytes = match codec::encode(&dead, &format!("dead letter {id}")) {
                    Ok(bytes) => bytes,
                    Err(error) => return abort(error),
                };
                tx.dead.insert(id.to_be_bytes().to_vec(), bytes)?;
            }
            tx.write_state(state)?;
            tx.adjust_depths(&deltas)?;
            Ok(ids)
        })
    }

    /// Finds the next item to work on in `queue`, skipping ids for which `skip` says
    /// yes (items claimed by other workers): first the waiting item that has been due
    /// the longest, then the front of the ready index.
    pub(crate) fn next_ready(
        &self,
        queue: &str,
        now_ms: u64,
        skip: &mut dyn FnMut(u64) -> bool,
    ) -> Result<Option<Candidate>, QueueError> {
        Ok(self.next_ready_many(queue, now_ms, 1, skip)?.pop())
    }

    /// Up to `max` items of `queue` in the order `next_ready` would hand them out one by
    /// one (due retries first, then the ready index), in one pass over each index.
    /// `skip` says which ids are held already.
    pub(crate) fn next_ready_many(
        &self,
        queue: &str,
        now_ms: u64,
        max: usize,
        skip: &mut dyn FnMut(u64) -> bool,
    ) -> Result<Vec<Candidate>, QueueError> {
        let reading = || storage(format!("reading {}", place(queue)));
        let mut found = Vec::new();
        if max == 0 {
            return Ok(found);
        }
        let waiting = waiting_prefix(queue);
        for entry in self.items.scan_prefix(&waiting) {
            let (key, _) = entry.map_err(reading())?;
            let (Some(due), Some(id)) = (
                read_u64(&key, waiting.len()),
                read_u64(&key, waiting.len() + 8),
            ) else {
                continue;
            };
            if due > now_ms {
                break;
            }
            if skip(id) {
                continue;
            }
            if let Some(candidate) = self.candidate(queue, id)? {
                found.push(candidate);
                if found.len() == max {
                    return Ok(found);
                }
            }
        }
        for entry in self.items.scan_prefix(ready_prefix(queue)) {
            let (_, value) = entry.map_err(reading())?;
            let Some(id) = read_u64(&value, 0) else {
                continue;
            };
            if skip(id) {
                continue;
            }
            if let Some(candidate) = self.candidate(queue, id)? {
                found.push(candidate);
                if found.len() == max {
                    break;
                }
            }
        }
        Ok(found)
    }

    fn candidate(&self, queue: &str, id: u64) -> Result<Option<Candidate>, QueueError> {
        let bytes = self
            .items
            .get(item_key(queue, id))
            .map_err(storage(format!("reading item {id} of {}", place(queue))))?;
        // Gone between reading the index and the record: handed off meanwhile.
        let Some(bytes) = bytes else { return Ok(None) };
        Ok(Some(match decode_item(queue, id, &bytes) {
            Ok(record) => Candidate::Item { id, record },
            Err(error) => Candidate::Broken {
                id,
                raw: bytes.to_vec(),
                error,
            },
        }))
    }

    /// The due time (ms) of the earliest waiting item in `queue` not skipped.
    pub(crate) fn next_due(
        &self,
        queue: &str,
        skip: &mut dyn FnMut(u64) -> bool,
    ) -> Result<Option<u64>, QueueError> {
        let waiting = waiting_prefix(queue);
        for entry in self.items.scan_prefix(&waiting) {
            let (key, _) = entry.map_err(storage(format!("reading {}", place(queue))))?;
            if let (Some(due), Some(id)) = (
                read_u64(&key, waiting.len()),
                read_u64(&key, waiting.len() + 8),
            ) && !skip(id)
            {
                return Ok(Some(due));
            }
        }
        Ok(None)
    }

    /// Records a failed attempt and moves the item to the waiting index until `due_ms`.
    pub(crate) fn retry_later(
        &self,
        queue: &str,
        id: u64,
        error: &str,
        due_ms: u64,
        now_ms: u64,
    ) -> Result<(), QueueError> {
        self.transact(
            &format!("scheduling a retry of item {id} in {}", place(queue)),
            |tx| {
                let mut record = tx.take_item(queue, id)?;
                record.attempts = record.attempts.saturating_add(1);
                record.first_error.get_or_insert_with(|| error.to_owned());
                record.last_error = Some(error.to_owned());
                record.last_tried_ms = Some(now_ms);
                record.slot = Slot::Waiting(due_ms);
                tx.put_item(queue, id, &record)
            },
        )
    }

    /// Moves an item to the dead letter, keeping its history.
    pub(crate) fn dead_letter(
        &self,
        queue: &str,
        id: u64,
        reason: &str,
        metadata: &[(String, String)],
        state: &[StateChange],
        now_ms: u64,
    ) -> Result<(), QueueError> {
        self.transact(
            &format!("dead-lettering item {id} of {}", place(queue)),
            |tx| {
                tx.write_state(state)?;
                let record = tx.take_item(queue, id)?;
                let dead = DeadRecord {
                    queue: queue.to_owned(),
                    attempts: record.attempts.saturating_add(1),
                    first_seen_ms: record.first_seen_ms,
                    last_tried_ms: now_ms,
                    first_error: record.first_error.unwrap_or_else(|| reason.to_owned()),
                    last_error: reason.to_owned(),
                    metadata: metadata.to_vec(),
                    payload: record.payload,
                };
                let bytes = match codec::encode(&dead, &format!("dead letter {id}")) {
                    Ok(bytes) => bytes,
                    Err(error) => return abort(error),
                };
                tx.dead.insert(id.to_be_bytes().to_vec(), bytes)?;
                tx.adjust_depths(&BTreeMap::from([(queue, -1)]))
            },
        )
    }

    /// Moves an item whose record does not decode to the dead letter, raw bytes as its
    /// payload, removing whatever index entry points at it.
    pub(crate) fn bury_broken(
        &self,
        queue: &str,
        id: u64,
        raw: &[u8],
        reason: &str,
        now_ms: u64,
    ) -> Result<(), QueueError> {
        let index_keys = self.index_keys_of(queue, id)?;
        self.transact(
            &format!("dead-lettering broken item {id} of {}", place(queue)),
            |tx| {
                if tx.items.remove(item_key(queue, id))?.is_none() {
                    return abort(QueueError::ItemGone {
                        queue: queue.to_owned(),
                        id,
                    });
                }
                for key in &index_keys {
                    tx.items.remove(key.as_ref())?;
                }
                let dead = DeadRecord {
                    queue: queue.to_owned(),
                    attempts: 1,
                    first_seen_ms: now_ms,
                    last_tried_ms: now_ms,
                    first_error: reason.to_owned(),
                    last_error: reason.to_owned(),
                    metadata: vec![("raw_record".to_owned(), "true".to_owned())],
                    payload: raw.to_vec(),
                };
                let bytes = match codec::encode(&dead, &format!("dead letter {id}")) {
                    Ok(bytes) => bytes,
                    Err(error) => return abort(error),
                };
                tx.dead.insert(id.to_be_bytes().to_vec(), bytes)?;
                tx.adjust_depths(&BTreeMap::from([(queue, -1)]))
            },
        )
    }

    /// The index keys (ready or waiting) that point at item `id`, found by scanning.
    fn index_keys_of(&self, queue: &str, id: u64) -> Result<Vec<IVec>, QueueError> {
        let mut keys = Vec::new();
        let waiting = waiting_prefix(queue);
        for prefix in [ready_prefix(queue), waiting.clone()] {
            for entry in self.items.scan_prefix(&prefix) {
                let (key, value) = entry.map_err(storage(format!("reading {}", place(queue))))?;
                let points_at = if prefix == waiting {
                    read_u64(&key, waiting.len() + 8)
                } else {
                    read_u64(&value, 0)
                };
                if points_at == Some(id) {
                    keys.push(key);
                }
            }
        }
        Ok(keys)
    }

    /// Hands each dead letter matching `filter` to `visit`, decoded, in id order; one
    /// record (with its payload) is in memory at a time.
    pub(crate) fn dead_letters(
        &self,
        filter: &DeadLetterFilter,
        visit: &mut dyn FnMut(u64, DeadRecord),
    ) -> Result<(), QueueError> {
        if let DeadLetterFilter::Id(id) = filter {
            if let Some(record) = self.dead_letter_record(id.0)? {
                visit(id.0, record);
            }
            return Ok(());
        }
        for entry in self.dead.iter() {
            let (key, value) = entry.map_err(storage("reading the dead letter"))?;
            let Some(id) = read_u64(&key, 0) else {
                continue;
            };
            let record = decode_dead(id, &value)?;
            if filter.matches(&record.queue) {
                visit(id, record);
            }
        }
        Ok(())
    }

    /// One dead letter, if there is one with this id.
    pub(crate) fn dead_letter_record(&self, id: u64) -> Result<Option<DeadRecord>, QueueError> {
        let value = self
            .dead
            .get(id.to_be_bytes())
            .map_err(storage(format!("reading dead letter {id}")))?;
        value.map(|v| decode_dead(id, &v)).transpose()
    }

    /// Ids of dead letters matching `filter`, ascending. For `All` only keys are read, so
    /// replaying or purging a large dead letter does not hold its payloads in memory.
    fn dead_letter_ids(&self, filter: &DeadLetterFilter) -> Result<Vec<u64>, QueueError> {
        if let DeadLetterFilter::All = filter {
            let mut ids = Vec::new();
            for key in self.dead.iter().keys() {
                let key = key.map_err(storage("reading the dead letter"))?;
                ids.extend(read_u64(&key, 0));
            }
            return Ok(ids);
        }
        let mut ids = Vec::new();
        self.dead_letters(filter, &mut |id, _| ids.push(id))?;
        Ok(ids)
    }

    /// Moves matching dead letters back to the front of their queues, attempts reset,
    /// in chunks of one transaction each. Returns the queues that received items and how
    /// many each.
    pub(crate) fn replay(
        &self,
        filter: &DeadLetterFilter,
    ) -> Result<BTreeMap<String, u64>, QueueError> {
        let mut ids = self.dead_letter_ids(filter)?;
        // Walk from the highest id down: every item replayed later lands further in
        // front, so after the last chunk the lowest id is at the very front and the
        // replayed items keep their original order.
        ids.reverse();
        let mut moved: BTreeMap<String, u64> = BTreeMap::new();
        for chunk in ids.chunks(CHUNK) {
            let chunk_moved = self.transact("replaying dead letters", |tx| {
                let mut queues: Vec<String> = Vec::new();
                for id in chunk {
                    let Some(bytes) = tx.dead.remove(id.to_be_bytes().to_vec())? else {
                        continue; // purged meanwhile
                    };
                    let dead = match decode_dead(*id, &bytes) {
                        Ok(dead) => dead,
                        Err(error) => return abort(error),
                    };
                    let fresh = tx.items.generate_id()?;
                    let record = ItemRecord {
                        first_seen_ms: dead.first_seen_ms,
                        attempts: 0,
                        slot: Slot::Ready(front_position(fresh)),
                        first_error: None,
                        last_error: None,
                        last_tried_ms: None,
                        payload: dead.payload,
                    };
                    tx.put_item(&dead.queue, *id, &record)?;
                    queues.push(dead.queue);
                }
                let mut deltas: BTreeMap<&str, i64> = BTreeMap::new();
                for queue in &queues {
                    *deltas.entry(queue.as_str()).or_default() += 1;
                }
                tx.adjust_depths(&deltas)?;
                Ok(queues)
            })?;
            for queue in chunk_moved {
                *moved.entry(queue).or_default() += 1;
            }
        }
        Ok(moved)
    }

    /// Deletes matching dead letters for good. Returns how many.
    pub(crate) fn purge(&self, filter: &DeadLetterFilter) -> Result<u64, QueueError> {
        let ids = self.dead_letter_ids(filter)?;
        let mut purged = 0;
        for chunk in ids.chunks(CHUNK) {
            purged += self.transact("purging dead letters", |tx| {
                let mut n = 0;
                for id in chunk {
                    if tx.dead.remove(id.to_be_bytes().to_vec())?.is_some() {
                        n += 1;
                    }
                }
                Ok(n)
            })?;
        }
        Ok(purged)
    }

    /// Items in `queue` (kept as a counter, updated in every transaction).
    pub(crate) fn depth(&self, queue: &str) -> Result<u64, QueueError> {
        let value = self
            .meta
            .get(depth_key(queue))
            .map_err(storage(format!("reading the depth of {}", place(queue))))?;
        Ok(value.and_then(|v| read_u64(&v, 0)).unwrap_or(0))
    }

    /// Every queue that holds items, with its depth.
    pub(crate) fn queues(&self) -> Result<Vec<(String, u64)>, QueueError> {
        let mut queues = Vec::new();
        for entry in self.meta.scan_prefix(META_DEPTH) {
            let (key, value) = entry.map_err(storage("reading queue depths"))?;
            let name = String::from_utf8_lossy(&key[META_DEPTH.len()..]).into_owned();
            queues.push((name, read_u64(&value, 0).unwrap_or(0)));
        }
        Ok(queues)
    }

    /// Hands every item of `queue` to `visit`, in id order, one record at a time.
    pub(crate) fn items_of(
        &self,
        queue: &str,
        visit: &mut dyn FnMut(u64, ItemRecord),
    ) -> Result<(), QueueError> {
        let prefix = item_prefix(queue);
        for entry in self.items.scan_prefix(&prefix) {
            let (key, value) = entry.map_err(storage(format!("reading {}", place(queue))))?;
            let Some(id) = read_u64(&key, prefix.len()) else {
                continue;
            };
            visit(id, decode_item(queue, id, &value)?);
        }
        Ok(())
    }

    /// When the item that entered `queue` first (lowest id) did so, in ms.
    pub(crate) fn oldest_first_seen(&self, queue: &str) -> Result<Option<u64>, QueueError> {
        let first = self
            .items
            .scan_prefix(item_prefix(queue))
            .next()
            .transpose()
            .map_err(storage(format!("reading {}", place(queue))))?;
        let Some((key, value)) = first else {
            return Ok(None);
        };
        let id = read_u64(&key, item_prefix(queue).len()).unwrap_or(0);
        Ok(Some(decode_item(queue, id, &value)?.first_seen_ms))
    }

    /// A state value's bytes (version byte included).
    pub(crate) fn state_get(&self, key: &str) -> Result<Option<IVec>, QueueError> {
        self.state
            .get(key.as_bytes())
            .map_err(storage(format!("reading state key {key:?}")))
    }

    /// State entries whose key starts with `prefix`, in key order.
    pub(crate) fn state_scan(&self, prefix: &str) -> Result<Vec<(String, IVec)>, QueueError> {
        let mut entries = Vec::new();
        for entry in self.state.scan_prefix(prefix.as_bytes()) {
            let (key, value) = entry.map_err(storage(format!("reading state under {prefix:?}")))?;
            entries.push((String::from_utf8_lossy(&key).into_owned(), value));
        }
        Ok(entries)
    }

    /// The first `limit` state keys under `prefix` below `below` (if given), in order.
    pub(crate) fn state_keys_range(
        &self,
        prefix: &str,
        below: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, QueueError> {
        let mut keys = Vec::new();
        for entry in self.state.scan_prefix(prefix.as_bytes()).keys() {
            let key = entry.map_err(storage(format!("reading state under {prefix:?}")))?;
            if keys.len() == limit || below.is_some_and(|b| &*key >= b.as_bytes()) {
                break;
            }
            keys.push(String::from_utf8_lossy(&key).into_owned());
        }
        Ok(keys)
    }

    /// Walks every stored value, checking structure and decoding, and hands every item
    /// (queued or dead) to `visit`. Returns the problems found.
    pub(crate) fn verify(
        &self,
        visit: &mut dyn FnMut(&Visit<'_>) -> Result<(), String>,
    ) -> Result<(u64, u64, Vec<String>), QueueError> {
        let mut problems = Vec::new();
        let items_seen = self.verify_items(visit, &mut problems)?;
        let dead_seen = self.verify_dead(visit, &mut problems)?;
        self.verify_state(&mut problems)?;
        Ok((items_seen, dead_seen, problems))
    }

    /// The queued items: each decodes, its index entry points back at it, each index
    /// entry points at an item, and each queue's count is what it holds.
    fn verify_items(
        &self,
        visit: &mut dyn FnMut(&Visit<'_>) -> Result<(), String>,
        problems: &mut Vec<String>,
    ) -> Result<u64, QueueError> {
        let mut counted: BTreeMap<String, u64> = BTreeMap::new();
        let mut items_seen = 0;
        for entry in self.items.iter() {
            let (key, value) = entry.map_err(storage("reading queue items"))?;
            let Some((queue, tag, rest)) = split_items_key(&key) else {
                problems.push(format!("items key {key:?} does not parse"));
                continue;
            };
            match (tag, read_u64(rest, 0)) {
                (b'i', Some(id)) if rest.len() == 8 => {
                    items_seen += 1;
                    *counted.entry(queue.clone()).or_default() += 1;
                    let record = match decode_item(&queue, id, &value) {
                        Ok(record) => record,
                        Err(error) => {
                            problems.push(error.to_string());
                            continue;
                        }
                    };
                    let index = slot_key(&queue, id, record.slot);
                    let points_back = self
                        .items
                        .get(&index)
                        .map_err(storage("reading queue index"))?
                        .is_some_and(|v| read_u64(&v, 0) == Some(id));
                    if !points_back {
                        problems.push(format!("item {id} of {} has no index entry", place(&queue)));
                    }
                    let visited = Visit {
                        queue: &queue,
                        dead: false,
                        id,
                        payload: &record.payload,
                    };
                    if let Err(problem) = visit(&visited) {
                        problems.push(format!("item {id} of {}: {problem}", place(&queue)));
                    }
                }
                (b'r' | b'w', Some(_)) => {
                    let id = read_u64(&value, 0).unwrap_or(u64::MAX);
                    let record = self
                        .items
                        .get(item_key(&queue, id))
                        .map_err(storage("reading queue items"))?;
                    let matches = record
                        .and_then(|bytes| decode_item(&queue, id, &bytes).ok())
                        .is_some_and(|r| slot_key(&queue, id, r.slot) == key.as_ref());
                    if !matches {
                        problems.push(format!(
                            "index entry {key:?} of {} points at no item",
                            place(&queue)
                        ));
                    }
                }
                _ => problems.push(format!("items key {key:?} does not parse")),
            }
        }
        for (queue, depth) in self.queues()? {
            let found = counted.remove(&queue).unwrap_or(0);
            if found != depth {
                problems.push(format!(
                    "{} counts {depth} items but holds {found}",
                    place(&queue)
                ));
            }
        }
        for (queue, found) in counted {
            problems.push(format!(
                "{} counts 0 items but holds {found}",
                place(&queue)
            ));
        }
        Ok(items_seen)
    }

    /// The dead letters: each decodes.
    fn verify_dead(
        &self,
        visit: &mut dyn FnMut(&Visit<'_>) -> Result<(), String>,
        problems: &mut Vec<String>,
    ) -> Result<u64, QueueError> {
        let mut dead_seen = 0;
        for entry in self.dead.iter() {
            let (key, value) = entry.map_err(storage("reading the dead letter"))?;
            dead_seen += 1;
            let Some(id) = read_u64(&key, 0) else {
                problems.push(format!("dead letter key {key:?} does not parse"));
                continue;
            };
            match decode_dead(id, &value) {
                Ok(record) => {
                    let visited = Visit {
                        queue: &record.queue,
                        dead: true,
                        id,
                        payload: &record.payload,
                    };
                    if let Err(problem) = visit(&visited) {
                        problems.push(format!("dead letter {id}: {problem}"));
                    }
                }
                Err(error) => problems.push(error.to_string()),
            }
        }
        Ok(dead_seen)
    }

    /// The state records: each has a format version this build reads.
    fn verify_state(&self, problems: &mut Vec<String>) -> Result<(), QueueError> {
        for entry in self.state.iter() {
            let (key, value) = entry.map_err(storage("reading state"))?;
            if !value
                .first()
                .is_some_and(|v| (codec::OLDEST_VERSION..=FORMAT_VERSION).contains(v))
            {
                problems.push(format!(
                    "state key {:?} has unknown format version {:?}",
                    String::from_utf8_lossy(&key),
                    value.first()
                ));
            }
        }
        Ok(())
    }
}

/// Splits an `items` key into queue name, tag byte and the rest.
fn split_items_key(key: &[u8]) -> Option<(String, u8, &[u8])> {
    let len = u16::from_be_bytes(key.get(..2)?.try_into().ok()?) as usize;
    let name = std::str::from_utf8(key.get(2..2 + len)?).ok()?;
    let tag = *key.get(2 + len)?;
    debug_assert_eq!(queue_prefix(name).len(), 2 + len);
    Some((name.to_owned(), tag, &key[3 + len..]))
}
