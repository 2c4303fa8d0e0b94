//! From `raw` structs to the domain types of `config`, with no IO. Every problem is
//! collected (not just the first) and placed in the file by its key path.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveTime;

use super::locate::{Locator, Position};
use super::raw::{RawConfig, RawDestination, RawLog, RawNotify, RawSchedule, RawSecret, RawSite};
use super::secret::{Secret, SecretSource, has_inline_password};
use super::units::{parse_date, parse_duration};
use super::{
    Config, ConfigError, ConfigErrors, DataKind, Destination, DestinationKind, EventClass,
    FileNameFormat, FilesDestination, LogConfig, MetricsConfig, Notifier, NotifierKind,
    NotifierSecrets, OnConflict, PipelineConfig, ResolvedSecrets, RetryPolicy, Schedule,
    SessionFormat, Site, SmtpNotifier, SmtpTls, SqlConnection, SqlDestination, SqlDialect,
    StartFrom, Transfer, WebhookNotifier, host_without_port,
};
use super::{DEFAULT_REQUESTS_PER_HOUR, Proxy};

const MIN_EVERY: Duration = Duration::from_secs(60);
const MAX_EVERY: Duration = Duration::from_secs(7 * 86_400);
const DAY: u64 = 86_400;

/// Problems found so far, each with its key path; placed in the file at the end.
struct Problems {
    errors: Vec<(String, String)>,
    warnings: Vec<(String, String)>,
}

impl Problems {
    fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push((key.into(), message.into()));
    }

    fn warn(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.warnings.push((key.into(), message.into()));
    }

    fn duration(&mut self, key: &str, text: Option<&str>, default: Duration) -> Duration {
        match text.map(parse_duration) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.error(key, e);
                default
            }
        }
    }
}

pub(super) fn parse_and_validate(path: &Path, src: &str) -> Result<Config, ConfigErrors> {
    let locator = Locator::new(src);
    let place = |key: String, message: String| ConfigError {
        file: path.to_path_buf(),
        position: locator.position_of(&key),
        key,
        message,
    };
    let raw: RawConfig = match toml::from_str(src) {
        Ok(raw) => raw,
        Err(e) => {
            let offset = e.span().map_or(0, |s| s.start);
            return Err(ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                position: Position::of_offset(src, offset),
                key: locator.path_at(offset),
                message: serde_message(e.message()),
            }]));
        }
    };
    // Relative paths are relative to the working directory, as with any command line
    // tool; services should use absolute paths.
    let mut problems = Problems {
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let config = build(raw, path, &mut problems);
    if problems.errors.is_empty() {
        let mut config = config;
        config.warnings = problems
            .warnings
            .into_iter()
            .map(|(k, m)| place(k, m))
            .collect();
        Ok(config)
    } else {
        let mut errors: Vec<ConfigError> = problems
            .errors
            .into_iter()
            .map(|(k, m)| place(k, m))
            .collect();
        errors.sort_by_key(|e| (e.position.line, e.position.column));
        Err(ConfigErrors(errors))
    }
}

/// Serde's messages, made a little friendlier where they are cryptic.
fn serde_message(message: &str) -> String {
    let message = message.trim().trim_end_matches('.');
    if message.contains("untagged enum RawSecret") {
        return "expected a secret: a string, { env = \"NAME\" } or { file = \"PATH\" }".into();
    }
    message.to_string()
}

