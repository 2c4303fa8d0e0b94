//! The B Series Appliance API client: authentication, report and download requests,
//! retries, spooling of every answer body to disk, and the appliance's clock.
//!
//! One `ApplianceClient` per site, cloned freely; clones share the token, the limits and
//! the clock, and the sites of one API account share its request budget (`budget`).
//! Each public operation makes one logical request: it waits for the account's budget
//! at the clone's [`Priority`], sends `Connection: close` (the appliance wants one
//! connection per call), tells the budget what the appliance answered (its
//! `X-RateLimit-*` headers; a 429 pauses the account and the request is sent again
//! after the pause without spending a retry attempt), retries what
//! `ApplianceError::is_retryable` allows with backoff (honouring `Retry-After`), renews
//! the token once on a 401 or an `access_denied` answer, and streams the body into a
//! spool file that is fsynced before the operation returns. Bodies are never held in
//! memory.
//!
//! The client records no metrics: every answer (`Fetched`) carries the status, duration,
//! attempts and bytes so that the caller can.

mod answer;
mod auth;
pub mod budget;
pub mod clock;
pub mod error;
pub mod spool;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use reqwest::header::{self, HeaderMap};
use tokio::time::Instant;

use crate::config::{RetryPolicy, Secret, Site};
pub use crate::model::ApiInfo;
use crate::model::Recording;
use crate::parse::ErrorMeaning;
pub use answer::has_permission;
pub use budget::{AccountBudget, Answered, BudgetLimits, BudgetSnapshot, Priority};
pub use clock::{ApplianceClock, SkewSource};
pub use error::ApplianceError;
pub use spool::Spooled;

use auth::{TokenCache, token_from_answer};
use spool::SpoolWriter;
use tokio::sync::Semaphore;

/// The longest delay a peer's `Retry-After` is honoured for (the client's own retries
/// and the pipeline's settlement alike): a wrong header must not stall a request or an
/// item for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Which end of a session a window selects on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WindowBy {
    /// `start_time`: sessions that began in the window, including those still in progress.
    Start,
    /// `end_time`: only closed sessions that ended in the window.
    End,
}

/// A report window: `from` plus `duration` (zero means "up to now").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start or end times.
    pub by: WindowBy,
    /// The window's first instant (whole seconds are sent).
    pub from: DateTime<Utc>,
    /// Its length; `Duration::ZERO` asks for everything up to the appliance's now.
    pub duration: Duration,
}

impl Window {
    /// The query parameters: `start_time|end_time=UNIX&duration=SECONDS`.
    pub fn query(&self) -> Vec<(&'static str, String)> {
        let key = match self.by {
            WindowBy::Start => "start_time",
            WindowBy::End => "end_time",
        };
        vec![
            (key, self.from.timestamp().to_string()),
            ("duration", self.duration.as_secs().to_string()),
        ]
    }
}

/// A finished request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The body on disk; `None` when the appliance answered "no data" (an empty result).
    pub body: Option<Spooled>,
    /// The file type of a download (`flv`, `mp4`, `nsb`, `bin`); `xml` for reports.
    pub extension: String,
    /// The HTTP status of the successful attempt.
    pub status: u16,
    /// Attempts made (1 when the first succeeded).
    pub attempts: u32,
    /// Time from the first attempt to the fsynced file.
    pub elapsed: Duration,
    /// The local clock halfway between sending the successful request and its headers
    /// arriving: when the appliance most likely read its own clock.
    pub answered_at: DateTime<Utc>,
}

impl Fetched {
    /// Body bytes (0 for "no data").
    pub fn bytes(&self) -> u64 {
        self.body.as_ref().map_or(0, |b| b.bytes)
    }
}

