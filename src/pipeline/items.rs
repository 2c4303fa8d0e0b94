//! What travels through the queues. Every type here is postcard-encoded by `queue`, so
//! fields are positional and there is no per-type version: a field added, removed or
//! reordered here or in `model::Session` makes the items already queued on an
//! installation's disk undecodable. New kinds of item are new enum variants at the end
//! (old items keep their tags). `tests/queue_format.rs` pins the encoding of every item
//! type in a golden file, so such a change fails the suite instead of surprising an
//! upgrade.
//!
//! | queue                 | item           | producer              | consumer       |
//! |-----------------------|----------------|-----------------------|----------------|
//! | `fetched`             | `FetchedBody`  | fetch                 | parse          |
//! | `download/<site>`     | `DownloadTask` | parse, scheduler      | download       |
//! | `deliver/<dest>`      | `DeliverItem`  | parse, download, deliver (a split bundle) | deliver |
//! | `rejected`            | `Rejected`     | parse                 | moved at once to the dead letter |
//! | `fetch/<site>`        | `FetchTask`    | fetch (a request that failed), parse (a malformed body), fetch worker (a split) | fetch worker |
//!
//! Every item that stems from a report body carries that body's `Lane` (its last field),
//! so the stages can account for a backfill job's items (see `backfill`). The `lane`
//! fields were added after the first items were written; items on disk from a version
//! without them do not decode and go to the dead letter, which is acceptable while no
//! installation runs such a version.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::appliance::{Priority, WindowBy};
use crate::fetch::{FetchRequest, Selection};
use crate::model::{Naming, Recording, Report, ReportRoot, Session};

/// The queue of spooled report bodies.
pub const FETCHED: &str = "fetched";
/// The queue of bad sessions on their way to the dead letter.
pub const REJECTED: &str = "rejected";

/// The delivery queue of a destination.
pub fn deliver_queue(destination: &str) -> String {
    format!("deliver/{destination}")
}

/// The queue of a site's report requests that failed once: retried, split or, in the
/// dead letter, waiting for `btic replay`.
pub fn fetch_queue(site: &str) -> String {
    format!("fetch/{site}")
}

/// The download queue of a site.
pub fn download_queue(site: &str) -> String {
    format!("download/{site}")
}

/// Which lane an item travels in: the daemon's live schedules, or one backfill job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lane {
    /// Planned by a schedule from the live watermark.
    Live,
    /// Enqueued by the backfill job with this id.
    Backfill(String),
}

impl Lane {
    /// The priority of its report requests in the account's budget.
    pub fn report_priority(&self) -> Priority {
        match self {
            Lane::Live => Priority::Live,
            Lane::Backfill(_) => Priority::Backfill,
        }
    }

    /// The priority of its downloads (recordings) in the account's budget.
    pub fn download_priority(&self) -> Priority {
        match self {
            Lane::Live => Priority::Download,
            Lane::Backfill(_) => Priority::Backfill,
        }
    }

    /// The backfill job's id, for the backfill lane.
    pub fn backfill_job(&self) -> Option<&str> {
        match self {
            Lane::Live => None,
            Lane::Backfill(job) => Some(job),
        }
    }
}

impl DownloadTask {
    /// The lane it travels in (backups always travel in the live one).
    pub fn lane(&self) -> Lane {
        match self {
            DownloadTask::Recording { lane, .. } => lane.clone(),
            DownloadTask::Backup { .. } => Lane::Live,
        }
    }

    /// The backfill job it belongs to, if any.
    pub fn backfill_job(&self) -> Option<&str> {
        match self {
            DownloadTask::Recording { lane, .. } => lane.backfill_job(),
            DownloadTask::Backup { .. } => None,
        }
    }
}

/// Where the sessions of one body go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routes {
    /// Destinations that take the session data.
    pub sessions: Vec<String>,
    /// `files` destinations that take the session's recordings.
    pub recordings: Vec<String>,
    /// Destinations that also take sessions still in progress (SQL destinations of
    /// transfers with `include_in_progress`); each later version replaces the earlier.
    pub in_progress: Vec<String>,
    /// Whether the parse stage keeps the set of sessions in progress of this site
    /// (which the fetch stage asks for again until they end).
    pub track_open: bool,
}

