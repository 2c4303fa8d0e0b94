//! Log: the last lines of the daemon's log (`log_ring`), newest first, by level; sent
//! again every few seconds to pages with the script.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use tracing::Level;

use super::layout::{self, Nav};
use crate::log_ring;
use crate::pipeline::admin::Context;

/// Lines shown at most.
const SHOWN: usize = 500;
/// How often a live page gets the lines again.
const EVERY: Duration = Duration::from_secs(3);
const LEVELS: [(&str, Level); 4] = [
    ("error", Level::ERROR),
    ("warn", Level::WARN),
    ("info", Level::INFO),
    ("debug", Level::DEBUG),
];

/// The least severe level shown (default `info`).
#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct Filter {
    level: Option<String>,
}

impl Filter {
    fn level(&self) -> (&'static str, Level) {
        LEVELS
            .into_iter()
            .find(|(name, _)| self.level.as_deref() == Some(*name))
            .unwrap_or(LEVELS[2])
    }
}

pub(super) async fn page(State(context): State<Context>, Query(filter): Query<Filter>) -> Response {
    let (name, level) = filter.level();
    let body = html! {
        form method="get" action="/log" {
            fieldset {
                legend { "Which lines" }
                label { "At least " select name="level" {
                    @for (n, _) in LEVELS { option value=(n) selected[n == name] { (n) } }
                } }
                button.secondary type="submit" { "Show" }
            }
        }
        p.muted { "The last " (log_ring::CAPACITY) " lines the daemon logged are kept in memory (the log file or journal has them all)." }
        div data-live-html=(format!("/log/live?level={name}")) { (lines(level)) }
    };
    let head = html! { noscript { meta http-equiv="refresh" content="10"; } };
    layout::page(&context, "Log", Nav::Log, head, body).into_response()
}

fn lines(level: Level) -> Markup {
    let lines = log_ring::lines(level);
    html! {
        div.scroll { table {
            thead { tr {
                th scope="col" { "Time" } th scope="col" { "Level" }
                th scope="col" { "Where" } th scope="col" { "Message" }
            } }
            tbody { @for l in lines.iter().take(SHOWN) {
                @let class = match l.level { Level::ERROR => "bad", Level::WARN => "warn", _ => "" };
                tr {
                    td { (l.at.format("%Y-%m-%d %H:%M:%S")) }
                    td class=(class) { (l.level.as_str()) }
                    td.muted { (l.target) }
                    td.error { (l.text) }
                }
            } }
        } }
    }
}

/// `text/event-stream`: the lines as `html` events, every [`EVERY`].
pub(super) async fn live(State(context): State<Context>, Query(filter): Query<Filter>) -> Response {
    let (_, level) = filter.level();
    let stream = futures::stream::unfold(context.stop, move |stop| async move {
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(EVERY) => {}
        }
        let event = Event::default()
            .event("html")
            .data(lines(level).into_string());
        Some((Ok::<_, Infallible>(event), stop))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
