//! The checks `btic check` runs and the console's Checks page shows, one implementation
//! for both: a site (a token, `get_api_info`: API version, permissions, clock skew), a
//! destination (SQL: connect, migrate, a probe row rolled back; files: a probe file), a
//! notifier (an SMTP server greeted as a send would, without sending) and the
//! Integration Client's "Send Test" (one test message through a notifier).

use std::path::Path;

use chrono::Utc;

use crate::appliance::ApplianceError;
use crate::config::{
    Config, Destination, DestinationKind, Notifier, ResolvedSecrets, Secret, Site,
};
use crate::notify::{Digest, Event, EventKind, Origin, Redactor, Transport, compose};

/// The permissions the transfers of `site` need.
pub fn permissions_needed(config: &Config, site: &Site) -> Vec<&'static str> {
    use crate::config::DataKind;
    let kinds: Vec<DataKind> = config
        .schedules
        .iter()
        .flat_map(|s| &s.transfers)
        .filter(|t| t.site == site.name)
        .flat_map(|t| t.data.iter().copied())
        .collect();
    let mut needed = vec!["perm_reporting_support"];
    if kinds.iter().any(|k| {
        matches!(
            k,
            DataKind::Presentations | DataKind::PresentationRecordings
        )
    }) {
        needed.push("perm_reporting_presentation");
    }
    if kinds.contains(&DataKind::Backups) {
        needed.push("perm_backup");
    }
    needed
}

/// The permissions of `needed` the site's API account lacks.
pub fn missing_permissions<'a>(probe: &SiteProbe, needed: &[&'a str]) -> Vec<&'a str> {
    needed
        .iter()
        .copied()
        .filter(|p| !crate::appliance::has_permission(&probe.info, p))
        .collect()
}

/// What a site answered a check: its API information, the clock skew and the budget as
/// its client saw it.
#[derive(Debug)]
pub struct SiteProbe {
    /// What `get_api_info` answered.
    pub info: crate::model::ApiInfo,
    /// Appliance clock minus this host's, when measured.
    pub skew_seconds: Option<f64>,
    /// The budget as the check's client saw it (the appliance's rate-limit headers).
    pub budget: crate::appliance::BudgetSnapshot,
    /// How requests reach the site.
    pub proxy: String,
}

/// Asks `site` for a token and its API information, quickly (two attempts, short
/// waits).
pub async fn probe_site(
    site: &Site,
    secret: &Secret,
    spool: &Path,
) -> Result<SiteProbe, ApplianceError> {
    use crate::appliance::{ApplianceClient, ClientOptions};
    let options = ClientOptions {
        retry: crate::config::RetryPolicy {
            max_attempts: 2,
            initial: std::time::Duration::from_millis(500),
            max_interval: std::time::Duration::from_secs(2),
        },
        ..ClientOptions::default()
    };
    let client = ApplianceClient::with_options(site, secret.clone(), None, spool, options)?;
    let info = client.api_info().await?;
    Ok(SiteProbe {
        info,
        skew_seconds: client.skew().map(|s| s.num_milliseconds() as f64 / 1000.0),
        budget: client.budget().snapshot(),
        proxy: effective_proxy(&site.proxy),
    })
}

/// How a site's requests reach it, for people (a proxy's credentials hidden).
pub fn effective_proxy(proxy: &crate::config::Proxy) -> String {
    use crate::config::{Proxy, redact_userinfo};
    match proxy {
        Proxy::Environment => {
            let set = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
                .iter()
                .find_map(|name| {
                    let value = std::env::var(name).ok().filter(|v| !v.trim().is_empty())?;
                    Some(format!("{} (from {name})", redact_userinfo(value.trim())))
                });
            let no_proxy = ["NO_PROXY", "no_proxy"]
                .iter()
                .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
                .map(|v| format!(", NO_PROXY={v}"))
                .unwrap_or_default();
            match set {
                Some(url) => format!("{url}{no_proxy}"),
                None => "direct (no HTTPS_PROXY or ALL_PROXY in the environment)".to_string(),
            }
        }
        other => other.describe(),
    }
}

/// Tests a destination: SQL ones connect, create or migrate the schema and round-trip a
/// probe row in a transaction that is rolled back; files ones write and remove a probe
/// file. The line to show, or why it failed.
pub async fn destination(d: &Destination, secrets: &ResolvedSecrets) -> Result<String, String> {
    use crate::deliver::files::FilesSink;
    use crate::deliver::sql::SqlSink;
    match &d.kind {
        DestinationKind::Sql(sql) => {
            let sink = SqlSink::connect(&d.name, sql, secrets.urls.get(&d.name))
                .await
                .map_err(|e| e.to_string())?;
            let report = sink.check().await.map_err(|e| e.to_string())?;
            Ok(format!(
                "{}, schema version {}, probe row written and rolled back",
                report.server, report.schema_version
            ))
        }
        DestinationKind::Files(files) => FilesSink::open(files)
            .and_then(|sink| sink.probe())
            .map(|()| format!("{} is writable", files.directory.display()))
            .map_err(|e| e.to_string()),
    }
}

/// Builds the transport of `notifier`, or says why not (one line, redacted).
pub fn transport(
    notifier: &Notifier,
    secrets: &ResolvedSecrets,
    redactor: &Redactor,
) -> Result<Transport, String> {
    let own = secrets
        .notifiers
        .get(&notifier.name)
        .cloned()
        .unwrap_or_default();
    Transport::build(notifier, &own, redactor).map_err(|e| e.to_string())
}

/// Greets an SMTP notifier's server as a send would (EHLO, STARTTLS or TLS, AUTH)
/// without sending anything: its greeting, or `None` for a webhook (any request would
/// post).
pub async fn greet_notifier(
    notifier: &Notifier,
    secrets: &ResolvedSecrets,
    redactor: &Redactor,
) -> Result<Option<String>, String> {
    let transport = transport(notifier, secrets, redactor)?;
    match transport.greet().await {
        Some(greeted) => greeted.map(Some).map_err(|e| e.to_string()),
        None => Ok(None),
    }
}

/// Sends one test message through `notifier` (`by` says who asked, as the message
/// tells): how it went out, or why not.
pub async fn send_test(
    notifier: &Notifier,
    secrets: &ResolvedSecrets,
    source: &Path,
    by: &str,
) -> Result<String, String> {
    let redactor = Redactor::new(secrets);
    let transport = transport(notifier, secrets, &redactor)?;
    let mut digest = Digest::default();
    digest.add(Event::new(
        EventKind::Test,
        &notifier.name,
        format!("sent by {by}; if you read this, this notifier works"),
    ));
    let origin = Origin::here(&notifier.name, source);
    let message = redactor.message(compose(&digest, &origin, Utc::now()));
    let how = transport.send(&message).await.map_err(|e| e.to_string())?;
    Ok(format!("{}: {how}", transport.describe()))
}
