//! A digest as a message: the subject line and plain text of a mail, and the JSON body
//! of a webhook (a `text` field that Slack, Mattermost and Teams incoming webhooks show
//! as it is, plus the same events as structured fields). `Redactor` makes sure no
//! secret value the pipeline file refers to leaves in either.

use std::fmt::{self, Write as _};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::event::{Digest, Event, EventKind};
use crate::config::ResolvedSecrets;
use crate::config::units::format_duration;

/// Where a message comes from, for its header lines.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The notifier's name.
    pub notifier: String,
    /// This machine's host name.
    pub host: String,
    /// The pipeline file, for the `btic status --config` hint.
    pub config: String,
}

impl Origin {
    /// The origin of messages from `notifier` on this machine for pipeline file `config`.
    pub fn here(notifier: &str, config: &std::path::Path) -> Origin {
        Origin {
            notifier: notifier.to_string(),
            host: host_name(),
            config: config.display().to_string(),
        }
    }
}

/// This machine's host name (`unknown host` when it cannot be read).
pub fn host_name() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown host".into())
}

/// One message, ready for any transport.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// A mail's subject line.
    pub subject: String,
    /// A mail's body; also the webhook body's `text`.
    pub text: String,
    /// The webhook body.
    pub body: Value,
}

fn time(unix: i64) -> String {
    DateTime::from_timestamp(unix, 0).map_or_else(
        || unix.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

fn rfc3339(unix: i64) -> String {
    DateTime::from_timestamp(unix, 0).map_or_else(|| unix.to_string(), |t| t.to_rfc3339())
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// When an event happened: one time, or the span of its occurrences.
fn when(e: &Event) -> String {
    if e.first_at == e.last_at {
        format!("at {}", time(e.first_at))
    } else {
        format!("between {} and {}", time(e.first_at), time(e.last_at))
    }
}

/// One line for an event, without its time.
fn headline(e: &Event) -> String {
    let s = &e.subject;
    let again = if e.count > 1 && e.kind != EventKind::DeadLettered {
        format!(" ({} times)", e.count)
    } else {
        String::new()
    };
    let line = match e.kind {
        EventKind::DeadLettered => format!(
            "{} dead-lettered from {s}",
            plural(e.count, "item", "items")
        ),
        EventKind::DeadLetterCleared => format!("recovered: the dead letter of {s} is empty"),
        EventKind::ScheduleFailing => format!("schedule \"{s}\" keeps failing"),
        EventKind::ScheduleRecovered => format!("recovered: schedule \"{s}\" ran successfully"),
        EventKind::StageStalled => format!("stage {s} stalled"),
        EventKind::StageRecovered => format!("recovered: stage {s} makes progress again"),
        EventKind::DiskBudgetReached => format!("disk budget reached: {s}; fetching paused"),
        EventKind::DiskBudgetRecovered => {
            format!("recovered: {s} is under its disk budget; fetching goes on")
        }
        EventKind::StorageFailStop => format!("storage failed ({s}); the daemon stopped"),
        EventKind::StorageRecovered => format!("recovered: storage works again ({s})"),
        EventKind::Test => format!("test message from notifier \"{s}\""),
    };
    line + &again
}

/// What the detail of an event is, in a sentence.
fn detail_label(kind: EventKind) -> &'static str {
    match kind {
        EventKind::DeadLettered => "first error",
        EventKind::ScheduleFailing => "last outcome",
        _ => "detail",
    }
}

/// Composes the message for `digest`, sent at `now`.
pub fn compose(digest: &Digest, origin: &Origin, now: DateTime<Utc>) -> Message {
    let version = env!("CARGO_PKG_VERSION");
    let n = digest.events.len() as u64 + digest.omitted;
    let mut text = String::new();
    let since = digest
        .since()
        .map_or_else(String::new, |t| format!(" since {}", time(t)));
    let _ = writeln!(
        text,
        "btic {version} on {}: {}{since}\n",
        origin.host,
        plural(n, "event", "events")
    );
    for e in &digest.events {
        let _ = writeln!(text, "- {} {}", headline(e), when(e));
        if !e.detail.is_empty() {
            let _ = writeln!(text, "  {}: {}", detail_label(e.kind), e.detail);
        }
    }
    if digest.omitted > 0 {
        let _ = writeln!(
            text,
            "- and {} not listed here",
            plural(digest.omitted, "more event", "more events")
        );
    }
    let _ = write!(
        text,
        "\nSent by notifier \"{}\" at {}, at most once per its min_interval.\n\
         Details: btic status --config {c}; btic dead-letter list --config {c}\n",
        origin.notifier,
        time(now.timestamp()),
        c = origin.config
    );
    let subject = match digest.events.first() {
        Some(first) if n > 1 => format!(
            "btic on {}: {} (and {} more)",
            origin.host,
            headline(first),
            n - 1
        ),
        Some(first) => format!("btic on {}: {}", origin.host, headline(first)),
        None => format!("btic on {}: {}", origin.host, plural(n, "event", "events")),
    };
    let events: Vec<Value> = digest
        .events
        .iter()
        .map(|e| {
            json!({
                "kind": e.kind.as_str(),
                "class": e.kind.class().map(|c| c.as_str()),
                "recovery": e.kind.is_recovery(),
                "subject": e.subject,
                "count": e.count,
                "detail": e.detail,
                "first_at": rfc3339(e.first_at),
                "last_at": rfc3339(e.last_at),
            })
        })
        .collect();
    let body = json!({
        "text": text,
        "subject": subject,
        "btic_version": version,
        "host": origin.host,
        "notifier": origin.notifier,
        "sent_at": now.to_rfc3339(),
        "events": events,
        "omitted": digest.omitted,
    });
    Message {
        subject,
        text,
        body,
    }
}

/// Replaces every secret value read from the pipeline file by `***` in text that leaves
/// btic (messages, errors of the transports). Errors and events are written without
/// secrets in the first place; this is the second line of defence, for text btic does
/// not write itself (a server's answer, an appliance's error).
#[derive(Clone, Default)]
pub struct Redactor {
    /// The values, longest first, so that a secret containing another goes whole.
    values: std::sync::Arc<Vec<String>>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} values)", self.values.len())
    }
}

