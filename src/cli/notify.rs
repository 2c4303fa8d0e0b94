//! `btic notify test`: the Integration Client's "Send Test" — one test message through
//! every notifier (or one), with the outcome of each.

use std::path::Path;

use super::CliError;
use crate::config::{Config, Notifier};
use crate::pipeline::checks;

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

/// `btic notify test --config FILE [--name N]`.
pub fn notify_test(path: &Path, name: Option<&str>) -> Result<(), CliError> {
    let config = super::daemon::load(path)?;
    let chosen = select(&config, name)?;
    let (secrets, errors) = config.resolve_available_secrets();
    for e in &errors {
        eprintln!("error: {e}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("starting the runtime: {e}")))?;
    let mut failed = 0;
    for notifier in &chosen {
        let outcome = runtime.block_on(checks::send_test(
            notifier,
            &secrets,
            &config.source,
            "btic notify test",
        ));
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
