//! Every key btic keeps in the queue's state area, in one place, with the record stored
//! under it: below both `pipeline`, which writes most of them, and `notify`, which reads
//! them. ARCHITECTURE.md has the same table for readers.
//!
//! | key                                     | record        | written by                                   |
//! |-----------------------------------------|---------------|----------------------------------------------|
//! | `watermark/<site>/<report>`             | i64 (UNIX s)  | fetch, with each body or request of a window |
//! | `watermark/<site>/SupportSession/started` | i64         | fetch of `start_time` windows (in progress)  |
//! | `rechecked/<site>/<report>`             | i64 (UNIX s)  | fetch, with each body of a last asking       |
//! | `window/<site>/<report>`                | u64 (s)       | fetch: the window length learnt, after a run |
//! | `digest/<site>/<at>/<lsid>`             | `SeenRecord`  | parse: the digest of what was handed on      |
//! | `budget/<site>`                         | `BudgetRecord`| the daemon, every few seconds                |
//! | `skew/<site>`                           | `SkewRecord`  | fetch, at each run                           |
//! | `open/<site>/<lsid>`                    | i64 (start)   | parse: a session seen in progress            |
//! | `parse/<item id>`                       | u64           | parse: records of a body handed on so far    |
//! | `schedule/<name>`                       | `ScheduleRun` | the scheduler, after each run                |
//! | `history/<started ms>/<name>`           | `RunRecord`   | the scheduler and backfill jobs, per run (the last `history::KEEP`) |
//! | `backfill/<job>`                        | `JobRecord`   | a backfill job, at start and with its summary |
//! | `backfill/<job>/next`, `.../next-presentations` | i64   | fetch: the job's cursor, with each window    |
//! | `backfill/<job>/fetched`                | bool          | the job, once every window is fetched        |
//! | `backfill/<job>/pushed/<step>`          | u64           | every hand-off that creates the job's items  |
//! | `backfill/<job>/done/<step>`            | `Finished`    | every hand-off that finishes one of them     |
//! | `notify/observed`                       | cursor        | the notifier, with the digests it fed        |
//! | `notify/notifier/<name>`                | its record    | the notifier                                 |
//!
//! `<step>` names a step by identity (`handoff::Step`), so a step redone after a crash
//! writes the same keys again.

use serde::{Deserialize, Serialize};

use crate::model::Report;

/// The live watermark of (site, report): every closed session that ended before it has
/// been handed on.
pub fn watermark(site: &str, report: Report) -> String {
    format!("watermark/{site}/{}", report.as_str())
}

/// The recheck mark of (site, report): every stretch of appliance time before it has
/// been asked for the last time (`fetch::plan`).
pub fn rechecked(site: &str, report: Report) -> String {
    format!("{RECHECKED}{site}/{}", report.as_str())
}

/// The prefix of every recheck mark.
pub const RECHECKED: &str = "rechecked/";

/// The report window length (seconds) the live lane of (site, report) has learnt.
pub fn window_length(site: &str, report: Report) -> String {
    format!("window/{site}/{}", report.as_str())
}

/// The prefix of the digests of a site's sessions handed on by the live lane.
pub fn seen_prefix(site: &str) -> String {
    format!("digest/{site}/")
}

/// The digest of session `lsid` of `site`, which ended (or, in progress, started) at
/// `at` (UNIX seconds, appliance time). Keyed by time first: a fetch goes forward in
/// time, so its digests land beside the ones it wrote last (not all over the tree, as
/// keys by session id did), and the digests to forget are one range at the front.
pub fn seen(site: &str, at: i64, lsid: &str) -> String {
    format!("{}{:012}/{lsid}", seen_prefix(site), at.max(0))
}

/// The key every digest of a session that ended before `at` sorts below, and every
/// other sorts at or above.
pub fn seen_before(site: &str, at: i64) -> String {
    format!("{}{:012}", seen_prefix(site), at.max(0))
}

/// Where builds before 2026-12-07 kept the digests: `seen/<site>/<lsid>`. They are no
/// longer read; the fetch stage forgets them.
pub fn seen_by_lsid_prefix(site: &str) -> String {
    format!("seen/{site}/")
}

/// What the live lane last handed on of a session: a fetch that brings the same bytes
/// for the same destinations hands nothing on again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenRecord {
    /// SHA-256 (first 16 bytes) of the session's bytes and its destinations.
    pub digest: [u8; 16],
    /// Its end time (its start while in progress), UNIX seconds, appliance time: the
    /// record is forgotten once the recheck marks are well past it.
    pub at: i64,
}

/// The account's request budget as the daemon last saw it, through one of its sites.
pub fn budget(site: &str) -> String {
    format!("budget/{site}")
}