impl Redactor {
    /// Redacts every secret in `secrets`.
    pub fn new(secrets: &ResolvedSecrets) -> Redactor {
        let mut values: Vec<String> = secrets
            .values()
            .into_iter()
            .map(|s| s.expose().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Redactor {
            values: std::sync::Arc::new(values),
        }
    }

    /// `text` with every secret value replaced by `***`.
    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in self.values.iter() {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "***");
            }
        }
        out
    }

    /// The message with every string in it redacted.
    pub fn message(&self, m: Message) -> Message {
        fn walk(r: &Redactor, v: &mut Value) {
            match v {
                Value::String(s) => *s = r.text(s),
                Value::Array(items) => items.iter_mut().for_each(|i| walk(r, i)),
                Value::Object(map) => map.values_mut().for_each(|i| walk(r, i)),
                _ => {}
            }
        }
        let mut body = m.body;
        walk(self, &mut body);
        Message {
            subject: self.text(&m.subject),
            text: self.text(&m.text),
            body,
        }
    }
}

/// How long a condition lasted, for a recovery's detail.
pub(crate) fn lasted(since: i64, now: i64) -> String {
    format!(
        "after {}",
        format_duration(std::time::Duration::from_secs((now - since).max(0) as u64))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NotifierSecrets, Secret};
    use crate::notify::event::event;

    fn origin() -> Origin {
        Origin {
            notifier: "ops-mail".into(),
            host: "box1".into(),
            config: "/etc/btic/btic.toml".into(),
        }
    }

    #[test]
    fn a_digest_reads_as_a_list_of_what_happened() {
        let mut d = Digest::default();
        d.add(event(
            EventKind::DeadLettered,
            "deliver/archive",
            3,
            "This recording has expired",
            1_717_412_400,
        ));
        d.add(Event {
            last_at: 1_717_412_460,
            ..event(
                EventKind::DeadLettered,
                "deliver/archive",
                1,
                "",
                1_717_412_400,
            )
        });
        d.add(event(
            EventKind::ScheduleRecovered,
            "often",
            1,
            "after 35m",
            1_717_412_500,
        ));
        let now = DateTime::from_timestamp(1_717_412_520, 0).unwrap();
        let m = compose(&d, &origin(), now);
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            m.text,
            format!(
                "btic {version} on box1: 2 events since 2024-06-03 11:00:00 UTC\n\n\
- 4 items dead-lettered from deliver/archive between 2024-06-03 11:00:00 UTC and 2024-06-03 11:01:00 UTC\n\
\x20 first error: This recording has expired\n\
- recovered: schedule \"often\" ran successfully at 2024-06-03 11:01:40 UTC\n\
\x20 detail: after 35m\n\
\nSent by notifier \"ops-mail\" at 2024-06-03 11:02:00 UTC, at most once per its min_interval.\n\
Details: btic status --config /etc/btic/btic.toml; btic dead-letter list --config /etc/btic/btic.toml\n"
            )
        );
        assert_eq!(
            m.subject,
            "btic on box1: 4 items dead-lettered from deliver/archive (and 1 more)"
        );
        assert_eq!(m.body["text"], m.text.as_str());
        assert_eq!(m.body["events"][0]["kind"], "dead_letter");
        assert_eq!(m.body["events"][0]["count"], 4);
        assert_eq!(m.body["events"][0]["first_at"], "2024-06-03T11:00:00+00:00");
        assert_eq!(m.body["events"][1]["recovery"], true);
        assert_eq!(m.body["events"][1]["class"], "schedule_failing");
        assert_eq!(m.body["btic_version"], version);
        assert_eq!(m.body["host"], "box1");
    }

    #[test]
    fn secrets_are_replaced_everywhere_in_a_message() {
        let mut secrets = ResolvedSecrets::default();
        secrets
            .client_secrets
            .insert("s".into(), Secret::new("hunter2"));
        secrets.notifiers.insert(
            "n".into(),
            NotifierSecrets {
                password: Some(Secret::new("smtp-pass")),
                ..NotifierSecrets::default()
            },
        );
        let r = Redactor::new(&secrets);
        let mut d = Digest::default();
        d.add(event(
            EventKind::DeadLettered,
            "deliver/x",
            1,
            "login with hunter2 and smtp-pass refused",
            0,
        ));
        let m = r.message(compose(&d, &origin(), Utc::now()));
        let all = format!("{} {} {}", m.subject, m.text, m.body);
        assert!(
            !all.contains("hunter2") && !all.contains("smtp-pass"),
            "{all}"
        );
        assert!(
            m.text.contains("login with *** and *** refused"),
            "{}",
            m.text
        );
        assert!(
            m.body["events"][0]["detail"]
                .as_str()
                .unwrap()
                .contains("with ***")
        );
        assert_eq!(format!("{r:?}"), "Redactor(2 values)");
    }
}
