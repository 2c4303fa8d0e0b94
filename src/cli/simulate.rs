//! `btic simulate`: run the appliance simulator until interrupted.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::CliError;
use crate::simulator::{
    EmptyAnswer, Faults, Language, Namespace, Options, RateBudget, Simulator, WindowFaults,
};

/// `btic simulate` options.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Where to write the CA certificate (PEM) clients must trust.
    #[arg(long)]
    pub ca_out: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS (test rigs; the client needs insecure_http = true).
    #[arg(long)]
    pub http: bool,
    /// Seed of the generated sessions.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Sessions started per day.
    #[arg(long, default_value_t = 200)]
    pub sessions_per_day: u32,
    /// Days of history ending at appliance-now.
    #[arg(long, default_value_t = 2)]
    pub days: u32,
    /// XML namespace of the answers: bomgar, beyondtrust, sra or none.
    #[arg(long, default_value = "beyondtrust", value_parser = parse_namespace)]
    pub namespace: Namespace,
    /// The API account's client id.
    #[arg(long, default_value = "demo")]
    pub client_id: String,
    /// The API account's client secret.
    #[arg(long, default_value = "demo-secret")]
    pub client_secret: String,
    /// Token lifetime in seconds (`expires_in`).
    #[arg(long, default_value_t = 3600)]
    pub token_ttl: u64,
    /// The `token_type` written in token answers (casing varies between appliances).
    #[arg(long, default_value = "Bearer")]
    pub token_type: String,
    /// Appliance clock minus host clock, in seconds (may be negative).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub skew: i64,
    /// Rate (0..1) of HTTP 503 answers.
    #[arg(long, default_value_t = 0.0)]
    pub fault_5xx: f64,
    /// Rate of HTTP 429 answers (with Retry-After).
    #[arg(long, default_value_t = 0.0)]
    pub fault_429: f64,
    /// Rate of connections dropped after the headers.
    #[arg(long, default_value_t = 0.0)]
    pub fault_reset: f64,
    /// Rate of bodies cut off halfway (the chunked stream breaks).
    #[arg(long, default_value_t = 0.0)]
    pub fault_truncate: f64,
    /// Rate of answers delayed by --slow-seconds.
    #[arg(long, default_value_t = 0.0)]
    pub fault_slow: f64,
    /// Rate of HTTP 200 answers with an `<error>` body.
    #[arg(long, default_value_t = 0.0)]
    pub fault_error_body: f64,
    /// Delay of a slow answer, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub slow_seconds: f64,
    /// Retry-After of a 429, in seconds.
    #[arg(long, default_value_t = 1)]
    pub retry_after: u64,
    /// Size of each recording in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub recording_bytes: u64,
    /// Size of the backup in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    pub backup_bytes: u64,
    /// Password /api/backup requires.
    #[arg(long)]
    pub backup_password: Option<String>,
    /// A permission the API account lacks (repeatable), e.g. perm_backup.
    #[arg(long = "deny")]
    pub deny: Vec<String>,
    /// Every Nth session's recordings have expired (0: none).
    #[arg(long, default_value_t = 0)]
    pub expired_recording_every: u64,
    /// Serve the ground truth at GET /_sim/sessions?closed_before=UNIX and the counters
    /// at GET /_sim/stats, and take POST /_sim/refusals {"windows": [UNIX, ...]} to
    /// change --refuse-window, POST /_sim/budget to change the budget or start a 429
    /// storm, and POST /_sim/clock {"advance_seconds": N} to move the appliance clock.
    #[arg(long)]
    pub truth: bool,
    /// Answer an empty report window with the documented empty root element instead of
    /// the root `<error>` real appliances answer with.
    #[arg(long)]
    pub empty_as_element: bool,
    /// Language of the appliance's texts: en or fr.
    #[arg(long, default_value = "en", value_parser = parse_language)]
    pub language: Language,
    /// Refuse every report request whose window contains this appliance time (UNIX
    /// seconds) with an `<error>` no client knows (repeatable).
    #[arg(long = "refuse-window", allow_hyphen_values = true)]
    pub refuse_window: Vec<i64>,
    /// Answer every report request whose window contains this appliance time with a
    /// body that is not well-formed XML (repeatable).
    #[arg(long = "malform-window", allow_hyphen_values = true)]
    pub malform_window: Vec<i64>,
    /// Requests the API account may make in any rolling second (0: no limit); more are
    /// refused with HTTP 429. The vendor's limit is 20.
    #[arg(long, default_value_t = 20)]
    pub requests_per_second: u32,
    /// Requests the API account may make in any rolling hour (0: no limit); also the
    /// X-RateLimit-Limit header. The vendor's limit is 15000.
    #[arg(long, default_value_t = 15_000)]
    pub requests_per_hour: u32,
    /// The length of the "hour" of --requests-per-hour, in seconds (shorter in tests).
    #[arg(long, default_value_t = 3600)]
    pub budget_hour_seconds: u64,
    /// Send Retry-After (seconds until a slot frees) with the budget's 429s.
    #[arg(long)]
    pub rate_limit_retry_after: bool,
    /// Requests a minute another client of the same API account spends from its budget
    /// (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub other_client_per_minute: f64,
    /// HTTP status of the access_denied answer to an expired or invalid token.
    #[arg(long, default_value_t = 401)]
    pub denied_status: u16,
    /// The api_version get_api_info reports (before 1.24.1 with a company_name).
    #[arg(long, default_value = "1.24.0")]
    pub api_version: String,
    /// Every Nth session is written late: end_time windows miss it until --late-seconds
    /// after its end (0: none).
    #[arg(long, default_value_t = 0)]
    pub late_every: u64,
    /// How long after its end a late session appears in end_time windows, in seconds.
    #[arg(long, default_value_t = 0)]
    pub late_seconds: u64,
}

