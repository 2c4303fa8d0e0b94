//! btic exports BeyondTrust Remote Support session data, recordings and site backups
//! from B Series Appliances into SQL databases and file systems, continuously and
//! without loss. See ARCHITECTURE.md for the map of the modules.

pub mod appliance;
pub mod cli;
pub mod config;
pub mod console;
pub mod deliver;
pub mod durable;
pub mod fetch;
pub mod keys;
pub mod log_file;
pub mod log_ring;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod parse;
pub mod pipeline;
pub mod queue;
pub mod simulator;
