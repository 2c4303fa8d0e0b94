//! The one error type of the queue library.

use std::path::PathBuf;

/// Everything that can go wrong inside the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The sled database under the state directory could not be opened.
    #[error("opening queue database in {path}: {source}")]
    Open {
        /// The directory given to `Queue::open`.
        path: PathBuf,
        /// What sled said.
        source: sled::Error,
    },
    /// A sled read, write, transaction or flush failed.
    #[error("{action}: {source}")]
    Storage {
        /// What was being done, with what (`handing off item 7 from queue "fetched"`).
        action: String,
        /// What sled said.
        source: sled::Error,
    },
    /// A stored value starts with a format-version byte this build does not know.
    #[error("decoding {place} key {key}: unknown format version {version}")]
    UnknownVersion {
        /// Where the value lives (`queue "fetched"`, `dead letter`, `state`).
        place: String,
        /// The key, readable (`item 42`, `watermark/support`).
        key: String,
        /// The version byte found.
        version: u8,
    },
    /// A stored value could not be decoded into the requested type.
    #[error("decoding {place} key {key}: {reason}")]
    Decode {
        /// Where the value lives (`queue "fetched"`, `dead letter`, `state`).
        place: String,
        /// The key, readable (`item 42`, `watermark/support`).
        key: String,
        /// What the decoder said.
        reason: String,
    },
    /// A value could not be encoded with postcard.
    #[error("encoding {what}: {reason}")]
    Encode {
        /// What was being encoded (`item for queue "fetched"`).
        what: String,
        /// What the encoder said.
        reason: String,
    },
    /// A queue name is empty, too long or contains a control character.
    #[error("invalid queue name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The item a ticket refers to is no longer where the ticket says it is.
    #[error("item {id} is no longer in queue {queue:?}")]
    ItemGone {
        /// The queue the ticket came from.
        queue: String,
        /// The item id.
        id: u64,
    },
    /// No dead letter has this id.
    #[error("no dead letter with id {id}")]
    DeadLetterNotFound {
        /// The id asked for.
        id: u64,
    },
    /// An earlier flush failed, so nothing written since can be called durable.
    #[error("flushing queue database: {reason}")]
    FlushFailed {
        /// What the failed flush said.
        reason: String,
    },
    /// The queue was closed, or its flusher thread is gone.
    #[error("queue database is closed")]
    Closed,
}

impl QueueError {
    /// Whether the disk refused a write or an fsync (full, failing): the storage's own
    /// failure, as opposed to a bad item or a closed queue.
    pub fn is_storage_failure(&self) -> bool {
        matches!(
            self,
            QueueError::Storage { .. } | QueueError::FlushFailed { .. }
        )
    }

    /// Whether opening failed because another process holds the database's lock (sled
    /// reports it as an IO error wrapping the `WouldBlock` of the file lock).
    pub(crate) fn is_lock_held(&self) -> bool {
        match self {
            QueueError::Open {
                source: sled::Error::Io(e),
                ..
            } => {
                e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("could not acquire lock")
            }
            _ => false,
        }
    }

    /// Whether the disk was full (ENOSPC), while opening or writing.
    pub fn is_disk_full(&self) -> bool {
        let source = match self {
            QueueError::Open { source, .. } | QueueError::Storage { source, .. } => source,
            QueueError::FlushFailed { reason } => return reason.contains("No space left"),
            _ => return false,
        };
        match source {
            sled::Error::Io(e) => {
                e.kind() == std::io::ErrorKind::StorageFull
                    || e.raw_os_error() == Some(28)
                    || e.to_string().contains("No space left")
            }
            _ => false,
        }
    }

    /// Whether trying the same operation again later can succeed. Only an IO error from
    /// the disk qualifies (a full disk can be freed); corruption, decoding problems and a
    /// failed flush need an operator.
    pub fn is_retryable(&self) -> bool {
        match self {
            QueueError::Storage { source, .. } => matches!(source, sled::Error::Io(_)),
            _ => false,
        }
    }
}
