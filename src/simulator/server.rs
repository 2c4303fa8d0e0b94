//! The simulator's HTTP layer: routes, OAuth, the account's request budget, report
//! semantics, downloads, faults and the test controls under `/_sim/`.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State as AxumState};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::budget::{Budget, Caller, RateBudget};
use super::catalog::{self, Catalog, MAX_LENGTH_SECONDS, Slot};
use super::content;
use super::render::Namespace;
use super::{Faults, Options, WindowFaults, skewed};

/// The appliance keeps at most this many live tokens per API account.
const MAX_TOKENS: usize = 30;

/// Size of the chunks of generated downloads.
const CHUNK_BYTES: usize = 64 * 1024;

/// The answer to a missing, expired or invalid token, as the vendor documents it
/// (`bt_vendor_doc_expired_or_invalid_token_body_DOC.json`).
const ACCESS_DENIED: &str = "{\n    \"error\": \"access_denied\",\n    \"message\": \"The resource owner or authorization server denied the request.\"\n}\n";

/// The budget's headers, as the vendor documents them (`X-RateLimit-Limit: 15000`).
const RATE_LIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const RATE_LIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");

/// Counters for tests and benchmarks (`Simulator::stats`, `GET /_sim/stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Tokens issued.
    pub tokens_issued: u64,
    /// Answers to `/api/*` (any status, the budget's 429s included).
    pub api_requests: u64,
    /// `/api/*` answers refused for a missing, expired or invalid token.
    pub unauthorized: u64,
    /// Faults injected.
    pub faults: u64,
    /// Requests the budget counted, by kind: `token`, the command's action
    /// (`get_api_info`), the report's name (`SupportSession`,
    /// `SupportSessionRecording`, ...) or `backup`. A request without a name counts as
    /// `command` or `reporting`.
    pub requests: BTreeMap<String, u64>,
    /// 429s sent for want of budget or in a storm (not the injected `Faults`).
    pub rate_limited: u64,
    /// Support sessions written into `SupportSession` answers sent whole, summed.
    pub sessions_returned: u64,
    /// Bytes of report answers sent (`SupportSession`, `SupportSessionListing` and the
    /// presentation reports, "no data" answers included; downloads not).
    pub report_bytes: u64,
    /// Requests the other client of the account spent.
    pub other_requests: u64,
    /// The other client's attempts refused for want of budget.
    pub other_refused: u64,
    /// The most requests counted in any rolling second, every client of the account.
    pub max_in_second: u64,
    /// The most requests counted in any rolling hour (`RateBudget::hour`), every client.
    pub max_in_hour: u64,
    /// The most requests counted in any rolling hour, the other client's left out.
    pub client_max_in_hour: u64,
}

/// Shared server state.
#[derive(Debug)]
pub(crate) struct State {
    options: Options,
    catalog: Catalog,
    /// The presentations' schedule (see `content::presentation_seed`).
    presentations: Catalog,
    /// Live tokens, oldest first; at most `MAX_TOKENS`.
    tokens: Mutex<VecDeque<(String, Instant)>>,
    faults: Mutex<Faults>,
    /// Windows answered wrongly (`Options::window_faults`).
    window_faults: Mutex<WindowFaults>,
    /// The account's budget, shared with the other client's task.
    budget: Arc<Mutex<Budget>>,
    /// The other client's rate in requests a minute, watched by its task (a watch
    /// holds the latest value only; the task ends on the simulator's stop token).
    other_rate: watch::Sender<f64>,
    /// Appliance clock minus host clock, in milliseconds: `Options::skew_seconds`, moved
    /// on by `advance`.
    skew_ms: AtomicI64,
    tokens_issued: AtomicU64,
    api_requests: AtomicU64,
    unauthorized: AtomicU64,
    faults_injected: AtomicU64,
    /// Counted requests by kind; a handful of keys (report names and actions).
    requests: Mutex<BTreeMap<String, u64>>,
    sessions_returned: AtomicU64,
    report_bytes: AtomicU64,
}

impl State {
    pub(crate) fn new(options: Options) -> Self {
        let now = skewed(Utc::now(), options.skew_seconds);
        State {
            catalog: Catalog::new(options.seed, options.sessions_per_day, options.days, now),
            presentations: Catalog::new(
                content::presentation_seed(options.seed),
                content::presentations_per_day(options.sessions_per_day),
                options.days,
                now,
            ),
            faults: Mutex::new(options.faults.clone()),
            window_faults: Mutex::new(options.window_faults.clone()),
            budget: Arc::new(Mutex::new(Budget::new(options.budget))),
            other_rate: watch::Sender::new(options.other_client_per_minute),
            skew_ms: AtomicI64::new(options.skew_seconds.saturating_mul(1000)),
            options,
            tokens: Mutex::new(VecDeque::new()),
            tokens_issued: AtomicU64::new(0),
            api_requests: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
            faults_injected: AtomicU64::new(0),
            requests: Mutex::new(BTreeMap::new()),
            sessions_returned: AtomicU64::new(0),
            report_bytes: AtomicU64::new(0),
        }
    }

