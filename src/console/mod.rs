//! The operator's console: the Integration Client's window as pages the daemon serves at
//! `/` on its metrics listener, beside the admin API and behind the same access rules
//! (`pipeline::access`). Server-rendered HTML (maud escapes every value, so appliance
//! fields show as text), one stylesheet, and a few lines of script that make marked
//! parts live over server-sent events; every page works without it.
//!
//! It reads what `status` and the tap expose and calls the operations the CLI and the
//! admin API call (replay, discard, backfill): one implementation of each. Nothing
//! below `cli` imports it; `btic run` hands [`router`] to the daemon.
//!
//! Pages: the overview (`overview`), dead letters (`dead_letters`), the API tester
//! (`tester`), the tap (`tap`), the checks and the notifiers' Send test (`checks`), the
//! history of runs (`history`), the log's last lines (`log`), and the login form for peers other than loopback (`login`); `layout` is the frame they
//! share.

mod charts;
mod checks;
mod dead_letters;
mod history;
mod layout;
mod log;
mod login;
mod overview;
mod tap;
mod tester;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::pipeline::admin::Context;

/// The console's routes, for the daemon to merge into its listener's.
pub fn router(context: Context) -> Router {
    Router::new()
        .route("/", get(overview::page))
        .route("/overview/live", get(overview::live))
        .route("/dead-letters", get(dead_letters::list))
        .route("/dead-letters/{id}", get(dead_letters::show))
        .route("/dead-letters/replay", post(dead_letters::replay))
        .route("/dead-letters/discard", post(dead_letters::discard))
        .route("/tester", get(tester::form).post(tester::start))
        .route("/tester/{job}", get(tester::progress))
        .route("/tester/{job}/live", get(tester::live))
        .route("/tester/{job}/cancel", post(tester::cancel))
        .route("/tap", get(tap::page))
        .route("/tap/live", get(tap::live))
        .route("/checks", get(checks::page).post(checks::run))
        .route("/checks/send-test", post(checks::send_test))
        .route("/history", get(history::page))
        .route("/log", get(log::page))
        .route("/log/live", get(log::live))
        .route("/login", get(login::form).post(login::submit))
        .route("/console.css", get(stylesheet))
        .route("/console.js", get(script))
        .with_state(context)
}

const STYLESHEET: &str = include_str!("assets/console.css");
const SCRIPT: &str = include_str!("assets/console.js");

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

fn asset(kind: &'static str, text: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        text,
    )
        .into_response()
}

/// A submitted form's fields, in order (a name may repeat: checkboxes).
#[derive(Debug, Default)]
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Form {
        Form(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`, trimmed; `None` when absent or blank.
    fn one(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim())
    }

    /// Every non-blank value of `name`.
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim())
    }
}

/// An action's form without this process's CSRF token: answered 403.
#[derive(Debug)]
struct Refused;

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (
            StatusCode::FORBIDDEN,
            "refused: the form's CSRF token is missing or not this daemon's (reload the page)",
        )
            .into_response()
    }
}

/// An action's form, once its CSRF token is this process's.
fn action(context: &Context, body: &[u8]) -> Result<Form, Refused> {
    let form = Form::parse(body);
    form.one(layout::CSRF_FIELD)
        .is_some_and(|t| context.access.csrf_matches(t))
        .then_some(form)
        .ok_or(Refused)
}

/// A redirect after an action (303: the browser asks with GET).
fn see_other(location: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}
