//! The parse stage: takes a spooled report body from `fetched`, streams its sessions and
//! hands them on — one `deliver/<destination>` item per session and files destination,
//! one bundle of up to `BUNDLE_SESSIONS` sessions per SQL destination, one
//! `download/<site>` task per recording a files destination wants — in chunks, each
//! chunk in one queue transaction with the count of sessions handed on so far. After a
//! crash the body is parsed again and the sessions already handed on are skipped, so
//! nothing is enqueued twice. A malformed body's request goes to the dead letter (as a
//! `FetchTask`, which `btic replay` asks the appliance for again) with the byte offset
//! of the fault, once the sessions before the fault are handed on; a single bad session goes to
//! the dead letter alone (through the `rejected` queue). A `PresentationSession` body
//! goes the same way, one `Presentation` item per presentation and files destination
//! and one recording download per presentation when a files destination wants them.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::handoff::{Finished, HandOff, Step};
use super::items::{
    BUNDLE_SESSIONS, DeliverItem, DownloadTask, FETCHED, FetchTask, FetchedBody, Lane, REJECTED,
    Rejected, borrowed, deliver_queue, download_queue, fetch_queue, request_metadata,
};
use super::tap::{self, TapEvent};
use super::worker::{self, Progress, Worker};
use crate::config::Config;
use crate::fetch::Selection;
use crate::keys::{self, SeenRecord};
use crate::metrics;
use crate::model::{Naming, Recording, Report, ReportRoot};
use crate::parse::{
    ParseError, ParsedPresentation, ParsedSession, PresentationReader, SessionReader,
};
use crate::queue::{Claimed, Queue, QueueError, Ticket};

/// Sessions per transaction. Up to three chunks are in memory at once (one being
/// read, one in the channel, one being handed on), parsed and with their raw XML, so
/// this bounds the stage's memory (about 1.5 MiB per 32 report sessions); larger chunks
/// gained no throughput, the stage being several times faster than delivery.
const CHUNK_SESSIONS: usize = 32;
/// Raw bytes per transaction (whichever limit comes first).
const CHUNK_BYTES: usize = 2 << 20;

/// One record of a body: a support session, or a presentation. Unboxed: a chunk holds at
/// most 64, and boxing would cost every session an allocation.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Session(ParsedSession),
    Presentation(ParsedPresentation),
}

impl Parsed {
    fn raw_len(&self) -> usize {
        match self {
            Parsed::Session(s) => s.raw.len(),
            Parsed::Presentation(p) => p.raw.len(),
        }
    }
}

/// What the reading thread sends: the report root once it is read, records (or bad
/// ones) in order, then how it ended.
enum Chunk {
    /// The report root's prefix and namespace declarations, before any record.
    Root(ReportRoot),
    Sessions(Vec<Result<Parsed, ParseError>>),
    /// The body cannot be read on (malformed, or the spool file is unreadable).
    Fatal(String),
}

/// What each destination's session items look like.
#[derive(Debug, Default)]
pub struct ItemShapes {
    /// Destinations whose session items carry the raw `<session>` element and the report
    /// root (files destinations writing XML). The others get the parsed session only,
    /// which keeps their queued items and delivery batches about half the size.
    raw_xml: BTreeSet<String>,
    /// Destinations that take sessions in bundles (`DeliverItem::Sessions`, SQL).
    bundled: BTreeSet<String>,
}

/// The item shapes of `config`'s destinations.
pub fn item_shapes(config: &Config) -> Arc<ItemShapes> {
    let names = |keep: fn(&crate::config::Destination) -> bool| {
        config
            .destinations
            .iter()
            .filter(|d| keep(d))
            .map(|d| d.name.clone())
            .collect()
    };
    Arc::new(ItemShapes {
        raw_xml: names(|d| d.writes_raw_xml()),
        bundled: names(|d| d.takes_bundles()),
    })
}

