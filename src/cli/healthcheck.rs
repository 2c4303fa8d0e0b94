//! `btic healthcheck`: asks a running daemon's `/healthz` on its metrics listener, for a
//! container's health check that has no shell and no curl.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::CliError;
use crate::config::defaults;

/// How long the daemon has to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// `btic healthcheck [--config FILE]`: exit 0 when `/healthz` answers 200, 1 otherwise.
/// Without a pipeline file it asks the default listener.
pub fn healthcheck(config: Option<&Path>) -> Result<(), CliError> {
    let listen = match config {
        Some(path) => super::daemon::load(path)?.metrics.listen,
        None => defaults::METRICS_LISTEN,
    };
    let url = format!("http://{}/healthz", reachable(listen));
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

/// The address to ask for a listener on `listen`: a wildcard listener answers on the
/// loopback of its family.
fn reachable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listener_is_asked_on_loopback() {
        let at = |text: &str| reachable(text.parse().unwrap()).to_string();
        assert_eq!(at("0.0.0.0:9464"), "127.0.0.1:9464");
        assert_eq!(at("[::]:9464"), "[::1]:9464");
        assert_eq!(at("10.1.2.3:9000"), "10.1.2.3:9000");
    }
}