fn build(raw: RawConfig, path: &Path, p: &mut Problems) -> Config {
    if raw.state_dir.trim().is_empty() {
        p.error("state_dir", "must not be empty");
    }
    let start_from = match raw.start_from.as_deref() {
        None => StartFrom::Ago(Duration::from_secs(7 * DAY)),
        Some(text) => match parse_duration(text) {
            Ok(d) => StartFrom::Ago(d),
            Err(_) => match parse_date(text) {
                Ok(t) => StartFrom::At(t),
                Err(_) => {
                    p.error(
                        "start_from",
                        format!("\"{text}\" is neither a duration (\"7d\") nor a date (YYYY-MM-DD or RFC 3339)"),
                    );
                    StartFrom::Ago(Duration::from_secs(7 * DAY))
                }
            },
        },
    };

    let listen_text = raw
        .metrics
        .as_ref()
        .and_then(|m| m.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:9464".into());
    let listen = listen_text.parse::<SocketAddr>().unwrap_or_else(|_| {
        p.error(
            "metrics.listen",
            format!("\"{listen_text}\" is not an address like 127.0.0.1:9464"),
        );
        SocketAddr::from(([127, 0, 0, 1], 9464))
    });

    let pipeline = build_pipeline(&raw, p);

    let mut site_names = BTreeSet::new();
    let sites: Vec<Site> = raw
        .site
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let key = format!("site[{i}]");
            if !site_names.insert(s.name.clone()) {
                p.error(
                    format!("{key}.name"),
                    format!("a site named \"{}\" is already defined", s.name),
                );
            }
            build_site(s, &key, p)
        })
        .collect();

    let mut dest_names = BTreeSet::new();
    let destinations: Vec<Destination> = raw
        .destination
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            let key = format!("destination[{i}]");
            if !dest_names.insert(d.name.clone()) {
                p.error(
                    format!("{key}.name"),
                    format!("a destination named \"{}\" is already defined", d.name),
                );
            }
            build_destination(d, &key, p)
        })
        .collect();

    let mut schedule_names = BTreeSet::new();
    let schedules = raw
        .schedule
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let key = format!("schedule[{i}]");
            if !schedule_names.insert(s.name.clone()) {
                p.error(
                    format!("{key}.name"),
                    format!("a schedule named \"{}\" is already defined", s.name),
                );
            }
            build_schedule(s, &key, &sites, &raw.destination, &destinations, p)
        })
        .collect();

    let mut notify_names = BTreeSet::new();
    let notifiers = raw
        .notify
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let key = format!("notify[{i}]");
            if !notify_names.insert(n.name.clone()) {
                p.error(
                    format!("{key}.name"),
                    format!("a notifier named \"{}\" is already defined", n.name),
                );
            }
            build_notifier(n, &key, p)
        })
        .collect();
    let log = raw
        .log
        .as_ref()
        .map_or_else(LogConfig::default, |l| build_log(l, p));

    for (key, name) in [
        ("site", &site_names),
        ("destination", &dest_names),
        ("schedule", &schedule_names),
        ("notify", &notify_names),
    ] {
        for n in name.iter() {
            if n.trim().is_empty() {
                p.error(key, format!("a {key} has an empty name"));
            }
        }
    }

    Config {
        source: path.to_path_buf(),
        state_dir: PathBuf::from(&raw.state_dir),
        start_from,
        metrics: MetricsConfig { listen },
        pipeline,
        sites,
        destinations,
        schedules,
        notifiers,
        log,
        warnings: Vec::new(),
    }
}

fn build_pipeline(raw: &RawConfig, p: &mut Problems) -> PipelineConfig {
    let rp = raw.pipeline.as_ref();
    let text =
        |f: fn(&super::raw::RawPipeline) -> Option<&String>| rp.and_then(f).map(String::as_str);
    let overlap = p.duration(
        "pipeline.overlap",
        text(|r| r.overlap.as_ref()),
        Duration::from_secs(15 * 60),
    );
    let settle_lag = p.duration(
        "pipeline.settle_lag",
        text(|r| r.settle_lag.as_ref()),
        Duration::from_secs(120),
    );
    let max_window = p.duration(
        "pipeline.max_window",
        text(|r| r.max_window.as_ref()),
        Duration::from_secs(DAY),
    );
    if max_window < Duration::from_secs(1) {
        p.error("pipeline.max_window", "must be at least 1s");
    }
    let in_progress_max_age = p.duration(
        "pipeline.in_progress_max_age",
        text(|r| r.in_progress_max_age.as_ref()),
        Duration::from_secs(DAY),
    );
    let stall_after = p.duration(
        "pipeline.stall_after",
        text(|r| r.stall_after.as_ref()),
        Duration::from_secs(15 * 60),
    );
    if stall_after < Duration::from_secs(10) {
        p.error("pipeline.stall_after", "must be at least 10s");
    }
    let max_body_bytes = rp.and_then(|r| r.max_body_bytes).unwrap_or(64 << 20);
    if max_body_bytes < 4096 {
        p.error("pipeline.max_body_bytes", "must be at least 4096");
    }
    let rr = rp.and_then(|r| r.retry.as_ref());
    let max_attempts = match rr.and_then(|r| r.max_attempts) {
        None => 10,
        Some(n) if (1..=1000).contains(&n) => n as u32,
        Some(n) => {
            p.error(
                "pipeline.retry.max_attempts",
                format!("{n} is out of range; use 1 to 1000"),
            );
            10
        }
    };
    let initial = p.duration(
        "pipeline.retry.initial",
        rr.and_then(|r| r.initial.as_deref()),
        Duration::from_secs(1),
    );
    let max_interval = p.duration(
        "pipeline.retry.max_interval",
        rr.and_then(|r| r.max_interval.as_deref()),
        Duration::from_secs(300),
    );
    if max_interval < initial {
        p.error(
            "pipeline.retry.max_interval",
            "must not be shorter than retry.initial",
        );
    }
    let max_state_bytes = rp.and_then(|r| r.max_state_bytes);
    if max_state_bytes.is_some_and(|n| n < 1 << 20) {
        p.error(
            "pipeline.max_state_bytes",
            "must be at least 1048576 (1 MiB): the queue database alone takes that",
        );
    }
    PipelineConfig {
        overlap,
        settle_lag,
        max_window,
        max_body_bytes,
        in_progress_max_age,
        stall_after,
        retry: RetryPolicy {
            max_attempts,
            initial,
            max_interval,
        },
        max_state_bytes,
        min_free_bytes: rp
            .and_then(|r| r.min_free_bytes)
            .unwrap_or(super::DEFAULT_MIN_FREE_BYTES),
    }
}

