//! What the deliver stage has delivered since the process started, per destination: a
//! counter the console's charts sample (the metrics hold the same numbers for
//! Prometheus, but cannot be read back).

use std::collections::BTreeMap;
use std::sync::Mutex;

static DELIVERED: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// Counts `n` items (sessions, or a files destination's items) delivered to `destination`.
pub fn delivered(destination: &str, n: u64) {
    if n == 0 {
        return;
    }
    let mut counts = DELIVERED.lock().unwrap_or_else(|e| e.into_inner());
    *counts.entry(destination.to_string()).or_default() += n;
}

/// Every destination's count so far.
pub fn delivered_so_far() -> BTreeMap<String, u64> {
    DELIVERED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_add_up_per_destination() {
        let before = delivered_so_far().get("counts-test").copied().unwrap_or(0);
        delivered("counts-test", 3);
        delivered("counts-test", 0);
        delivered("counts-test", 2);
        assert_eq!(delivered_so_far()["counts-test"], before + 5);
    }
}
