//! The one retry settlement: what becomes of an item whose step failed. Every stage asks
//! here, so attempts, backoff, `Retry-After`, `max_attempts` and the dead letter mean the
//! same everywhere.
//!
//! - [`Retry::Never`]: the failure will repeat (bad data, a refusal): the dead letter now.
//! - [`Retry::Later`]: it may pass: the item waits (the delay the peer asked for, within
//!   reason, else the backoff of its attempt) until `max_attempts` is spent, then the
//!   dead letter.
//! - [`Retry::WhenReachable`]: the peer itself cannot be worked with (an appliance that is
//!   down): the item waits `max_interval` and spends no budget, like a backlog waiting
//!   for a destination.

use std::time::Duration;

use super::handoff::{HandOff, Step};
use super::items::Lane;
use crate::config::RetryPolicy;
use crate::metrics;
use crate::queue::{Queue, QueueError, Ticket};

use crate::appliance::MAX_RETRY_AFTER;

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// No: the same input fails the same way.
    Never,
    /// Yes, after a delay; `after` is what the peer asked for (`Retry-After`).
    Later {
        /// The peer's `Retry-After`, if it sent one.
        after: Option<Duration>,
    },
    /// Once the peer can be reached at all; waiting spends no attempts.
    WhenReachable,
}

/// How a failed item was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// It waits this long before it is handed out again.
    Retried(Duration),
    /// It is in the dead letter.
    DeadLettered,
}

/// A failed item and what is known about it.
#[derive(Debug)]
pub struct Failed<'a> {
    /// The stage (`fetch`, `download`, `deliver`), for the retry metric.
    pub stage: &'a str,
    /// Why, for the operator (it becomes the dead letter's reason).
    pub reason: &'a str,
    /// Whether trying again can help.
    pub retry: Retry,
    /// The lane the item travels in, and the step that finishes it there.
    pub lane: &'a Lane,
    /// The step the item is, for its lane's bookkeeping.
    pub step: Step,
    /// Dead-letter context (stage, site, destination, ...).
    pub metadata: &'a [(&'a str, &'a str)],
}

/// Settles `ticket`'s failure under `policy`; returns what became of it once durable.
pub async fn settle(
    queue: &Queue,
    ticket: Ticket,
    failed: Failed<'_>,
    policy: &RetryPolicy,
) -> Result<Settled, QueueError> {
    let attempts = ticket.attempts() + 1;
    let delay = match failed.retry {
        Retry::WhenReachable => Some(policy.max_interval),
        Retry::Later { after } if attempts < policy.max_attempts => Some(
            after
                .map(|a| a.min(MAX_RETRY_AFTER))
                .unwrap_or_else(|| policy.delay_after(attempts)),
        ),
        Retry::Later { .. } | Retry::Never => None,
    };
    match delay {
        Some(delay) => {
            if failed.retry != Retry::WhenReachable {
                metrics::retried(failed.stage);
            }
            queue.retry_later(ticket, failed.reason, delay).await?;
            Ok(Settled::Retried(delay))
        }
        None => {
            HandOff::new(failed.lane, failed.step.clone())
                .dead_letter(
                    queue,
                    ticket,
                    failed.reason,
                    failed.metadata,
                    failed.lane,
                    failed.step,
                )
                .await?;
            Ok(Settled::DeadLettered)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::handoff::Finished;
    use crate::queue::DeadLetterFilter;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial: Duration::from_millis(100),
            max_interval: Duration::from_secs(60),
        }
    }

    async fn fail(queue: &Queue, retry: Retry, lane: &Lane) -> Settled {
        let claimed = loop {
            // A retried item is due only later; take it as soon as it is due.
            if let Some(c) = queue
                .next_ready_at::<u8>(
                    "q",
                    std::time::SystemTime::now() + Duration::from_secs(3600),
                )
                .await
                .unwrap()
            {
                break c;
            }
        };
        let step = Step::Item(claimed.ticket.id());
        let failed = Failed {
            stage: "test",
            reason: "it broke",
            retry,
            lane,
            step,
            metadata: &[("stage", "test")],
        };
        settle(queue, claimed.ticket, failed, &policy())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn passing_failures_spend_the_budget_then_dead_letter_and_others_go_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().join("q")).unwrap();
        let live = Lane::Live;
        queue.push("q", &1u8).await.unwrap();
        let later = Retry::Later { after: None };
        assert_eq!(
            fail(&queue, later, &live).await,
            Settled::Retried(Duration::from_millis(100))
        );
        assert_eq!(
            fail(&queue, later, &live).await,
            Settled::Retried(Duration::from_millis(200))
        );
        assert_eq!(fail(&queue, later, &live).await, Settled::DeadLettered);

        queue.push("q", &2u8).await.unwrap();
        let asked = Retry::Later {
            after: Some(Duration::from_secs(7200)),
        };
        assert_eq!(
            fail(&queue, asked, &live).await,
            Settled::Retried(MAX_RETRY_AFTER)
        );
        // Waiting for a peer to come back spends nothing, however often.
        for _ in 0..5 {
            assert_eq!(
                fail(&queue, Retry::WhenReachable, &live).await,
                Settled::Retried(Duration::from_secs(60))
            );
        }
        let job = Lane::Backfill("j".into());
        assert_eq!(
            fail(&queue, Retry::Never, &job).await,
            Settled::DeadLettered
        );
        let letters = queue.dead_letters(DeadLetterFilter::All).await.unwrap();
        assert_eq!(letters.len(), 2);
        assert!(
            letters[1]
                .metadata
                .contains(&("backfill".to_string(), "j".to_string()))
        );
        let done = queue
            .state_list::<Finished>("backfill/j/done/")
            .await
            .unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].1, Finished::DeadLettered);
    }
}