fn parse_language(text: &str) -> Result<Language, String> {
    match text {
        "en" => Ok(Language::English),
        "fr" => Ok(Language::French),
        _ => Err(format!("unknown language \"{text}\"; use en or fr")),
    }
}

fn parse_namespace(text: &str) -> Result<Namespace, String> {
    match text {
        "bomgar" => Ok(Namespace::Bomgar),
        "beyondtrust" => Ok(Namespace::BeyondTrust),
        "sra" => Ok(Namespace::Sra),
        "none" => Ok(Namespace::None),
        _ => Err(format!(
            "unknown namespace \"{text}\"; use bomgar, beyondtrust, sra or none"
        )),
    }
}

impl SimulateArgs {
    /// The simulator options these arguments describe.
    pub fn options(&self) -> Result<Options, CliError> {
        self.check()?;
        Ok(Options {
            listen: self.listen,
            http: self.http,
            seed: self.seed,
            sessions_per_day: self.sessions_per_day,
            days: self.days,
            namespace: self.namespace,
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            token_ttl: Duration::from_secs(self.token_ttl),
            token_type: self.token_type.clone(),
            skew_seconds: self.skew,
            faults: self.faults(),
            recording_bytes: self.recording_bytes,
            backup_bytes: self.backup_bytes,
            backup_password: self.backup_password.clone(),
            denied_permissions: self.deny.clone(),
            expired_recording_every: self.expired_recording_every,
            truth: self.truth,
            empty_answer: if self.empty_as_element {
                EmptyAnswer::Element
            } else {
                EmptyAnswer::Error
            },
            language: self.language,
            window_faults: WindowFaults {
                refused: self.refuse_window.clone(),
                malformed: self.malform_window.clone(),
                message: None,
            },
            budget: RateBudget {
                per_second: self.requests_per_second,
                per_hour: self.requests_per_hour,
                hour: Duration::from_secs(self.budget_hour_seconds),
                retry_after: self.rate_limit_retry_after,
            },
            other_client_per_minute: self.other_client_per_minute,
            denied_status: self.denied_status,
            api_version: self.api_version.trim().to_string(),
            late_every: self.late_every,
            late_seconds: self.late_seconds,
        })
    }

    /// The ranges and combinations the options must keep.
    fn check(&self) -> Result<(), CliError> {
        let rates = [
            ("--fault-5xx", self.fault_5xx),
            ("--fault-429", self.fault_429),
            ("--fault-reset", self.fault_reset),
            ("--fault-truncate", self.fault_truncate),
            ("--fault-slow", self.fault_slow),
            ("--fault-error-body", self.fault_error_body),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(CliError::config(format!(
                    "{name} is a rate between 0 and 1, not {rate}"
                )));
            }
        }
        if rates.iter().map(|(_, r)| r).sum::<f64>() > 1.0 {
            return Err(CliError::config("the fault rates add up to more than 1"));
        }
        if !(self.slow_seconds.is_finite() && self.slow_seconds >= 0.0) {
            return Err(CliError::config("--slow-seconds must be a positive number"));
        }
        if self.budget_hour_seconds == 0 {
            return Err(CliError::config(
                "--budget-hour-seconds must be more than 0",
            ));
        }
        let rate = self.other_client_per_minute;
        if !(rate.is_finite() && (0.0..=60_000.0).contains(&rate)) {
            return Err(CliError::config(format!(
                "--other-client-per-minute is a rate between 0 and 60000, not {rate}"
            )));
        }
        if !(400..=599).contains(&self.denied_status) {
            return Err(CliError::config(format!(
                "--denied-status is an HTTP error status between 400 and 599, not {}",
                self.denied_status
            )));
        }
        let version = self.api_version.trim();
        if version.is_empty()
            || !version
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(CliError::config(format!(
                "--api-version is dotted numbers such as 1.25.0, not \"{}\"",
                self.api_version
            )));
        }
        if self.late_seconds > 0 && self.late_every == 0 {
            return Err(CliError::config(
                "--late-seconds needs --late-every (which sessions are late)",
            ));
        }
        Ok(())
    }

    fn faults(&self) -> Faults {
        Faults {
            rate_5xx: self.fault_5xx,
            rate_429: self.fault_429,
            rate_reset: self.fault_reset,
            rate_truncate: self.fault_truncate,
            rate_slow: self.fault_slow,
            rate_error_body: self.fault_error_body,
            slow_delay: Duration::from_secs_f64(self.slow_seconds),
            retry_after_seconds: self.retry_after,
        }
    }
}

/// Runs `btic simulate` until Ctrl-C or SIGTERM.
pub fn simulate(args: &SimulateArgs) -> Result<(), CliError> {
    let options = args.options()?;
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| CliError::failed(format!("starting the runtime: {e}")))?;
    runtime.block_on(async {
        let simulator = Simulator::start(options)
            .await
            .map_err(|e| CliError::failed(e.to_string()))?;
        if let (Some(path), Some(pem)) = (&args.ca_out, &simulator.ca_pem) {
            std::fs::write(path, pem).map_err(|e| {
                CliError::failed(format!(
                    "writing the CA certificate to {}: {e}",
                    path.display()
                ))
            })?;
        }
        let scheme = if args.http { "http" } else { "https" };
        // Tests read this line to learn the port.
        println!("listening on {scheme}://{}", simulator.addr);
        let _ = std::io::stdout().flush();
        tracing::info!(
            addr = %simulator.addr,
            sessions_per_day = args.sessions_per_day,
            days = args.days,
            "simulator started"
        );
        simulator.run_until(stop_signal()).await;
        Ok(())
    })
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
