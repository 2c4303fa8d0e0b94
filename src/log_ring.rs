//! The last lines of the process's log, kept in memory for the console's Log page: a
//! `tracing` layer beside the one that writes stderr or `[log] file`, holding at most
//! [`CAPACITY`] lines (the oldest go first). It sees what the log filter lets through.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use chrono::{DateTime, Utc};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Lines kept.
pub const CAPACITY: usize = 2000;

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// When it was logged.
    pub at: DateTime<Utc>,
    /// Its level.
    pub level: Level,
    /// The module that logged it.
    pub target: String,
    /// The message, then its fields as `name=value`.
    pub text: String,
}

fn ring() -> &'static Mutex<VecDeque<Line>> {
    static RING: OnceLock<Mutex<VecDeque<Line>>> = OnceLock::new();
    RING.get_or_init(|| Mutex::new(VecDeque::with_capacity(CAPACITY)))
}

/// The layer that keeps the lines.
#[derive(Debug, Default, Clone, Copy)]
pub struct RingLayer;

/// The message and fields of an event, as one text.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut text = Text::default();
        event.record(&mut text);
        keep(Line {
            at: Utc::now(),
            level: *event.metadata().level(),
            target: event.metadata().target().to_string(),
            text: format!("{}{}", text.message, text.fields),
        });
    }
}

fn keep(line: Line) {
    let mut ring = ring().lock().unwrap_or_else(|e| e.into_inner());
    if ring.len() >= CAPACITY {
        ring.pop_front();
    }
    ring.push_back(line);
}

/// The lines kept at `least` as severe as given (`Level::INFO`: info, warn, error),
/// newest first.
pub fn lines(least: Level) -> Vec<Line> {
    let ring = ring().lock().unwrap_or_else(|e| e.into_inner());
    // tracing orders levels by verbosity: ERROR is the smallest.
    ring.iter()
        .rev()
        .filter(|l| l.level <= least)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn the_ring_keeps_the_last_lines_with_their_fields_and_filters_by_level() {
        let subscriber = tracing_subscriber::registry().with(RingLayer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(site = "main", "the ring's own test {}", 1);
            tracing::debug!("the ring's own debug line");
            for i in 0..CAPACITY {
                tracing::info!(i, "the ring's filler");
            }
            tracing::error!(queue = "fetch/main", "the ring's own error");
        });
        let all = lines(Level::TRACE);
        assert_eq!(all.len(), CAPACITY, "bounded");
        assert_eq!(all[0].text, "the ring's own error queue=fetch/main");
        assert_eq!(all[0].level, Level::ERROR);
        assert!(
            !all.iter()
                .any(|l| l.text.starts_with("the ring's own test")),
            "the oldest went"
        );
        assert!(lines(Level::WARN).iter().all(|l| l.level <= Level::WARN));
        assert!(
            lines(Level::WARN)
                .iter()
                .any(|l| l.text.starts_with("the ring's own error"))
        );
    }
}