fn secret_source(raw: &RawSecret, key: &str, p: &mut Problems, warn_plain: bool) -> SecretSource {
    match raw {
        RawSecret::Plain(value) => {
            if warn_plain {
                p.warn(
                    key,
                    "secret written in the pipeline file; prefer { env = \"NAME\" } or { file = \"PATH\" }",
                );
            }
            if value.is_empty() {
                p.error(key, "the secret is empty");
            }
            SecretSource::Plain(Secret::new(value.clone()))
        }
        RawSecret::Env { env } => {
            if env.trim().is_empty() {
                p.error(key, "the environment variable name is empty");
            }
            SecretSource::Env(env.clone())
        }
        RawSecret::File { file } => SecretSource::File(PathBuf::from(file)),
    }
}

fn build_site(s: &RawSite, key: &str, p: &mut Problems) -> Site {
    let host = s.host.trim();
    let host_key = format!("{key}.host");
    if let Some(idx) = host.find("://") {
        p.error(
            &host_key,
            format!(
                "\"{host}\" has a scheme; write the host name only, like \"{}\" (drop \"{}\")",
                host[idx + 3..].trim_end_matches('/'),
                &host[..idx + 3]
            ),
        );
    } else if host.is_empty() {
        p.error(&host_key, "must not be empty");
    } else if host.contains('/') {
        p.error(
            &host_key,
            format!("\"{host}\" has a path; write host or host:port only"),
        );
    } else if host.chars().any(char::is_whitespace) {
        p.error(&host_key, format!("\"{host}\" contains white space"));
    } else if let Some(port) = port_of(host)
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        p.error(&host_key, format!("\"{port}\" is not a valid port"));
    }
    if s.client_id.trim().is_empty() {
        p.error(format!("{key}.client_id"), "must not be empty");
    }
    let client_secret = secret_source(&s.client_secret, &format!("{key}.client_secret"), p, true);
    let backup_password = s
        .backup_password
        .as_ref()
        .map(|b| secret_source(b, &format!("{key}.backup_password"), p, true));
    if s.insecure_http {
        p.warn(
            format!("{key}.insecure_http"),
            "plain HTTP sends the client secret and session data unencrypted; use it for test rigs only",
        );
    }
    let requests_per_second = s.requests_per_second.unwrap_or(10.0);
    if !(requests_per_second > 0.0 && requests_per_second <= 1000.0) {
        p.error(
            format!("{key}.requests_per_second"),
            format!("{requests_per_second} is out of range; use more than 0 and at most 1000"),
        );
    }
    if requests_per_second > 20.0 {
        p.warn(
            format!("{key}.requests_per_second"),
            format!("{requests_per_second} is more than the 20 a second the vendor allows an API account; the appliance refuses the rest"),
        );
    }
    let requests_per_hour = match s.requests_per_hour {
        None => DEFAULT_REQUESTS_PER_HOUR,
        Some(n) if (1..=1_000_000).contains(&n) => {
            if n > 15_000 {
                p.warn(
                    format!("{key}.requests_per_hour"),
                    format!("{n} is more than the 15,000 an hour the vendor allows an API account; the appliance refuses the rest"),
                );
            }
            n as u32
        }
        Some(n) => {
            p.error(
                format!("{key}.requests_per_hour"),
                format!("{n} is out of range; use 1 to 1000000 (the vendor allows 15000)"),
            );
            DEFAULT_REQUESTS_PER_HOUR
        }
    };
    let live_reserve = match s.live_reserve {
        None => requests_per_hour / 10,
        Some(n) if n >= 0 && n < i64::from(requests_per_hour) => n as u32,
        Some(n) => {
            p.error(
                format!("{key}.live_reserve"),
                format!("{n} is out of range; use 0 up to less than requests_per_hour ({requests_per_hour})"),
            );
            requests_per_hour / 10
        }
    };
    let proxy = match s.proxy.as_deref().map(str::trim) {
        None => Proxy::Environment,
        Some("none") => Proxy::None,
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            if url.len() <= "https://".len() || url.chars().any(char::is_whitespace) {
                p.error(
                    format!("{key}.proxy"),
                    "not a proxy URL; use http://host:port, https://host:port or \"none\"",
                );
            }
            Proxy::Url(url.to_string())
        }
        Some(other) => {
            p.error(
                format!("{key}.proxy"),
                format!("\"{}\" is not a proxy; use an http:// or https:// URL, or \"none\" (absent: HTTPS_PROXY and NO_PROXY from the environment)", super::redact_userinfo(other)),
            );
            Proxy::Environment
        }
    };
    let max_in_flight = match s.max_in_flight {
        None => 1,
        Some(n) if (1..=64).contains(&n) => n as usize,
        Some(n) => {
            p.error(
                format!("{key}.max_in_flight"),
                format!("{n} is out of range; use 1 to 64"),
            );
            1
        }
    };
    let timeout = p.duration(
        &format!("{key}.timeout"),
        s.timeout.as_deref(),
        Duration::from_secs(300),
    );
    Site {
        name: s.name.clone(),
        host: host.to_string(),
        client_id: s.client_id.clone(),
        client_secret,
        ca_file: s.ca_file.as_deref().map(PathBuf::from),
        insecure_http: s.insecure_http,
        backup_password,
        requests_per_second,
        requests_per_hour,
        live_reserve,
        proxy,
        max_in_flight,
        timeout,
    }
}

