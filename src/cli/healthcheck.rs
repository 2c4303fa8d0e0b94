//! `btic healthcheck`: asks a running daemon's `/healthz` on its metrics listener, for a
//! container's health check that has no shell and no curl.

use std::path::Path;
use std::time::Duration;

use super::CliError;
use crate::config::defaults;
use crate::pipeline::access::local_address;

/// How long the daemon has to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// `btic healthcheck [--config FILE]`: exit 0 when `/healthz` answers 200, 1 otherwise.
/// Without a pipeline file it asks the default listener.
pub fn healthcheck(config: Option<&Path>) -> Result<(), CliError> {
    let listen = match config {
        Some(path) => super::daemon::load(path)?.metrics.listen,
        None => defaults::METRICS_LISTEN,
    };
    let url = format!("http://{}/healthz", local_address(listen));
    super::ask_daemon(&url, Some(TIMEOUT), async |client| {
        let response = client
            .get(&url)
            .send()
            .await
            .map_err(|e| CliError::failed(format!("{url}: {e}")))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let reason = body.lines().next().unwrap_or_default().trim();
        if status.is_success() {
            println!("{url}: {status} {reason}");
            Ok(())
        } else {
            Err(CliError::failed(format!("{url}: {status} {reason}")))
        }
    })
}