/// Runs the parse stage until `shutdown`; `shapes` from [`item_shapes`].
pub async fn run(
    queue: Queue,
    shutdown: CancellationToken,
    health: Arc<metrics::Health>,
    shapes: Arc<ItemShapes>,
) {
    let worker = Worker {
        queue: queue.clone(),
        from: FETCHED.to_string(),
        stage: "parse",
        health: Some(health),
        gate: None,
    };
    worker
        .run(&shutdown, &mut ParseStep { queue, shapes })
        .await
}

/// The parse stage's step: one fetched body, read and handed on in chunks.
struct ParseStep {
    queue: Queue,
    shapes: Arc<ItemShapes>,
}

impl worker::Step<FetchedBody> for ParseStep {
    type Error = QueueError;

    async fn step(&mut self, claimed: Claimed<FetchedBody>) -> Result<Progress, QueueError> {
        parse_one(&self.queue, claimed, &self.shapes).await?;
        Ok(Progress::Made)
    }
}

/// What one body's parse did so far, for the metrics and the hand-offs.
#[derive(Debug, Default)]
struct BodyCounts {
    /// Records read (good or unchanged).
    parsed: u64,
    /// Records that failed to parse (each to `rejected`).
    bad: u64,
    /// Records skipped because they were handed on unchanged before.
    unchanged: u64,
    /// Records of the body handed on, over restarts (`parse/<item id>`).
    handed_on: u64,
    /// Items created for a backfill job by this body, over restarts.
    created: u64,
    /// Items created by this run of it.
    pushed: u64,
    /// The tap's events of the chunk in hand, published once it is handed on.
    tapped: Vec<TapEvent>,
}

/// Parses one fetched body and hands its records on in chunks, then settles the body:
/// done, or its request (or the body itself) to the dead letter if it is malformed.
async fn parse_one(
    queue: &Queue,
    claimed: Claimed<FetchedBody>,
    shapes: &ItemShapes,
) -> Result<(), QueueError> {
    let started = Instant::now();
    let Claimed { item, ticket } = claimed;
    let key = keys::parse_progress(ticket.id());
    let done: u64 = queue.state_get(&key).await?.unwrap_or(0);
    // The body's chunks are one step over several transactions: a backfill job counts
    // the items it creates in total, over restarts too, like `done`.
    let creator = Step::Item(ticket.id());
    let mut counts = BodyCounts {
        handed_on: done,
        created: HandOff::created_before(queue, &item.lane, &creator).await?,
        ..BodyCounts::default()
    };
    // The report root's prefix and namespaces, read by the same pass as the records.
    let mut root = ReportRoot::default();

    // The reading thread parses ahead by at most one chunk (the channel holds one).
    let (tx, mut rx) = mpsc::channel(1);
    let path = item.body.clone();
    let report = item.report();
    let reader = tokio::task::spawn_blocking(move || read_chunks(path, report, done, tx));
    let mut fatal = None;
    while let Some(chunk) = rx.recv().await {
        match chunk {
            Chunk::Sessions(sessions) => {
                let mut step = HandOff::resuming(&item.lane, creator.clone(), counts.created);
                hand_on(
                    queue,
                    &item,
                    sessions,
                    &root,
                    shapes,
                    &mut step,
                    &mut counts,
                )
                .await?;
                counts.pushed += step.created() - counts.created;
                counts.created = step.created();
                step.put_state(&key, &counts.handed_on)?;
                step.commit(queue, Vec::new()).await?;
                tap::publish(std::mem::take(&mut counts.tapped));
            }
            Chunk::Root(r) => root = r,
            Chunk::Fatal(reason) => fatal = Some(reason),
        }
    }
    // The thread ends when it has sent everything; a panic there is a bug worth a log.
    if let Err(e) = reader.await {
        tracing::error!("parse stage: the reading thread failed: {e}");
        fatal.get_or_insert_with(|| format!("the reading thread failed: {e}"));
    }
    metrics::parsed(
        &item.site,
        counts.parsed,
        counts.bad + u64::from(fatal.is_some()),
    );
    metrics::unchanged(&item.site, counts.unchanged);
    let mut step = HandOff::resuming(&item.lane, creator.clone(), counts.created);
    step.delete_state(&key);
    settle_body(queue, item, ticket, step, creator, fatal).await?;
    metrics::stage_progress("parse", 1, counts.pushed, started.elapsed());
    Ok(())
}

