//! The appliance simulator (`btic simulate`): a real HTTP(S) server that answers like a
//! B Series Appliance, including the ugly parts (an `<error>` with HTTP 200, tokens that
//! expire and a 31st token that evicts the oldest, a skewed clock, faults on demand).
//!
//! Tests start it in-process with `Simulator::start(options)`; the binary runs the same
//! code. Data is deterministic from the seed (see `catalog`); the ground truth of what the
//! appliance would report is at `GET /_sim/sessions?closed_before=UNIX` with `--truth`.
//!
//! The API account has the vendor's request budget (20 a second, 15,000 an hour, see
//! `budget`), which another client of the same account may share. Test rigs that drive
//! `btic simulate` as a child process change it, start a 429 storm, move the appliance
//! clock and read the counters over HTTP (`/_sim/budget`, `/_sim/clock`, `/_sim/stats`,
//! with `--truth`); tests in-process call the same methods on `Simulator`.

mod budget;
pub mod catalog;
pub mod content;
pub mod render;
mod server;
pub mod sessions;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

pub use budget::RateBudget;
pub use render::Namespace;
pub use server::Stats;

/// How often each fault is injected into `/api/*` answers (0.0 ..= 1.0 each).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// HTTP 503 with a short body.
    pub rate_5xx: f64,
    /// HTTP 429 with `Retry-After: retry_after_seconds`.
    pub rate_429: f64,
    /// The connection is dropped right after the headers.
    pub rate_reset: f64,
    /// Only half of the body is sent before the connection breaks (a cut chunked
    /// stream: answers carry no `Content-Length`, as real appliances' do not).
    pub rate_truncate: f64,
    /// The answer is delayed by `slow_delay`.
    pub rate_slow: f64,
    /// HTTP 200 with an `<error>` body instead of the answer.
    pub rate_error_body: f64,
    /// The delay of a slow answer.
    pub slow_delay: Duration,
    /// The `Retry-After` of a 429, in seconds.
    pub retry_after_seconds: u64,
}

/// Everything `btic simulate` can set.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to listen (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Plain HTTP instead of HTTPS.
    pub http: bool,
    /// Seed of all generated data.
    pub seed: u64,
    /// Sessions started per day.
    pub sessions_per_day: u32,
    /// Days of history before appliance-now at start.
    pub days: u32,
    /// XML namespace of the answers.
    pub namespace: Namespace,
    /// The API account's client id.
    pub client_id: String,
    /// The API account's client secret.
    pub client_secret: String,
    /// Lifetime of a token (`expires_in`).
    pub token_ttl: Duration,
    /// The `token_type` written in token answers (its casing varies between appliances).
    pub token_type: String,
    /// Appliance clock minus host clock, in seconds (may be negative).
    pub skew_seconds: i64,
    /// Fault rates.
    pub faults: Faults,
    /// Size of each recording.
    pub recording_bytes: u64,
    /// Size of the backup.
    pub backup_bytes: u64,
    /// Password `/api/backup` requires, when set.
    pub backup_password: Option<String>,
    /// `perm_*` permissions the account lacks (`get_api_info` reports them as 0).
    pub denied_permissions: Vec<String>,
    /// Every Nth session's recordings have expired (0: none).
    pub expired_recording_every: u64,
    /// Serve the ground truth at `/_sim/sessions` (and take `POST /_sim/refusals`).
    pub truth: bool,
    /// How an empty report window is answered: a root `<error>` with the "no data"
    /// text, as real appliances do (the default), or the documented empty root element.
    pub empty_answer: EmptyAnswer,
    /// The language of the "no data" texts.
    pub language: Language,
    /// Report windows answered wrongly on purpose, until changed with
    /// `Simulator::set_window_faults` or `POST /_sim/refusals`.
    pub window_faults: WindowFaults,
    /// The API account's rate limits (the vendor's by default), until changed with
    /// `Simulator::set_budget` or `POST /_sim/budget`.
    pub budget: RateBudget,
    /// Requests a minute another client of the same API account spends from its
    /// budget (a SIEM connector using the same client id); 0: none. Changed with
    /// `Simulator::set_other_client` or `POST /_sim/budget`.
    pub other_client_per_minute: f64,
    /// The HTTP status of an answer to a missing, expired or invalid token, which
    /// carries the vendor's `access_denied` JSON body. The vendor does not document the
    /// status; 401 by default. `Simulator::start` refuses one outside 400..=599.
    pub denied_status: u16,
    /// The `api_version` `get_api_info` reports. Versions before 1.24.1 (RS 24.3, which
    /// removed it) also report a `company_name`.
    pub api_version: String,
    /// Every Nth support session (index % N == N - 1) is written late: `end_time`
    /// windows do not see it until `late_seconds` after its end (0: none).
    pub late_every: u64,
    /// How long after its end a late session shows up in `end_time` windows, in seconds
    /// of appliance time.
    pub late_seconds: u64,
}

