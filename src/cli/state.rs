//! `btic status`, `btic replay` and `btic dead-letter`: through the running daemon's
//! admin API when it answers, else straight from the state directory.

use std::path::Path;
use std::sync::Arc;

use super::CliError;
use crate::config::Config;
use crate::pipeline::admin::{Admin, ReplayRequest};

fn with_admin<T>(
    path: &Path,
    f: impl AsyncFnOnce(&Admin, &Config) -> Result<T, CliError>,
) -> Result<T, CliError> {
    let config = Config::load(path).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("error: {e}");
        }
        CliError::config(format!("{}: invalid pipeline file", path.display()))
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("starting the runtime: {e}")))?;
    runtime.block_on(async {
        let admin = Admin::connect(Arc::new(config.clone()))
            .await
            .map_err(|e| CliError::failed(e.to_string()))?;
        let outcome = f(&admin, &config).await;
        admin
            .close()
            .await
            .map_err(|e| CliError::failed(e.to_string()))?;
        outcome
    })
}

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::failed(e.to_string())
}

/// `btic status [--json]`.
pub fn status(path: &Path, json: bool) -> Result<(), CliError> {
    with_admin(path, async |admin, _| {
        let status = admin.status().await.map_err(failed)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&status).map_err(failed)?);
        } else {
            print!("{}", super::status_text::render(&status));
        }
        Ok(())
    })
}

/// `btic history [--json]`: the last runs of schedules and backfill jobs, newest first.
pub fn history(path: &Path, json: bool) -> Result<(), CliError> {
    with_admin(path, async |admin, _| {
        let runs = admin.history().await.map_err(failed)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&runs).map_err(failed)?);
        } else {
            print!("{}", super::status_text::history(&runs));
        }
        Ok(())
    })
}

/// What `replay` and `dead-letter discard` do to the dead letters they select.
#[derive(Debug, Clone, Copy)]
enum Action {
    Replay,
    Discard,
}

/// `btic replay (--id ID | --all) [--destination D]`.
pub fn replay(path: &Path, id: Option<u64>, destination: Option<String>) -> Result<(), CliError> {
    act_on_dead_letters(path, id, destination, Action::Replay)
}

/// `btic dead-letter discard (ID | --all) [--destination D]`.
pub fn dead_letter_discard(
    path: &Path,
    id: Option<u64>,
    destination: Option<String>,
) -> Result<(), CliError> {
    act_on_dead_letters(path, id, destination, Action::Discard)
}

/// Replays or discards one dead letter, or all (of `destination` when given).
fn act_on_dead_letters(
    path: &Path,
    id: Option<u64>,
    destination: Option<String>,
    action: Action,
) -> Result<(), CliError> {
    with_admin(path, async |admin, config| {
        if let Some(d) = &destination
            && config.destination(d).is_none()
        {
            return Err(CliError::config(format!("no destination named {d:?}")));
        }
        let request = ReplayRequest {
            id,
            destination,
            queue: None,
        };
        let n = match action {
            Action::Replay => admin.replay(&request).await,
            Action::Discard => admin.discard(&request).await,
        }
        .map_err(failed)?;
        if let (Some(id), 0) = (id, n) {
            return Err(CliError::failed(format!(
                "dead letter {id} is not one of the given destination's"
            )));
        }
        let s = if n == 1 { "" } else { "s" };
        match action {
            Action::Replay => println!("replayed {n} item{s}"),
            Action::Discard => println!("discarded {n} dead letter{s}"),
        }
        Ok(())
    })
}

/// `btic dead-letter list`.
pub fn dead_letter_list(path: &Path, json: bool) -> Result<(), CliError> {
    with_admin(path, async |admin, _| {
        let letters = admin.dead_letters().await.map_err(failed)?;
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&letters).map_err(failed)?
            );
            return Ok(());
        }
        if letters.is_empty() {
            println!("the dead letter is empty");
        }
        for l in &letters {
            println!(
                "{:>8}  {:<24} {} attempts, last tried {}: {}",
                l["id"],
                l["queue"].as_str().unwrap_or(""),
                l["attempts"],
                l["last_tried"].as_str().unwrap_or(""),
                l["last_error"].as_str().unwrap_or("")
            );
            // A report request says what it asks for.
            let meta = &l["metadata"];
            let report = meta["report"].as_str().unwrap_or("");
            if let Some(window) = meta["window"].as_str() {
                println!("{:>8}  {report}: sessions that {window}", "");
            } else if let Some(lsids) = meta["lsids"].as_str() {
                println!("{:>8}  {report}: sessions {lsids}", "");
            }
        }
        Ok(())
    })
}

/// `btic dead-letter show ID`.
pub fn dead_letter_show(path: &Path, id: u64) -> Result<(), CliError> {
    with_admin(path, async |admin, _| {
        let item = admin.dead_letter(id).await.map_err(failed)?;
        println!("{}", serde_json::to_string_pretty(&item).map_err(failed)?);
        Ok(())
    })
}
