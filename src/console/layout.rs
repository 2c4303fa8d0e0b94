//! The frame every console page shares — head, navigation, the daemon's state line —
//! and the small formatting helpers the pages use.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use crate::pipeline::admin::Context;

/// The name of the hidden field that carries the CSRF token.
pub(super) const CSRF_FIELD: &str = "csrf";

/// The console's pages, for the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Nav {
    Overview,
    DeadLetters,
    Tester,
    Tap,
    Checks,
    History,
    Log,
}

const PAGES: [(Nav, &str, &str); 7] = [
    (Nav::Overview, "/", "Overview"),
    (Nav::DeadLetters, "/dead-letters", "Dead letters"),
    (Nav::Tester, "/tester", "API tester"),
    (Nav::Tap, "/tap", "Tap"),
    (Nav::Checks, "/checks", "Checks"),
    (Nav::History, "/history", "History"),
    (Nav::Log, "/log", "Log"),
];

/// A whole page: `title`, the navigation with `current` marked, and `body`. `head` goes
/// into the document's head (a refresh for readers without script).
pub(super) fn page(
    context: &Context,
    title: &str,
    current: Nav,
    head: Markup,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · btic" }
                link rel="stylesheet" href="/console.css";
                script src="/console.js" defer {}
                (head)
            }
            body {
                header {
                    span.name { "btic" }
                    nav aria-label="Pages" {
                        ul {
                            @for (nav, href, label) in PAGES {
                                li {
                                    @if nav == current {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    (state_line(context))
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// The Integration Client's status line: whether the daemon runs, is ready and healthy.
fn state_line(context: &Context) -> Markup {
    let health = &context.health;
    let stalled = health.stalled();
    html! {
        p.state role="status" {
            "Daemon running · "
            @if health.is_ready() { span.ok { "ready" } } @else { span.warn { "not ready" } }
            " · "
            @if let Some(failure) = health.failure() {
                span.bad { "failed: " (failure) }
            } @else if stalled.is_empty() {
                span.ok { "healthy" }
            } @else {
                span.bad { "stalled: " (stalled.join(", ")) }
            }
        }
    }
}

/// The hidden field every action's form carries.
pub(super) fn csrf(context: &Context) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(context.access.csrf()); }
}

/// An instant for people: `2026-12-07 02:03:04 UTC`.
pub(super) fn instant(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// An RFC 3339 text as [`instant`] writes it (unchanged when it does not parse).
pub(super) fn rfc3339(text: &str) -> String {
    DateTime::parse_from_rfc3339(text).map_or_else(|_| text.to_string(), |t| instant(t.to_utc()))
}

/// A length of time for people: `45 s`, `12 min`, `3.5 h`, `2.1 d`.
pub(super) fn span(seconds: f64) -> String {
    let s = seconds.abs();
    let sign = if seconds < 0.0 { "-" } else { "" };
    if s < 120.0 {
        format!("{sign}{s:.0} s")
    } else if s < 7_200.0 {
        format!("{sign}{:.0} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{sign}{:.1} h", s / 3_600.0)
    } else {
        format!("{sign}{:.1} d", s / 86_400.0)
    }
}

/// A byte count for people: `1.5 GiB`.
pub(super) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_sizes_read_naturally() {
        assert_eq!(span(45.0), "45 s");
        assert_eq!(span(-30.0), "-30 s");
        assert_eq!(span(720.0), "12 min");
        assert_eq!(span(12_600.0), "3.5 h");
        assert_eq!(span(181_440.0), "2.1 d");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(
            rfc3339("2026-12-07T02:03:04+00:00"),
            "2026-12-07 02:03:04 UTC"
        );
        assert_eq!(rfc3339("garbage"), "garbage");
    }
}
