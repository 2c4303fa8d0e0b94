//! Pipeline files (`pipelines/*.toml`): the model, loading, validation and secrets.
//!
//! Loading is two steps. `parse` reads the TOML into `raw` structs (serde,
//! `deny_unknown_fields`) and `validate` turns them into the domain types below without
//! doing any IO, collecting every problem it finds. Each problem is a `ConfigError` that
//! names the file, the line and column, and the key path
//! (`schedule[1].transfer[0].destination`). Secrets are only references until
//! `Config::resolve_secrets` reads them; connectivity is `btic check`'s business.

pub mod defaults;
mod locate;
mod raw;
pub mod secret;
mod secrets;
pub mod units;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc};

pub use locate::Position;
pub use secret::{Secret, SecretError, SecretSource};
pub(crate) use validate::check_webhook_url;

/// A validated pipeline file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from (for messages).
    pub source: PathBuf,
    /// Where the sled database and spool files live.
    pub state_dir: PathBuf,
    /// Where a watermark starts the first time.
    pub start_from: StartFrom,
    /// The metrics, health and admin listener.
    pub metrics: MetricsConfig,
    /// The operator's console on that listener (`[console]`).
    pub console: ConsoleConfig,
    /// Windowing and retry settings shared by all transfers.
    pub pipeline: PipelineConfig,
    /// The appliances to read from.
    pub sites: Vec<Site>,
    /// Where data goes.
    pub destinations: Vec<Destination>,
    /// When transfers run.
    pub schedules: Vec<Schedule>,
    /// Who is told about trouble, and how (`[[notify]]`).
    pub notifiers: Vec<Notifier>,
    /// Where the daemon's log goes (`[log]`).
    pub log: LogConfig,
    /// Things that work but deserve a look (plain-text secrets, plain HTTP).
    pub warnings: Vec<ConfigError>,
}

/// Where a watermark starts when there is none yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// This long before appliance-now.
    Ago(Duration),
    /// A fixed instant.
    At(DateTime<Utc>),
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Address of `/metrics`, `/healthz`, `/readyz` and the admin API. Default `127.0.0.1:9464`.
    pub listen: SocketAddr,
}

/// `[console]`: the operator's console at `/` on the metrics listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// Whether the console is served. Default true.
    pub enabled: bool,
    /// With a token, peers other than loopback may use the console and the admin API
    /// when they present it; without one, only loopback peers may. Default none.
    pub token: Option<SecretSource>,
}

/// `[pipeline]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Late writers' time: a stretch of appliance time first asked for while younger
    /// than this is asked for once more when it is this old. Default 15 minutes.
    pub overlap: Duration,
    /// A window ends this much before appliance-now. Default 2 minutes.
    pub settle_lag: Duration,
    /// Longest single report request: windows start at an hour and grow while bodies
    /// are small, up to this. Default 1 day.
    pub max_window: Duration,
    /// A report body larger than this makes the window split in half. Default 64 MiB.
    pub max_body_bytes: u64,
    /// In-progress sessions are re-fetched until they end or are this old. Default 1 day.
    pub in_progress_max_age: Duration,
    /// A stage with work waiting and no progress for this long makes `/healthz` answer
    /// 503 and is logged at ERROR. Default 15 minutes.
    pub stall_after: Duration,
    /// Retry budget for retryable failures.
    pub retry: RetryPolicy,
    /// Fetching and downloading pause while the state directory (queue database and
    /// spool, as they take up the disk) is larger than this. Default: no limit.
    pub max_state_bytes: Option<u64>,
    /// ... or while its file system has less free space than this. Default 1 GiB;
    /// 0 turns the floor off.
    pub min_free_bytes: u64,
}

