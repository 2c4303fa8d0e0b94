//! Dead letters: the list, filtered by queue, stage or destination, each with its error,
//! attempts and times; one letter's payload; Replay (one, a selection, or all of a
//! queue) and Discard, which asks for confirmation first. Both call the operations
//! `btic replay` and `btic dead-letter discard` call.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Nav};
use super::{Form, action, see_other};
use crate::pipeline::admin::{self, Context, ReplayRequest};
use crate::queue::{DeadLetter, DeadLetterFilter, ItemId, QueueError};

/// Dead letters listed on one page.
const PER_PAGE: usize = 200;

/// The list's filters, the page, and the outcome of the action that led here.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Filter {
    queue: Option<String>,
    stage: Option<String>,
    destination: Option<String>,
    done: Option<String>,
    /// The first letter shown (0-based), a multiple of [`PER_PAGE`].
    from: Option<usize>,
}

/// A filter's value, unless blank (the form's "any").
fn blank(f: &Option<String>) -> Option<&str> {
    f.as_deref().filter(|v| !v.is_empty())
}

impl Filter {
    fn passes(&self, letter: &DeadLetter) -> bool {
        let meta = |key: &str| {
            letter
                .metadata
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        blank(&self.queue).is_none_or(|q| letter.queue == q)
            && blank(&self.stage).is_none_or(|s| meta("stage") == Some(s))
            && blank(&self.destination).is_none_or(|d| meta("destination") == Some(d))
    }
}

fn meta<'a>(letter: &'a DeadLetter, key: &str) -> &'a str {
    letter
        .metadata
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

fn time(t: std::time::SystemTime) -> String {
    layout::instant(chrono::DateTime::<chrono::Utc>::from(t))
}

pub(super) async fn list(State(context): State<Context>, Query(filter): Query<Filter>) -> Response {
    let letters = match context.queue.dead_letters(DeadLetterFilter::All).await {
        Ok(letters) => letters,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let mut queues: Vec<&str> = letters.iter().map(|l| l.queue.as_str()).collect();
    queues.sort_unstable();
    queues.dedup();
    let matching: Vec<&DeadLetter> = letters.iter().filter(|l| filter.passes(l)).collect();
    let from = filter
        .from
        .unwrap_or(0)
        .min(matching.len().saturating_sub(1));
    let shown: Vec<&DeadLetter> = matching.iter().skip(from).take(PER_PAGE).copied().collect();
    let body = html! {
        @if let Some(done) = &filter.done { p.notice role="status" { (done) } }
        (filters(&filter, &queues))
        @if shown.is_empty() {
            p { "No dead letters" @if !letters.is_empty() { " match these filters" } "." }
        } @else {
            (pages(&filter, from, matching.len()))
            form method="post" action="/dead-letters/replay" {
                (layout::csrf(&context))
                p {
                    button type="submit" { "Replay selected" }
                    button.danger type="submit" formaction="/dead-letters/discard" { "Discard selected…" }
                }
                div.scroll { table {
                    thead { tr {
                        th scope="col" { span.muted { "Select" } } th scope="col" { "ID" }
                        th scope="col" { "Queue" } th scope="col" { "Stage" }
                        th.num scope="col" { "Attempts" } th scope="col" { "First seen" }
                        th scope="col" { "Last tried" } th scope="col" { "Error" }
                    } }
                    tbody { @for l in &shown { tr {
                        td { input type="checkbox" name="id" value=(l.id.0) aria-label=(format!("select {}", l.id.0)); }
                        td { a href=(format!("/dead-letters/{}", l.id.0)) { (l.id.0) } }
                        td { (l.queue) } td { (meta(l, "stage")) }
                        td.num { (l.attempts) } td { (time(l.first_seen)) } td { (time(l.last_tried)) }
                        td.error { (l.last_error) }
                    } } }
                } }
            }
            h2 { "All of a queue" }
            @for q in &queues {
                form.inline method="post" action="/dead-letters/replay" {
                    (layout::csrf(&context))
                    input type="hidden" name="queue" value=(q);
                    button.secondary type="submit" { "Replay all of " (q) }
                }
            }
        }
    };
    layout::page(&context, "Dead letters", Nav::DeadLetters, html! {}, body).into_response()
}

/// Which letters this page shows, and links to the pages before and after.
fn pages(filter: &Filter, from: usize, total: usize) -> Markup {
    let link = |from: usize| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("queue", &filter.queue),
            ("stage", &filter.stage),
            ("destination", &filter.destination),
        ] {
            if let Some(v) = blank(value) {
                query.append_pair(key, v);
            }
        }
        query.append_pair("from", &from.to_string());
        format!("/dead-letters?{}", query.finish())
    };
    let to = (from + PER_PAGE).min(total);
    html! {
        p {
            (from + 1) "–" (to) " of " (total)
            @if from > 0 { " · " a href=(link(from.saturating_sub(PER_PAGE))) { "previous" } }
            @if to < total { " · " a href=(link(to)) { "next" } }
        }
    }
}

fn filters(filter: &Filter, queues: &[&str]) -> Markup {
    let value = |f: &Option<String>| f.clone().unwrap_or_default();
    html! {
        form method="get" action="/dead-letters" {
            fieldset {
                legend { "Filter" }
                label { "Queue " select name="queue" {
                    option value="" { "any" }
                    @for q in queues { option value=(q) selected[filter.queue.as_deref() == Some(*q)] { (q) } }
                } }
                label { "Stage " select name="stage" {
                    option value="" { "any" }
                    @for s in ["fetch", "parse", "download", "deliver"] {
                        option value=(s) selected[filter.stage.as_deref() == Some(s)] { (s) }
                    }
                } }
                label { "Destination " input type="text" name="destination" value=(value(&filter.destination)); }
                button.secondary type="submit" { "Show" }
            }
        }
    }
}

