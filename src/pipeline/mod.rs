//! The daemon: schedules, stage workers, shutdown and backfill.

pub mod accounts;
pub mod admin;
pub mod backfill;
pub mod budget;
pub mod daemon;
pub mod deliver_worker;
pub mod download_worker;
pub mod fetch_worker;
pub mod gauges;
pub mod handoff;
pub mod items;
pub mod keys;
pub mod parse_worker;
pub mod routes;
pub mod schedule;
pub mod scheduler;
pub mod settle;
pub mod stages;
pub mod status;