/// `[pipeline].retry`: exponential backoff between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before an item goes to the dead letter. Default 10.
    pub max_attempts: u32,
    /// First delay. Default 1 second.
    pub initial: Duration,
    /// Longest delay. Default 5 minutes.
    pub max_interval: Duration,
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1`, after `attempt` failures (1-based):
    /// `initial * 2^(attempt-1)`, capped at `max_interval`.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.initial.saturating_mul(factor).min(self.max_interval)
    }
}

/// `[[site]]`: one B Series Appliance.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// Unique name used by schedules, metrics and state.
    pub name: String,
    /// `host` or `host:port`, no scheme.
    pub host: String,
    /// The API account's client id.
    pub client_id: String,
    /// The API account's client secret.
    pub client_secret: SecretSource,
    /// An extra trusted CA (PEM), on top of the system's web roots.
    pub ca_file: Option<PathBuf>,
    /// Plain HTTP instead of HTTPS (test rigs only; warned).
    pub insecure_http: bool,
    /// Password sent with `/api/backup`, when set.
    pub backup_password: Option<SecretSource>,
    /// Requests per second the API account may be sent (the sites of one account
    /// share it). Default 10; the vendor caps an account at 20.
    pub requests_per_second: f64,
    /// Requests per rolling hour the API account may be sent, shared by the sites of
    /// one account (same host and `client_id`). Default 10,000: the vendor caps an
    /// account at 15,000 an hour, and other clients of the account keep the rest.
    pub requests_per_hour: u32,
    /// Requests of each hour only the live lane's report requests may use, so that
    /// downloads and backfills never starve the live export. Default a tenth of
    /// `requests_per_hour`.
    pub live_reserve: u32,
    /// How requests reach the appliance: through the environment's proxy settings
    /// (`HTTPS_PROXY`, `NO_PROXY`; the default), directly, or through this proxy.
    pub proxy: Proxy,
    /// Requests in flight at once to this site. Default 1.
    pub max_in_flight: usize,
    /// Whole-request timeout. Default 5 minutes.
    pub timeout: Duration,
}

impl Site {
    /// `https://host` (or `http://` with `insecure_http`).
    pub fn base_url(&self) -> String {
        let scheme = if self.insecure_http { "http" } else { "https" };
        format!("{scheme}://{}", self.host)
    }

    /// The host name without a port: `%SUPPORT_SITE_HOST%` and the SQL `host_name`.
    pub fn host_name(&self) -> &str {
        host_without_port(&self.host)
    }
}

/// `site.proxy`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Proxy {
    /// `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` and `NO_PROXY` from the environment.
    #[default]
    Environment,
    /// `"none"`: always connect directly.
    None,
    /// An `http://` or `https://` proxy URL (it may carry `user:password@`).
    Url(String),
}

impl Proxy {
    /// For people: `environment`, `none`, or the URL without its credentials.
    pub fn describe(&self) -> String {
        match self {
            Proxy::Environment => "environment (HTTPS_PROXY, NO_PROXY)".into(),
            Proxy::None => "none (direct)".into(),
            Proxy::Url(url) => redact_userinfo(url),
        }
    }
}

/// `http://user:secret@proxy:3128` -> `http://***@proxy:3128`.
pub fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// `support.example.com:8443` -> `support.example.com`; `[::1]:8443` -> `[::1]`.
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.split(':').next().unwrap_or(host)
}

/// `[[destination]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    /// Unique name used by schedules, queues, metrics and the dead letter.
    pub name: String,
    /// What it is and its settings.
    pub kind: DestinationKind,
}

/// The destination types.
#[derive(Debug, Clone, PartialEq)]
pub enum DestinationKind {
    /// A directory tree.
    Files(FilesDestination),
    /// A SQL database.
    Sql(SqlDestination),
}