/// A report request to make again: one that failed in a scheduled or backfill run (the
/// watermark or the job's cursor moved past it in the transaction that queued it), a
/// body that came back malformed, or half of an LSID list the appliance refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchTask {
    /// The `[[site]]`.
    pub site: String,
    /// The request.
    pub request: FetchRequest,
    /// Where its sessions go.
    pub routes: Routes,
    /// The lane it travels in.
    pub lane: Lane,
}

/// A report body on disk, waiting to be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchedBody {
    /// The `[[site]]` it came from.
    pub site: String,
    /// The site's host name without a port (`host_name`, `%SUPPORT_SITE_HOST%`).
    pub host: String,
    /// The report and window, for messages (`SupportSession end_time=... duration=...`).
    pub request: String,
    /// The spool file.
    pub body: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Where its sessions go.
    pub routes: Routes,
    /// The lane it travels in.
    pub lane: Lane,
}

impl FetchedBody {
    /// The request the body answers, read back from its text (`FetchRequest`'s form);
    /// `None` for a text of another shape.
    pub fn fetch_request(&self) -> Option<FetchRequest> {
        self.request.parse().ok()
    }

    /// The report the body answers: `request` starts with the report's name (every
    /// producer writes it so), which saves the item a field.
    pub fn report(&self) -> Report {
        let name = self.request.split_whitespace().next().unwrap_or_default();
        name.parse().unwrap_or(Report::SupportSession)
    }
}

/// Something to download from a site before it can be delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownloadTask {
    /// One recording of one session.
    Recording {
        /// The `[[site]]`.
        site: String,
        /// The session's naming values.
        naming: Naming,
        /// Which recording.
        recording: Recording,
        /// `files` destinations that take it.
        destinations: Vec<String>,
        /// The lane of the body it came from.
        lane: Lane,
    },
    /// The site's configuration backup.
    Backup {
        /// The `[[site]]`.
        site: String,
        /// The site's host name without a port.
        host: String,
        /// `files` destinations that take it.
        destinations: Vec<String>,
    },
}

/// One thing for one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliverItem {
    /// A session's data.
    Session {
        /// The `[[site]]`.
        site: String,
        /// `host_name`.
        host: String,
        /// The session.
        session: Box<Session>,
        /// Its `<session>` element as the appliance wrote it.
        raw: Vec<u8>,
        /// The report root's prefix and namespace declarations, which the files
        /// destination repeats around the element.
        root: ReportRoot,
        /// The lane of the body it came from.
        lane: Lane,
    },
    /// A recording on disk (this item owns the spool file).
    Recording {
        /// The `[[site]]`.
        site: String,
        /// The session's naming values.
        naming: Naming,
        /// Which recording.
        recording: Recording,
        /// `flv`, `mp4`, `bin`.
        extension: String,
        /// The spool file.
        spool: PathBuf,
        /// The lane of the body it came from.
        lane: Lane,
    },
    /// A site backup on disk (this item owns the spool file).
    Backup {
        /// The `[[site]]`.
        site: String,
        /// The site's host name without a port.
        host: String,
        /// The spool file.
        spool: PathBuf,
    },
    /// A presentation's data (files destinations only). Appended last: the variant's
    /// index is its postcard tag.
    Presentation {
        /// The `[[site]]`.
        site: String,
        /// Its naming values (`session_type` is `presentation`).
        naming: Naming,
        /// Its element as the appliance wrote it.
        raw: Vec<u8>,
        /// The report root's prefix and namespace declarations.
        root: ReportRoot,
        /// The lane of the body it came from.
        lane: Lane,
    },
    /// Up to `BUNDLE_SESSIONS` sessions of one body for one SQL destination, which
    /// takes them in batches anyway: one queue item instead of one per session keeps a
    /// large backlog's index (and the memory sled spends on it) small.
    Sessions {
        /// The `[[site]]`.
        site: String,
        /// `host_name`.
        host: String,
        /// The sessions, in report order.
        sessions: Vec<Session>,
        /// The lane of the body they came from.
        lane: Lane,
    },
}

