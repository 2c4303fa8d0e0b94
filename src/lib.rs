//! btic exports BeyondTrust Remote Support session data, recordings and site backups
//! from B Series Appliances into SQL databases and file systems, continuously and
//! without loss. See ARCHITECTURE.md for the map of the modules.

pub mod cli;
pub mod config;
pub mod deliver;
pub mod model;
pub mod parse;
pub mod simulator;
