//! The tap: sessions as they pass the parse and deliver stages, for `btic tap`. A
//! bounded broadcast for the whole process: nothing is built while nobody listens, a
//! reader too slow for it is told how many events it missed, and nothing here is durable.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::items::DeliverItem;
use crate::model::Session;

/// Events kept for the slowest reader before it misses some.
const CAPACITY: usize = 4096;

/// The stage an event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TapStage {
    /// Parsed and handed on to its destinations (durably).
    Parse,
    /// Written to one destination, or failed there.
    Deliver,
}

/// One session (or, at a files destination, a recording, presentation or backup)
/// passing a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TapEvent {
    /// The stage.
    pub stage: TapStage,
    /// The `[[site]]`.
    pub site: String,
    /// What passed: `session`, or the files item's description.
    pub item: String,
    /// The session's LSID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsid: Option<String>,
    /// Parse: when the session started and ended (appliance time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    /// Parse: `None` while the session runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<DateTime<Utc>>,
    /// Parse: the size of its element in the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Parse: the destinations it was handed to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<String>,
    /// Deliver: the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Deliver: `delivered` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Deliver: why it failed (it retries or goes to the dead letter as settled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TapEvent {
    /// A session parsed from `site`'s body and handed to `destinations`.
    pub fn parsed(site: &str, session: &Session, bytes: usize, destinations: &[String]) -> Self {
        TapEvent {
            stage: TapStage::Parse,
            site: site.to_string(),
            item: "session".into(),
            lsid: Some(session.lsid.to_string()),
            start_time: session.start_time,
            end_time: session.end_time,
            bytes: Some(bytes as u64),
            destinations: destinations.to_vec(),
            destination: None,
            outcome: None,
            error: None,
        }
    }

    /// A session of `site` written to `destination` (`error`: failed there).
    pub fn session_delivered(
        site: &str,
        lsid: &str,
        destination: &str,
        error: Option<String>,
    ) -> Self {
        TapEvent {
            stage: TapStage::Deliver,
            site: site.to_string(),
            item: "session".into(),
            lsid: Some(lsid.to_string()),
            start_time: None,
            end_time: None,
            bytes: None,
            destinations: Vec::new(),
            destination: Some(destination.to_string()),
            outcome: Some(
                if error.is_some() {
                    "failed"
                } else {
                    "delivered"
                }
                .into(),
            ),
            error,
        }
    }

    /// The same event, for a delivery that failed with `error`.
    pub fn failed(mut self, error: &str) -> Self {
        self.outcome = Some("failed".into());
        self.error = Some(error.to_string());
        self
    }

    /// A files destination's item written: one event per session it holds, or one for
    /// the item.
    pub fn item_delivered(item: &DeliverItem, destination: &str) -> Vec<Self> {
        let (site, lsids): (&str, Vec<&str>) = match item {
            DeliverItem::Session { site, session, .. } => (site, vec![session.lsid.as_str()]),
            DeliverItem::Sessions { site, sessions, .. } => {
                (site, sessions.iter().map(|s| s.lsid.as_str()).collect())
            }
            DeliverItem::Recording { site, .. }
            | DeliverItem::Backup { site, .. }
            | DeliverItem::Presentation { site, .. } => {
                let mut event = TapEvent::session_delivered(site, "", destination, None);
                event.lsid = None;
                event.item = item.describe();
                return vec![event];
            }
        };
        lsids
            .into_iter()
            .map(|lsid| TapEvent::session_delivered(site, lsid, destination, None))
            .collect()
    }
}

fn sender() -> &'static broadcast::Sender<TapEvent> {
    static TAP: OnceLock<broadcast::Sender<TapEvent>> = OnceLock::new();
    TAP.get_or_init(|| broadcast::channel(CAPACITY).0)
}

/// A new reader, from the next event on.
pub fn subscribe() -> broadcast::Receiver<TapEvent> {
    sender().subscribe()
}

/// Whether anyone reads the tap: the stages build events only then.
pub fn listening() -> bool {
    sender().receiver_count() > 0
}

/// Hands `events` to every reader (to none when nobody listens).
pub fn publish(events: impl IntoIterator<Item = TapEvent>) {
    let tap = sender();
    if tap.receiver_count() == 0 {
        return;
    }
    for event in events {
        // Only fails when the last reader has just gone.
        let _ = tap.send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::items::Lane;

    fn session(lsid: &str) -> Session {
        Session {
            lsid: lsid.into(),
            ..Session::default()
        }
    }

    #[test]
    fn a_bundle_is_one_event_per_session_and_a_failure_carries_its_error() {
        let bundle = DeliverItem::Sessions {
            site: "main".into(),
            host: "support.example.com".into(),
            sessions: vec![session("a"), session("b")],
            lane: Lane::Live,
        };
        let events: Vec<TapEvent> = TapEvent::item_delivered(&bundle, "pg")
            .into_iter()
            .map(|e| e.failed("refused"))
            .collect();
        let lsids: Vec<_> = events.iter().map(|e| e.lsid.as_deref()).collect();
        assert_eq!(lsids, [Some("a"), Some("b")]);
        assert!(events.iter().all(|e| e.outcome.as_deref() == Some("failed")
            && e.error.as_deref() == Some("refused")
            && e.destination.as_deref() == Some("pg")));
        let line = serde_json::to_string(&events[0]).unwrap();
        assert!(
            !line.contains("start_time") && !line.contains("destinations"),
            "{line}"
        );
    }

    #[test]
    fn events_reach_a_reader_and_nobody_listening_costs_nothing() {
        // Other tests of this process may publish too: only this site's events count.
        let site = "tap-unit-test";
        publish([TapEvent::session_delivered(site, "x", "pg", None)]);
        let mut reader = subscribe();
        assert!(listening());
        publish([TapEvent::session_delivered(site, "y", "pg", None)]);
        let mine: Vec<TapEvent> = std::iter::from_fn(|| reader.try_recv().ok())
            .filter(|e| e.site == site)
            .collect();
        assert_eq!(mine.len(), 1, "{mine:?}");
        assert_eq!(mine[0].lsid.as_deref(), Some("y"));
        assert_eq!(mine[0].outcome.as_deref(), Some("delivered"));
    }
}
