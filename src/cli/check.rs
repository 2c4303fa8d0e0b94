//! `btic check`: validate a pipeline file and print a one-screen summary.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::json;

use super::CliError;
use crate::config::units::format_duration;
use crate::config::{
    Config, DestinationKind, EventClass, Notifier, NotifierKind, SecretSource, SessionFormat,
    SqlConnection, StartFrom, secret::redact_connection_string,
};
use crate::pipeline::checks::{self, SiteProbe};

/// Runs `btic check`. Without `offline`, also contacts every site and destination.
pub fn check(path: &Path, offline: bool, json: bool) -> Result<(), CliError> {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            let n = errors.0.len();
            return Err(CliError::config(format!(
                "{}: {n} error{} in the pipeline file",
                path.display(),
                if n == 1 { "" } else { "s" }
            )));
        }
    };
    // Offline, a secret that cannot be read yet (an env var set only on the server) is
    // worth a warning, not a failure: the file itself is valid.
    let mut warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    if let Err(errors) = config.resolve_secrets() {
        warnings.extend(errors.0.iter().map(|e| format!("{e} (needed at run time)")));
    }
    // Text goes out as it is learned; JSON is one document, printed once complete.
    let mut document = json.then(|| summary_json(&config, &warnings));
    if !json {
        print!("{}", summary_text(&config, &warnings));
    }
    if offline {
        if let Some(document) = document {
            println!("{document}");
        }
        return Ok(());
    }
    // Whatever can be contacted is; a secret that cannot be read fails its own part.
    let (secrets, secret_errors) = config.resolve_available_secrets();
    for e in &secret_errors {
        eprintln!("error: {e}");
    }
    let mut site_checks = Vec::new();
    let mut destination_checks = Vec::new();
    let failed_sites = check_sites(&config, &secrets, json.then_some(&mut site_checks))
        + config
            .sites
            .iter()
            .filter(|site| !secrets.client_secrets.contains_key(&site.name))
            .count();
    let failed_destinations =
        check_destinations(&config, &secrets, json.then_some(&mut destination_checks))?;
    let mut notifier_checks = Vec::new();
    let failed_notifiers =
        check_notifiers(&config, &secrets, json.then_some(&mut notifier_checks))?;
    if let Some(document) = document.as_mut() {
        document["checks"] = json!({"sites": site_checks, "destinations": destination_checks,
                                    "notifiers": notifier_checks});
        println!("{document}");
    }
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let failed: Vec<String> = [
        (failed_sites, "site"),
        (failed_destinations, "destination"),
        (failed_notifiers, "notifier"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}{}", plural(n)))
    .collect();
    match failed.as_slice() {
        [] => Ok(()),
        [one] => Err(CliError::failed(format!("{one} failed the check"))),
        [init @ .., last] => Err(CliError::failed(format!(
            "{} and {last} failed the check",
            init.join(", ")
        ))),
    }
}

/// Greets every SMTP notifier's server as a send would (EHLO, STARTTLS or TLS, AUTH)
/// without sending anything; webhooks are left alone, since any request would post.
/// Prints one line each (or adds one object each to `json`) and returns how many failed.
fn check_notifiers(
    config: &Config,
    secrets: &crate::config::ResolvedSecrets,
    mut json: Option<&mut Vec<serde_json::Value>>,
) -> Result<usize, CliError> {
    use crate::notify::Redactor;

    if config.notifiers.is_empty() {
        return Ok(0);
    }
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| CliError::failed(format!("starting the runtime: {e}")))?;
    let redactor = Redactor::new(secrets);
    let mut failed = 0;
    for n in &config.notifiers {
        let outcome = runtime.block_on(checks::greet_notifier(n, secrets, &redactor));
        if let Some(json) = json.as_deref_mut() {
            json.push(match &outcome {
                Ok(Some(line)) => json!({"notifier": n.name, "ok": true, "detail": line}),
                Ok(None) => json!({"notifier": n.name, "ok": true, "detail": "not contacted"}),
                Err(e) => json!({"notifier": n.name, "ok": false, "error": e}),
            });
        }
        match outcome {
            Ok(line) if json.is_none() => println!(
                "notifier {}: {}",
                n.name,
                line.unwrap_or_else(|| {
                    "webhook not contacted (any request would post; btic notify test sends a test message)".into()
                })
            ),
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: notifier {}: {e}", n.name);
                failed += 1;
            }
        }
    }
    Ok(failed)
}