    pub(crate) fn appliance_now(&self) -> DateTime<Utc> {
        Utc::now() + TimeDelta::milliseconds(self.skew_ms.load(Ordering::Relaxed))
    }

    /// Moves the appliance clock forward.
    pub(crate) fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let _ = self
            .skew_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |skew| {
                Some(skew.saturating_add(ms))
            });
    }

    pub(crate) fn stats(&self) -> Stats {
        let budget = self
            .budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .counts();
        Stats {
            tokens_issued: self.tokens_issued.load(Ordering::Relaxed),
            api_requests: self.api_requests.load(Ordering::Relaxed),
            unauthorized: self.unauthorized.load(Ordering::Relaxed),
            faults: self.faults_injected.load(Ordering::Relaxed),
            requests: self
                .requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            rate_limited: budget.rate_limited,
            sessions_returned: self.sessions_returned.load(Ordering::Relaxed),
            report_bytes: self.report_bytes.load(Ordering::Relaxed),
            other_requests: budget.other_requests,
            other_refused: budget.other_refused,
            max_in_second: budget.max_in_second,
            max_in_hour: budget.max_in_hour,
            client_max_in_hour: budget.client_max_in_hour,
        }
    }

    /// Counts a request the budget let through, by kind.
    fn count_request(&self, kind: &str) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind.to_string())
            .or_default() += 1;
    }

    pub(crate) fn budget(&self) -> Arc<Mutex<Budget>> {
        self.budget.clone()
    }

    fn lock_budget(&self) -> std::sync::MutexGuard<'_, Budget> {
        self.budget.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_budget(&self, budget: RateBudget) {
        self.lock_budget().set_limits(budget);
    }

    pub(crate) fn storm(&self, duration: Duration, retry_after: Option<u64>) {
        self.lock_budget()
            .storm(Instant::now(), duration, retry_after);
    }

    /// What the other client's task watches.
    pub(crate) fn other_client_rate(&self) -> watch::Receiver<f64> {
        self.other_rate.subscribe()
    }

    pub(crate) fn set_other_client(&self, per_minute: f64) {
        self.other_rate.send_replace(per_minute);
    }

    /// Whether session `index` of the support catalog is written late.
    fn is_late(&self, index: u64) -> bool {
        let every = self.options.late_every;
        every > 0 && index % every == every - 1
    }

    pub(crate) fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    pub(crate) fn set_window_faults(&self, faults: WindowFaults) {
        *self.window_faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    /// Whether a window `[from, to)` is refused (`.0`, with the refusal's text) or
    /// answered malformed (`.1`).
    fn window_fault(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> (Option<String>, bool) {
        let faults = self.window_faults.lock().unwrap_or_else(|e| e.into_inner());
        let hit = |times: &[i64]| {
            times
                .iter()
                .any(|t| (from.timestamp()..to.timestamp()).contains(t))
        };
        let refused = hit(&faults.refused).then(|| {
            faults
                .message
                .clone()
                .unwrap_or_else(|| REFUSAL.to_string())
        });
        (refused, hit(&faults.malformed))
    }

    pub(crate) fn revoke_tokens(&self) {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn ns(&self) -> Namespace {
        self.options.namespace
    }
}

pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/oauth2/token", post(token))
        .route("/api/reporting", any(reporting))
        .route("/api/command", any(command))
        .route("/api/backup", any(backup))
        .route("/check_health", get(|| async { "OK" }))
        .route("/_sim/sessions", get(truth))
        .route("/_sim/refusals", post(refusals))
        .route("/_sim/budget", post(budget_control))
        .route("/_sim/clock", post(clock))
        .route("/_sim/stats", get(stats))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            budgeted,
        ))
        .layer(axum::middleware::map_response(like_the_appliance))
        .with_state(state)
}

