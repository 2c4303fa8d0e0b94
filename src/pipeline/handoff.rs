//! The one way a stage hands work on: a [`HandOff`] gathers what one step does — the items
//! it pushes, the requests it buries in the dead letter, the progress it records — and
//! commits it in one queue transaction together with the item it consumes (if any) and
//! the lane's bookkeeping, so a crash anywhere redoes at most the whole step.
//!
//! # The lanes' bookkeeping
//!
//! An item travels in the live lane or in a backfill job's lane (`Lane`, a field of every
//! item that stems from a report). A backfill job must know when everything it started is
//! through, so in a job's lane each step records, in its own transaction:
//!
//! - what it created: `backfill/<job>/pushed/<step>` = the number of items, keyed by the
//!   step that created them — the item it consumed, or the request it made — so a step
//!   done again writes the same record;
//! - what it finished: `backfill/<job>/done/<step>` = [`Finished`] for the item it
//!   consumed (or the request it settled).
//!
//! The job is through when its fetching is done and the items created add up to the
//! steps finished (`backfill::progress`). Nothing here is ever read back by its key's
//! shape: the records carry what they count.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::items::Lane;
use crate::keys;
use crate::queue::{Changes, ItemId, Queue, QueueError, Ticket};

/// How one of a job's items left the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Finished {
    /// A session reached a destination.
    Session,
    /// A recording reached a destination.
    Recording,
    /// A body was parsed or a download handed on.
    Other,
    /// It was moved to the dead letter (replayed and delivered later, it becomes one of
    /// the above).
    DeadLettered,
    /// This many sessions of a bundle reached a destination (the rest, if any, went
    /// on as items of their own, counted under the bundle's `pushed` key).
    Sessions(u64),
    /// A presentation's data reached a destination.
    Presentation,
    /// A report body was read by the parse stage (counted in the summary's bodies).
    /// Appended last: a variant's index is its postcard tag.
    Body,
}

/// The dead-letter metadata key naming the backfill job of an item.
pub const JOB_METADATA: &str = "backfill";

/// A step, named by identity: the queue item it consumed, or the report request it made
/// (fetch steps consume no item).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The step that consumed this item.
    Item(ItemId),
    /// The step that made this report request (its text form).
    Request(String),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Item(id) => write!(f, "i{id}"),
            Step::Request(request) => write!(f, "r {request}"),
        }
    }
}

/// One step's transaction, being built.
#[derive(Debug)]
pub struct HandOff {
    changes: Changes,
    /// The lane of the items the step creates, and the step that creates them (none
    /// for a step that only finishes items).
    creator: Option<(Lane, Step)>,
    /// Items created for the job, by this step's earlier transactions too.
    created: u64,
    /// Whether `created` must be written (something was created, now or before).
    counting: bool,
    /// Steps finished, each in its own lane.
    finished: Vec<(Lane, Step, Finished)>,
}

impl HandOff {
    /// A step `creator` whose items travel in `lane`.
    pub fn new(lane: &Lane, creator: Step) -> HandOff {
        HandOff::resuming(lane, creator, 0)
    }

    /// Like [`HandOff::new`] for a step spread over several transactions (the parse
    /// stage hands a body's records on in chunks): `before` is what the step's earlier
    /// transactions created, and the record written is the total.
    pub fn resuming(lane: &Lane, creator: Step, before: u64) -> HandOff {
        HandOff {
            changes: Changes::new(),
            creator: Some((lane.clone(), creator)),
            counting: before > 0,
            created: before,
            finished: Vec::new(),
        }
    }

    /// A step that creates nothing and only finishes items (a delivered batch).
    pub fn finishing() -> HandOff {
        HandOff {
            changes: Changes::new(),
            creator: None,
            counting: false,
            created: 0,
            finished: Vec::new(),
        }
    }

    /// How many items the step has created so far (with `before`).
    pub fn created(&self) -> u64 {
        self.created
    }