fn port_of(host: &str) -> Option<&str> {
    if host.starts_with('[') {
        let close = host.find(']')?;
        return host[close + 1..].strip_prefix(':');
    }
    host.split_once(':').map(|(_, port)| port)
}

fn build_destination(d: &RawDestination, key: &str, p: &mut Problems) -> Option<Destination> {
    // Keys that belong to one type only; any other type names them as misplaced.
    let present: [(&str, bool); 8] = [
        ("directory", d.directory.is_some()),
        ("file_name_format", d.file_name_format.is_some()),
        ("on_conflict", d.on_conflict.is_some()),
        ("retention_count", d.retention_count.is_some()),
        ("format", d.format.is_some()),
        ("url", d.url.is_some()),
        ("path", d.path.is_some()),
        (
            "store_system_information",
            d.store_system_information.is_some(),
        ),
    ];
    let allowed: &[&str] = match d.kind.as_str() {
        "files" => &[
            "directory",
            "file_name_format",
            "on_conflict",
            "retention_count",
            "format",
        ],
        "sqlserver" | "postgres" => &["url", "store_system_information", "batch_size"],
        "sqlite" => &["path", "store_system_information", "batch_size"],
        other => {
            p.error(
                format!("{key}.type"),
                format!(
                    "unknown destination type \"{other}\"; use files, sqlserver, postgres or sqlite"
                ),
            );
            return None;
        }
    };
    for (name, is_set) in present {
        if is_set && !allowed.contains(&name) {
            p.error(
                format!("{key}.{name}"),
                format!("not a key of a {} destination", d.kind),
            );
        }
    }
    if d.batch_size.is_some() && d.kind == "files" {
        p.error(
            format!("{key}.batch_size"),
            "not a key of a files destination",
        );
    }
    let kind = match d.kind.as_str() {
        "files" => {
            let directory = match d.directory.as_deref() {
                Some(dir) if !dir.trim().is_empty() => PathBuf::from(dir),
                _ => {
                    p.error(
                        format!("{key}.directory"),
                        "a files destination needs a directory",
                    );
                    PathBuf::new()
                }
            };
            let file_name_format = d.file_name_format.as_deref().and_then(|f| {
                FileNameFormat::parse(f)
                    .map_err(|e| p.error(format!("{key}.file_name_format"), e))
                    .ok()
            });
            let on_conflict = match d.on_conflict.as_deref() {
                None | Some("append_number") => OnConflict::AppendNumber,
                Some("overwrite") => OnConflict::Overwrite,
                Some("skip") => OnConflict::Skip,
                Some(other) => {
                    p.error(
                        format!("{key}.on_conflict"),
                        format!("unknown value \"{other}\"; use append_number, overwrite or skip"),
                    );
                    OnConflict::AppendNumber
                }
            };
            let retention_count = match d.retention_count {
                None => None,
                Some(n) if (1..=100_000).contains(&n) => Some(n as u32),
                Some(n) => {
                    p.error(
                        format!("{key}.retention_count"),
                        format!("{n} is out of range; use 1 or more, or leave it out to keep all backups"),
                    );
                    None
                }
            };
            let format = match d.format.as_deref() {
                None | Some("xml") => SessionFormat::Xml,
                Some("json") => SessionFormat::Json,
                Some(other) => {
                    p.error(
                        format!("{key}.format"),
                        format!("unknown format \"{other}\"; use xml or json"),
                    );
                    SessionFormat::Xml
                }
            };
            DestinationKind::Files(FilesDestination {
                directory,
                file_name_format,
                on_conflict,
                retention_count,
                format,
            })
        }
        sql => {
            let dialect = match sql {
                "sqlserver" => SqlDialect::SqlServer,
                "postgres" => SqlDialect::Postgres,
                _ => SqlDialect::Sqlite,
            };
            let connection = if dialect == SqlDialect::Sqlite {
                match d.path.as_deref() {
                    Some(path) if !path.trim().is_empty() => {
                        SqlConnection::Path(PathBuf::from(path))
                    }
                    _ => {
                        p.error(format!("{key}.path"), "a sqlite destination needs a path");
                        SqlConnection::Path(PathBuf::new())
                    }
                }
            } else {
                match &d.url {
                    Some(url) => {
                        let url_key = format!("{key}.url");
                        if let RawSecret::Plain(text) = url {
                            if dialect == SqlDialect::Postgres
                                && !(text.starts_with("postgres://")
                                    || text.starts_with("postgresql://"))
                                && !text.contains('=')
                            {
                                p.error(&url_key, "expected postgres://user@host:port/database or key=value pairs");
                            }
                            if has_inline_password(text) {
                                p.warn(
                                    &url_key,
                                    "the connection string holds a password; prefer url = { env = \"NAME\" } or { file = \"PATH\" }",
                                );
                            }
                        }
                        SqlConnection::Url(secret_source(url, &url_key, p, false))
                    }
                    None => {
                        p.error(
                            format!("{key}.url"),
                            format!("a {sql} destination needs a url"),
                        );
                        SqlConnection::Url(SecretSource::Plain(Secret::new("")))
                    }
                }
            };
            let batch_size = match d.batch_size {
                None => 500,
                Some(n) if (1..=100_000).contains(&n) => n as usize,
                Some(n) => {
                    p.error(
                        format!("{key}.batch_size"),
                        format!("{n} is out of range; use 1 to 100000"),
                    );
                    500
                }
            };
            DestinationKind::Sql(SqlDestination {
                dialect,
                connection,
                store_system_information: d.store_system_information.unwrap_or(false),
                batch_size,
            })
        }
    };
    Some(Destination {
        name: d.name.clone(),
        kind,
    })
}