/// The account's budget. Every request to `/oauth2/token` and `/api/*` (any path,
/// method and outcome) spends one request, or is refused with 429 and spends nothing;
/// `/check_health` and `/_sim/*` are free. Every answer of a spending endpoint carries
/// the `X-RateLimit-*` headers while the hour's limit is on.
async fn budgeted(
    AxumState(state): AxumState<Arc<State>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let api = path.starts_with("/api/");
    if !api && path != "/oauth2/token" {
        return next.run(request).await;
    }
    if api {
        state.api_requests.fetch_add(1, Ordering::Relaxed);
    }
    let admission = state.lock_budget().admit(Instant::now(), Caller::Http);
    let mut response = match admission.refused {
        // The vendor does not document this answer: a short text, as for an injected 429.
        Some(refusal) => {
            let mut response = (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
            if let Some(seconds) = refusal.retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
        None => next.run(request).await,
    };
    if admission.limit > 0 {
        let headers = response.headers_mut();
        headers.insert(RATE_LIMIT_LIMIT, HeaderValue::from(admission.limit));
        headers.insert(RATE_LIMIT_REMAINING, HeaderValue::from(admission.remaining));
    }
    response
}

/// The 404 every test control answers without `--truth`.
fn controls_off() -> Response {
    (
        StatusCode::NOT_FOUND,
        "test controls are off; start with --truth",
    )
        .into_response()
}

/// The body of `POST /_sim/budget`: what to change; the rest stays.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetChange {
    per_second: Option<u32>,
    per_hour: Option<u32>,
    hour_seconds: Option<u64>,
    retry_after: Option<bool>,
    other_client_per_minute: Option<f64>,
    storm_seconds: Option<u64>,
    storm_retry_after: Option<u64>,
}

/// What `POST /_sim/budget` expects, for its 400.
const BUDGET_CHANGE: &str = "expected a JSON object with any of \"per_second\": N, \"per_hour\": N, \"hour_seconds\": N (more than 0), \"retry_after\": bool, \"other_client_per_minute\": F (0 or more), \"storm_seconds\": N, \"storm_retry_after\": N or null";

/// `POST /_sim/budget` with `{"per_second": N, "per_hour": N, "hour_seconds": N,
/// "retry_after": bool, "other_client_per_minute": F, "storm_seconds": N,
/// "storm_retry_after": N|null}`, any subset: changes the account's budget, the other
/// client's rate, or starts a storm; answers the settings now in force. Test rigs only
/// (`--truth`).
async fn budget_control(AxumState(state): AxumState<Arc<State>>, body: Bytes) -> Response {
    if !state.options.truth {
        return controls_off();
    }
    let bad = |why: String| (StatusCode::BAD_REQUEST, why).into_response();
    let change: BudgetChange = match serde_json::from_slice(&body) {
        Ok(change) => change,
        Err(e) => return bad(format!("{BUDGET_CHANGE}: {e}")),
    };
    if change.hour_seconds == Some(0) {
        return bad(format!("{BUDGET_CHANGE}: hour_seconds is 0"));
    }
    if let Some(rate) = change.other_client_per_minute
        && !(rate.is_finite() && rate >= 0.0)
    {
        return bad(format!(
            "{BUDGET_CHANGE}: other_client_per_minute is {rate}"
        ));
    }
    if change.storm_retry_after.is_some() && change.storm_seconds.is_none() {
        return bad(format!(
            "{BUDGET_CHANGE}: storm_retry_after needs storm_seconds"
        ));
    }
    let limits = {
        let mut budget = state.lock_budget();
        let old = budget.limits();
        let limits = RateBudget {
            per_second: change.per_second.unwrap_or(old.per_second),
            per_hour: change.per_hour.unwrap_or(old.per_hour),
            hour: change.hour_seconds.map_or(old.hour, Duration::from_secs),
            retry_after: change.retry_after.unwrap_or(old.retry_after),
        };
        budget.set_limits(limits);
        if let Some(seconds) = change.storm_seconds {
            budget.storm(
                Instant::now(),
                Duration::from_secs(seconds),
                change.storm_retry_after,
            );
        }
        limits
    };
    if let Some(rate) = change.other_client_per_minute {
        state.set_other_client(rate);
    }
    axum::Json(serde_json::json!({
        "per_second": limits.per_second,
        "per_hour": limits.per_hour,
        "hour_seconds": limits.hour.as_secs(),
        "retry_after": limits.retry_after,
        "other_client_per_minute": *state.other_rate.borrow(),
    }))
    .into_response()
}

/// The furthest `POST /_sim/clock` moves the clock at once: ten years.
const MAX_ADVANCE_SECONDS: u64 = 10 * 365 * 86_400;

/// `POST /_sim/clock` with `{"advance_seconds": N}`: moves the appliance clock forward
/// and answers `{"appliance_now": UNIX}`. Test rigs only (`--truth`).
async fn clock(AxumState(state): AxumState<Arc<State>>, body: Bytes) -> Response {
    if !state.options.truth {
        return controls_off();
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Advance {
        advance_seconds: u64,
    }
    let advance: Advance = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("expected {{\"advance_seconds\": N}} (0 or more): {e}"),
            )
                .into_response();
        }
    };
    // Far enough for any test; further, the appliance's dates would overflow.
    if advance.advance_seconds > MAX_ADVANCE_SECONDS {
        return (
            StatusCode::BAD_REQUEST,
            format!("advance_seconds is at most {MAX_ADVANCE_SECONDS} (ten years)"),
        )
            .into_response();
    }
    state.advance(Duration::from_secs(advance.advance_seconds));
    axum::Json(serde_json::json!({ "appliance_now": state.appliance_now().timestamp() }))
        .into_response()
}

/// `GET /_sim/stats`: `Stats` as JSON. Test rigs only (`--truth`).
async fn stats(AxumState(state): AxumState<Arc<State>>) -> Response {
    if !state.options.truth {
        return controls_off();
    }
    axum::Json(state.stats()).into_response()
}

/// Every answer is framed as real appliances frame theirs
/// (`ragmob_rs19_response_headers_REAL.txt`): `Server: Apache`, `Connection: close` (the
/// vendor closes the connection after every answer) and `Transfer-Encoding: chunked`
/// with no `Content-Length`, so a cut answer is a broken chunked stream.
async fn like_the_appliance(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let headers = &mut parts.headers;
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(header::SERVER, HeaderValue::from_static("Apache"));
    headers.remove(header::CONTENT_LENGTH);
    // A body of unknown length is sent chunked.
    Response::from_parts(parts, Body::from_stream(body.into_data_stream()))
}