/// Tests every destination: SQL ones connect, create or migrate the schema and
/// round-trip a probe row in a transaction that is rolled back; files ones write and
/// remove a probe file. Prints one line each (or adds one object each to `json`) and
/// returns how many failed.
fn check_destinations(
    config: &Config,
    secrets: &crate::config::ResolvedSecrets,
    mut json: Option<&mut Vec<serde_json::Value>>,
) -> Result<usize, CliError> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| CliError::failed(format!("starting the runtime: {e}")))?;
    let mut failed = 0;
    for d in &config.destinations {
        let outcome = runtime.block_on(checks::destination(d, secrets));
        if let Some(json) = json.as_deref_mut() {
            json.push(match &outcome {
                Ok(line) => json!({"destination": d.name, "ok": true, "detail": line}),
                Err(e) => json!({"destination": d.name, "ok": false, "error": e}),
            });
        }
        match outcome {
            Ok(line) => {
                if json.is_none() {
                    println!("destination {}: {line}", d.name);
                }
            }
            Err(e) => {
                eprintln!("error: destination {}: {e}", d.name);
                failed += 1;
            }
        }
    }
    Ok(failed)
}

/// Contacts every site: a token, `get_api_info` (API version, the permissions btic needs,
/// the clock skew). Prints one block per site (or adds one object each to `json`) and
/// returns how many failed.
fn check_sites(
    config: &Config,
    secrets: &crate::config::ResolvedSecrets,
    mut json: Option<&mut Vec<serde_json::Value>>,
) -> usize {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return config.sites.len();
        }
    };
    let spool = std::env::temp_dir().join(format!("btic-check-{}", std::process::id()));
    let mut failed = 0;
    if json.is_none() {
        println!("\nsite checks");
    }
    for site in &config.sites {
        let Some(secret) = secrets.client_secrets.get(&site.name) else {
            continue;
        };
        let needed = checks::permissions_needed(config, site);
        match runtime.block_on(checks::probe_site(site, secret, &spool)) {
            Ok(probe) => {
                let missing = checks::missing_permissions(&probe, &needed);
                match json.as_deref_mut() {
                    Some(json) => json.push(site_json(site, &probe, &missing)),
                    None => print_site(site, &probe, &needed),
                }
                if !missing.is_empty() {
                    eprintln!(
                        "error: site \"{}\": the API account lacks {}",
                        site.name,
                        missing.join(", ")
                    );
                    failed += 1;
                }
            }
            Err(e) => {
                if let Some(json) = json.as_deref_mut() {
                    json.push(json!({"site": site.name, "ok": false, "error": e.to_string()}));
                } else {
                    println!("  {:<16} FAILED", site.name);
                }
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&spool);
    failed
}

/// A site's check for `--json`.
fn site_json(site: &crate::config::Site, probe: &SiteProbe, missing: &[&str]) -> serde_json::Value {
    json!({
        "site": site.name,
        "ok": missing.is_empty(),
        "api_version": probe.info.api_version,
        "permissions": probe.info.permissions.iter().map(|p| (p.name.clone(), p.value.clone())).collect::<std::collections::BTreeMap<_, _>>(),
        "missing_permissions": missing,
        "skew_seconds": probe.skew_seconds,
        "budget": {
            "requests_per_second": site.requests_per_second,
            "requests_per_hour": site.requests_per_hour,
            "live_reserve": site.live_reserve,
        },
        "rate_limit": {
            "limit": probe.budget.appliance_limit,
            "remaining": probe.budget.appliance_remaining,
        },
        "proxy": probe.proxy,
    })
}

/// A site's check for people.
fn print_site(site: &crate::config::Site, probe: &SiteProbe, needed: &[&str]) {
    use crate::appliance::has_permission;
    let (info, budget) = (&probe.info, &probe.budget);
    println!(
        "  {:<16} token ok, API version {}",
        site.name,
        info.api_version.as_deref().unwrap_or("unknown")
    );
    for p in needed {
        let value = info
            .permissions
            .iter()
            .find(|x| x.name == *p)
            .map_or("absent", |x| x.value.as_str());
        let verdict = if has_permission(info, p) {
            ""
        } else {
            "  MISSING"
        };
        println!("    {p:<28} {value}{verdict}");
    }
    match probe.skew_seconds {
        Some(s) => println!("    clock skew                   {s:+.1} s (appliance minus local)"),
        None => println!("    clock skew                   not measured"),
    }
    println!(
        "    API budget                   {} requests an hour ({} kept for the live lane), {} a second",
        site.requests_per_hour, site.live_reserve, site.requests_per_second
    );
    match (budget.appliance_limit, budget.appliance_remaining) {
        (Some(limit), Some(remaining)) => println!(
            "    appliance rate limit         X-RateLimit-Limit {limit}, X-RateLimit-Remaining {remaining}"
        ),
        _ => println!("    appliance rate limit         not announced (no X-RateLimit-* headers)"),
    }
    println!("    proxy                        {}", probe.proxy);
    if let Some(limit) = budget
        .appliance_limit
        .filter(|l| *l < site.requests_per_hour)
    {
        println!(
            "    warning: requests_per_hour {} is more than the appliance's limit {limit}",
            site.requests_per_hour
        );
    }
}

fn describe_destination(kind: &DestinationKind) -> String {
    match kind {
        DestinationKind::Files(f) => format!(
            "directory {}, {} files, on conflict {:?}{}{}",
            f.directory.display(),
            match f.format {
                SessionFormat::Xml => "xml",
                SessionFormat::Json => "json",
            },
            f.on_conflict,
            f.file_name_format
                .as_ref()
                .map(|n| format!(", names {}", n.text))
                .unwrap_or_default(),
            f.retention_count
                .map(|n| format!(", keeps {n} backups"))
                .unwrap_or_default(),
        ),
        DestinationKind::Sql(sql) => {
            let target = match &sql.connection {
                SqlConnection::Path(p) => format!("path {}", p.display()),
                SqlConnection::Url(crate::config::SecretSource::Plain(s)) => {
                    format!("url {}", redact_connection_string(s.expose()))
                }
                SqlConnection::Url(other) => format!("url from {other}"),
            };
            format!(
                "{target}, system information {}",
                if sql.store_system_information {
                    "stored"
                } else {
                    "not stored"
                }
            )
        }
    }
}

fn summary_text(config: &Config, warnings: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}: valid", config.source.display());
    write_settings(&mut out, config);
    let _ = writeln!(out, "\nsites ({})", config.sites.len());
    for s in &config.sites {
        let _ = writeln!(
            out,
            "  {:<16} {}  client {}, secret {}{}",
            s.name,
            s.base_url(),
            s.client_id,
            s.client_secret,
            if s.backup_password.is_some() {
                ", backup password set"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(out, "\ndestinations ({})", config.destinations.len());
    for d in &config.destinations {
        let _ = writeln!(
            out,
            "  {:<16} {:<9} {}",
            d.name,
            d.type_name(),
            describe_destination(&d.kind)
        );
    }
    write_schedules(&mut out, config);
    if !config.notifiers.is_empty() {
        let _ = writeln!(out, "\nnotifiers ({})", config.notifiers.len());
        for n in &config.notifiers {
            let _ = writeln!(
                out,
                "  {:<16} {:<9} {}",
                n.name,
                n.type_name(),
                describe_notifier(n)
            );
        }
    }
    if let Some(file) = &config.log.file {
        let _ = writeln!(
            out,
            "\nlog         {}, rotated daily, {}",
            file.display(),
            config
                .log
                .keep_days
                .map_or("rotated files kept".to_string(), |d| {
                    format!("rotated files removed after {d} days")
                })
        );
    }
    if !warnings.is_empty() {
        let _ = writeln!(out, "\nwarnings ({})", warnings.len());
        for w in warnings {
            let _ = writeln!(out, "  {w}");
        }
    }
    out
}

/// The settings of the whole daemon: state, start, metrics, windows, disk.
fn write_settings(out: &mut String, config: &Config) {
    let _ = writeln!(out, "state_dir   {}", config.state_dir.display());
    let start = match config.start_from {
        StartFrom::Ago(d) => format!("{} before appliance-now", format_duration(d)),
        StartFrom::At(t) => t.to_rfc3339(),
    };
    let _ = writeln!(out, "start_from  {start}");
    let _ = writeln!(out, "metrics     http://{}/metrics", config.metrics.listen);
    let p = &config.pipeline;
    let _ = writeln!(
        out,
        "windows     overlap {}, settle lag {}, at most {}; retry {} times, {} to {}",
        format_duration(p.overlap),
        format_duration(p.settle_lag),
        format_duration(p.max_window),
        p.retry.max_attempts,
        format_duration(p.retry.initial),
        format_duration(p.retry.max_interval)
    );
    let size = p.max_state_bytes.map_or("no size budget".to_string(), |b| {
        format!("at most {}", indicatif::HumanBytes(b))
    });
    let floor = match p.min_free_bytes {
        0 => "no free-space floor".to_string(),
        b => format!("keep {} free", indicatif::HumanBytes(b)),
    };
    let _ = writeln!(
        out,
        "disk        state directory {size}, {floor} (fetching pauses past either)"
    );
}

/// Each schedule with its transfers.
fn write_schedules(out: &mut String, config: &Config) {
    let _ = writeln!(out, "\nschedules ({})", config.schedules.len());
    for s in &config.schedules {
        let at =
            s.at.map(|t| format!(" at {} UTC", t.format("%H:%M")))
                .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<16} every {}{at}",
            s.name,
            format_duration(s.every)
        );
        for t in &s.transfers {
            let kinds: Vec<&str> = t.data.iter().map(|k| k.as_str()).collect();
            let _ = writeln!(
                out,
                "    {} -> {}: {}{}",
                t.site,
                t.destination,
                kinds.join(", "),
                if t.include_in_progress {
                    " (with sessions in progress)"
                } else {
                    ""
                }
            );
        }
    }
}

fn describe_notifier(n: &Notifier) -> String {
    let how = match &n.kind {
        NotifierKind::Smtp(s) => {
            let to: Vec<String> = s.to.iter().map(ToString::to_string).collect();
            format!(
                "{}:{} ({}), from {} to {}{}",
                s.server,
                s.port,
                s.tls.as_str(),
                s.from,
                to.join(", "),
                s.username
                    .as_ref()
                    .map(|u| format!(", AUTH as {u}"))
                    .unwrap_or_default()
            )
        }
        NotifierKind::Webhook(w) => {
            let url = match &w.url {
                SecretSource::Plain(url) => match crate::config::check_webhook_url(url.expose()) {
                    Ok(host) => format!("url at {host} (in the file)"),
                    Err(_) => "url in the file".to_string(),
                },
                other => format!("url from {other}"),
            };
            let headers: Vec<&str> = w.headers.iter().map(|(h, _)| h.as_str()).collect();
            if headers.is_empty() {
                url
            } else {
                format!("{url}, headers {}", headers.join(", "))
            }
        }
    };
    let events = if n.events.len() == EventClass::ALL.len() {
        "all".to_string()
    } else {
        n.events
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{how}; at most every {}; events {events}",
        format_duration(n.min_interval)
    )
}

fn summary_json(config: &Config, warnings: &[String]) -> serde_json::Value {
    json!({
        "file": config.source,
        "valid": true,
        "state_dir": config.state_dir,
        "sites": config.sites.iter().map(|s| json!({
            "name": s.name, "url": s.base_url(), "client_id": s.client_id,
        })).collect::<Vec<_>>(),
        "destinations": config.destinations.iter().map(|d| json!({
            "name": d.name, "type": d.type_name(), "detail": describe_destination(&d.kind),
        })).collect::<Vec<_>>(),
        "schedules": config.schedules.iter().map(|s| json!({
            "name": s.name,
            "every_seconds": s.every.as_secs(),
            "at": s.at.map(|t| t.format("%H:%M").to_string()),
            "transfers": s.transfers.iter().map(|t| json!({
                "site": t.site, "destination": t.destination,
                "data": t.data.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
                "include_in_progress": t.include_in_progress,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "notifiers": config.notifiers.iter().map(|n| json!({
            "name": n.name, "type": n.type_name(), "detail": describe_notifier(n),
            "min_interval_seconds": n.min_interval.as_secs(),
            "events": n.events.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "log": {"file": config.log.file, "keep_days": config.log.keep_days},
        "warnings": warnings,
    })
}