impl Destination {
    /// The `type` key's value.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            DestinationKind::Files(_) => FilesDestination::TYPE_NAME,
            DestinationKind::Sql(sql) => sql.dialect.type_name(),
        }
    }

    // What a destination can take and how is asked with these, never by its kind
    // elsewhere: a new kind answers each of them here.

    /// Whether it takes `data`: every kind takes sessions; recordings, presentations,
    /// their recordings and backups go only to `files` destinations (the SQL schema has
    /// no tables for them, as in the Integration Client).
    pub fn takes(&self, data: DataKind) -> bool {
        match &self.kind {
            DestinationKind::Files(_) => true,
            DestinationKind::Sql(_) => data == DataKind::Sessions,
        }
    }

    /// Whether it takes sessions still in progress, each later version replacing the
    /// earlier (SQL upserts do; a file is written once).
    pub fn takes_in_progress(&self) -> bool {
        matches!(self.kind, DestinationKind::Sql(_))
    }

    /// Whether it writes sessions in batches, so the parse stage hands them on in
    /// bundles (`DeliverItem::Sessions`) rather than one item each.
    pub fn takes_bundles(&self) -> bool {
        matches!(self.kind, DestinationKind::Sql(_))
    }

    /// Whether its items can own spool files (recordings and backups waiting for it).
    pub fn owns_spool_files(&self) -> bool {
        self.takes(DataKind::Recordings) || self.takes(DataKind::Backups)
    }

    /// Whether it writes sessions as the appliance's XML (a `files` destination with
    /// `format = "xml"`): the only kind that needs a session's raw element.
    pub fn writes_raw_xml(&self) -> bool {
        matches!(&self.kind, DestinationKind::Files(f) if f.format == SessionFormat::Xml)
    }
}

/// A `type = "files"` destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesDestination {
    /// Root directory; nothing is ever written outside it.
    pub directory: PathBuf,
    /// The Integration Client's name format; `None` means the default per data kind.
    pub file_name_format: Option<FileNameFormat>,
    /// What to do when the name exists.
    pub on_conflict: OnConflict,
    /// Backups kept per site; `None` keeps all.
    pub retention_count: Option<u32>,
    /// Session data as the appliance's XML or as `inspect` JSON.
    pub format: SessionFormat,
}

impl FilesDestination {
    /// The `type` key's value.
    pub const TYPE_NAME: &'static str = "files";
}

/// `on_conflict`, the Integration Client's "File Name Conflict Handling".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Insert the smallest number before the last period that makes the name unique.
    AppendNumber,
    /// Replace the existing file.
    Overwrite,
    /// Keep the existing file, write nothing.
    Skip,
}

/// `format` of session data files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionFormat {
    /// The appliance's own `<session>` element.
    Xml,
    /// The `btic inspect` JSON object.
    Json,
}

/// A validated `file_name_format`: literal text and the Integration Client's replacement values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileNameFormat {
    /// The format as written.
    pub text: String,
    /// The format cut into literal text and replacement values.
    pub parts: Vec<NamePart>,
}

/// A piece of a `FileNameFormat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamePart {
    /// Text copied as it is.
    Literal(String),
    /// A `%TOKEN%`.
    Token(NameToken),
}

/// The Integration Client's special replacement values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameToken {
    /// `%LSEQ%`
    Lseq,
    /// `%LSID%`
    Lsid,
    /// `%EXTERNAL_KEY%`
    ExternalKey,
    /// `%SESSION_TYPE%`
    SessionType,
    /// `%SUPPORT_SITE_HOST%`
    SupportSiteHost,
    /// `%INSTANCE%`
    Instance,
    /// `%EXTENSION%`
    Extension,
}