/// `POST /_sim/refusals` with `{"windows": [UNIX, ...], "malformed": [UNIX, ...]}`: the
/// appliance times whose windows are refused, or answered malformed, from now on (a
/// missing list is empty); `"message"` replaces the refusal's text. Test rigs only
/// (`--truth`).
async fn refusals(
    AxumState(state): AxumState<Arc<State>>,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> Response {
    if !state.options.truth {
        return controls_off();
    }
    let times = |key: &str| -> Option<Vec<i64>> {
        match &body[key] {
            serde_json::Value::Null => Some(Vec::new()),
            v => v
                .as_array()?
                .iter()
                .map(serde_json::Value::as_i64)
                .collect(),
        }
    };
    let (Some(refused), Some(malformed)) = (times("windows"), times("malformed")) else {
        return (
            StatusCode::BAD_REQUEST,
            "expected {\"windows\": [UNIX, ...], \"malformed\": [UNIX, ...]}",
        )
            .into_response();
    };
    let message = body["message"].as_str().map(str::to_string);
    state.set_window_faults(WindowFaults {
        refused,
        malformed,
        message,
    });
    StatusCode::NO_CONTENT.into_response()
}

fn xml(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "text/xml; charset=UTF-8")], body).into_response()
}

async fn token(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.count_request("token");
    let params = params_of(None, &body);
    if param(&params, "grant_type") != Some("client_credentials") {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": "unsupported_grant_type"})),
        )
            .into_response();
    }
    let expected = format!(
        "{}:{}",
        state.options.client_id, state.options.client_secret
    );
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        });
    if given.as_deref() != Some(expected.as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let value = hex::encode(rand::random::<[u8; 20]>());
    {
        let mut tokens = state.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.push_back((value.clone(), Instant::now() + state.options.token_ttl));
        // A 31st token silently invalidates the oldest.
        while tokens.len() > MAX_TOKENS {
            tokens.pop_front();
        }
    }
    state.tokens_issued.fetch_add(1, Ordering::Relaxed);
    axum::Json(serde_json::json!({
        "access_token": value,
        "token_type": state.options.token_type,
        "expires_in": state.options.token_ttl.as_secs(),
    }))
    .into_response()
}

/// Checks the bearer token; `Err` is the refusal to send: the vendor's `access_denied`
/// JSON with `Options::denied_status`.
fn authorize(state: &State, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let now = Instant::now();
    let mut tokens = state.tokens.lock().unwrap_or_else(|e| e.into_inner());
    tokens.retain(|(_, expires)| *expires > now);
    if given.is_some_and(|g| tokens.iter().any(|(t, _)| t == g)) {
        return Ok(());
    }
    state.unauthorized.fetch_add(1, Ordering::Relaxed);
    // `start` accepts only error statuses.
    let status =
        StatusCode::from_u16(state.options.denied_status).unwrap_or(StatusCode::UNAUTHORIZED);
    Err(Box::new(
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            ACCESS_DENIED,
        )
            .into_response(),
    ))
}

/// A fault to inject into this answer, drawn from the rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    ServerError,
    TooMany(u64),
    Reset,
    Truncate,
    Slow(Duration),
    ErrorBody,
}

fn draw_fault(state: &State) -> Option<Fault> {
    let f = state
        .faults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut roll: f64 = rand::random();
    let kinds = [
        (f.rate_5xx, Fault::ServerError),
        (f.rate_429, Fault::TooMany(f.retry_after_seconds)),
        (f.rate_reset, Fault::Reset),
        (f.rate_truncate, Fault::Truncate),
        (f.rate_slow, Fault::Slow(f.slow_delay)),
        (f.rate_error_body, Fault::ErrorBody),
    ];
    for (rate, fault) in kinds {
        if roll < rate {
            state.faults_injected.fetch_add(1, Ordering::Relaxed);
            return Some(fault);
        }
        roll -= rate;
    }
    None
}

/// An answer before faults: a complete text, or a generated stream of known length.
enum Answer {
    Ready(Response),
    Text(Vec<u8>),
    /// A report's XML holding `sessions` support sessions (counted in `Stats`).
    Report {
        body: Vec<u8>,
        sessions: u64,
    },
    Stream {
        headers: Vec<(header::HeaderName, String)>,
        length: u64,
        first: Bytes,
        filler: Bytes,
    },
}

