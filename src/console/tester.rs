//! The API tester, as the Integration Client had it: a site, a date range or LSIDs,
//! destinations and data kinds, then Download — a backfill job in its own lane (the
//! one `btic backfill` starts), with a live progress bar, its ETA and the API budget's
//! estimate, and Cancel.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde_json::json;

use super::layout::{self, Nav};
use super::{Form, action, see_other};
use crate::config::DataKind;
use crate::config::units::parse_date;
use crate::keys;
use crate::pipeline::admin::Context;
use crate::pipeline::backfill::{self, Ask, BackfillRequest, JobRecord, Progress};

/// The kinds a backfill can fetch, as the form offers them.
const KINDS: [(DataKind, &str); 4] = [
    (DataKind::Sessions, "Sessions"),
    (DataKind::Recordings, "Their recordings"),
    (DataKind::Presentations, "Presentations"),
    (DataKind::PresentationRecordings, "Presentation recordings"),
];

/// How often a live progress bar moves.
const EVERY: Duration = Duration::from_millis(500);

pub(super) async fn form(State(context): State<Context>) -> Response {
    page(&context, &Form::default(), None, StatusCode::OK)
}

fn page(context: &Context, sent: &Form, error: Option<&str>, status: StatusCode) -> Response {
    let config = &context.config;
    let checked_kind = |k: DataKind| {
        let asked: Vec<&str> = sent.all("kind").collect();
        if asked.is_empty() {
            k == DataKind::Sessions
        } else {
            asked.contains(&k.as_str())
        }
    };
    let body = html! {
        @if let Some(e) = error { p.notice.bad role="alert" { (e) } }
        p { "Fetches past sessions again, beside the live export and without moving its watermark; the appliance's API budget is shared, so a large range takes time." }
        form method="post" action="/tester" {
            (layout::csrf(context))
            label.block for="site" { "Site" }
            select #site name="site" {
                @for s in &config.sites { option value=(s.name) selected[sent.one("site") == Some(&s.name)] { (s.name) } }
            }
            fieldset {
                legend { "Sessions that ended from … until before … (appliance time, UTC)" }
                label { "From " input type="date" name="from" value=(sent.one("from").unwrap_or_default()); }
                label { "To " input type="date" name="to" value=(sent.one("to").unwrap_or_default()); }
            }
            label.block for="lsids" { "Or session IDs (LSIDs), one per line" }
            textarea #lsids name="lsids" { (sent.one("lsids").unwrap_or_default()) }
            fieldset {
                legend { "Destinations (none ticked: those the site's transfers name)" }
                @for d in &config.destinations {
                    label { input type="checkbox" name="destination" value=(d.name) checked[sent.all("destination").any(|x| x == d.name)]; " " (d.name) }
                }
            }
            fieldset {
                legend { "Data" }
                @for (kind, label) in KINDS {
                    label { input type="checkbox" name="kind" value=(kind.as_str()) checked[checked_kind(kind)]; " " (label) }
                }
            }
            button type="submit" { "Download" }
        }
    };
    let page = layout::page(context, "API tester", Nav::Tester, html! {}, body);
    (status, page).into_response()
}