impl NameToken {
    /// All tokens with their names, as written between percent signs.
    pub const ALL: [(NameToken, &'static str); 7] = [
        (NameToken::Lseq, "LSEQ"),
        (NameToken::Lsid, "LSID"),
        (NameToken::ExternalKey, "EXTERNAL_KEY"),
        (NameToken::SessionType, "SESSION_TYPE"),
        (NameToken::SupportSiteHost, "SUPPORT_SITE_HOST"),
        (NameToken::Instance, "INSTANCE"),
        (NameToken::Extension, "EXTENSION"),
    ];
}

impl FileNameFormat {
    /// Parses a format; the error names the offending token.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('%') {
            if open > 0 {
                parts.push(NamePart::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let Some(close) = after.find('%') else {
                return Err(format!(
                    "unmatched \"%\" in \"{text}\"; replacement values are written %NAME%"
                ));
            };
            let name = &after[..close];
            let token = NameToken::ALL
                .iter()
                .find(|(_, n)| *n == name)
                .map(|(t, _)| *t)
                .ok_or_else(|| {
                    format!(
                        "unknown replacement value \"%{name}%\"; use one of %LSEQ% %LSID% %EXTERNAL_KEY% %SESSION_TYPE% %SUPPORT_SITE_HOST% %INSTANCE% %EXTENSION%"
                    )
                })?;
            parts.push(NamePart::Token(token));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(NamePart::Literal(rest.to_string()));
        }
        if parts.is_empty() {
            return Err("the file name format is empty".into());
        }
        Ok(FileNameFormat {
            text: text.to_string(),
            parts,
        })
    }
}

/// A SQL destination of any dialect.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlDestination {
    /// Which database.
    pub dialect: SqlDialect,
    /// How to reach it.
    pub connection: SqlConnection,
    /// Write `system_information` rows. Default false.
    pub store_system_information: bool,
    /// Sessions per transaction. Default 500.
    pub batch_size: usize,
}

/// The SQL dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlDialect {
    /// Microsoft SQL Server (tiberius).
    SqlServer,
    /// PostgreSQL (tokio-postgres).
    Postgres,
    /// SQLite (rusqlite).
    Sqlite,
}

impl SqlDialect {
    /// The `type` key's value.
    pub const fn type_name(self) -> &'static str {
        match self {
            SqlDialect::SqlServer => "sqlserver",
            SqlDialect::Postgres => "postgres",
            SqlDialect::Sqlite => "sqlite",
        }
    }
}

/// How a SQL destination is reached.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlConnection {
    /// A URL (PostgreSQL) or ADO connection string (SQL Server); may hold a password.
    Url(SecretSource),
    /// A SQLite database file.
    Path(PathBuf),
}

/// `[[schedule]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Unique name used by metrics and state.
    pub name: String,
    /// Period between runs, 1 minute to 7 days.
    pub every: Duration,
    /// Time of day (UTC) for whole-day periods.
    pub at: Option<NaiveTime>,
    /// What each run moves.
    pub transfers: Vec<Transfer>,
}

/// `[[schedule.transfer]]`: data kinds from one site to one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// A `[[site]]` name.
    pub site: String,
    /// A `[[destination]]` name.
    pub destination: String,
    /// What to move.
    pub data: Vec<DataKind>,
    /// Also pull sessions still in progress and re-fetch them until they end.
    pub include_in_progress: bool,
}

/// The kinds of data the appliance offers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum DataKind {
    /// Support session reports.
    Sessions,
    /// Screen, Show My Screen and command shell recordings of support sessions.
    Recordings,
    /// Presentation session reports.
    Presentations,
    /// Presentation recordings.
    PresentationRecordings,
    /// Site configuration backups (`.nsb`).
    Backups,
}

impl DataKind {
    /// All kinds in the order the file lists them.
    pub const ALL: [DataKind; 5] = [
        DataKind::Sessions,
        DataKind::Recordings,
        DataKind::Presentations,
        DataKind::PresentationRecordings,
        DataKind::Backups,
    ];

    /// The name written in `data = [...]`.
    pub fn as_str(self) -> &'static str {
        match self {
            DataKind::Sessions => "sessions",
            DataKind::Recordings => "recordings",
            DataKind::Presentations => "presentations",
            DataKind::PresentationRecordings => "presentation_recordings",
            DataKind::Backups => "backups",
        }
    }

    /// Parses a `data` entry.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for DataKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[[notify]]`: a mailbox or a chat hook that hears about trouble, at most once per