/// Applies a fault (if one is drawn) and makes the response.
async fn deliver(state: &State, answer: Answer, root: Option<&str>) -> Response {
    let fault = draw_fault(state);
    if let Some(Fault::Slow(delay)) = fault {
        tokio::time::sleep(delay).await;
    }
    match fault {
        Some(Fault::ServerError) => {
            return (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response();
        }
        Some(Fault::TooMany(seconds)) => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, seconds.to_string())],
                "Too Many Requests",
            )
                .into_response();
        }
        Some(Fault::ErrorBody) => {
            return xml(content::error(
                "An internal error occurred. Please try again later.",
                root,
                state.ns(),
            ));
        }
        Some(Fault::Reset) => {
            let stream = futures::stream::once(async {
                Err::<Bytes, _>(std::io::Error::other("simulated connection reset"))
            });
            return Response::builder()
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(Body::from_stream(stream))
                .unwrap_or_default();
        }
        _ => {}
    }
    let truncate = fault == Some(Fault::Truncate);
    match answer {
        Answer::Ready(r) => r,
        Answer::Report { body, sessions } => {
            // A truncated answer returns its half and none of its sessions.
            let (bytes, sessions) = if truncate {
                (body.len() / 2, 0)
            } else {
                (body.len(), sessions)
            };
            state
                .report_bytes
                .fetch_add(bytes as u64, Ordering::Relaxed);
            state
                .sessions_returned
                .fetch_add(sessions, Ordering::Relaxed);
            text_answer(body, truncate)
        }
        Answer::Text(text) => text_answer(text, truncate),
        Answer::Stream {
            headers,
            length,
            first,
            filler,
        } => {
            let limit = if truncate { length / 2 } else { length };
            let stream = generated(first, filler, limit);
            let mut builder = Response::builder();
            for (name, value) in headers {
                builder = builder.header(name, value);
            }
            if truncate {
                let stream = stream
                    .map(Ok::<_, std::io::Error>)
                    .chain(futures::stream::once(async {
                        Err(std::io::Error::other("simulated truncation"))
                    }));
                return builder.body(Body::from_stream(stream)).unwrap_or_default();
            }
            builder
                .body(Body::from_stream(stream.map(Ok::<_, Infallible>)))
                .unwrap_or_default()
        }
    }
}

/// An XML answer, or its first half and a broken stream.
fn text_answer(text: Vec<u8>, truncate: bool) -> Response {
    if !truncate {
        return xml(text);
    }
    let half = text.len() / 2;
    let half = Bytes::from(text).slice(..half);
    cut_stream(
        vec![(header::CONTENT_TYPE, "text/xml; charset=UTF-8".into())],
        half,
    )
}

/// A response that sends `part` and then breaks.
fn cut_stream(headers: Vec<(header::HeaderName, String)>, part: Bytes) -> Response {
    let stream =
        futures::stream::iter([Ok(part), Err(std::io::Error::other("simulated truncation"))]);
    let mut builder = Response::builder();
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder.body(Body::from_stream(stream)).unwrap_or_default()
}

/// `first`, then `filler` repeated, cut at `limit` bytes in all. Only one chunk exists at
/// a time (the filler is shared), so any size streams in constant memory.
fn generated(
    first: Bytes,
    filler: Bytes,
    limit: u64,
) -> impl futures::Stream<Item = Bytes> + Send + 'static {
    futures::stream::unfold((0u64, true), move |(sent, is_first)| {
        let first = first.clone();
        let filler = filler.clone();
        async move {
            if sent >= limit {
                return None;
            }
            let chunk = if is_first { first } else { filler };
            let take = (limit - sent).min(chunk.len() as u64) as usize;
            let chunk = chunk.slice(..take);
            Some((chunk, (sent + take as u64, false)))
        }
    })
}

