//! Checks: the tests `btic check` runs — each site (token, API version, permissions,
//! clock skew), each destination (a probe row rolled back, a probe file), each SMTP
//! notifier's greeting — and the Integration Client's "Send Test" for each notifier.
//! Every text shown passes the redactor: no secret reaches the page, errors included.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::action;
use super::layout::{self, Nav};
use crate::notify::Redactor;
use crate::pipeline::admin::Context;
use crate::pipeline::checks;

/// One check's outcome, as the page lists it.
struct Outcome {
    what: &'static str,
    name: String,
    ok: bool,
    detail: String,
}

pub(super) async fn page(State(context): State<Context>) -> Response {
    render(&context, None, None)
}

fn render(context: &Context, results: Option<&[Outcome]>, sent: Option<&Outcome>) -> Response {
    let body = html! {
        p { "Contacts each site (a token and its API information: two requests of the account's budget), connects to each destination and writes a probe that is rolled back or removed, and greets each SMTP server without sending." }
        form method="post" action="/checks" {
            (layout::csrf(context))
            button type="submit" { "Run the checks" }
        }
        @if let Some(results) = results { (table(results)) }
        h2 { "Notifiers" }
        @if let Some(sent) = sent { (notice(sent)) }
        @if context.config.notifiers.is_empty() {
            p.muted { "The pipeline file has no [[notify]]." }
        }
        @for n in &context.config.notifiers {
            form.inline method="post" action="/checks/send-test" {
                (layout::csrf(context))
                input type="hidden" name="name" value=(n.name);
                button.secondary type="submit" { "Send test: " (n.name) }
            }
        }
    };
    layout::page(context, "Checks", Nav::Checks, html! {}, body).into_response()
}

fn notice(o: &Outcome) -> Markup {
    html! {
        p.notice.bad[!o.ok] role="status" {
            (o.what) " " (o.name) ": " @if o.ok { "sent, " } @else { "FAILED: " } (o.detail)
        }
    }
}

fn table(results: &[Outcome]) -> Markup {
    html! {
        h2 { "Results" }
        div.scroll { table {
            thead { tr {
                th scope="col" { "What" } th scope="col" { "Name" }
                th scope="col" { "Result" } th scope="col" { "Detail" }
            } }
            tbody { @for o in results { tr {
                td { (o.what) } th scope="row" { (o.name) }
                td { @if o.ok { span.ok { "ok" } } @else { span.bad { "FAILED" } } }
                td.error { (o.detail) }
            } } }
        } }
    }
}

/// Every check, in the order `btic check` runs them.
async fn run_all(context: &Context, redactor: &Redactor) -> Vec<Outcome> {
    let config = &context.config;
    let secrets = &context.secrets;
    let spool = std::env::temp_dir().join(format!("btic-console-check-{}", std::process::id()));
    let mut out = Vec::new();
    for site in &config.sites {
        let outcome = match secrets.client_secrets.get(&site.name) {
            None => Err("its client secret could not be read".to_string()),
            Some(secret) => checks::probe_site(site, secret, &spool)
                .await
                .map_err(|e| e.to_string())
                .and_then(|probe| {
                    let needed = checks::permissions_needed(config, site);
                    let missing = checks::missing_permissions(&probe, &needed);
                    let skew = probe
                        .skew_seconds
                        .map_or("not measured".to_string(), |s| format!("{s:+.1} s"));
                    let version = probe.info.api_version.as_deref().unwrap_or("unknown");
                    let line = format!("token ok, API version {version}, clock skew {skew}");
                    if missing.is_empty() {
                        Ok(format!("{line}, permissions {}", needed.join(", ")))
                    } else {
                        Err(format!(
                            "{line}; the API account lacks {}",
                            missing.join(", ")
                        ))
                    }
                }),
        };
        out.push(outcome_of("site", &site.name, outcome, redactor));
    }
    let _ = std::fs::remove_dir_all(&spool);
    for d in &config.destinations {
        let outcome = checks::destination(d, secrets).await;
        out.push(outcome_of("destination", &d.name, outcome, redactor));
    }
    for n in &config.notifiers {
        let outcome = checks::greet_notifier(n, secrets, redactor)
            .await
            .map(|line| {
                line.unwrap_or_else(|| {
                    "webhook not contacted (any request would post; Send test posts one)".into()
                })
            });
        out.push(outcome_of("notifier", &n.name, outcome, redactor));
    }
    out
}

fn outcome_of(
    what: &'static str,
    name: &str,
    outcome: Result<String, String>,
    redactor: &Redactor,
) -> Outcome {
    let (ok, detail) = match outcome {
        Ok(line) => (true, line),
        Err(e) => (false, e),
    };
    Outcome {
        what,
        name: name.to_string(),
        ok,
        detail: redactor.text(&detail),
    }
}

pub(super) async fn run(State(context): State<Context>, body: Bytes) -> Response {
    if let Err(refused) = action(&context, &body) {
        return refused.into_response();
    }
    let redactor = Redactor::new(&context.secrets);
    let results = run_all(&context, &redactor).await;
    render(&context, Some(&results), None)
}

pub(super) async fn send_test(State(context): State<Context>, body: Bytes) -> Response {
    let form = match action(&context, &body) {
        Ok(form) => form,
        Err(refused) => return refused.into_response(),
    };
    let name = form.one("name").unwrap_or_default();
    let Some(notifier) = context.config.notifiers.iter().find(|n| n.name == name) else {
        let unknown = Outcome {
            what: "notifier",
            name: name.to_string(),
            ok: false,
            detail: "no such notifier".into(),
        };
        return render(&context, None, Some(&unknown));
    };
    let outcome = checks::send_test(
        notifier,
        &context.secrets,
        &context.config.source,
        "the btic console's Send test",
    )
    .await;
    let redactor = Redactor::new(&context.secrets);
    let sent = outcome_of("notifier", name, outcome, &redactor);
    render(&context, None, Some(&sent))
}