/// `min_interval`, in one digest of everything since the last message.
#[derive(Debug, Clone, PartialEq)]
pub struct Notifier {
    /// Unique name, used by `btic notify test --name` and in the state directory.
    pub name: String,
    /// How messages are sent.
    pub kind: NotifierKind,
    /// At most one message per this interval; what happens meanwhile waits in the
    /// digest. Default 15 minutes.
    pub min_interval: Duration,
    /// The kinds of events this notifier hears about (each with its recovery). Default:
    /// all of them.
    pub events: Vec<EventClass>,
    /// A schedule whose runs keep failing is reported once it has failed for this long.
    /// Default 15 minutes.
    pub failing_after: Duration,
}

impl Notifier {
    /// The `type` key's value.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            NotifierKind::Smtp(_) => "smtp",
            NotifierKind::Webhook(_) => "webhook",
        }
    }
}

/// The notifier types.
#[derive(Debug, Clone, PartialEq)]
pub enum NotifierKind {
    /// E-mail through an SMTP server.
    Smtp(SmtpNotifier),
    /// An HTTP POST of a JSON body.
    Webhook(WebhookNotifier),
}

/// A `type = "smtp"` notifier.
#[derive(Debug, Clone, PartialEq)]
pub struct SmtpNotifier {
    /// The SMTP server's host name or address, without the port.
    pub server: String,
    /// Its port: as written in `host`, else 587 for `starttls`, 465 for `tls`, 25 for `none`.
    pub port: u16,
    /// How the connection is secured.
    pub tls: SmtpTls,
    /// The sender (`btic@example.com` or `btic <btic@example.com>`).
    pub from: lettre::message::Mailbox,
    /// The recipients, at least one.
    pub to: Vec<lettre::message::Mailbox>,
    /// The account for SMTP AUTH, when the server wants one (with `password`).
    pub username: Option<String>,
    /// The password for SMTP AUTH.
    pub password: Option<SecretSource>,
    /// An extra trusted CA (PEM) for the server's certificate, on top of the system's.
    pub ca_file: Option<PathBuf>,
}

/// `tls` of an SMTP notifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which the server must offer (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption at all: loopback relays and test rigs only (`check` warns otherwise).
    None,
}

impl SmtpTls {
    /// The `tls` key's value.
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpTls::StartTls => "starttls",
            SmtpTls::Tls => "tls",
            SmtpTls::None => "none",
        }
    }
}

/// A `type = "webhook"` notifier.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookNotifier {
    /// Where the JSON body is posted; incoming-webhook URLs carry their token, so this is
    /// a secret.
    pub url: SecretSource,
    /// Extra request headers (an `Authorization`, say); values are secrets too.
    pub headers: Vec<(String, SecretSource)>,
}

/// What a notifier can be told about. Each class has an event and its recovery.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum EventClass {
    /// Items went to the dead letter; recovered when that queue's dead letter is empty.
    DeadLetter,
    /// A schedule's runs have failed for `failing_after`; recovered at its next good run.
    ScheduleFailing,
    /// A stage has work and made no progress for `pipeline.stall_after` (the `/healthz`
    /// condition); recovered when it moves again.
    StageStalled,
    /// Fetching paused because the state directory reached its disk budget; recovered
    /// when it is under it again.
    DiskBudget,
    /// A storage error stopped the daemon; recovered when a later start writes again.
    StorageFailStop,
}

impl EventClass {
    /// Every class, in the order messages list them.
    pub const ALL: [EventClass; 5] = [
        EventClass::DeadLetter,
        EventClass::ScheduleFailing,
        EventClass::StageStalled,
        EventClass::DiskBudget,
        EventClass::StorageFailStop,
    ];

