//! From `raw` structs to the domain types of `config`, with no IO: one file per section
//! of the pipeline file (`site`, `destination`, `schedule`, `notify`), the top level and
//! `[pipeline]`/`[log]` here. Every problem is collected (not just the first) and placed
//! in the file by its key path. Secrets are only named here; `config/secrets.rs` reads
//! them.

mod destination;
mod notify;
mod schedule;
mod site;

pub(crate) use notify::check_webhook_url;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::defaults;
use super::locate::{Locator, Position};
use super::raw::{RawConfig, RawLog, RawSecret};
use super::secret::{Secret, SecretSource};
use super::units::{parse_date, parse_duration};
use super::{
    Config, ConfigError, ConfigErrors, ConsoleConfig, Destination, LogConfig, MetricsConfig,
    PipelineConfig, RetryPolicy, Site, StartFrom, host_without_port,
};
use destination::build_destination;
use notify::build_notifier;
use schedule::build_schedule;
use site::build_site;

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
        None => StartFrom::Ago(defaults::START_FROM),
        Some(text) => match parse_duration(text) {
            Ok(d) => StartFrom::Ago(d),
            Err(_) => match parse_date(text) {
                Ok(t) => StartFrom::At(t),
                Err(_) => {
                    p.error(
                        "start_from",
                        format!("\"{text}\" is neither a duration (\"7d\") nor a date (YYYY-MM-DD or RFC 3339)"),
                    );
                    StartFrom::Ago(defaults::START_FROM)
                }
            },
        },
    };

    let listen_text = raw
        .metrics
        .as_ref()
        .and_then(|m| m.listen.clone())
        .unwrap_or_else(|| defaults::METRICS_LISTEN.to_string());
    let listen = listen_text.parse::<SocketAddr>().unwrap_or_else(|_| {
        p.error(
            "metrics.listen",
            format!("\"{listen_text}\" is not an address like 127.0.0.1:9464"),
        );
        defaults::METRICS_LISTEN
    });

    let console = build_console(&raw, p);
    let pipeline = build_pipeline(&raw, p);

    let sites: Vec<Site> = named_list(
        ("site", "site"),
        &raw.site,
        |s| &s.name,
        p,
        |s, key, p| Some(build_site(s, key, p)),
    );
    let destinations: Vec<Destination> = named_list(
        ("destination", "destination"),
        &raw.destination,
        |d| &d.name,
        p,
        build_destination,
    );
    let schedules = named_list(
        ("schedule", "schedule"),
        &raw.schedule,
        |s| &s.name,
        p,
        |s, key, p| {
            Some(build_schedule(
                s,
                key,
                &sites,
                &raw.destination,
                &destinations,
                p,
            ))
        },
    );
    let notifiers = named_list(
        ("notify", "notifier"),
        &raw.notify,
        |n| &n.name,
        p,
        build_notifier,
    );
    let log = raw
        .log
        .as_ref()
        .map_or_else(LogConfig::default, |l| build_log(l, p));

    Config {
        source: path.to_path_buf(),
        state_dir: PathBuf::from(&raw.state_dir),
        start_from,
        metrics: MetricsConfig { listen },
        console,
        pipeline,
        sites,
        destinations,
        schedules,
        notifiers,
        log,
        warnings: Vec::new(),
    }
}

/// Builds each entry of a `[[section]]` list, keyed `section[i]`; names must be unique
/// and not empty.
fn named_list<R, T>(
    (section, noun): (&str, &str),
    raws: &[R],
    name: impl Fn(&R) -> &String,
    p: &mut Problems,
    mut build: impl FnMut(&R, &str, &mut Problems) -> Option<T>,
) -> Vec<T> {
    let mut names = BTreeSet::new();
    let built = raws
        .iter()
        .enumerate()
        .filter_map(|(i, raw)| {
            let key = format!("{section}[{i}]");
            let name = name(raw);
            if !names.insert(name.clone()) {
                p.error(
                    format!("{key}.name"),
                    format!("a {noun} named \"{name}\" is already defined"),
                );
            }
            build(raw, &key, p)
        })
        .collect();
    if names.iter().any(|n| n.trim().is_empty()) {
        p.error(section, format!("a {noun} has an empty name"));
    }
    built
}

fn build_pipeline(raw: &RawConfig, p: &mut Problems) -> PipelineConfig {
    let rp = raw.pipeline.as_ref();
    let text =
        |f: fn(&super::raw::RawPipeline) -> Option<&String>| rp.and_then(f).map(String::as_str);
    let overlap = p.duration(
        "pipeline.overlap",
        text(|r| r.overlap.as_ref()),
        defaults::OVERLAP,
    );
    let settle_lag = p.duration(
        "pipeline.settle_lag",
        text(|r| r.settle_lag.as_ref()),
        defaults::SETTLE_LAG,
    );
    let max_window = p.duration(
        "pipeline.max_window",
        text(|r| r.max_window.as_ref()),
        defaults::MAX_WINDOW,
    );
    if max_window < Duration::from_secs(1) {
        p.error("pipeline.max_window", "must be at least 1s");
    }
    let in_progress_max_age = p.duration(
        "pipeline.in_progress_max_age",
        text(|r| r.in_progress_max_age.as_ref()),
        defaults::IN_PROGRESS_MAX_AGE,
    );
    let stall_after = p.duration(
        "pipeline.stall_after",
        text(|r| r.stall_after.as_ref()),
        defaults::STALL_AFTER,
    );
    if stall_after < Duration::from_secs(10) {
        p.error("pipeline.stall_after", "must be at least 10s");
    }
    let max_body_bytes = rp
        .and_then(|r| r.max_body_bytes)
        .unwrap_or(defaults::MAX_BODY_BYTES);
    if max_body_bytes < 4096 {
        p.error("pipeline.max_body_bytes", "must be at least 4096");
    }
    let rr = rp.and_then(|r| r.retry.as_ref());
    let max_attempts = match rr.and_then(|r| r.max_attempts) {
        None => defaults::RETRY_MAX_ATTEMPTS,
        Some(n) if (1..=1000).contains(&n) => n as u32,
        Some(n) => {
            p.error(
                "pipeline.retry.max_attempts",
                format!("{n} is out of range; use 1 to 1000"),
            );
            defaults::RETRY_MAX_ATTEMPTS
        }
    };
    let initial = p.duration(
        "pipeline.retry.initial",
        rr.and_then(|r| r.initial.as_deref()),
        defaults::RETRY_INITIAL,
    );
    let max_interval = p.duration(
        "pipeline.retry.max_interval",
        rr.and_then(|r| r.max_interval.as_deref()),
        defaults::RETRY_MAX_INTERVAL,
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
            .unwrap_or(defaults::MIN_FREE_BYTES),
    }
}

fn build_console(raw: &RawConfig, p: &mut Problems) -> ConsoleConfig {
    let console = raw.console.as_ref();
    ConsoleConfig {
        enabled: console
            .and_then(|c| c.enabled)
            .unwrap_or(defaults::CONSOLE_ENABLED),
        token: console
            .and_then(|c| c.token.as_ref())
            .map(|t| secret_source(t, "console.token", p, true)),
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

fn port_of(host: &str) -> Option<&str> {
    if host.starts_with('[') {
        let close = host.find(']')?;
        return host[close + 1..].strip_prefix(':');
    }
    host.split_once(':').map(|(_, port)| port)
}

/// Whether `host` (a name or address, maybe with a port) is this machine's loopback,
/// where an unencrypted connection never leaves the host.
fn is_loopback(host: &str) -> bool {
    let name = host_without_port(host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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
