//! `btic check`: validate a pipeline file and print a one-screen summary.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::json;

use super::CliError;
use crate::config::units::format_duration;
use crate::config::{
    Config, DestinationKind, SessionFormat, SqlConnection, StartFrom,
    secret::redact_connection_string,
};
use crate::deliver::files::FilesSink;

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
    if !offline {
        // Every destination is checked and reported before the first failure ends the command.
        let files = probe_files_destinations(&config);
        let sql = check_sql_destinations(&config);
        files?;
        sql?;
        return Err(CliError::config(
            "connectivity checks of sites are not part of this build yet; run `btic check --offline` to validate the file",
        ));
    }
    // Offline, a secret that cannot be read yet (an env var set only on the server) is
    // worth a warning, not a failure: the file itself is valid.
    let mut warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    if let Err(errors) = config.resolve_secrets() {
        warnings.extend(errors.0.iter().map(|e| format!("{e} (needed at run time)")));
    }
    if json {
        println!("{}", summary_json(&config, &warnings));
    } else {
        print!("{}", summary_text(&config, &warnings));
    }
    Ok(())
}

/// Writes and removes a probe file in every `files` destination; prints one line each.
fn probe_files_destinations(config: &Config) -> Result<(), CliError> {
    let mut failed = 0;
    for d in &config.destinations {
        let DestinationKind::Files(files) = &d.kind else {
            continue;
        };
        match FilesSink::open(files).and_then(|sink| sink.probe()) {
            Ok(()) => println!(
                "destination {}: {} is writable",
                d.name,
                files.directory.display()
            ),
            Err(e) => {
                eprintln!("error: destination {}: {e}", d.name);
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(CliError::failed(format!(
            "{failed} files destination{} not writable",
            if failed == 1 { " is" } else { "s are" }
        )));
    }
    Ok(())
}

/// Connects to every SQL destination (creating or migrating its schema) and writes a
/// probe session in a transaction that is rolled back; prints one line each.
fn check_sql_destinations(config: &Config) -> Result<(), CliError> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| CliError::failed(format!("starting the runtime: {e}")))?;
    let mut failed = 0;
    for d in &config.destinations {
        let DestinationKind::Sql(sql) = &d.kind else {
            continue;
        };
        let outcome = runtime.block_on(async {
            let url = match &sql.connection {
                SqlConnection::Url(source) => Some(source.resolve().map_err(|e| e.to_string())?),
                SqlConnection::Path(_) => None,
            };
            let sink = crate::deliver::sql::SqlSink::connect(&d.name, sql, url.as_ref())
                .await
                .map_err(|e| e.to_string())?;
            sink.check().await.map_err(|e| e.to_string())
        });
        match outcome {
            Ok(report) => println!(
                "destination {}: {}, schema version {}, probe row written and rolled back",
                d.name, report.server, report.schema_version
            ),
            Err(e) => {
                eprintln!("error: destination {}: {e}", d.name);
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(CliError::failed(format!(
            "{failed} SQL destination{} failed the check",
            if failed == 1 { "" } else { "s" }
        )));
    }
    Ok(())
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
    if !warnings.is_empty() {
        let _ = writeln!(out, "\nwarnings ({})", warnings.len());
        for w in warnings {
            let _ = writeln!(out, "  {w}");
        }
    }
    out
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
        "warnings": warnings,
    })
}
