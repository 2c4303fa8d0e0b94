//! The login form for peers other than loopback when `[console] token` is set: the
//! token, once right, becomes a cookie (`HttpOnly; SameSite=Strict`) for this process.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::Form;
use crate::pipeline::access::COOKIE;
use crate::pipeline::admin::Context;

pub(super) async fn form(State(context): State<Context>) -> Response {
    (StatusCode::OK, page(&context, None)).into_response()
}

fn page(context: &Context, error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign in · btic" }
                link rel="stylesheet" href="/console.css";
            }
            body { main {
                h1 { "btic: sign in" }
                @if !context.access.has_token() {
                    p { "This console answers this host (loopback) only: set " code { "[console] token" } " to admit others." }
                } @else {
                    @if let Some(e) = error { p.notice.bad role="alert" { (e) } }
                    form method="post" action="/login" {
                        label.block for="token" { "Console token" }
                        input #token type="password" name="token" autocomplete="current-password" required;
                        p { button type="submit" { "Sign in" } }
                    }
                }
            } }
        }
    }
}

pub(super) async fn submit(State(context): State<Context>, body: Bytes) -> Response {
    let form = Form::parse(&body);
    match context.access.login(form.one("token").unwrap_or_default()) {
        Some(cookie) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, "/".to_string()),
                (
                    header::SET_COOKIE,
                    format!("{COOKIE}={cookie}; HttpOnly; SameSite=Strict; Path=/"),
                ),
            ],
        )
            .into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            page(&context, Some("That is not the console token.")),
        )
            .into_response(),
    }
}