/// The most sessions one `DeliverItem::Sessions` holds.
///
/// Fewer items mean a smaller page table in sled (it keeps an entry for every node and
/// splits a leaf at 16 keys, whatever their size), larger items larger leaves. sled's
/// cache is 256 shards that each keep at least their last node, so a leaf larger than a
/// shard's share of the cache (32 KiB of 8 MiB) stays resident per shard regardless of
/// the capacity: leaves of 16-session bundles (~110 KB) held ~28 MB. Four sessions
/// (~1.7 KB compressed each item) keep a leaf within its share (`benches/README.md`,
/// backlog).
pub const BUNDLE_SESSIONS: usize = 4;

impl DeliverItem {
    /// How many sessions it carries (1 for anything but a bundle).
    pub fn session_count(&self) -> usize {
        match self {
            DeliverItem::Sessions { sessions, .. } => sessions.len(),
            _ => 1,
        }
    }

    /// The spool file this item owns, if any.
    pub fn spool(&self) -> Option<&PathBuf> {
        match self {
            DeliverItem::Session { .. }
            | DeliverItem::Presentation { .. }
            | DeliverItem::Sessions { .. } => None,
            DeliverItem::Recording { spool, .. } | DeliverItem::Backup { spool, .. } => Some(spool),
        }
    }

    /// The lane it travels in (backups always travel in the live one).
    pub fn lane(&self) -> Lane {
        match self {
            DeliverItem::Session { lane, .. }
            | DeliverItem::Recording { lane, .. }
            | DeliverItem::Presentation { lane, .. }
            | DeliverItem::Sessions { lane, .. } => lane.clone(),
            DeliverItem::Backup { .. } => Lane::Live,
        }
    }

    /// The backfill job it belongs to, if any.
    pub fn backfill_job(&self) -> Option<&str> {
        match self {
            DeliverItem::Session { lane, .. }
            | DeliverItem::Recording { lane, .. }
            | DeliverItem::Presentation { lane, .. }
            | DeliverItem::Sessions { lane, .. } => lane.backfill_job(),
            DeliverItem::Backup { .. } => None,
        }
    }

    /// A short description for messages (`session 3f2c…`, `recording screen of 3f2c…`).
    pub fn describe(&self) -> String {
        match self {
            DeliverItem::Session { session, .. } => format!("session {}", session.lsid),
            DeliverItem::Recording {
                naming, recording, ..
            } => format!("recording {} of session {}", recording.label(), naming.lsid),
            DeliverItem::Backup { site, .. } => format!("backup of site {site:?}"),
            DeliverItem::Presentation { naming, .. } => format!("presentation {}", naming.lsid),
            DeliverItem::Sessions { sessions, .. } => match sessions.as_slice() {
                [one] => format!("session {}", one.lsid),
                [first, .., last] => format!(
                    "{} sessions ({} to {})",
                    sessions.len(),
                    first.lsid,
                    last.lsid
                ),
                [] => "no sessions".to_string(),
            },
        }
    }
}

/// A session the parser could not read, on its way to the dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// The `[[site]]`.
    pub site: String,
    /// Why.
    pub reason: String,
    /// The request whose body held it.
    pub request: String,
    /// The session's bytes as written, when known.
    pub raw: Vec<u8>,
    /// The lane of the body it came from.
    pub lane: Lane,
}

/// The dead-letter metadata of a report request: stage, site, report, what it selects
/// (`window` or `lsids`) and the request's text.
pub fn request_metadata(site: &str, request: &FetchRequest) -> Vec<(&'static str, String)> {
    let mut metadata = vec![
        ("stage", "fetch".to_string()),
        ("site", site.to_string()),
        ("report", request.report.as_str().to_string()),
    ];
    match &request.selection {
        Selection::Window(by, w) => metadata.push((
            "window",
            format!(
                "{} in [{}, {})",
                match by {
                    WindowBy::End => "ended",
                    WindowBy::Start => "started",
                },
                w.start.to_rfc3339(),
                w.end.to_rfc3339()
            ),
        )),
        Selection::Lsids(lsids) => metadata.push(("lsids", lsids.join(","))),
    }
    metadata.push(("request", request.to_string()));
    metadata
}

/// Borrows owned metadata as the queue takes it.
pub fn borrowed<'a>(metadata: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    metadata.iter().map(|(k, v)| (*k, v.as_str())).collect()
}
