//! History: the last runs of each schedule and backfill job (`btic history`), newest
//! first, filtered by what ran.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::layout::{self, Nav};
use crate::keys::RunKind;
use crate::pipeline::admin::Context;
use crate::pipeline::history;

/// Runs shown at most on one page.
const SHOWN: usize = 200;

/// The page's filter: a schedule's name or a job's id (blank: every run).
#[derive(Debug, Default, Deserialize)]
pub(super) struct Filter {
    name: Option<String>,
}

pub(super) async fn page(State(context): State<Context>, Query(filter): Query<Filter>) -> Response {
    let runs = match history::list(&context.queue).await {
        Ok(runs) => runs,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let wanted = filter.name.as_deref().filter(|n| !n.is_empty());
    let mut names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let shown: Vec<_> = runs
        .iter()
        .filter(|r| wanted.is_none_or(|n| r.name == n))
        .take(SHOWN)
        .collect();
    let body = html! {
        form method="get" action="/history" {
            fieldset {
                legend { "Which runs" }
                label { "Schedule or job " select name="name" {
                    option value="" { "all" }
                    @for n in &names { option value=(n) selected[wanted == Some(*n)] { (n) } }
                } }
                button.secondary type="submit" { "Show" }
            }
        }
        @if shown.is_empty() {
            p { "No runs recorded yet." }
        } @else {
            p.muted { "The last " (history::KEEP) " runs are kept; sessions are counted for backfill jobs (a schedule's bodies are parsed after its run, so its sessions are not counted here)." }
            div.scroll { table {
                thead { tr {
                    th scope="col" { "Started" } th scope="col" { "What" }
                    th.num scope="col" { "Duration" } th.num scope="col" { "Windows" }
                    th.num scope="col" { "Bodies" } th.num scope="col" { "Bytes" }
                    th.num scope="col" { "Sessions" } th.num scope="col" { "Dead-lettered" }
                    th scope="col" { "Outcome" }
                } }
                tbody { @for r in &shown { tr {
                    td { (chrono::DateTime::from_timestamp_millis(r.started_ms).map_or(String::new(), layout::instant)) }
                    td { @match r.kind {
                        RunKind::Schedule => { "schedule " (r.name) },
                        RunKind::Backfill => { "backfill " a href=(format!("/tester/{}", r.name)) { (r.name) } },
                    } }
                    td.num { (layout::span(r.duration_ms as f64 / 1000.0)) }
                    td.num { (r.windows) } td.num { (r.bodies) } td.num { (layout::bytes(r.bytes)) }
                    td.num { (r.sessions.map_or("–".to_string(), |n| n.to_string())) }
                    td.num { (r.dead_lettered) }
                    td { @if r.outcome == "ok" { span.ok { "ok" } } @else { span.error.warn { (r.outcome) } } }
                } } }
            } }
        }
    };
    layout::page(&context, "History", Nav::History, html! {}, body).into_response()
}