/// Options beyond the site's own settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Attempts per request and their backoff (`Retry-After` overrides the delay).
    pub retry: RetryPolicy,
    /// Longest wait for a connection. Default 30 s (never more than the site's timeout).
    pub connect_timeout: Duration,
    /// Longest silence while reading an answer. Default 60 s (never more than the site's timeout).
    pub read_timeout: Duration,
    /// The API account's budget, shared with the other sites of the account; `None`
    /// makes one from the site's settings.
    pub budget: Option<Arc<AccountBudget>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            retry: RetryPolicy {
                max_attempts: 5,
                initial: Duration::from_millis(500),
                max_interval: Duration::from_secs(30),
            },
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            budget: None,
        }
    }
}

/// The client of one site. Cheap to clone; clones share token, limits and clock, and
/// each clone asks the account's budget at its own priority ([`ApplianceClient::at`]).
#[derive(Debug, Clone)]
pub struct ApplianceClient {
    inner: Arc<Inner>,
    priority: Priority,
}

/// The key of an API account: the sites with the same host and client id share one
/// budget (`client_id@host`).
pub fn account_of(site: &Site) -> String {
    format!("{}@{}", site.client_id, site.host.to_ascii_lowercase())
}

/// The budget of `site`'s account from its settings alone.
pub fn budget_for(site: &Site) -> Arc<AccountBudget> {
    Arc::new(AccountBudget::new(
        account_of(site),
        BudgetLimits {
            per_second: site.requests_per_second,
            per_hour: site.requests_per_hour,
            live_reserve: site.live_reserve,
            hour: BudgetLimits::hour_from_env(),
        },
    ))
}

#[derive(Debug)]
struct Inner {
    site: String,
    base_url: String,
    client_id: String,
    secret: Secret,
    backup_password: Option<Secret>,
    http: reqwest::Client,
    spool_dir: PathBuf,
    options: ClientOptions,
    tokens: TokenCache,
    /// One permit per request of this site in flight (`max_in_flight`), held from before
    /// the request waits for the budget until its body is on disk. Never closed.
    in_flight: Semaphore,
    budget: Arc<AccountBudget>,
    clock: ApplianceClock,
}

/// What one request asks for.
#[derive(Debug, Clone)]
struct Call {
    /// For messages: the report name or operation.
    what: String,
    method: reqwest::Method,
    path: &'static str,
    params: Vec<(&'static str, String)>,
    /// Download (recording, backup) rather than an XML report.
    download: bool,
    /// Authenticated (everything but `check_health`).
    auth: bool,
    /// A password sent as the JSON body `{"password": "..."}` (the backup's, as the
    /// vendor documents it).
    password: Option<Secret>,
}

/// The result of a single attempt that reached the end of the body.
#[derive(Debug)]
struct Attempt {
    body: Spooled,
    status: u16,
    head: Vec<u8>,
    content_type: Option<String>,
    content_disposition: Option<String>,
    answered_at: DateTime<Utc>,
}

impl ApplianceClient {
    /// A client for `site`, authenticating with `secret` and spooling bodies under `spool_dir`.
    pub fn new(site: &Site, secret: Secret, spool_dir: &Path) -> Result<Self, ApplianceError> {
        Self::with_options(site, secret, None, spool_dir, ClientOptions::default())
    }

