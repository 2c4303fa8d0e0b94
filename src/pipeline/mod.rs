//! The daemon: schedules, stage workers, shutdown and backfill.

pub mod items;
pub mod schedule;