fn build_schedule(
    s: &RawSchedule,
    key: &str,
    sites: &[Site],
    raw_destinations: &[RawDestination],
    destinations: &[Destination],
    p: &mut Problems,
) -> Schedule {
    let every_key = format!("{key}.every");
    let every = match parse_duration(&s.every) {
        Ok(d) if (MIN_EVERY..=MAX_EVERY).contains(&d) => d,
        Ok(_) => {
            p.error(
                &every_key,
                format!("\"{}\" is out of range; use 1m to 7d", s.every),
            );
            MIN_EVERY
        }
        Err(e) => {
            p.error(&every_key, e);
            MIN_EVERY
        }
    };
    let at = s.at.as_deref().and_then(|text| {
        let at_key = format!("{key}.at");
        if every.as_secs() % DAY != 0 {
            p.error(
                &at_key,
                format!(
                    "a time of day needs a period of whole days, but every = \"{}\"",
                    s.every
                ),
            );
            return None;
        }
        NaiveTime::parse_from_str(text, "%H:%M")
            .map_err(|_| {
                p.error(
                    &at_key,
                    format!("\"{text}\" is not a UTC time of day like \"02:00\""),
                )
            })
            .ok()
    });
    if s.transfer.is_empty() {
        p.error(key, "a schedule needs at least one [[schedule.transfer]]");
    }
    let transfers = s
        .transfer
        .iter()
        .enumerate()
        .map(|(j, t)| {
            let tkey = format!("{key}.transfer[{j}]");
            if !sites.iter().any(|site| site.name == t.site) {
                p.error(format!("{tkey}.site"), format!("no site named \"{}\"", t.site));
            }
            let dest = destinations.iter().find(|d| d.name == t.destination);
            let dest_known = dest.is_some() || raw_destinations.iter().any(|d| d.name == t.destination);
            if !dest_known {
                p.error(
                    format!("{tkey}.destination"),
                    format!("no destination named \"{}\"", t.destination),
                );
            }
            if t.data.is_empty() {
                p.error(format!("{tkey}.data"), "list at least one of sessions, recordings, presentations, presentation_recordings, backups");
            }
            let mut data = Vec::new();
            for (k, item) in t.data.iter().enumerate() {
                let dkey = format!("{tkey}.data[{k}]");
                match DataKind::parse(item) {
                    None => p.error(
                        dkey,
                        format!("unknown data kind \"{item}\"; use sessions, recordings, presentations, presentation_recordings or backups"),
                    ),
                    Some(kind) if data.contains(&kind) => p.error(dkey, format!("\"{item}\" is listed twice")),
                    Some(kind) => {
                        if let Some(d) = dest
                            && !d.takes(kind) {
                                p.error(
                                    dkey,
                                    format!(
                                        "{item} can only go to a files destination, but \"{}\" is {}",
                                        d.name,
                                        d.type_name()
                                    ),
                                );
                            }
                        data.push(kind);
                    }
                }
            }
            if t.include_in_progress && !data.contains(&DataKind::Sessions) {
                p.error(format!("{tkey}.include_in_progress"), "only applies to transfers of sessions");
            }
            Transfer {
                site: t.site.clone(),
                destination: t.destination.clone(),
                data,
                include_in_progress: t.include_in_progress,
            }
        })
        .collect();
    Schedule {
        name: s.name.clone(),
        every,
        at,
        transfers,
    }
}