    /// A client with a backup password and non-default options.
    pub fn with_options(
        site: &Site,
        secret: Secret,
        backup_password: Option<Secret>,
        spool_dir: &Path,
        options: ClientOptions,
    ) -> Result<Self, ApplianceError> {
        let setup = |reason: String| ApplianceError::Setup {
            site: site.name.clone(),
            reason,
        };
        let mut builder = reqwest::Client::builder()
            .http1_only()
            .https_only(!site.insecure_http)
            .pool_max_idle_per_host(0)
            .connect_timeout(options.connect_timeout.min(site.timeout))
            .read_timeout(options.read_timeout.min(site.timeout))
            .timeout(site.timeout)
            .user_agent(concat!("btic/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none());
        builder = match &site.proxy {
            crate::config::Proxy::Environment => builder,
            crate::config::Proxy::None => builder.no_proxy(),
            crate::config::Proxy::Url(url) => {
                let proxy = reqwest::Proxy::all(url.as_str()).map_err(|e| {
                    setup(format!(
                        "proxy {} is not usable: {}",
                        crate::config::redact_userinfo(url),
                        error_chain(&e)
                    ))
                })?;
                builder.proxy(proxy)
            }
        };
        if let Some(ca) = &site.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| setup(format!("cannot read ca_file {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                setup(format!(
                    "ca_file {} is not a PEM certificate bundle: {e}",
                    ca.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(setup(format!(
                    "ca_file {} holds no PEM certificate",
                    ca.display()
                )));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| setup(format!("building the HTTP client: {}", error_chain(&e))))?;
        let budget = options.budget.clone().unwrap_or_else(|| budget_for(site));
        Ok(ApplianceClient {
            priority: Priority::Live,
            inner: Arc::new(Inner {
                site: site.name.clone(),
                base_url: site.base_url(),
                client_id: site.client_id.clone(),
                secret,
                backup_password,
                http,
                spool_dir: spool_dir.to_path_buf(),
                options,
                tokens: TokenCache::default(),
                in_flight: Semaphore::new(site.max_in_flight.max(1)),
                budget,
                clock: ApplianceClock::new(),
            }),
        })
    }

    /// The site's name.
    pub fn site(&self) -> &str {
        &self.inner.site
    }

    /// A clone whose requests wait for the account's budget at `priority`.
    pub fn at(&self, priority: Priority) -> ApplianceClient {
        ApplianceClient {
            inner: self.inner.clone(),
            priority,
        }
    }

    /// The API account's request budget (shared with the account's other sites).
    pub fn budget(&self) -> &Arc<AccountBudget> {
        &self.inner.budget
    }

    /// The site's clock (skew and `appliance_now`).
    pub fn clock(&self) -> &ApplianceClock {
        &self.inner.clock
    }

    /// The appliance's current time: local monotonic clock plus the measured skew.
    pub fn appliance_now(&self) -> DateTime<Utc> {
        self.inner.clock.appliance_now()
    }

    /// The measured `appliance - local` skew, once a call has measured it.
    pub fn skew(&self) -> Option<TimeDelta> {
        self.inner.clock.skew()
    }

    /// `SupportSession` for a window.
    pub async fn support_sessions(&self, window: Window) -> Result<Fetched, ApplianceError> {
        self.report("SupportSession", window.query()).await
    }

    /// `SupportSession` for one or more sessions by LSID (`lsid` for one, `lsids` for more).
    pub async fn support_sessions_by_lsid(
        &self,
        lsids: &[String],
    ) -> Result<Fetched, ApplianceError> {
        let param = match lsids {
            [one] => ("lsid", one.clone()),
            many => ("lsids", many.join(",")),
        };
        self.report("SupportSession", vec![param]).await
    }

    /// `SupportSessionListing` for a window.
    pub async fn support_session_listing(&self, window: Window) -> Result<Fetched, ApplianceError> {
        self.report("SupportSessionListing", window.query()).await
    }

    /// `PresentationSession` for a window.
    pub async fn presentation_sessions(&self, window: Window) -> Result<Fetched, ApplianceError> {
        self.report("PresentationSession", window.query()).await
    }

    /// A recording of session (or presentation) `lsid`. An expired recording is
    /// `ApplianceError::RecordingExpired`.
    pub async fn recording(&self, kind: Recording, lsid: &str) -> Result<Fetched, ApplianceError> {
        let mut params = vec![
            ("generate_report", kind.report().to_string()),
            ("lsid", lsid.to_string()),
        ];
        // The appliance knows instances of command shells only.
        if let Recording::CommandShell(instance) = kind {
            params.push(("instance", instance.to_string()));
        }
        self.execute(Call {
            what: kind.report().to_string(),
            method: reqwest::Method::GET,
            path: "/api/reporting",
            params,
            download: true,
            auth: true,
            password: None,
        })
        .await
    }

    /// The site configuration backup (`.nsb`), with the backup password, when one is
    /// set, as the JSON body `{"password": "..."}` the vendor documents.
    pub async fn backup(&self) -> Result<Fetched, ApplianceError> {
        self.execute(Call {
            what: "backup".into(),
            method: reqwest::Method::POST,
            path: "/api/backup",
            params: Vec::new(),
            download: true,
            auth: true,
            password: self.inner.backup_password.clone(),
        })
        .await
    }

    /// `get_api_info`, spooled. The caller parses it; the skew is measured from it by
    /// `api_info`, which most callers want instead.
    pub async fn api_info_raw(&self) -> Result<Fetched, ApplianceError> {
        self.execute(Call {
            what: "get_api_info".into(),
            method: reqwest::Method::GET,
            path: "/api/command",
            params: vec![("action", "get_api_info".into())],
            download: false,
            auth: true,
            password: None,
        })
        .await
    }

    /// `get_api_info`: API version, permissions and the appliance's clock, from which the
    /// site's skew is measured (and kept for `appliance_now`).
    pub async fn api_info(&self) -> Result<ApiInfo, ApplianceError> {
        let fetched = self.api_info_raw().await?;
        let bad = |reason: String| ApplianceError::BadAnswer {
            site: self.inner.site.clone(),
            what: "get_api_info".into(),
            reason,
        };
        let body = fetched
            .body
            .ok_or_else(|| bad("the appliance answered \"no data\"".into()))?;
        let info = answer::api_info_in(&body.path).await;
        crate::durable::discard(&body.path).await;
        let info = info.map_err(bad)?;
        if let Some(timestamp) = info.timestamp {
            let appliance = timestamp + TimeDelta::milliseconds(500);
            // The timestamp is whole seconds: the true reading lies in [t, t+1), so half a
            // second is added to halve the worst error.
            self.inner
                .clock
                .observe(appliance, fetched.answered_at, SkewSource::ApiInfo);
        }
        Ok(info)
    }

    /// `GET /check_health` (no authentication): whether the appliance says it is healthy
    /// (200) or not (500). One attempt: a health probe reports, it does not insist.
    pub async fn check_health(&self) -> Result<bool, ApplianceError> {
        let call = Call {
            what: "check_health".into(),
            method: reqwest::Method::GET,
            path: "/check_health",
            params: Vec::new(),
            download: true,
            auth: false,
            password: None,
        };
        match self.attempt(&call).await {
            Ok(attempt) => {
                crate::durable::discard(&attempt.body.path).await;
                Ok(true)
            }
            Err(e) if e.status() == Some(500) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn report(
        &self,
        report: &str,
        mut params: Vec<(&'static str, String)>,
    ) -> Result<Fetched, ApplianceError> {
        params.insert(0, ("generate_report", report.to_string()));
        self.execute(Call {
            what: report.to_string(),
            method: reqwest::Method::GET,
            path: "/api/reporting",
            params,
            download: false,
            auth: true,
            password: None,
        })
        .await
    }

    /// Runs a call with retries and turns the spooled body into a `Fetched`.
    async fn execute(&self, call: Call) -> Result<Fetched, ApplianceError> {
        let started = Instant::now();
        let policy = self.inner.options.retry;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(policy.initial)
            .with_max_delay(policy.max_interval)
            .with_max_times(policy.max_attempts.saturating_sub(1) as usize)
            .with_jitter();
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let attempt = (|| async {
            attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.attempt(&call).await
        })
        .retry(backoff)
        .when(ApplianceError::is_retryable)
        // Retry-After wins over the backoff, within reason: a wrong header must not stall a
        // site for hours.
        .adjust(|e, delay| delay.map(|d| e.retry_after().map_or(d, |r| r.min(MAX_RETRY_AFTER))))
        .notify(|e, delay| {
            tracing::warn!(site = %self.inner.site, "{e}; retrying in {delay:?}");
        })
        .await?;
        let attempts = attempts.into_inner();
        self.finish(call, attempt, attempts, started).await
    }

    /// Looks at a complete body: `<error>` answers become errors (or "no data"), downloads
    /// get their extension.
    async fn finish(
        &self,
        call: Call,
        attempt: Attempt,
        attempts: u32,
        started: Instant,
    ) -> Result<Fetched, ApplianceError> {
        let looks_like_xml = {
            let head = trim_bom_and_space(&attempt.head);
            head.starts_with(b"<")
        };
        // A download that starts like XML is an `<error>` answer, never a recording,
        // unless the appliance names a file or a specific media type for it.
        let named = attempt.content_disposition.is_some()
            || attempt
                .content_type
                .as_deref()
                .and_then(spool::extension_of_type)
                .is_some();
        if looks_like_xml && (!call.download || !named) {
            match answer::error_in(&attempt.body.path).await {
                Ok(None) => {}
                Ok(Some(error)) => {
                    crate::durable::discard(&attempt.body.path).await;
                    let site = self.inner.site.clone();
                    let what = call.what;
                    let message = error.message;
                    return match error.kind {
                        ErrorMeaning::NoData => Ok(Fetched {
                            body: None,
                            extension: "xml".into(),
                            status: attempt.status,
                            attempts,
                            elapsed: started.elapsed(),
                            answered_at: attempt.answered_at,
                        }),
                        ErrorMeaning::RecordingExpired => Err(ApplianceError::RecordingExpired {
                            site,
                            what,
                            message,
                        }),
                        ErrorMeaning::LoginFailed => Err(ApplianceError::Credentials {
                            site,
                            client_id: self.inner.client_id.clone(),
                            reason: format!("{what} answered \"{message}\""),
                        }),
                        ErrorMeaning::Other => Err(ApplianceError::ErrorBody {
                            site,
                            what,
                            message,
                        }),
                    };
                }
                Err(reason) if !call.download => {
                    crate::durable::discard(&attempt.body.path).await;
                    return Err(ApplianceError::BadAnswer {
                        site: self.inner.site.clone(),
                        what: call.what,
                        reason,
                    });
                }
                Err(_) => {}
            }
        }
        let extension = if call.download {
            let fallback = if call.path == "/api/backup" {
                "nsb"
            } else {
                "bin"
            };
            spool::extension_for(
                attempt.content_type.as_deref(),
                attempt.content_disposition.as_deref(),
                &attempt.head,
                fallback,
            )
        } else {
            "xml".to_string()
        };
        let body = spool::with_extension(attempt.body, &extension)
            .await
            .map_err(|source| ApplianceError::Spool {
                site: self.inner.site.clone(),
                what: call.what.clone(),
                path: self.inner.spool_dir.clone(),
                source,
            })?;
        Ok(Fetched {
            body: Some(body),
            extension,
            status: attempt.status,
            attempts,
            elapsed: started.elapsed(),
            answered_at: attempt.answered_at,
        })
    }

    /// One attempt: a slot of the site, the token, the account's budget, the request,
    /// the body to disk. The token is renewed once when the appliance refuses it (a 401,
    /// or the documented `access_denied` JSON with any status); a request the appliance
    /// refuses because the account's budget is spent (429) waits out the pause it starts
    /// and is sent again, which is not another attempt.
    async fn attempt(&self, call: &Call) -> Result<Attempt, ApplianceError> {
        let _slot = self
            .inner
            .in_flight
            .acquire()
            .await
            .expect("the in-flight semaphore is never closed");
        let started = Instant::now();
        let mut refused = None;
        loop {
            let token = if call.auth {
                Some(self.token(refused).await?)
            } else {
                None
            };
            // `check_health` is no API call: it costs the account nothing.
            let grant = match call.auth {
                true => Some(self.inner.budget.acquire(self.priority).await),
                false => None,
            };
            let sent = Instant::now();
            let response = self.send(call, token.as_ref().map(|t| t.bearer())).await?;
            let answered_at = self.midpoint_since(sent);
            self.observe_date(response.headers(), sent);
            let status = response.status().as_u16();
            let answer = answered(status, response.headers());
            if let Some(grant) = grant {
                grant.answered(&answer);
                if answer.throttled() {
                    continue;
                }
            }
            let generation = token.as_ref().map(|t| t.generation);
            if status != 200 {
                let retry_after = answer.retry_after;
                let excerpt = excerpt(response).await;
                let denied = call.auth
                    && (status == 401
                        || oauth_error_code(&excerpt).as_deref() == Some(ACCESS_DENIED));
                if !denied {
                    return Err(ApplianceError::Status {
                        site: self.inner.site.clone(),
                        what: call.what.clone(),
                        status,
                        retry_after,
                        excerpt,
                    });
                }
                self.token_refused(call, status, &mut refused, generation)?;
                continue;
            }
            let attempt = self.spool(call, response, started, answered_at).await?;
            if call.auth && is_access_denied(&attempt) {
                crate::durable::discard(&attempt.body.path).await;
                self.token_refused(call, status, &mut refused, generation)?;
                continue;
            }
            return Ok(attempt);
        }
    }

    /// A token the appliance refused: renew it once (`refused` remembers the generation
    /// it was seen with); refused again, it is a credentials error.
    fn token_refused(
        &self,
        call: &Call,
        status: u16,
        refused: &mut Option<u64>,
        generation: Option<u64>,
    ) -> Result<(), ApplianceError> {
        if refused.is_none() {
            tracing::info!(site = %self.inner.site, status, "token refused by the appliance; renewing it once");
            *refused = generation;
            return Ok(());
        }
        Err(ApplianceError::Credentials {
            site: self.inner.site.clone(),
            client_id: self.inner.client_id.clone(),
            reason: format!(
                "{} was refused (HTTP {status}) even with a fresh token",
                call.what
            ),
        })
    }

    async fn send(
        &self,
        call: &Call,
        bearer: Option<String>,
    ) -> Result<reqwest::Response, ApplianceError> {
        let url = format!("{}{}", self.inner.base_url, call.path);
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), &url)
            .header(header::CONNECTION, "close");
        if let Some(bearer) = bearer {
            request = request.header(header::AUTHORIZATION, bearer);
        }
        request = if let Some(password) = &call.password {
            request
                .query(&call.params)
                .json(&serde_json::json!({ "password": password.expose() }))
        } else if call.method == reqwest::Method::POST {
            request.form(&call.params)
        } else {
            request.query(&call.params)
        };
        let started = Instant::now();
        request
            .send()
            .await
            .map_err(|e| self.network_error(&call.what, &e, started, 0))
    }

    /// Streams a 200 answer into a spool file and checks it arrived whole.
    async fn spool(
        &self,
        call: &Call,
        response: reqwest::Response,
        started: Instant,
        answered_at: DateTime<Utc>,
    ) -> Result<Attempt, ApplianceError> {
        let status = response.status().as_u16();
        let expected = response.content_length();
        let header_text = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_disposition = header_text(header::CONTENT_DISPOSITION);
        let content_type = header_text(header::CONTENT_TYPE);
        if call.download {
            // No public capture shows what appliances send for recordings and backups.
            tracing::debug!(
                site = %self.inner.site,
                what = %call.what,
                content_type = content_type.as_deref().unwrap_or("-"),
                content_disposition = content_disposition.as_deref().unwrap_or("-"),
                "download answered"
            );
        }
        let path = spool::new_path(&self.inner.spool_dir, &self.inner.site, &call.what);
        let spool_error = |source| ApplianceError::Spool {
            site: self.inner.site.clone(),
            what: call.what.clone(),
            path: path.clone(),
            source,
        };
        let mut writer = SpoolWriter::create(path.clone())
            .await
            .map_err(spool_error)?;
        let mut received = 0u64;
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    writer.discard().await;
                    return Err(self.network_error(&call.what, &e, started, received));
                }
            };
            received += chunk.len() as u64;
            if let Err(e) = writer.write(chunk).await {
                writer.discard().await;
                return Err(spool_error(e));
            }
        }
        if let Some(expected) = expected
            && expected != received
        {
            writer.discard().await;
            return Err(ApplianceError::Interrupted {
                site: self.inner.site.clone(),
                what: call.what.clone(),
                received,
                reason: format!("Content-Length was {expected}"),
            });
        }
        let head = writer.head().to_vec();
        let body = writer.finish().await.map_err(spool_error)?;
        Ok(Attempt {
            body,
            status,
            head,
            content_type,
            content_disposition,
            answered_at,
        })
    }

    /// The cached token, or a new one (`refused`: the generation a 401 was seen with).
    async fn token(&self, refused: Option<u64>) -> Result<auth::Token, ApplianceError> {
        self.inner
            .tokens
            .get(refused, |generation| self.fetch_token(generation))
            .await
    }

    async fn fetch_token(&self, generation: u64) -> Result<auth::Token, ApplianceError> {
        let what = "token request";
        let started = Instant::now();
        let response = loop {
            // A token request is an API request like any other: it counts, and a 429
            // pauses it with the rest of the account.
            let grant = self.inner.budget.acquire(Priority::Live).await;
            let response = self
                .inner
                .http
                .post(format!("{}/oauth2/token", self.inner.base_url))
                .header(header::CONNECTION, "close")
                .basic_auth(&self.inner.client_id, Some(self.inner.secret.expose()))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .map_err(|e| self.network_error(what, &e, started, 0))?;
            let answer = answered(response.status().as_u16(), response.headers());
            grant.answered(&answer);
            if !answer.throttled() {
                break response;
            }
        };
        self.observe_date(response.headers(), started);
        let status = response.status().as_u16();
        if status == 400 || status == 401 || status == 403 {
            let excerpt = excerpt(response).await;
            // RFC 6749 names the refusal in the JSON body's `error` (`invalid_client`,
            // as PRA 25.2 answers): the structural signal, when there is one.
            let reason = match oauth_error_code(&excerpt) {
                Some(code) => format!("the token endpoint answered HTTP {status} ({code})"),
                None => format!("the token endpoint answered HTTP {status}: {excerpt}"),
            };
            return Err(ApplianceError::Credentials {
                site: self.inner.site.clone(),
                client_id: self.inner.client_id.clone(),
                reason,
            });
        }
        if status != 200 {
            let retry_after = retry_after(response.headers());
            let excerpt = excerpt(response).await;
            return Err(ApplianceError::Status {
                site: self.inner.site.clone(),
                what: what.into(),
                status,
                retry_after,
                excerpt,
            });
        }
        let received = Instant::now();
        // A token answer is a few hundred bytes; cap what is read anyway.
        let body = read_capped(response, 64 * 1024)
            .await
            .map_err(|e| self.network_error(what, &e, started, 0))?;
        let answer: auth::TokenAnswer =
            serde_json::from_slice(&body).map_err(|e| ApplianceError::Token {
                site: self.inner.site.clone(),
                reason: format!("the answer is not the expected JSON: {e}"),
            })?;
        let token = token_from_answer(answer, generation, received).map_err(|reason| {
            ApplianceError::Token {
                site: self.inner.site.clone(),
                reason,
            }
        })?;
        tracing::debug!(site = %self.inner.site, generation, "new API token");
        Ok(token)
    }

    /// Measures skew from a `Date` header (used only until `get_api_info` has been read).
    fn observe_date(&self, headers: &HeaderMap, sent: Instant) {
        let Some(date) = headers
            .get(header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
        else {
            return;
        };
        let local = self.midpoint_since(sent);
        self.inner
            .clock
            .observe(date.with_timezone(&Utc), local, SkewSource::DateHeader);
    }

    /// The local time halfway between `sent` and now: the best guess of when the
    /// appliance read its clock. Its timestamps are whole seconds, so half a second is
    /// added to the reading's side by the caller when it matters.
    fn midpoint_since(&self, sent: Instant) -> DateTime<Utc> {
        let half = Instant::now().saturating_duration_since(sent) / 2;
        self.inner.clock.local_now() - TimeDelta::from_std(half).unwrap_or_default()
    }

    fn network_error(
        &self,
        what: &str,
        e: &reqwest::Error,
        started: Instant,
        received: u64,
    ) -> ApplianceError {
        let site = self.inner.site.clone();
        let what = what.to_string();
        let chain = error_chain(e);
        if e.is_timeout() {
            return ApplianceError::Timeout {
                site,
                what,
                elapsed: started.elapsed(),
            };
        }
        if let Some(reason) = tls_reason(e) {
            return ApplianceError::Tls { site, what, reason };
        }
        if e.is_builder() && chain.contains("scheme") {
            return ApplianceError::Setup {
                site,
                reason: format!("{chain} (plain HTTP needs insecure_http = true)"),
            };
        }
        if e.is_connect() {
            return ApplianceError::Connect {
                site,
                what,
                reason: chain,
            };
        }
        ApplianceError::Interrupted {
            site,
            what,
            received,
            reason: chain,
        }
    }
}

/// Reads at most `cap` bytes of a small answer.
async fn read_capped(response: reqwest::Response, cap: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let take = (cap - out.len()).min(chunk.len());
        out.extend_from_slice(&chunk[..take]);
        if out.len() >= cap {
            break;
        }
    }
    Ok(out)
}

/// The first 200 characters of an error answer, on one line.
async fn excerpt(response: reqwest::Response) -> String {
    let body = read_capped(response, 2048).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    one_line.chars().take(200).collect()
}

/// The `error` code of an RFC 6749 error answer (`{"error": "invalid_client"}`).
fn oauth_error_code(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let code = value.get("error")?.as_str()?;
    code.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        .then(|| code.to_string())
}

/// The `error` of the JSON answer the vendor documents for an expired or invalid token.
const ACCESS_DENIED: &str = "access_denied";

/// Whether a 200 answer is the `access_denied` JSON (its status is undocumented).
fn is_access_denied(attempt: &Attempt) -> bool {
    let head = trim_bom_and_space(&attempt.head);
    head.starts_with(b"{")
        && attempt.body.bytes <= attempt.head.len() as u64
        && oauth_error_code(&String::from_utf8_lossy(head)).as_deref() == Some(ACCESS_DENIED)
}

/// What an answer tells the account's budget: its status, `X-RateLimit-Limit`,
/// `X-RateLimit-Remaining` and `Retry-After`.
fn answered(status: u16, headers: &HeaderMap) -> Answered {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok())
    };
    Answered {
        status,
        limit: number("x-ratelimit-limit"),
        remaining: number("x-ratelimit-remaining"),
        retry_after: retry_after(headers),
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    (at - Utc::now()).to_std().ok()
}

/// The error and its sources on one line (also for `notify`'s transports).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The TLS library's reason, when the error is a failed handshake.
fn tls_reason(e: &reqwest::Error) -> Option<String> {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(tls.to_string());
        }
        source = s.source();
    }
    let chain = error_chain(e);
    (chain.contains("certificate") || chain.contains("InvalidContentType")).then_some(chain)
}

fn trim_bom_and_space(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}
