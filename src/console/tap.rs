//! The tap: sessions as they pass the parse and deliver stages, live (the events
//! `btic tap` prints), newest first and at most a couple of hundred on the page.

use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use maud::html;

use super::layout::{self, Nav};
use crate::pipeline::admin::{self, Context, TapFilter};
use crate::pipeline::tap::TapStage;

/// The page's choices as its form sends them (blank: any).
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct Choice {
    site: Option<String>,
    stage: Option<String>,
}

impl Choice {
    fn filter(&self) -> TapFilter {
        TapFilter {
            site: self.site.clone().filter(|s| !s.is_empty()),
            stage: match self.stage.as_deref() {
                Some("parse") => Some(TapStage::Parse),
                Some("deliver") => Some(TapStage::Deliver),
                _ => None,
            },
        }
    }
}

pub(super) async fn page(State(context): State<Context>, Query(choice): Query<Choice>) -> Response {
    let filter = choice.filter();
    let query = query(&filter);
    let body = html! {
        form method="get" action="/tap" {
            fieldset {
                legend { "Which sessions" }
                label { "Site " select name="site" {
                    option value="" { "any" }
                    @for s in &context.config.sites {
                        option value=(s.name) selected[filter.site.as_deref() == Some(&s.name)] { (s.name) }
                    }
                } }
                label { "Stage " select name="stage" {
                    option value="" { "both" }
                    @for (stage, name) in [(TapStage::Parse, "parse"), (TapStage::Deliver, "deliver")] {
                        option value=(name) selected[filter.stage == Some(stage)] { (name) }
                    }
                } }
                button.secondary type="submit" { "Tap" }
            }
        }
        noscript { p.notice { "The tap is live: it needs the page's script." } }
        div.scroll data-live-tap=(format!("/tap/live{query}")) {
            table {
                thead { tr {
                    th scope="col" { "Time" } th scope="col" { "Stage" } th scope="col" { "Site" }
                    th scope="col" { "Session" } th scope="col" { "What happened" }
                } }
                tbody {}
            }
        }
    };
    layout::page(&context, "Tap", Nav::Tap, html! {}, body).into_response()
}

/// `?site=…&stage=…` for the filter (empty when it filters nothing).
fn query(filter: &TapFilter) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(site) = filter.site.as_deref().filter(|s| !s.is_empty()) {
        query.append_pair("site", site);
    }
    match filter.stage {
        Some(TapStage::Parse) => query.append_pair("stage", "parse"),
        Some(TapStage::Deliver) => query.append_pair("stage", "deliver"),
        None => &mut query,
    };
    let query = query.finish();
    if query.is_empty() {
        query
    } else {
        format!("?{query}")
    }
}

/// `text/event-stream`: one `tap` event per line of [`admin::tap_lines`]; ends with the
/// daemon.
pub(super) async fn live(State(context): State<Context>, Query(choice): Query<Choice>) -> Response {
    let stream = admin::tap_lines(choice.filter(), context.stop)
        .map(|line| Ok::<_, Infallible>(Event::default().event("tap").data(line)));
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