/// Adds one chunk's records to `step`: each changed session or presentation routed to
/// its destinations, each bad one to `rejected`.
async fn hand_on(
    queue: &Queue,
    item: &FetchedBody,
    sessions: Vec<Result<Parsed, ParseError>>,
    root: &ReportRoot,
    shapes: &ItemShapes,
    step: &mut HandOff,
    counts: &mut BodyCounts,
) -> Result<(), QueueError> {
    let mut bundles = Bundles::new();
    counts.handed_on += sessions.len() as u64;
    let changed = changed(queue, item, &sessions, step).await?;
    for (outcome, changed) in sessions.into_iter().zip(changed) {
        if !changed {
            counts.parsed += 1;
            counts.unchanged += 1;
            continue;
        }
        match outcome {
            Ok(Parsed::Session(s)) => {
                counts.parsed += 1;
                if tap::listening() {
                    let to = match s.session.is_closed() {
                        true => &item.routes.sessions,
                        false => &item.routes.in_progress,
                    };
                    let event = TapEvent::parsed(&item.site, &s.session, s.raw.len(), to);
                    counts.tapped.push(event);
                }
                route(step, &mut bundles, item, s, root, shapes)?
            }
            Ok(Parsed::Presentation(p)) => {
                counts.parsed += 1;
                route_presentation(step, item, p, root)?
            }
            Err(e) => {
                counts.bad += 1;
                let raw = match &e {
                    ParseError::BadValue { raw, .. } => raw.clone(),
                    _ => Vec::new(),
                };
                step.push(
                    REJECTED,
                    &Rejected {
                        site: item.site.clone(),
                        reason: e.to_string(),
                        request: item.request.clone(),
                        raw,
                        lane: item.lane.clone(),
                    },
                )?;
            }
        }
    }
    push_bundles(step, item, bundles)
}

/// The body is read: done (its file removed), or, if it was malformed (`fatal`), its
/// request to the dead letter for `btic replay` — or the body itself, when its request
/// cannot be asked again.
async fn settle_body(
    queue: &Queue,
    item: FetchedBody,
    ticket: Ticket,
    mut step: HandOff,
    creator: Step,
    fatal: Option<String>,
) -> Result<(), QueueError> {
    match (fatal, item.fetch_request()) {
        // A malformed body's request goes to the dead letter (the records before the
        // fault are handed on): `btic replay` asks the appliance again, whose next
        // answer may well be whole, and idempotent destinations absorb the repeats.
        (Some(reason), Some(request)) => {
            tracing::error!(
                site = %item.site,
                request = %item.request,
                "report body is malformed; its request moved to the dead letter (`btic replay` asks again): {reason}"
            );
            let metadata = request_metadata(&item.site, &request);
            let finishes = Step::Request(request.to_string());
            let task = FetchTask {
                site: item.site.clone(),
                request,
                routes: item.routes.clone(),
                lane: item.lane.clone(),
            };
            let reason = format!("{}: {reason}", item.request);
            step.bury(
                &fetch_queue(&item.site),
                &task,
                &reason,
                &borrowed(&metadata),
                finishes,
            )?;
            step.finish(&item.lane, creator, Finished::Body);
            step.commit(queue, vec![ticket]).await?;
            crate::durable::discard(&item.body).await;
        }
        // A request text of another shape (written by an older version) cannot be
        // asked again: the body itself waits in the dead letter, and its file stays
        // (the dead letter refers to it and a replay reads it).
        (Some(reason), None) => {
            tracing::error!(
                site = %item.site,
                request = %item.request,
                body = %item.body.display(),
                "report body moved to the dead letter: {reason}"
            );
            let body = item.body.display().to_string();
            let metadata = [
                ("stage", "parse"),
                ("site", item.site.as_str()),
                ("request", item.request.as_str()),
                ("body", body.as_str()),
            ];
            step.dead_letter(queue, ticket, &reason, &metadata, &item.lane, creator)
                .await?;
        }
        (None, _) => {
            step.finish(&item.lane, creator, Finished::Body);
            step.commit(queue, vec![ticket]).await?;
            crate::durable::discard(&item.body).await;
        }
    }
    Ok(())
}