fn params_of(uri: Option<&Uri>, body: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(uri) = uri
        && let Ok(Query(q)) = Query::<Vec<(String, String)>>::try_from_uri(uri)
    {
        out.extend(q);
    }
    if !body.is_empty() {
        let text = String::from_utf8_lossy(body);
        if let Ok(fake) = format!("/?{}", text.trim()).parse::<Uri>()
            && let Ok(Query(q)) = Query::<Vec<(String, String)>>::try_from_uri(&fake)
        {
            out.extend(q);
        }
    }
    out
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// What a report request selects.
enum Selected {
    /// The sessions of a window, which it was asked for as `[from, to)`.
    Window {
        slots: Vec<Slot>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    /// The sessions asked for by LSID (every one of them is known).
    Lsids(Vec<Slot>),
}

impl Selected {
    fn slots(&self) -> &[Slot] {
        match self {
            Selected::Window { slots, .. } | Selected::Lsids(slots) => slots,
        }
    }
}

/// What `lsid`, `lsids` or a window select in `catalog`. An LSID the appliance does not
/// know refuses the whole request ("Invalid lsid.", as one public client's fixture has
/// it; the text is unverified, the refusal of the whole list is the point). `support`:
/// the catalog is the support sessions', some of which are written late.
fn select(
    state: &State,
    catalog: &Catalog,
    support: bool,
    params: &[(String, String)],
) -> Result<Selected, String> {
    let now = state.appliance_now();
    match param(params, "lsid").or_else(|| param(params, "lsids")) {
        Some(lsids) => lsids
            .split(',')
            .map(|l| {
                catalog
                    .find(l.trim(), now)
                    .ok_or_else(|| "Invalid lsid.".to_string())
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Selected::Lsids),
        None => window(state, catalog, support, params),
    }
}

/// The sessions a window selects, per the documented semantics; an `end_time` window
/// of the support sessions sees a late one only `late_seconds` after its end.
fn window(
    state: &State,
    catalog: &Catalog,
    support: bool,
    params: &[(String, String)],
) -> Result<Selected, String> {
    let now = state.appliance_now();
    let duration: i64 = match param(params, "duration") {
        Some(d) => d
            .trim()
            .parse()
            .map_err(|_| format!("Invalid duration: {d}"))?,
        None => 0,
    };
    let (by_start, from, unit) = if let Some(t) = param(params, "start_time") {
        (true, parse_unix(t)?, 1)
    } else if let Some(t) = param(params, "end_time") {
        (false, parse_unix(t)?, 1)
    } else if let Some(d) = param(params, "start_date") {
        (true, parse_date(d)?, 86_400)
    } else if let Some(d) = param(params, "end_date") {
        (false, parse_date(d)?, 86_400)
    } else {
        return Err(
            "Missing required parameter: start_time, end_time, start_date or end_date".into(),
        );
    };
    // duration=0 means "up to now".
    let to = if duration <= 0 {
        now + TimeDelta::seconds(1)
    } else {
        from + TimeDelta::seconds(duration * unit)
    };
    let slots = if by_start {
        catalog.starting_between(from, to.min(now + TimeDelta::seconds(1)))
    } else {
        let mut slots = catalog.starting_between(
            from - TimeDelta::seconds(MAX_LENGTH_SECONDS),
            to.min(now + TimeDelta::seconds(1)),
        );
        let delay = i64::try_from(state.options.late_seconds)
            .ok()
            .and_then(TimeDelta::try_seconds)
            .unwrap_or(TimeDelta::MAX);
        let written = |s: &Slot| {
            !(support && state.is_late(s.index))
                || s.end.checked_add_signed(delay).is_some_and(|t| t <= now)
        };
        slots.retain(|s| s.end >= from && s.end < to && s.end <= now && written(s));
        slots.sort_by_key(|s| (s.end, s.index));
        slots
    };
    Ok(Selected::Window { slots, from, to })
}

/// The text a refused window is answered with: one that no client knows.
pub(crate) const REFUSAL: &str = "The report could not be generated for the requested range.";

/// The "no data" text of a report (the English one as captured from a real appliance;
/// of the French one only the end is known, `correspondant à vos critères n’est
/// disponible.`, so its start is made up in the same style).
fn no_data_text(report: &str, language: super::Language) -> &'static str {
    let presentation = report.starts_with("Presentation");
    match (language, presentation) {
        (super::Language::English, false) => {
            "No Support report information matching your chosen criteria is available."
        }
        (super::Language::English, true) => {
            "No Presentation report information matching your chosen criteria is available."
        }
        (super::Language::French, false) => {
            "Aucune information de rapport d'assistance correspondant à vos critères n’est disponible."
        }
        (super::Language::French, true) => {
            "Aucune information de rapport de présentation correspondant à vos critères n’est disponible."
        }
    }
}

/// The answer to a report request: an `<error>` for a bad or refused one, the "no data"
/// `<error>` for an empty one (unless the simulator writes empty elements), else the
/// report made by `render` from the selected slots.
fn report_answer(
    state: &State,
    report: &str,
    selected: Result<Selected, String>,
    render: impl FnOnce(&[Slot]) -> Vec<u8>,
) -> Answer {
    let ns = state.ns();
    let error = |message: &str| Answer::Report {
        body: content::error(message, None, ns),
        sessions: 0,
    };
    let selected = match selected {
        Err(message) => return error(&message),
        Ok(s) => s,
    };
    let (refused, malformed) = match &selected {
        Selected::Window { from, to, .. } => state.window_fault(*from, *to),
        Selected::Lsids(_) => (None, false),
    };
    if let Some(refusal) = refused {
        return error(&refusal);
    }
    if selected.slots().is_empty() && state.options.empty_answer == super::EmptyAnswer::Error {
        let text = no_data_text(report, state.options.language);
        return Answer::Report {
            body: content::error(text, None, ns),
            sessions: 0,
        };
    }
    let body = render(selected.slots());
    if malformed {
        // Broken inside a session: none of them is returned.
        return Answer::Report {
            body: malform(body),
            sessions: 0,
        };
    }
    let sessions = if report == "SupportSession" {
        selected.slots().len() as u64
    } else {
        0
    };
    Answer::Report { body, sessions }
}

/// A report body cut off halfway, inside an element, and closed as if it were
/// complete: well-formed up to there, then a closing tag that matches nothing.
fn malform(mut body: Vec<u8>) -> Vec<u8> {
    let half = body.len() / 2;
    let cut = body[half..]
        .windows(2)
        .position(|w| w == b"</")
        .map_or(body.len(), |i| half + i);
    body.truncate(cut);
    body.extend_from_slice(b"</broken>\n");
    body
}

fn parse_unix(text: &str) -> Result<DateTime<Utc>, String> {
    text.trim()
        .parse::<i64>()
        .ok()
        .and_then(|t| DateTime::from_timestamp(t, 0))
        .ok_or_else(|| format!("Invalid timestamp: {text}"))
}

fn parse_date(text: &str) -> Result<DateTime<Utc>, String> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| format!("Invalid date: {text}"))
}