pub(super) fn resolve_secrets(config: &Config) -> (ResolvedSecrets, Vec<ConfigError>) {
    let src = std::fs::read_to_string(&config.source).unwrap_or_default();
    let locator = Locator::new(&src);
    let mut errors = Vec::new();
    let mut out = ResolvedSecrets::default();
    let mut resolve = |key: String, source: &SecretSource| match source.resolve() {
        Ok(secret) => Some(secret),
        Err(e) => {
            errors.push(ConfigError {
                file: config.source.clone(),
                position: locator.position_of(&key),
                key,
                message: e.to_string(),
            });
            None
        }
    };
    for (i, site) in config.sites.iter().enumerate() {
        if let Some(s) = resolve(format!("site[{i}].client_secret"), &site.client_secret) {
            out.client_secrets.insert(site.name.clone(), s);
        }
        if let Some(b) = &site.backup_password
            && let Some(s) = resolve(format!("site[{i}].backup_password"), b)
        {
            out.backup_passwords.insert(site.name.clone(), s);
        }
    }
    for (i, d) in config.destinations.iter().enumerate() {
        if let DestinationKind::Sql(SqlDestination {
            connection: SqlConnection::Url(url),
            ..
        }) = &d.kind
            && let Some(s) = resolve(format!("destination[{i}].url"), url)
        {
            out.urls.insert(d.name.clone(), s);
        }
    }
    for (i, n) in config.notifiers.iter().enumerate() {
        let mut read = NotifierSecrets::default();
        match &n.kind {
            NotifierKind::Smtp(smtp) => {
                if let Some(password) = &smtp.password {
                    read.password = resolve(format!("notify[{i}].password"), password);
                }
            }
            NotifierKind::Webhook(hook) => {
                read.url = resolve(format!("notify[{i}].url"), &hook.url);
                for (name, value) in &hook.headers {
                    if let Some(v) = resolve(format!("notify[{i}].headers.{name}"), value) {
                        read.headers.push((name.clone(), v));
                    }
                }
            }
        }
        out.notifiers.insert(n.name.clone(), read);
    }
    (out, errors)
}