/// Which records of a chunk to hand on: for the live lane, those whose bytes (and
/// destinations) differ from what was last handed on — a stretch asked for again
/// brings back mostly the same sessions, and writing them again would only repeat the
/// destinations' work. Adds the new digests to `step`. A backfill hands
/// everything on: it was asked for.
async fn changed(
    queue: &Queue,
    item: &FetchedBody,
    records: &[Result<Parsed, ParseError>],
    step: &mut HandOff,
) -> Result<Vec<bool>, QueueError> {
    if item.lane != Lane::Live {
        return Ok(vec![true; records.len()]);
    }
    let window_end = item.fetch_request().and_then(|r| match r.selection {
        Selection::Window(_, w) => Some(w.end.timestamp()),
        Selection::Lsids(_) => None,
    });
    let seen: Vec<Option<(String, SeenRecord)>> = records
        .iter()
        .map(|r| {
            let (lsid, raw, at, closed) = match r.as_ref().ok()? {
                Parsed::Session(s) => (
                    s.session.lsid.as_str(),
                    &s.raw,
                    s.session
                        .end_time
                        .or(s.session.start_time)
                        .map(|t| t.timestamp()),
                    s.session.is_closed(),
                ),
                Parsed::Presentation(p) => (p.lsid.as_str(), &p.raw, None, true),
            };
            let at = at
                .or(window_end)
                .unwrap_or_else(|| chrono::Utc::now().timestamp());
            let record = SeenRecord {
                digest: digest(raw, &item.routes, closed),
                at,
            };
            Some((keys::seen(&item.site, at, lsid), record))
        })
        .collect();
    let keys: Vec<String> = seen.iter().flatten().map(|(k, _)| k.clone()).collect();
    let mut before = queue.state_get_many::<SeenRecord>(keys).await?.into_iter();
    let mut changed = Vec::with_capacity(seen.len());
    for entry in seen {
        let Some((key, record)) = entry else {
            // A bad record goes its own way (the dead letter) every time.
            changed.push(true);
            continue;
        };
        let last = before.next().flatten();
        let same = last.is_some_and(|l| l.digest == record.digest);
        if !same {
            step.put_state(&key, &record)?;
        }
        changed.push(!same);
    }
    Ok(changed)
}

