//! The one worker loop every stage runs: wait for the next item of its queue (or the
//! shutdown), pass the disk budget's gate if the stage writes new files, take the step,
//! record its progress for `/healthz`, go again. A stage is its step: what it does with one
//! claimed item, settlement included. A step that fails (its outcome could not even be
//! recorded) leaves the item where it was; the loop counts the error, logs it and waits a
//! second before the next, so a sick disk does not spin.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::budget::DiskBudget;
use crate::metrics::{self, Health};
use crate::queue::{Claimed, Queue};

/// How long the loop waits after a failed step or a queue it could not read.
pub const PAUSE_AFTER_ERROR: Duration = Duration::from_secs(1);

/// What a step made of its item, for `/healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The item moved on (delivered, handed off, retried or dead-lettered).
    Made,
    /// It went back untouched because the stage cannot work now (its destination does
    /// not answer): the stage stays pending, and `/healthz` calls it stalled if that
    /// lasts.
    Blocked,
}

/// What a stage does with one claimed item, its settlement included.
pub trait Step<T> {
    /// A failure to record the outcome (the item stays where it was).
    type Error: Display;

    /// Works on one item.
    fn step(
        &mut self,
        claimed: Claimed<T>,
    ) -> impl Future<Output = Result<Progress, Self::Error>> + Send;
}

/// One stage's loop over one queue.
#[derive(Debug)]
pub struct Worker {
    /// The shared queue database.
    pub queue: Queue,
    /// The queue it takes items from; also its name in logs and in `/healthz`.
    pub from: String,
    /// The stage, as `btic_stage_errors_total` names it (`fetch`, `parse`, ...).
    pub stage: &'static str,
    /// Liveness, recorded under `from` around every step; `None`: not reported.
    pub health: Option<Arc<Health>>,
    /// The disk budget passed before each step, for stages that write new files.
    pub gate: Option<Arc<DiskBudget>>,
}

impl Worker {
    /// Takes items of type `T` and runs `stage` on each until `shutdown`; a step in
    /// progress when it fires is finished first.
    pub async fn run<T, S>(self, shutdown: &CancellationToken, stage: &mut S)
    where
        T: DeserializeOwned + Send + 'static,
        S: Step<T>,
    {
        loop {
            let claimed = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                c = self.queue.wait_ready::<T>(&self.from) => c,
            };
            let claimed = match claimed {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("{}: reading the queue: {e}", self.from);
                    tokio::time::sleep(PAUSE_AFTER_ERROR).await;
                    continue;
                }
            };
            // No new file while the disk budget says so; the item stays where it is.
            if let Some(gate) = &self.gate
                && !gate.wait_clear(shutdown).await
            {
                return;
            }
            if let Some(health) = &self.health {
                health.pending(&self.from);
            }
            let progress = match stage.step(claimed).await {
                Ok(progress) => progress,
                Err(e) => {
                    metrics::stage_error(self.stage);
                    tracing::error!("{}: {e}", self.from);
                    tokio::time::sleep(PAUSE_AFTER_ERROR).await;
                    Progress::Made
                }
            };
            if let Some(health) = &self.health
                && progress == Progress::Made
            {
                health.progress(&self.from, false);
            }
        }
    }
}