/// Report windows the simulator answers wrongly: a report request whose window contains
/// one of these appliance times (UNIX seconds) gets the fault, every time it is asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowFaults {
    /// Refused with an `<error>` no client knows.
    pub refused: Vec<i64>,
    /// Answered with the report cut off inside a session and closed as if complete, a
    /// body that is not well-formed XML.
    pub malformed: Vec<i64>,
    /// The refusal's text, when not the usual one (a test of how it is shown).
    pub message: Option<String>,
}

/// How the simulator answers a report window without sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EmptyAnswer {
    /// A root `<error>` saying that no report information matches, as captured from
    /// real appliances (`sekoia_pr1266_error_no_data_REAL_fragment.xml`).
    #[default]
    Error,
    /// The report's root element with no children, as the API reference documents.
    Element,
}

/// The language the simulated appliance writes its texts in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Language {
    /// English.
    #[default]
    English,
    /// French (a real appliance's French "no data" text is known in part).
    French,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: false,
            seed: 1,
            sessions_per_day: 200,
            days: 2,
            namespace: Namespace::BeyondTrust,
            client_id: "demo".into(),
            client_secret: "demo-secret".into(),
            token_ttl: Duration::from_secs(3600),
            token_type: "Bearer".into(),
            skew_seconds: 0,
            faults: Faults {
                slow_delay: Duration::from_secs(5),
                retry_after_seconds: 1,
                ..Faults::default()
            },
            recording_bytes: 1024 * 1024,
            backup_bytes: 256 * 1024,
            backup_password: None,
            denied_permissions: Vec::new(),
            expired_recording_every: 0,
            truth: false,
            empty_answer: EmptyAnswer::Error,
            language: Language::English,
            window_faults: WindowFaults::default(),
            budget: RateBudget::default(),
            other_client_per_minute: 0.0,
            denied_status: 401,
            api_version: "1.24.0".into(),
            late_every: 0,
            late_seconds: 0,
        }
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    /// The certificates could not be made.
    #[error("starting the simulator: {0}")]
    Tls(String),
    /// An option is out of range.
    #[error("starting the simulator: {0}")]
    Options(String),
    /// The address could not be bound.
    #[error("starting the simulator on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running simulator. Dropping it does not stop it; call `shutdown`.
#[derive(Debug)]
pub struct Simulator {
    /// The bound address.
    pub addr: SocketAddr,
    /// The CA to trust (HTTPS only).
    pub ca_pem: Option<String>,
    handle: axum_server::Handle,
    /// The server task; ends when `handle` shuts it down.
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The other client of the account (`budget::other_client`); ends when `stop` is
    /// cancelled, which `shutdown` does.
    other_client: tokio::task::JoinHandle<()>,
    stop: tokio_util::sync::CancellationToken,
    state: Arc<server::State>,
}

