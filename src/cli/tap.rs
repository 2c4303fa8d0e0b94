//! `btic tap`: the sessions passing the running daemon's parse and deliver stages, live,
//! as JSON Lines on stdout (its admin API's `/admin/tap`).

use std::io::Write;
use std::path::Path;

use futures::StreamExt;

use super::CliError;
use crate::pipeline::admin::TapFilter;

/// `btic tap --config FILE [--site S] [--stage parse|deliver]`: until the daemon stops
/// (exit 0), the reader goes away, or Ctrl-C.
pub fn tap(path: &Path, filter: &TapFilter) -> Result<(), CliError> {
    let config = super::daemon::load(path)?;
    let listen = crate::pipeline::access::local_address(config.metrics.listen);
    if let Some(site) = &filter.site
        && config.sites.iter().all(|s| s.name != *site)
    {
        return Err(CliError::config(format!("no site named {site:?}")));
    }
    let url = format!("http://{listen}/admin/tap");
    super::ask_daemon(&url, None, async |client| {
        let response = client
            .get(&url)
            .query(filter)
            .send()
            .await
            .map_err(|e| CliError::failed(format!("{url}: is the daemon running? {e}")))?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            return Err(CliError::failed(format!("{url}: {status} {text}")));
        }
        eprintln!("tapping {url} (Ctrl-C to stop)");
        let mut body = response.bytes_stream();
        let mut stdout = std::io::stdout().lock();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| CliError::failed(format!("{url}: {e}")))?;
            let written = stdout.write_all(&chunk).and_then(|()| stdout.flush());
            match written {
                // The reader went away (`| head`): done.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(CliError::failed(format!("writing: {e}"))),
                Ok(()) => {}
            }
        }
        Ok(())
    })
}