    /// What the earlier transactions of a step spread over several created (0 outside a
    /// backfill job, which is the only lane that counts): the `before` of
    /// [`HandOff::resuming`].
    pub async fn created_before(
        queue: &Queue,
        lane: &Lane,
        creator: &Step,
    ) -> Result<u64, QueueError> {
        match HandOff::created_key(lane, creator) {
            Some(key) => Ok(queue.state_get(&key).await?.unwrap_or(0)),
            None => Ok(0),
        }
    }

    /// The state key of what `creator` created for `lane`'s job, if it is a job's.
    fn created_key(lane: &Lane, creator: &Step) -> Option<String> {
        let job = lane.backfill_job()?;
        Some(format!("{}{creator}", keys::created_prefix(job)))
    }

    /// Pushes `item` to the back of `queue`.
    pub fn push<T: Serialize + ?Sized>(&mut self, queue: &str, item: &T) -> Result<(), QueueError> {
        self.changes.push(queue, item)?;
        self.created += 1;
        self.counting = true;
        Ok(())
    }

    /// Puts `item` straight into the dead letter as an item of `queue` that failed with
    /// `reason` (`btic replay` moves it there), counted as created and as finished
    /// (`finishes`: the step that will settle it when it is replayed). In a backfill
    /// lane the dead letter names the job.
    pub fn bury<T: Serialize + ?Sized>(
        &mut self,
        queue: &str,
        item: &T,
        reason: &str,
        metadata: &[(&str, &str)],
        finishes: Step,
    ) -> Result<(), QueueError> {
        let lane = self.lane();
        let mut metadata = metadata.to_vec();
        if let Some(job) = lane.backfill_job() {
            metadata.push((JOB_METADATA, job));
        }
        self.changes.bury(queue, item, reason, 1, &metadata)?;
        self.created += 1;
        self.counting = true;
        self.finish(&lane, finishes, Finished::DeadLettered);
        Ok(())
    }

    /// The lane of the items the step creates.
    fn lane(&self) -> Lane {
        self.creator
            .as_ref()
            .map_or(Lane::Live, |(lane, _)| lane.clone())
    }

    /// Records that step `step` of `lane` is through, `how`.
    pub fn finish(&mut self, lane: &Lane, step: Step, how: Finished) {
        self.finished.push((lane.clone(), step, how));
    }

    /// Writes a progress record (a watermark, a cursor, a parse count).
    pub fn put_state<T: Serialize + ?Sized>(
        &mut self,
        key: &str,
        value: &T,
    ) -> Result<(), QueueError> {
        self.changes.put_state(key, value).map(drop)
    }

    /// Deletes a progress record.
    pub fn delete_state(&mut self, key: &str) {
        self.changes.delete_state(key);
    }

    /// The transaction's changes with the lanes' bookkeeping added.
    fn into_changes(self) -> Result<Changes, QueueError> {
        let HandOff {
            mut changes,
            creator,
            created,
            counting,
            finished,
        } = self;
        let key = creator
            .as_ref()
            .and_then(|(lane, step)| HandOff::created_key(lane, step));
        if let (Some(key), true) = (key, counting) {
            changes.put_state(&key, &created)?;
        }
        for (lane, step, how) in finished {
            if let Some(job) = lane.backfill_job() {
                changes.put_state(&format!("{}{step}", keys::finished_prefix(job)), &how)?;
            }
        }
        Ok(changes)
    }

    /// Commits the step, consuming `tickets` (none for a step that only adds); returns
    /// the pushed items' ids once durable.
    pub async fn commit(
        self,
        queue: &Queue,
        tickets: Vec<Ticket>,
    ) -> Result<Vec<ItemId>, QueueError> {
        let changes = self.into_changes()?;
        queue.hand_off_many(tickets, changes).await
    }

