//! The appliance simulator: a stand-in B Series Appliance for tests, demos and benchmarks.

pub mod render;
pub mod sessions;