/// The request budget of a site's API account, kept so that a restart goes on counting
/// the hour and `status` shows it without a daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetRecord {
    /// When it was written (host clock, UNIX seconds).
    pub written_at: i64,
    /// Send times in the rolling hour (host clock, UNIX milliseconds).
    pub sent_ms: Vec<i64>,
    /// `requests_per_hour`.
    pub per_hour: u32,
    /// `live_reserve`.
    pub live_reserve: u32,
    /// The appliance's `X-RateLimit-Limit` and `-Remaining`, and when they were read.
    pub appliance: Option<(u32, u32, i64)>,
    /// Until when (UNIX seconds) requests pause, and why.
    pub paused: Option<(i64, String)>,
    /// Whether the appliance's count held requests back.
    pub held_by_appliance: bool,
    /// Requests the appliance refused with 429 since the daemon started.
    pub refused: u64,
}

/// The `start_time` watermark of a site (sessions in progress).
pub fn started_watermark(site: &str) -> String {
    format!("watermark/{site}/SupportSession/started")
}

/// A site's last measured clock skew.
pub fn skew(site: &str) -> String {
    format!("skew/{site}")
}

/// A site's clock as last measured, kept so `status` can show it without a daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkewRecord {
    /// Appliance clock minus host clock, in milliseconds.
    pub skew_ms: i64,
    /// When it was measured (host clock, UNIX seconds).
    pub measured_at: i64,
}

/// The prefix of a site's sessions in progress.
pub fn open_prefix(site: &str) -> String {
    format!("open/{site}/")
}

/// One session in progress; its record is its start time (UNIX seconds, appliance time).
pub fn open(site: &str, lsid: &str) -> String {
    format!("{}{lsid}", open_prefix(site))
}

/// How many records of queue item `id` (a report body) the parse stage has handed on.
pub fn parse_progress(id: crate::queue::ItemId) -> String {
    format!("parse/{id}")
}

/// A schedule's last runs, kept in the state area.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRun {
    /// Last run that reached every site and destination (UNIX seconds).
    pub last_success: Option<i64>,
    /// Last run, successful or not (UNIX seconds).
    pub last_attempt: Option<i64>,
    /// `ok`, or what went wrong.
    pub outcome: String,
    /// Failed runs since the last success.
    pub failures: u32,
}

/// The last run of a schedule.
pub fn schedule(name: &str) -> String {
    format!("schedule/{name}")
}

/// What ran: a schedule or a backfill job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    /// A `[[schedule]]`'s run.
    Schedule,
    /// A backfill job, from its start (or resumption) to its end.
    Backfill,
}

/// One run, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// A schedule's run or a backfill job.
    pub kind: RunKind,
    /// The schedule's name, or the job's id.
    pub name: String,
    /// When it started (UNIX milliseconds, host clock).
    pub started_ms: i64,
    /// How long it took.
    pub duration_ms: u64,
    /// Report windows asked for (after splitting).
    pub windows: u64,
    /// Report bodies fetched.
    pub bodies: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Sessions delivered (backfill jobs; a schedule's bodies are parsed after its run).
    pub sessions: Option<u64>,
    /// Requests or items that went to the dead letter.
    pub dead_lettered: u64,
    /// `ok`, `cancelled`, or what went wrong.
    pub outcome: String,
}

/// Where the history keeps a run: ordered by its start.
pub fn history(started_ms: i64, name: &str) -> String {
    format!("{HISTORY}{:016}/{name}", started_ms.max(0))
}

/// The prefix of every run the history keeps.
pub const HISTORY: &str = "history/";

/// A backfill job's record.
pub fn job(job: &str) -> String {
    format!("backfill/{job}")
}

/// The prefix of every key of a backfill job but its record.
pub fn job_prefix(job: &str) -> String {
    format!("backfill/{job}/")
}

/// A backfill job's fetch cursor for `report` (UNIX seconds, or for an LSID job the LSID
/// batches fetched).
pub fn job_cursor(job: &str, report: Report) -> String {
    match report {
        Report::SupportSession => format!("backfill/{job}/next"),
        Report::PresentationSession => format!("backfill/{job}/next-presentations"),
    }
}

/// Set once a backfill job has fetched every window or LSID.
pub fn job_fetched(job: &str) -> String {
    format!("backfill/{job}/fetched")
}

/// The prefix of the counts of items a backfill job's steps created.
pub fn created_prefix(job: &str) -> String {
    format!("backfill/{job}/pushed/")
}

/// The prefix of the `Finished` records of a backfill job.
pub fn finished_prefix(job: &str) -> String {
    format!("backfill/{job}/done/")
}

/// The notifier's cursor over what the daemon records.
pub const NOTIFY_OBSERVED: &str = "notify/observed";

/// The prefix of the notifiers' records (`notify/notifier/<name>`).
pub const NOTIFY_RECORD_PREFIX: &str = "notify/notifier/";