    /// Moves `ticket` to the dead letter with `reason` and `metadata` instead (nothing
    /// pushed may go with it; progress and bookkeeping do). In a backfill lane the dead
    /// letter names the job, so purging it cannot strand the job's count.
    pub async fn dead_letter(
        mut self,
        queue: &Queue,
        ticket: Ticket,
        reason: &str,
        metadata: &[(&str, &str)],
        lane: &Lane,
        finishes: Step,
    ) -> Result<(), QueueError> {
        let mut metadata = metadata.to_vec();
        if let Some(job) = lane.backfill_job() {
            metadata.push((JOB_METADATA, job));
        }
        self.finish(lane, finishes, Finished::DeadLettered);
        let changes = self.into_changes()?;
        queue
            .dead_letter_with(ticket, reason, &metadata, changes)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Lane {
        Lane::Backfill("j".into())
    }

    async fn state(queue: &Queue) -> Vec<String> {
        queue.state_keys("backfill/").await.unwrap()
    }

    #[tokio::test]
    async fn a_step_in_a_job_lane_counts_what_it_creates_and_finishes_in_its_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().join("q")).unwrap();
        queue.push("in", &1u8).await.unwrap();
        let claimed = queue.next_ready::<u8>("in").await.unwrap().unwrap();
        let id = claimed.ticket.id();
        let mut step = HandOff::new(&job(), Step::Item(id));
        step.push("out", &2u8).unwrap();
        step.push("out", &3u8).unwrap();
        step.finish(&job(), Step::Item(id), Finished::Other);
        step.commit(&queue, vec![claimed.ticket]).await.unwrap();
        let created: Option<u64> = queue
            .state_get(&format!("backfill/j/pushed/i{id}"))
            .await
            .unwrap();
        assert_eq!(created, Some(2));
        let finished: Option<Finished> = queue
            .state_get(&format!("backfill/j/done/i{id}"))
            .await
            .unwrap();
        assert_eq!(finished, Some(Finished::Other));
        assert_eq!(queue.depth("out").await.unwrap(), 2);
    }

    #[tokio::test]
    async fn the_live_lane_keeps_no_books_and_a_resumed_step_writes_its_total() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().join("q")).unwrap();
        let mut live = HandOff::new(&Lane::Live, Step::Request("r".into()));
        live.push("out", &1u8).unwrap();
        live.finish(&Lane::Live, Step::Request("r".into()), Finished::Other);
        live.commit(&queue, Vec::new()).await.unwrap();
        assert!(state(&queue).await.is_empty());

        let mut step = HandOff::resuming(&job(), Step::Item(ItemId(9)), 5);
        step.push("out", &1u8).unwrap();
        step.commit(&queue, Vec::new()).await.unwrap();
        let created: Option<u64> = queue.state_get("backfill/j/pushed/i9").await.unwrap();
        assert_eq!(created, Some(6));
        // A resumed step that creates nothing more still writes the total it was given.
        let step = HandOff::resuming(&job(), Step::Item(ItemId(9)), 6);
        step.commit(&queue, Vec::new()).await.unwrap();
        assert_eq!(
            queue
                .state_get::<u64>("backfill/j/pushed/i9")
                .await
                .unwrap(),
            Some(6)
        );
    }

    #[tokio::test]
    async fn a_buried_request_counts_as_created_and_dead_lettered_and_names_its_job() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().join("q")).unwrap();
        let mut step = HandOff::new(&job(), Step::Request("w".into()));
        step.bury(
            "fetch/s",
            &1u8,
            "refused",
            &[("stage", "fetch")],
            Step::Request("w".into()),
        )
        .unwrap();
        step.commit(&queue, Vec::new()).await.unwrap();
        assert_eq!(
            queue
                .state_get::<u64>("backfill/j/pushed/r w")
                .await
                .unwrap(),
            Some(1)
        );
        assert_eq!(
            queue
                .state_get::<Finished>("backfill/j/done/r w")
                .await
                .unwrap(),
            Some(Finished::DeadLettered)
        );
        let letters = queue
            .dead_letters(crate::queue::DeadLetterFilter::All)
            .await
            .unwrap();
        assert_eq!(letters.len(), 1);
        assert!(
            letters[0]
                .metadata
                .contains(&(JOB_METADATA.to_string(), "j".to_string()))
        );
    }
}
