//! The overview: per site the clock skew, watermarks and their lag, the API budget;
//! per schedule the last run, its outcome and when it is next due; the queues, the dead
//! letters and the disk budget — from the same `Status` `btic status` prints. Its
//! sections are sent again every few seconds to pages with the script.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::layout::{self, Nav};
use crate::pipeline::admin::Context;
use crate::pipeline::schedule;
use crate::pipeline::status::{SiteStatus, Status};

/// How often a live overview is sent again.
const EVERY: Duration = Duration::from_secs(5);

pub(super) async fn page(State(context): State<Context>) -> Response {
    match sections(&context).await {
        Ok(sections) => layout::page(
            &context,
            "Overview",
            Nav::Overview,
            html! { noscript { meta http-equiv="refresh" content="30"; } },
            html! { div data-live-html="/overview/live" { (sections) } },
        )
        .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// `text/event-stream`: the sections as `html` events, every [`EVERY`].
pub(super) async fn live(State(context): State<Context>) -> Response {
    let stream = futures::stream::unfold(context, |context| async move {
        tokio::select! {
            _ = context.stop.cancelled() => return None,
            _ = tokio::time::sleep(EVERY) => {}
        }
        let html = sections(&context)
            .await
            .unwrap_or_else(|e| html! { p.notice.bad { (e) } });
        let event = Event::default().event("html").data(html.into_string());
        Some((Ok::<_, Infallible>(event), context))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn sections(context: &Context) -> Result<Markup, String> {
    // The budgets as last recorded (the daemon records them every few seconds): a page
    // sent again every few seconds does not write to the state directory.
    let status = Status::gather(&context.config, &context.queue, true)
        .await
        .map_err(|e| e.to_string())?;
    Ok(html! {
        (sites(&status))
        (schedules(context, &status))
        (queues(&status))
        (disk(&status))
        (super::charts::overview(&context.trends))
    })
}

fn sites(status: &Status) -> Markup {
    html! {
        h2 { "Sites" }
        div.scroll { table {
            thead { tr {
                th scope="col" { "Site" } th scope="col" { "Last success" } th scope="col" { "Clock skew" }
                th scope="col" { "Watermarks (appliance time)" } th scope="col" { "In progress" }
                th scope="col" { "API budget this hour" }
            } }
            tbody { @for site in &status.sites { tr {
                th scope="row" { (site.name) }
                td { @match crate::metrics::site_last_success(&site.name).and_then(|t| DateTime::from_timestamp(t, 0)) {
                    Some(at) => { (layout::instant(at)) },
                    None => span.warn { "none since the start" },
                } }
                td { @match site.skew_seconds {
                    Some(s) => { (format!("{s:+.1} s")) }
                    None => span.muted { "not measured yet" },
                } }
                td { @if site.watermarks.is_empty() { span.muted { "nothing fetched yet" } }
                     @for w in &site.watermarks {
                        div { (w.report) ": " (layout::rfc3339(&w.appliance_time))
                              " " span.muted { "(lag " (layout::span(w.lag_seconds)) ")" } }
                     } }
                td.num { (site.open_sessions) }
                td { (budget(site)) }
            } } }
        } }
    }
}

fn budget(site: &SiteStatus) -> Markup {
    let Some(b) = &site.budget else {
        return html! { span.muted { "unused" } };
    };
    html! {
        (b.used) " used of " (b.per_hour) ", " (b.remaining) " remaining"
        @if let Some(until) = &b.paused_until {
            br; span.bad { "paused until " (layout::rfc3339(until)) }
            @if let Some(why) = &b.paused_reason { " (" (why) ")" }
        }
        @if b.held_by_appliance { br; span.warn { "held back by the appliance's count (other clients)" } }
        @if b.refused > 0 { br; span.warn { (b.refused) " refused (429) since the start" } }
    }
}

fn schedules(context: &Context, status: &Status) -> Markup {
    let next = |name: &str, last: Option<&String>| {
        let schedule = context.config.schedules.iter().find(|s| s.name == name)?;
        let last = last.and_then(|t| DateTime::parse_from_rfc3339(t).ok())?;
        schedule::next_due(schedule, Some(last.with_timezone(&Utc)))
    };
    html! {
        h2 { "Schedules" }
        div.scroll { table {
            thead { tr {
                th scope="col" { "Schedule" } th scope="col" { "Last run" }
                th scope="col" { "Outcome" } th scope="col" { "Last success" }
                th scope="col" { "Next due" }
            } }
            tbody { @for s in &status.schedules { tr {
                th scope="row" { (s.name) }
                td { (s.last_attempt.as_deref().map_or("never".to_string(), layout::rfc3339)) }
                td { @if s.outcome == "ok" { span.ok { "ok" } } @else { span.error.warn { (s.outcome) } } }
                td { (s.last_success.as_deref().map_or("never".to_string(), layout::rfc3339)) }
                td { (next(&s.name, s.last_success.as_ref()).map_or("now".to_string(), layout::instant)) }
            } } }
        } }
    }
}

fn queues(status: &Status) -> Markup {
    let dead = |queue: &str| {
        status
            .dead_letters
            .iter()
            .find(|d| d.queue == queue)
            .map_or(0, |d| d.count)
    };
    let mut names: Vec<&str> = status.queues.iter().map(|q| q.name.as_str()).collect();
    for d in &status.dead_letters {
        if !names.contains(&d.queue.as_str()) {
            names.push(&d.queue);
        }
    }
    names.sort_unstable();
    if names.is_empty() {
        return html! { h2 { "Queues and dead letters" } p { "Nothing waiting, no dead letters." } };
    }
    html! {
        h2 { "Queues and dead letters" }
        div.scroll { table {
            thead { tr {
                th scope="col" { "Queue" } th.num scope="col" { "Depth" }
                th.num scope="col" { "Oldest" } th.num scope="col" { "Dead letters" }
            } }
            tbody { @for name in names {
                @let q = status.queues.iter().find(|q| q.name == name);
                tr {
                    th scope="row" { (name) }
                    td.num { (q.map_or(0, |q| q.depth)) }
                    td.num { (q.and_then(|q| q.oldest_age_seconds).map_or("–".to_string(), layout::span)) }
                    td.num { @match dead(name) {
                        0 => "0",
                        n => a.bad href=(format!("/dead-letters?queue={}", form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>())) { (n) },
                    } }
                }
            } }
        } }
    }
}

fn disk(status: &Status) -> Markup {
    let d = &status.disk;
    html! {
        h2 { "Disk" }
        p {
            "The state directory takes " (d.state_bytes.map_or("?".to_string(), layout::bytes))
            @if let Some(max) = d.max_state_bytes { " of at most " (layout::bytes(max)) }
            "; its file system has " (d.free_bytes.map_or("?".to_string(), layout::bytes)) " free"
            @if d.min_free_bytes > 0 { " (fetching pauses under " (layout::bytes(d.min_free_bytes)) ")" }
            ". "
            @match &d.paused {
                Some(why) => span.bad { "Fetching and downloading are paused (" (why) ")." },
                None => span.ok { "Within budget." },
            }
        }
    }
}