async fn reporting(
    AxumState(state): AxumState<Arc<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = if method == Method::POST {
        body
    } else {
        Bytes::new()
    };
    let params = params_of(Some(&uri), &body);
    let report = param(&params, "generate_report").unwrap_or_default();
    state.count_request(if report.is_empty() {
        "reporting"
    } else {
        report
    });
    if let Err(r) = authorize(&state, &headers) {
        return *r;
    }
    let ns = state.ns();
    let now = state.appliance_now();
    let (answer, root) = match report {
        "SupportSession" | "SupportSessionListing" => {
            let catalog = &state.catalog;
            let selected = select(&state, catalog, true, &params);
            let answer = report_answer(&state, report, selected, |slots| {
                let sessions: Vec<_> = slots.iter().map(|s| catalog.session(*s, now)).collect();
                if report == "SupportSession" {
                    content::session_list(&sessions, ns)
                } else {
                    content::listing(&sessions, ns)
                }
            });
            let root = if report == "SupportSession" {
                "session_list"
            } else {
                "session_summary_list"
            };
            (answer, root)
        }
        "PresentationSession" | "PresentationSessionListing" => {
            let catalog = &state.presentations;
            // Only ended presentations are reported (the end_time windows ask for
            // nothing else, and a start_time window of the report is not used by the
            // pipeline).
            let selected = select(&state, catalog, false, &params).map(|selected| match selected {
                Selected::Window {
                    mut slots,
                    from,
                    to,
                } => {
                    slots.retain(|s| s.end <= now);
                    Selected::Window { slots, from, to }
                }
                Selected::Lsids(mut slots) => {
                    slots.retain(|s| s.end <= now);
                    Selected::Lsids(slots)
                }
            });
            let answer = report_answer(&state, report, selected, |slots| {
                let elements: Vec<String> = slots
                    .iter()
                    .map(|s| content::presentation(catalog.seed(), s.index, s.start, s.end))
                    .collect();
                content::presentation_list(&elements, ns)
            });
            (answer, "presentation_session_list")
        }
        "SupportSessionRecording"
        | "ShowMyScreenRecording"
        | "CommandShellRecording"
        | "PresentationSessionRecording" => (recording(&state, report, &params, now), "error"),
        other => (
            Answer::Text(content::error(
                &format!("Invalid report type: {other}"),
                None,
                ns,
            )),
            "error",
        ),
    };
    let nested = (root != "error").then_some(root);
    deliver(&state, answer, nested).await
}