/// The digest of a record's bytes with where they go (a destination added since must
/// still get it) and whether it had ended.
fn digest(raw: &[u8], routes: &super::items::Routes, closed: bool) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update((raw.len() as u64).to_le_bytes());
    hasher.update(raw);
    hasher.update([u8::from(closed)]);
    for list in [&routes.sessions, &routes.recordings, &routes.in_progress] {
        hasher.update((list.len() as u64).to_le_bytes());
        for name in list {
            hasher.update((name.len() as u64).to_le_bytes());
            hasher.update(name.as_bytes());
        }
    }
    let full = hasher.finalize();
    let mut out = [0; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// Sessions of one chunk waiting to be bundled, per destination.
type Bundles = std::collections::BTreeMap<String, Vec<crate::model::Session>>;

/// Pushes the chunk's bundles, at most `BUNDLE_SESSIONS` sessions each; returns how
/// many items.
fn push_bundles(
    step: &mut HandOff,
    item: &FetchedBody,
    bundles: Bundles,
) -> Result<(), QueueError> {
    for (destination, sessions) in bundles {
        for part in sessions.chunks(BUNDLE_SESSIONS) {
            step.push(
                &deliver_queue(&destination),
                &DeliverItem::Sessions {
                    site: item.site.clone(),
                    host: item.host.clone(),
                    sessions: part.to_vec(),
                    lane: item.lane.clone(),
                },
            )?;
        }
    }
    Ok(())
}

/// Adds the queue items for one session (or adds it to `bundles`).
fn route(
    step: &mut HandOff,
    bundles: &mut Bundles,
    item: &FetchedBody,
    parsed: ParsedSession,
    root: &ReportRoot,
    shapes: &ItemShapes,
) -> Result<(), QueueError> {
    let session = parsed.session;
    if item.routes.track_open {
        let key = keys::open(&item.site, &session.lsid);
        if session.is_closed() {
            step.delete_state(&key);
        } else if let Some(started) = session.start_time {
            step.put_state(&key, &started.timestamp())?;
        }
    }
    // A session in progress goes only where each version replaces the last (SQL); files
    // destinations get it once it has ended.
    let destinations = if session.is_closed() {
        &item.routes.sessions
    } else {
        &item.routes.in_progress
    };
    if session.is_closed() && !item.routes.recordings.is_empty() {
        for recording in Recording::of(&session) {
            step.push(
                &download_queue(&item.site),
                &DownloadTask::Recording {
                    site: item.site.clone(),
                    naming: Naming::of(&item.host, &session),
                    recording,
                    destinations: item.routes.recordings.clone(),
                    lane: item.lane.clone(),
                },
            )?;
        }
    }
    let singles: Vec<&String> = destinations
        .iter()
        .filter(|d| !shapes.bundled.contains(*d))
        .collect();
    let mut bundled = destinations
        .iter()
        .filter(|d| shapes.bundled.contains(*d))
        .peekable();
    // The last destination to bundle the session takes it without a copy (a session
    // holds hundreds of values) unless single items still need it.
    let mut session = Some(session);
    while let Some(destination) = bundled.next() {
        let last = bundled.peek().is_none() && singles.is_empty();
        let copy = if last {
            session.take()
        } else {
            session.clone()
        };
        if let Some(copy) = copy {
            bundles.entry(destination.clone()).or_default().push(copy);
        }
    }
    let Some(session) = session else {
        return Ok(());
    };
    let session = Box::new(session);
    for destination in singles {
        let (raw, root) = if shapes.raw_xml.contains(destination) {
            (parsed.raw.clone(), root.clone())
        } else {
            (Vec::new(), ReportRoot::default())
        };
        step.push(
            &deliver_queue(destination),
            &DeliverItem::Session {
                site: item.site.clone(),
                host: item.host.clone(),
                session: session.clone(),
                raw,
                root,
                lane: item.lane.clone(),
            },
        )?;
    }
    Ok(())
}

/// Adds the queue items for one presentation (files destinations only). Presentations are read from `end_time` windows, so each one has ended.
fn route_presentation(
    step: &mut HandOff,
    item: &FetchedBody,
    parsed: ParsedPresentation,
    root: &ReportRoot,
) -> Result<(), QueueError> {
    let naming = Naming::presentation(&item.host, &parsed.lsid, parsed.lseq);
    if !item.routes.recordings.is_empty() {
        // Whether a presentation was recorded is not in its data as far as is known:
        // the download asks, and "no data" means there is none.
        step.push(
            &download_queue(&item.site),
            &DownloadTask::Recording {
                site: item.site.clone(),
                naming: naming.clone(),
                recording: Recording::Presentation,
                destinations: item.routes.recordings.clone(),
                lane: item.lane.clone(),
            },
        )?;
    }
    for destination in &item.routes.sessions {
        step.push(
            &deliver_queue(destination),
            &DeliverItem::Presentation {
                site: item.site.clone(),
                naming: naming.clone(),
                raw: parsed.raw.clone(),
                root: root.clone(),
                lane: item.lane.clone(),
            },
        )?;
    }
    Ok(())
}

/// Runs on a blocking thread: parses `path` as a `report` body, skips the first `skip`
/// records (handed on before a restart), and sends the rest in chunks.
fn read_chunks(path: PathBuf, report: Report, skip: u64, tx: mpsc::Sender<Chunk>) {
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            let _ = tx.blocking_send(Chunk::Fatal(format!(
                "opening spool file {}: {e}",
                path.display()
            )));
            return;
        }
    };
    let body = BufReader::with_capacity(256 << 10, file);
    let mut reader = match report {
        Report::SupportSession => Records::Sessions(SessionReader::new(body)),
        Report::PresentationSession => Records::Presentations(PresentationReader::new(body)),
    };
    let mut index = 0u64;
    let mut chunk = Vec::new();
    let mut chunk_bytes = 0;
    let mut root_sent = false;
    while let Some(outcome) = reader.next() {
        if !root_sent && let Some(root) = reader.root() {
            root_sent = true;
            if tx.blocking_send(Chunk::Root(root.clone())).is_err() {
                return;
            }
        }
        if let Err(e) = &outcome
            && e.is_fatal()
        {
            if !chunk.is_empty() && tx.blocking_send(Chunk::Sessions(chunk)).is_err() {
                return;
            }
            let _ = tx.blocking_send(Chunk::Fatal(e.to_string()));
            return;
        }
        index += 1;
        if index <= skip {
            continue;
        }
        chunk_bytes += outcome.as_ref().map_or(0, Parsed::raw_len);
        chunk.push(outcome);
        if chunk.len() >= CHUNK_SESSIONS || chunk_bytes >= CHUNK_BYTES {
            if tx
                .blocking_send(Chunk::Sessions(std::mem::take(&mut chunk)))
                .is_err()
            {
                return;
            }
            chunk_bytes = 0;
        }
    }
    if !chunk.is_empty() {
        let _ = tx.blocking_send(Chunk::Sessions(chunk));
    }
}