    /// The name written in `events = [...]`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventClass::DeadLetter => "dead_letter",
            EventClass::ScheduleFailing => "schedule_failing",
            EventClass::StageStalled => "stage_stalled",
            EventClass::DiskBudget => "disk_budget",
            EventClass::StorageFailStop => "storage_fail_stop",
        }
    }

    /// Parses an `events` entry.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogConfig {
    /// `btic run` writes its log here instead of stderr (same text or JSON lines, no
    /// colours); at the first line of each UTC day the file is renamed `FILE.YYYY-MM-DD`
    /// and a new one started. `None` (the default): stderr.
    pub file: Option<PathBuf>,
    /// Rotated files older than this many days are removed (the Integration Client's
    /// "Log File Removal"). `None` (the default) keeps them all.
    pub keep_days: Option<u32>,
}

/// One problem in a pipeline file, with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The pipeline file.
    pub file: PathBuf,
    /// Line and column of the key or value.
    pub position: Position,
    /// Key path such as `schedule[1].transfer[0].destination`; empty for the whole file.
    pub key: String,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: ",
            self.file.display(),
            self.position.line,
            self.position.column
        )?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates a pipeline file. No secret is read and nothing is contacted.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let src = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                position: Position { line: 1, column: 1 },
                key: String::new(),
                message: format!("cannot read the pipeline file: {e}"),
            }])
        })?;
        Self::from_toml(path, &src)
    }

    /// Validates pipeline text as if read from `path`.
    pub fn from_toml(path: &Path, src: &str) -> Result<Config, ConfigErrors> {
        validate::parse_and_validate(path, src)
    }

    /// Reads every secret the file references; the errors name the key, never a value.
    pub fn resolve_secrets(&self) -> Result<ResolvedSecrets, ConfigErrors> {
        match secrets::resolve_secrets(self) {
            (secrets, errors) if errors.is_empty() => Ok(secrets),
            (_, errors) => Err(ConfigErrors(errors)),
        }
    }

    /// Reads the secrets that can be read, and says which cannot.
    pub fn resolve_available_secrets(&self) -> (ResolvedSecrets, Vec<ConfigError>) {
        secrets::resolve_secrets(self)
    }

    /// The site with this name.
    pub fn site(&self, name: &str) -> Option<&Site> {
        self.sites.iter().find(|s| s.name == name)
    }

    /// The destination with this name.
    pub fn destination(&self, name: &str) -> Option<&Destination> {
        self.destinations.iter().find(|d| d.name == name)
    }
}

/// Secrets read from their sources, by site and destination name.
#[derive(Debug, Clone, Default)]
pub struct ResolvedSecrets {
    /// `client_secret` per site.
    pub client_secrets: std::collections::BTreeMap<String, Secret>,
    /// `backup_password` per site that has one.
    pub backup_passwords: std::collections::BTreeMap<String, Secret>,
    /// `url` per SQL destination that has one.
    pub urls: std::collections::BTreeMap<String, Secret>,
    /// The secrets of each notifier, by name.
    pub notifiers: std::collections::BTreeMap<String, NotifierSecrets>,
    /// `console.token`, when set.
    pub console_token: Option<Secret>,
}

/// A notifier's secrets, read.
#[derive(Debug, Clone, Default)]
pub struct NotifierSecrets {
    /// An SMTP notifier's `password`.
    pub password: Option<Secret>,
    /// A webhook's `url`.
    pub url: Option<Secret>,
    /// A webhook's `headers`, in the file's order.
    pub headers: Vec<(String, Secret)>,
}

impl ResolvedSecrets {
    /// Every secret value read, so that text leaving btic can be checked against them.
    pub fn values(&self) -> Vec<&Secret> {
        let mut all: Vec<&Secret> = self
            .client_secrets
            .values()
            .chain(self.backup_passwords.values())
            .chain(self.urls.values())
            .chain(self.console_token.iter())
            .collect();
        for n in self.notifiers.values() {
            all.extend(n.password.iter().chain(n.url.iter()));
            all.extend(n.headers.iter().map(|(_, v)| v));
        }
        all
    }
}