fn recording(
    state: &State,
    report: &str,
    params: &[(String, String)],
    now: DateTime<Utc>,
) -> Answer {
    let ns = state.ns();
    let Some(lsid) = param(params, "lsid") else {
        return Answer::Text(content::error("Missing required parameter: lsid", None, ns));
    };
    let catalog = if report == "PresentationSessionRecording" {
        &state.presentations
    } else {
        &state.catalog
    };
    let Some(slot) = catalog.find(lsid.trim(), now) else {
        return Answer::Text(content::error(
            "No archives found for the given search criteria.",
            None,
            ns,
        ));
    };
    let instance = param(params, "instance").unwrap_or("0");
    let exists = match report {
        "PresentationSessionRecording" => {
            slot.end <= now && content::presentation_has_recording(slot.index)
        }
        _ => {
            let session = state.catalog.session(slot, now);
            match report {
                "SupportSessionRecording" => session.has_screen_recording(),
                "ShowMyScreenRecording" => !session.show_my_screen_recordings.is_empty(),
                "CommandShellRecording" => session
                    .command_shell_recordings
                    .iter()
                    .any(|r| r.instance.to_string() == instance.trim()),
                _ => false,
            }
        }
    };
    if !exists {
        return Answer::Text(content::error(
            "No archives found for the given search criteria.",
            None,
            ns,
        ));
    }
    let every = state.options.expired_recording_every;
    if every > 0 && slot.index % every == every - 1 {
        return Answer::Text(content::error(
            "This recording has expired and can no longer be viewed or downloaded.",
            None,
            ns,
        ));
    }
    // Screen recordings are FLV, Show My Screen and presentations MP4, shells text casts.
    let (first, extension): (&[u8], &str) = match report {
        "SupportSessionRecording" => (b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00", "flv"),
        "CommandShellRecording" => (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", "mp4"),
        _ => (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2", "mp4"),
    };
    let suffix = if report == "CommandShellRecording" {
        format!("-{instance}")
    } else {
        String::new()
    };
    let mut head = first.to_vec();
    head.resize(CHUNK_BYTES, 0x5a);
    let filler: Vec<u8> = (0..CHUNK_BYTES)
        .map(|i| (i as u64).wrapping_mul(slot.index | 1) as u8)
        .collect();
    Answer::Stream {
        headers: vec![
            (header::CONTENT_TYPE, "application/octet-stream".into()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{report}-{lsid}{suffix}.{extension}\""),
            ),
        ],
        length: state.options.recording_bytes,
        first: Bytes::from(head),
        filler: Bytes::from(filler),
    }
}

async fn command(
    AxumState(state): AxumState<Arc<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = if method == Method::POST {
        body
    } else {
        Bytes::new()
    };
    let params = params_of(Some(&uri), &body);
    let action = param(&params, "action").filter(|a| !a.is_empty());
    state.count_request(action.unwrap_or("command"));
    if let Err(r) = authorize(&state, &headers) {
        return *r;
    }
    let answer = match action {
        Some("get_api_info") => {
            // The nine permissions an RS 19.1 appliance lists, in its order; each is
            // granted (`perm_command` at its highest level) unless denied.
            let permissions: Vec<(String, bool)> = [
                "perm_command",
                "perm_reporting_support",
                "perm_reporting_presentation",
                "perm_reporting_license",
                "perm_reporting_archive",
                "perm_real_time_state",
                "perm_ecm",
                "perm_backup",
                "perm_scim",
            ]
            .iter()
            .map(|p| {
                (
                    (*p).to_string(),
                    !state.options.denied_permissions.iter().any(|d| d == p),
                )
            })
            .collect();
            // Read the clock as late as possible: this is what clients measure skew from.
            Answer::Ready(xml(content::api_info(
                state.appliance_now(),
                &state.options.api_version,
                &permissions,
                state.ns(),
            )))
        }
        other => Answer::Text(content::error(
            &format!("Invalid action: {}", other.unwrap_or_default()),
            None,
            state.ns(),
        )),
    };
    deliver(&state, answer, None).await
}

async fn backup(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.count_request("backup");
    if let Err(r) = authorize(&state, &headers) {
        return *r;
    }
    // Only the documented form, a JSON body `{"password": "..."}`, carries a password.
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let given = is_json
        .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
        .flatten()
        .and_then(|v| v.get("password")?.as_str().map(str::to_string));
    if let Some(required) = &state.options.backup_password
        && given.as_deref() != Some(required.as_str())
    {
        return deliver(
            &state,
            Answer::Text(content::error("Invalid backup password", None, state.ns())),
            None,
        )
        .await;
    }
    let now = state.appliance_now();
    let mut head = b"NSB\x00btic-simulator-backup\x00".to_vec();
    head.resize(CHUNK_BYTES, 0);
    let filler: Vec<u8> = (0..CHUNK_BYTES).map(|i| (i % 251) as u8).collect();
    let answer = Answer::Stream {
        headers: vec![
            (header::CONTENT_TYPE, "application/octet-stream".into()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"backup-{}.nsb\"",
                    now.format("%Y-%m-%d-%H%M%S")
                ),
            ),
        ],
        length: state.options.backup_bytes,
        first: Bytes::from(head),
        filler: Bytes::from(filler),
    };
    deliver(&state, answer, None).await
}

/// `GET /_sim/sessions?closed_before=UNIX`: the closed sessions that ended before the
/// time (and by appliance-now), oldest end first, with their digests; and likewise the
/// ended presentations, each with its element as the report writes it.
async fn truth(AxumState(state): AxumState<Arc<State>>, uri: Uri) -> Response {
    if !state.options.truth {
        return (
            StatusCode::NOT_FOUND,
            "ground truth is off; start with --truth",
        )
            .into_response();
    }
    let params = params_of(Some(&uri), &[]);
    let now = state.appliance_now();
    let before = match param(&params, "closed_before").map(parse_unix) {
        Some(Ok(t)) => t.min(now + TimeDelta::seconds(1)),
        Some(Err(e)) => return (StatusCode::BAD_REQUEST, e).into_response(),
        None => now + TimeDelta::seconds(1),
    };
    let mut slots = state.catalog.starting_between(
        DateTime::<Utc>::MIN_UTC.max(before - TimeDelta::days(i64::from(state.options.days) + 1)),
        before,
    );
    slots.retain(|s| s.end < before && s.end <= now);
    slots.sort_by_key(|s| (s.end, s.index));
    let sessions: Vec<_> = slots
        .iter()
        .map(|s| {
            let session = state.catalog.session(*s, now);
            let mut entry = serde_json::json!({
                "lsid": session.lsid,
                "start_time": s.start.timestamp(),
                "end_time": s.end.timestamp(),
                "has_recording": content::has_recording(&session),
                "digest": catalog::digest(&session),
            });
            // Listed by its real end all the same: the truth is what the appliance holds.
            if state.is_late(s.index) {
                entry["late"] = serde_json::Value::Bool(true);
            }
            entry
        })
        .collect();
    let catalog = &state.presentations;
    let mut slots = catalog.starting_between(
        DateTime::<Utc>::MIN_UTC.max(before - TimeDelta::days(i64::from(state.options.days) + 1)),
        before,
    );
    slots.retain(|s| s.end < before && s.end <= now);
    slots.sort_by_key(|s| (s.end, s.index));
    let presentations: Vec<_> = slots
        .iter()
        .map(|s| {
            serde_json::json!({
                "lsid": content::lsid(catalog.seed(), s.index),
                "start_time": s.start.timestamp(),
                "end_time": s.end.timestamp(),
                "has_recording": content::presentation_has_recording(s.index),
                "xml": content::presentation(catalog.seed(), s.index, s.start, s.end),
            })
        })
        .collect();
    axum::Json(serde_json::json!({
        "appliance_now": now.timestamp(),
        "closed_before": before.timestamp(),
        "sessions": sessions,
        "presentations": presentations,
    }))
    .into_response()
}
