//! Destinations: where data is written.

pub mod files;