/// Whether `host` (a name or address, maybe with a port) is this machine's loopback,
/// where an unencrypted connection never leaves the host.
pub(crate) fn is_loopback(host: &str) -> bool {
    let name = host_without_port(host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn build_notifier(n: &RawNotify, key: &str, p: &mut Problems) -> Option<Notifier> {
    let present: [(&str, bool); 9] = [
        ("host", n.host.is_some()),
        ("tls", n.tls.is_some()),
        ("from", n.from.is_some()),
        ("to", n.to.is_some()),
        ("username", n.username.is_some()),
        ("password", n.password.is_some()),
        ("ca_file", n.ca_file.is_some()),
        ("url", n.url.is_some()),
        ("headers", n.headers.is_some()),
    ];
    let allowed: &[&str] = match n.kind.as_str() {
        "smtp" => &[
            "host", "tls", "from", "to", "username", "password", "ca_file",
        ],
        "webhook" => &["url", "headers"],
        other => {
            p.error(
                format!("{key}.type"),
                format!("unknown notifier type \"{other}\"; use smtp or webhook"),
            );
            return None;
        }
    };
    for (name, is_set) in present {
        if is_set && !allowed.contains(&name) {
            p.error(
                format!("{key}.{name}"),
                format!("not a key of a {} notifier", n.kind),
            );
        }
    }
    let kind = if n.kind == "smtp" {
        NotifierKind::Smtp(build_smtp(n, key, p))
    } else {
        NotifierKind::Webhook(build_webhook(n, key, p))
    };
    let min_interval = p.duration(
        &format!("{key}.min_interval"),
        n.min_interval.as_deref(),
        Duration::from_secs(15 * 60),
    );
    if min_interval < Duration::from_secs(1) {
        p.error(format!("{key}.min_interval"), "must be at least 1s");
    }
    let failing_after = p.duration(
        &format!("{key}.failing_after"),
        n.failing_after.as_deref(),
        Duration::from_secs(15 * 60),
    );
    let events = match &n.events {
        None => EventClass::ALL.to_vec(),
        Some(list) => {
            let names = EventClass::ALL.map(EventClass::as_str).join(", ");
            if list.is_empty() {
                p.error(
                    format!("{key}.events"),
                    format!("list at least one of {names} (or leave the key out for all)"),
                );
            }
            let mut events = Vec::new();
            for (j, item) in list.iter().enumerate() {
                let ekey = format!("{key}.events[{j}]");
                match EventClass::parse(item) {
                    None => p.error(ekey, format!("unknown event \"{item}\"; use {names}")),
                    Some(c) if events.contains(&c) => {
                        p.error(ekey, format!("\"{item}\" is listed twice"))
                    }
                    Some(c) => events.push(c),
                }
            }
            events
        }
    };
    Some(Notifier {
        name: n.name.clone(),
        kind,
        min_interval,
        events,
        failing_after,
    })
}

fn build_smtp(n: &RawNotify, key: &str, p: &mut Problems) -> SmtpNotifier {
    let tls = match n.tls.as_deref() {
        None | Some("starttls") => SmtpTls::StartTls,
        Some("tls") => SmtpTls::Tls,
        Some("none") => SmtpTls::None,
        Some(other) => {
            p.error(
                format!("{key}.tls"),
                format!("unknown value \"{other}\"; use starttls, tls or none"),
            );
            SmtpTls::StartTls
        }
    };
    let default_port = match tls {
        SmtpTls::StartTls => 587,
        SmtpTls::Tls => 465,
        SmtpTls::None => 25,
    };
    let host_key = format!("{key}.host");
    let host = n.host.as_deref().unwrap_or("").trim();
    let mut port = default_port;
    if host.is_empty() {
        p.error(
            &host_key,
            "an smtp notifier needs a host (host or host:port)",
        );
    } else if host.contains("://") || host.contains('/') {
        p.error(
            &host_key,
            format!("\"{host}\" is not a host name; write host or host:port, no scheme"),
        );
    } else if let Some(text) = port_of(host) {
        match text.parse::<u16>() {
            Ok(n) if n > 0 => port = n,
            _ => p.error(&host_key, format!("\"{text}\" is not a valid port")),
        }
    }
    if tls == SmtpTls::None && !host.is_empty() && !is_loopback(host) {
        p.warn(
            format!("{key}.tls"),
            "tls = \"none\" sends mail (and any password) unencrypted over the network; use it for loopback relays and test rigs only",
        );
    }
    let mailbox = |p: &mut Problems, key: String, text: &str| {
        text.parse::<lettre::message::Mailbox>()
            .map_err(|_| {
                p.error(
                    key,
                    format!("\"{text}\" is not an e-mail address like btic@example.com or \"btic <btic@example.com>\""),
                )
            })
            .ok()
    };
    let from = match n.from.as_deref() {
        Some(text) => mailbox(p, format!("{key}.from"), text),
        None => {
            p.error(
                format!("{key}.from"),
                "an smtp notifier needs a from address",
            );
            None
        }
    };
    let mut to = Vec::new();
    match n.to.as_deref() {
        None | Some([]) => p.error(
            format!("{key}.to"),
            "an smtp notifier needs at least one address in to = [...]",
        ),
        Some(list) => {
            for (j, text) in list.iter().enumerate() {
                to.extend(mailbox(p, format!("{key}.to[{j}]"), text));
            }
        }
    }
    let password = n
        .password
        .as_ref()
        .map(|s| secret_source(s, &format!("{key}.password"), p, true));
    match (&n.username, &n.password) {
        (Some(_), None) => p.error(
            format!("{key}.username"),
            "SMTP AUTH needs a password as well as a username",
        ),
        (None, Some(_)) => p.error(
            format!("{key}.password"),
            "SMTP AUTH needs a username as well as a password",
        ),
        _ => {}
    }
    SmtpNotifier {
        server: host_without_port(host)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
        tls,
        from: from.unwrap_or_else(|| {
            lettre::message::Mailbox::new(
                None,
                lettre::Address::new("btic", "invalid").expect("a valid address"),
            )
        }),
        to,
        username: n.username.clone(),
        password,
        ca_file: n.ca_file.as_deref().map(PathBuf::from),
    }
}

fn build_webhook(n: &RawNotify, key: &str, p: &mut Problems) -> WebhookNotifier {
    let url_key = format!("{key}.url");
    let url = match &n.url {
        None => {
            p.error(&url_key, "a webhook notifier needs a url");
            SecretSource::Plain(Secret::new(""))
        }
        Some(raw) => {
            if let RawSecret::Plain(text) = raw {
                match check_webhook_url(text) {
                    Err(e) => p.error(&url_key, e),
                    Ok(host) if !is_loopback(&host) => {
                        p.warn(
                            &url_key,
                            "the webhook URL is written in the pipeline file, and incoming-webhook URLs carry their token; prefer url = { env = \"NAME\" } or { file = \"PATH\" }",
                        );
                        if text.starts_with("http://") {
                            p.warn(
                                &url_key,
                                "plain http sends every message unencrypted; use https",
                            );
                        }
                    }
                    Ok(_) => {}
                }
            }
            secret_source(raw, &url_key, p, false)
        }
    };
    let mut headers = Vec::new();
    for (name, value) in n.headers.iter().flatten() {
        let hkey = format!("{key}.headers.{name}");
        if name.is_empty() || !name.bytes().all(is_header_name_byte) {
            p.error(&hkey, format!("\"{name}\" is not a valid HTTP header name"));
        }
        headers.push((name.clone(), secret_source(value, &hkey, p, false)));
    }
    WebhookNotifier { url, headers }
}

/// Checks a webhook URL as written; returns its host (and port) for the loopback test.
/// The message never repeats the URL, which may hold a token.
pub(crate) fn check_webhook_url(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or("expected an http:// or https:// URL")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err("the URL has no host name".into());
    }
    Ok(host.to_string())
}

/// RFC 9110 token characters, the only ones a header name may have.
fn is_header_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn build_log(l: &RawLog, p: &mut Problems) -> LogConfig {
    let file = match l.file.as_deref() {
        Some(f) if f.trim().is_empty() || f.ends_with('/') => {
            p.error(
                "log.file",
                "expected the path of a file, like \"/var/log/btic/btic.log\"",
            );
            None
        }
        Some(f) => Some(PathBuf::from(f)),
        None => None,
    };
    let keep_days = match l.keep_days {
        None => None,
        Some(n) if (1..=36_500).contains(&n) => Some(n as u32),
        Some(n) => {
            p.error(
                "log.keep_days",
                format!("{n} is out of range; use 1 or more, or leave it out to keep every file"),
            );
            None
        }
    };
    if keep_days.is_some() && file.is_none() {
        p.error("log.keep_days", "applies to log.file, which is not set");
    }
    LogConfig { file, keep_days }
}