/// The form as a backfill [`Ask`].
fn ask(form: &Form) -> Result<Ask, String> {
    let date = |name: &str| {
        form.one(name)
            .map(|t| {
                parse_date(t)
                    .map(|d| d.timestamp())
                    .map_err(|e| format!("{name}: {e}"))
            })
            .transpose()
    };
    let range = match (date("from")?, date("to")?) {
        (Some(from), Some(to)) => Some((from, to)),
        (None, None) => None,
        _ => return Err("give both dates of the range, or neither".into()),
    };
    let lsids: Vec<String> = form
        .one("lsids")
        .unwrap_or_default()
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if range.is_some() && !lsids.is_empty() {
        return Err("give either a date range or session IDs, not both".into());
    }
    if range.is_none() && lsids.is_empty() {
        return Err("give a date range or session IDs".into());
    }
    let kinds = form
        .all("kind")
        .map(|k| DataKind::parse(k).ok_or_else(|| format!("no data kind {k:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    if kinds.is_empty() {
        return Err("tick at least one kind of data".into());
    }
    Ok(Ask {
        site: form.one("site").unwrap_or_default().to_string(),
        range,
        lsids,
        destinations: form.all("destination").map(str::to_string).collect(),
        kinds,
    })
}

pub(super) async fn start(State(context): State<Context>, body: Bytes) -> Response {
    let form = match action(&context, &body) {
        Ok(form) => form,
        Err(refused) => return refused.into_response(),
    };
    let request = ask(&form).and_then(|ask| {
        BackfillRequest::from_ask(&context.config, &ask).map_err(|e| e.to_string())
    });
    let started = request.and_then(|r| context.backfills.start(r).map_err(|e| e.to_string()));
    match started {
        Ok(job) => see_other(&format!("/tester/{job}")),
        Err(e) => page(&context, &form, Some(&e), StatusCode::BAD_REQUEST),
    }
}

/// How far along a job is, in percent: fetching is the first half, the items getting
/// through the second; 100 only once it is finished.
fn percent(p: &Progress) -> f64 {
    if p.summary.is_some() {
        return 100.0;
    }
    let fetch = if p.fetched {
        1.0
    } else if p.range_total > 0 {
        p.range_done as f64 / p.range_total as f64
    } else {
        0.0
    };
    let through = if p.items > 0 {
        p.through.min(p.items) as f64 / p.items as f64
    } else {
        0.0
    };
    ((fetch + through) * 50.0).min(99.0)
}

/// The progress line: what is done, and what is left.
fn describe(p: &Progress, eta: Option<Duration>) -> String {
    if let Some(s) = &p.summary {
        let how = if p.cancelled { "Cancelled" } else { "Finished" };
        return format!(
            "{how}: {} sessions, {} recordings, {} presentations delivered; {} dead-lettered; {} report bodies ({})",
            s.sessions_delivered,
            s.recordings_delivered,
            s.presentations_delivered,
            s.dead_lettered,
            s.bodies,
            layout::bytes(s.bytes)
        );
    }
    if let Some(e) = &p.error {
        return format!("Stopped: {e}");
    }
    let fetch = if p.fetched {
        "fetched".to_string()
    } else {
        "fetching".to_string()
    };
    let eta = eta.map_or(String::new(), |d| {
        format!(", about {} left", layout::span(d.as_secs_f64()))
    });
    format!(
        "{fetch}; {} of {} items through{eta}",
        p.through.min(p.items),
        p.items
    )
}

pub(super) async fn progress(State(context): State<Context>, Path(job): Path<String>) -> Response {
    let record: Option<JobRecord> = match context.queue.state_get(&keys::job(&job)).await {
        Ok(record) => record,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    // A job started a moment ago may not have written its record yet.
    let known = record.is_some() || context.backfills.started_here(&job);
    if !known {
        return (StatusCode::NOT_FOUND, format!("no backfill job {job}")).into_response();
    }
    let p = match context.backfills.progress(&job).await {
        Ok(p) => p,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let done = p.summary.is_some() || p.error.is_some();
    let body = html! {
        @if let Some(record) = &record {
            (what(&record.request))
            (budget(&context, &record.request))
        }
        div data-live-progress=[(!done).then(|| format!("/tester/{job}/live"))] {
            progress max="100" value=(format!("{:.0}", percent(&p))) aria-label="progress" {}
            p data-text role="status" { (describe(&p, None)) }
        }
        @if !done {
            form method="post" action=(format!("/tester/{job}/cancel")) {
                (layout::csrf(&context))
                button.secondary type="submit" { "Cancel" }
            }
        }
        p { a href="/tester" { "Another request" } }
    };
    let head = html! { @if !done { noscript { meta http-equiv="refresh" content="2"; } } };
    let title = format!("Backfill {job}");
    layout::page(&context, &title, Nav::Tester, head, body).into_response()
}

fn what(request: &BackfillRequest) -> Markup {
    let when = |t: Option<i64>| {
        t.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map_or("?".to_string(), layout::instant)
    };
    html! {
        p {
            "Site " strong { (request.site) } ": "
            @if request.lsids.is_empty() {
                "sessions that ended from " (when(request.from)) " until before " (when(request.to))
            } @else {
                (request.lsids.len()) " session(s) by LSID"
            }
            " into " (request.destinations().iter().map(|d| d.as_str()).collect::<Vec<_>>().join(", ")) "."
        }
    }
}

fn budget(context: &Context, request: &BackfillRequest) -> Markup {
    let Some(site) = context.config.site(&request.site) else {
        return html! {};
    };
    let e = backfill::estimate(request, site, &context.config.pipeline, None);
    html! {
        p.muted {
            "About " (e.requests()) " requests to the appliance; at the " (e.per_hour)
            " an hour the API budget leaves backfills, at least " (layout::span(e.hours * 3600.0)) "."
        }
    }
}

/// `text/event-stream`: `progress` events (`{percent, text, done}`) until the job ends.
pub(super) async fn live(State(context): State<Context>, Path(job): Path<String>) -> Response {
    let started = Instant::now();
    let state = (context, job, None::<f64>, false);
    let stream = futures::stream::unfold(state, move |(context, job, first, ended)| async move {
        if ended {
            return None;
        }
        tokio::select! {
            _ = context.stop.cancelled() => return None,
            _ = tokio::time::sleep(EVERY) => {}
        }
        let p = context.backfills.progress(&job).await.unwrap_or_default();
        let percent = percent(&p);
        let first = first.or(Some(percent));
        // The ETA from the pace since this page began following the job.
        let eta = first
            .filter(|f| percent > *f)
            .map(|f| started.elapsed().mul_f64((100.0 - percent) / (percent - f)));
        let done = p.summary.is_some() || p.error.is_some();
        let data = json!({ "percent": percent, "text": describe(&p, eta), "done": done });
        let event = Event::default().event("progress").data(data.to_string());
        Some((Ok::<_, Infallible>(event), (context, job, first, done)))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

pub(super) async fn cancel(
    State(context): State<Context>,
    Path(job): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(refused) = action(&context, &body) {
        return refused.into_response();
    }
    context.backfills.cancel(&job);
    see_other(&format!("/tester/{job}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_at_100_percent_only_when_finished() {
        let mut p = Progress {
            range_total: 100,
            range_done: 50,
            ..Progress::default()
        };
        assert_eq!(percent(&p), 25.0);
        p.fetched = true;
        p.items = 10;
        p.through = 10;
        assert_eq!(percent(&p), 99.0);
        p.summary = Some(backfill::Summary::default());
        assert_eq!(percent(&p), 100.0);
    }

    #[test]
    fn the_form_asks_for_a_range_or_lsids() {
        let form = |text: &str| Form::parse(text.as_bytes());
        let a = ask(&form("site=s&from=2026-01-01&to=2026-01-02&kind=sessions")).unwrap();
        assert_eq!(a.range, Some((1_767_225_600, 1_767_312_000)));
        let b = ask(&form(
            "site=s&lsids=a1%0D%0Ab2,c3&kind=sessions&destination=pg",
        ))
        .unwrap();
        assert_eq!(b.lsids, ["a1", "b2", "c3"]);
        assert_eq!(b.destinations, ["pg"]);
        assert!(ask(&form("site=s&from=2026-01-01&kind=sessions")).is_err());
        assert!(
            ask(&form(
                "site=s&lsids=a&from=2026-01-01&to=2026-01-02&kind=sessions"
            ))
            .is_err()
        );
        assert!(ask(&form("site=s&lsids=a")).is_err());
        assert!(ask(&form("site=s&lsids=a&kind=backups")).is_ok());
    }
}
