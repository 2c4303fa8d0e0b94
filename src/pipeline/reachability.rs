//! Whether each destination could be reached lately: the deliver workers record it, the
//! scheduler reads it to say why a run did not complete.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Whether each destination could be reached lately (`None`: yes), as the deliver
/// workers see it.
#[derive(Debug, Default)]
pub struct Reachability {
    errors: Mutex<BTreeMap<String, String>>,
}

impl Reachability {
    /// Records the outcome of reaching `destination`.
    pub fn set(&self, destination: &str, error: Option<String>) {
        let mut errors = self.errors.lock().expect("reachability lock");
        match error {
            Some(e) => errors.insert(destination.to_string(), e),
            None => errors.remove(destination),
        };
    }

    /// The last error reaching `destination`, if it is unreachable.
    pub fn error(&self, destination: &str) -> Option<String> {
        self.errors
            .lock()
            .expect("reachability lock")
            .get(destination)
            .cloned()
    }
}