/// The records of a body, read by the reader of its report.
enum Records<R> {
    Sessions(SessionReader<R>),
    Presentations(PresentationReader<R>),
}

impl<R: std::io::BufRead> Records<R> {
    fn next(&mut self) -> Option<Result<Parsed, ParseError>> {
        match self {
            Records::Sessions(r) => r.next().map(|r| r.map(Parsed::Session)),
            Records::Presentations(r) => r.next().map(|r| r.map(Parsed::Presentation)),
        }
    }

    fn root(&self) -> Option<&ReportRoot> {
        match self {
            Records::Sessions(r) => r.root(),
            Records::Presentations(r) => r.root(),
        }
    }
}

/// Moves every `rejected` session to the dead letter, until `shutdown`.
pub async fn run_rejected(queue: Queue, shutdown: CancellationToken) {
    let worker = Worker {
        queue: queue.clone(),
        from: REJECTED.to_string(),
        stage: "parse",
        health: None,
        gate: None,
    };
    worker.run(&shutdown, &mut RejectStep { queue }).await
}

/// The step of `rejected`: one bad session, to the dead letter with its reason.
struct RejectStep {
    queue: Queue,
}

impl worker::Step<Rejected> for RejectStep {
    type Error = String;

    async fn step(&mut self, claimed: Claimed<Rejected>) -> Result<Progress, String> {
        let Claimed { item, ticket } = claimed;
        tracing::error!(site = %item.site, request = %item.request, "session moved to the dead letter: {}", item.reason);
        let metadata = [
            ("stage", "parse"),
            ("site", item.site.as_str()),
            ("request", item.request.as_str()),
        ];
        let step = Step::Item(ticket.id());
        HandOff::new(&item.lane, step.clone())
            .dead_letter(
                &self.queue,
                ticket,
                &item.reason,
                &metadata,
                &item.lane,
                step,
            )
            .await
            .map(|_| Progress::Made)
            .map_err(|e| format!("moving a rejected session to the dead letter: {e}"))
    }
}