impl Simulator {
    /// Binds and starts serving in the background.
    pub async fn start(options: Options) -> Result<Simulator, SimulatorError> {
        if !(400..=599).contains(&options.denied_status) {
            return Err(SimulatorError::Options(format!(
                "denied_status {} is not an HTTP error status (400 to 599)",
                options.denied_status
            )));
        }
        let listener =
            std::net::TcpListener::bind(options.listen).map_err(|source| SimulatorError::Bind {
                addr: options.listen,
                source,
            })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| SimulatorError::Bind {
                addr: options.listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| SimulatorError::Bind {
                addr: options.listen,
                source,
            })?;
        let http = options.http;
        let state = Arc::new(server::State::new(options));
        let app = server::router(state.clone());
        let handle = axum_server::Handle::new();
        let (task, ca_pem) = if http {
            let server = axum_server::from_tcp(listener).handle(handle.clone());
            let task = tokio::spawn(server.serve(app.into_make_service()));
            (task, None)
        } else {
            let certs = tls::generate().map_err(SimulatorError::Tls)?;
            let config = axum_server::tls_rustls::RustlsConfig::from_config(certs.server);
            let server = axum_server::from_tcp_rustls(listener, config).handle(handle.clone());
            let task = tokio::spawn(server.serve(app.into_make_service()));
            (task, Some(certs.ca_pem))
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let other_client = tokio::spawn(budget::other_client(
            state.budget(),
            state.other_client_rate(),
            stop.clone(),
        ));
        Ok(Simulator {
            addr,
            ca_pem,
            handle,
            task,
            other_client,
            stop,
            state,
        })
    }

    /// `127.0.0.1:PORT`, as a site's `host`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The simulated appliance's clock now.
    pub fn appliance_now(&self) -> DateTime<Utc> {
        self.state.appliance_now()
    }

    /// Counters of what the simulator has done so far.
    pub fn stats(&self) -> Stats {
        self.state.stats()
    }

    /// Changes the fault rates while running.
    pub fn set_faults(&self, faults: Faults) {
        self.state.set_faults(faults);
    }

    /// The windows answered wrongly from now on (`WindowFaults::default()`: none).
    pub fn set_window_faults(&self, faults: WindowFaults) {
        self.state.set_window_faults(faults);
    }

    /// Invalidates every live token (like regenerating the client secret, without changing it).
    pub fn revoke_tokens(&self) {
        self.state.revoke_tokens();
    }

    /// The account's rate limits from now on; what the rolling windows hold stays
    /// counted.
    pub fn set_budget(&self, budget: RateBudget) {
        self.state.set_budget(budget);
    }

    /// Requests a minute the other client of the account spends from now on (0: none).
    pub fn set_other_client(&self, per_minute: f64) {
        self.state.set_other_client(per_minute);
    }

    /// Answers every counted request with 429 for `duration` from now (with
    /// `Retry-After: retry_after` when given), without counting it in the budget.
    /// A zero `duration` ends a storm.
    pub fn storm(&self, duration: Duration, retry_after: Option<u64>) {
        self.state.storm(duration, retry_after);
    }

    /// Moves the appliance clock forward by `by` (sessions keep following the schedule,
    /// so those of the skipped time appear at once).
    pub fn advance(&self, by: Duration) {
        self.state.advance(by);
    }

    /// Stops accepting, lets answers in flight finish, and waits for the server (and the
    /// other client of the account) to end.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.handle.graceful_shutdown(Some(Duration::from_secs(5)));
        let _ = self.task.await;
        let _ = self.other_client.await;
    }

    /// Runs until `stop` completes (the `btic simulate` command).
    pub async fn run_until(self, stop: impl std::future::Future<Output = ()>) {
        stop.await;
        self.shutdown().await;
    }
}

/// Appliance time for a host time and a skew.
pub(crate) fn skewed(host: DateTime<Utc>, skew_seconds: i64) -> DateTime<Utc> {
    host + TimeDelta::seconds(skew_seconds)
}
