//! `btic notify test`: the Integration Client's "Send Test" — one test message through
//! every notifier (or one), with the outcome of each.

use std::path::Path;

use chrono::Utc;

use super::CliError;
use crate::config::{Config, Notifier, ResolvedSecrets};
use crate::notify::{Digest, Event, EventKind, Origin, Redactor, Transport, compose};

/// The notifiers `name` selects (all when `None`); exit 2 for an unknown name or none.
pub(super) fn select<'a>(
    config: &'a Config,
    name: Option<&str>,
) -> Result<Vec<&'a Notifier>, CliError> {
    let chosen: Vec<&Notifier> = config
        .notifiers
        .iter()
        .filter(|n| name.is_none_or(|name| n.name == name))
        .collect();
    match (name, chosen.is_empty()) {
        (Some(name), true) => Err(CliError::config(format!(
            "{}: no notifier named \"{name}\"",
            config.source.display()
        ))),
        (None, true) => Err(CliError::config(format!(
            "{}: the pipeline file has no [[notify]]",
            config.source.display()
        ))),
        _ => Ok(chosen),
    }
}

/// Builds the transport of `notifier`, or says why not (one line, redacted).
pub(super) fn transport(
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

/// `btic notify test --config FILE [--name N]`.
pub fn notify_test(path: &Path, name: Option<&str>) -> Result<(), CliError> {
    let config = super::daemon::load(path)?;
    let chosen = select(&config, name)?;
    let (secrets, errors) = config.resolve_available_secrets();
    for e in &errors {
        eprintln!("error: {e}");
    }
    let redactor = Redactor::new(&secrets);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("starting the runtime: {e}")))?;
    let mut failed = 0;
    for notifier in &chosen {
        let outcome = transport(notifier, &secrets, &redactor).and_then(|t| {
            let mut digest = Digest::default();
            digest.add(Event::new(
                EventKind::Test,
                &notifier.name,
                "sent by btic notify test; if you read this, this notifier works",
            ));
            let origin = Origin::here(&notifier.name, &config.source);
            let message = redactor.message(compose(&digest, &origin, Utc::now()));
            let how = runtime
                .block_on(t.send(&message))
                .map_err(|e| e.to_string())?;
            Ok(format!("{}: {how}", t.describe()))
        });
        match outcome {
            Ok(line) => println!("notifier {}: test message sent, {line}", notifier.name),
            Err(e) => {
                println!("notifier {}: FAILED", notifier.name);
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(CliError::failed(format!(
            "{failed} of {} notifier{} failed the test",
            chosen.len(),
            if chosen.len() == 1 { "" } else { "s" }
        )));
    }
    Ok(())
}