pub(super) async fn show(State(context): State<Context>, Path(id): Path<u64>) -> Response {
    let item = match context.queue.dead_letter_show(ItemId(id)).await {
        Ok(item) => item,
        Err(e @ QueueError::DeadLetterNotFound { .. }) => {
            return (StatusCode::NOT_FOUND, e.to_string()).into_response();
        }
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let json = admin::item_json(&item);
    let pretty = serde_json::to_string_pretty(&json).unwrap_or_default();
    let l = &item.letter;
    let body = html! {
        dl {
            dt { "Queue" } dd { (l.queue) }
            @for (k, v) in &l.metadata { dt { (k) } dd { (v) } }
            dt { "Attempts" } dd { (l.attempts) }
            dt { "First seen" } dd { (time(l.first_seen)) }
            dt { "Last tried" } dd { (time(l.last_tried)) }
            dt { "First error" } dd.error { (l.first_error) }
            dt { "Last error" } dd.error { (l.last_error) }
        }
        form method="post" action="/dead-letters/replay" {
            (layout::csrf(&context))
            input type="hidden" name="id" value=(id);
            button type="submit" { "Replay" }
            button.danger type="submit" formaction="/dead-letters/discard" { "Discard…" }
        }
        h2 { "Payload" }
        pre { code { (pretty) } }
    };
    let title = format!("Dead letter {id}");
    layout::page(&context, &title, Nav::DeadLetters, html! {}, body).into_response()
}

/// The requests a form asks for: its selected ids, else all of its queue.
fn requests(form: &Form) -> Vec<ReplayRequest> {
    let ids: Vec<ReplayRequest> = form
        .all("id")
        .filter_map(|id| id.parse().ok())
        .map(|id| ReplayRequest {
            id: Some(id),
            destination: None,
            queue: None,
        })
        .collect();
    if !ids.is_empty() {
        return ids;
    }
    form.one("queue")
        .map(|q| ReplayRequest {
            id: None,
            destination: None,
            queue: Some(q.to_string()),
        })
        .into_iter()
        .collect()
}

pub(super) async fn replay(State(context): State<Context>, body: Bytes) -> Response {
    let form = match action(&context, &body) {
        Ok(form) => form,
        Err(refused) => return refused.into_response(),
    };
    let mut replayed = 0;
    for request in requests(&form) {
        match admin::replay(&context.queue, &request).await {
            Ok(n) => replayed += n,
            Err(QueueError::DeadLetterNotFound { .. }) => {}
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    }
    done(format!(
        "{replayed} dead letter(s) replayed: back at the front of their queues."
    ))
}

fn done(message: String) -> Response {
    let text: String = form_urlencoded::byte_serialize(message.as_bytes()).collect();
    see_other(&format!("/dead-letters?done={text}"))
}

pub(super) async fn discard(State(context): State<Context>, body: Bytes) -> Response {
    let form = match action(&context, &body) {
        Ok(form) => form,
        Err(refused) => return refused.into_response(),
    };
    let requests = requests(&form);
    if form.one("confirm") != Some("yes") {
        return confirm(&context, &requests).await;
    }
    let mut discarded = 0;
    for request in &requests {
        match admin::discard(&context.queue, request).await {
            Ok(n) => discarded += n,
            Err(QueueError::DeadLetterNotFound { .. }) => {}
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    }
    done(format!("{discarded} dead letter(s) discarded for good."))
}

/// The page that asks before anything is discarded.
async fn confirm(context: &Context, requests: &[ReplayRequest]) -> Response {
    let what = |r: &ReplayRequest| match (&r.id, &r.queue) {
        (Some(id), _) => format!("dead letter {id}"),
        (None, Some(q)) => format!("every dead letter of {q}"),
        (None, None) => "every dead letter".to_string(),
    };
    let body = html! {
        @if requests.is_empty() {
            p { "Nothing was selected. " a href="/dead-letters" { "Back to the dead letters" } }
        } @else {
            p { "These are deleted for good; their data is not fetched or delivered again unless asked for anew (a backfill):" }
            ul { @for r in requests { li { (what(r)) } } }
            form method="post" action="/dead-letters/discard" {
                (layout::csrf(context))
                input type="hidden" name="confirm" value="yes";
                @for r in requests {
                    @if let Some(id) = r.id { input type="hidden" name="id" value=(id); }
                    @if let Some(q) = &r.queue { input type="hidden" name="queue" value=(q); }
                }
                button.danger type="submit" { "Discard for good" }
                a href="/dead-letters" { "Cancel" }
            }
        }
    };
    layout::page(
        context,
        "Discard dead letters?",
        Nav::DeadLetters,
        html! {},
        body,
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_are_paged_and_the_links_keep_the_filters() {
        let filter = Filter {
            queue: Some("fetch/a b".into()),
            stage: Some(String::new()),
            ..Filter::default()
        };
        let html = pages(&filter, 200, 1000).into_string();
        assert!(html.contains("201–400 of 1000"), "{html}");
        assert!(
            html.contains("href=\"/dead-letters?queue=fetch%2Fa+b&amp;from=0\""),
            "{html}"
        );
        assert!(
            html.contains("href=\"/dead-letters?queue=fetch%2Fa+b&amp;from=400\""),
            "{html}"
        );
        let last = pages(&filter, 800, 1000).into_string();
        assert!(
            last.contains("previous") && !last.contains("next"),
            "{last}"
        );
        let only = pages(&Filter::default(), 0, 5).into_string();
        assert!(
            !only.contains("previous") && !only.contains("next"),
            "{only}"
        );
    }
}
