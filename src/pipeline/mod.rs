//! The daemon: schedules, stage workers, shutdown and backfill, built in four floors.
//! A file imports only files of its own floor or below, never above, and no two files
//! import each other, even through others (`tests/architecture.rs` holds both rules):
//!
//! 1. **vocabulary** — what the stages share: the items that travel (`items`), how a step
//!    hands work on (`handoff`) and settles a failure (`settle`), where data goes
//!    (`routes`), when schedules are due (`schedule`), the disk budget's gate (`budget`),
//!    what has been delivered so far (`counts`),
//!    whether destinations answer (`reachability`), the one worker loop (`worker`) and
//!    the live view of sessions passing the stages (`tap`);
//! 2. **stages** — one worker per stage, each knowing only the vocabulary:
//!    `fetch_worker`, `parse_worker`, `download_worker`, `deliver_worker`;
//! 3. **assembly** — what starts and drives the stages: `stages` (starting the workers),
//!    `scheduler`, `backfill`, `accounts` (the API budgets), `gauges`, `status`, `checks`
//!    (what `btic check` and the console's Checks page test), `history` (the last runs),
//!    `trends` (the last hours, sampled for the console's charts);
//! 4. **process** — `daemon` (`btic run`), `admin` (its HTTP API) and `access` (who may
//!    use the listener).
//!
//! The state keys every floor reads and writes are in `crate::keys`, below `pipeline`
//! and `notify` both.

// 1. vocabulary
pub mod budget;
pub mod counts;
pub mod handoff;
pub mod items;
pub mod reachability;
pub mod routes;
pub mod schedule;
pub mod settle;
pub mod tap;
pub mod worker;

// 2. stages
pub mod deliver_worker;
pub mod download_worker;
pub mod fetch_worker;
pub mod parse_worker;

// 3. assembly
pub mod accounts;
pub mod backfill;
pub mod checks;
pub mod gauges;
pub mod history;
pub mod scheduler;
pub mod stages;
pub mod status;
pub mod trends;

// 4. process
pub mod access;
pub mod admin;
pub mod daemon;
