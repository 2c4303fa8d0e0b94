//! `[[site]]`: the appliance, its API account, its request budget and its proxy.

use std::path::PathBuf;

use super::{Problems, port_of, secret_source};
use crate::config::Site;
use crate::config::raw::RawSite;
use crate::config::{Proxy, defaults};

pub(super) fn build_site(s: &RawSite, key: &str, p: &mut Problems) -> Site {
    let host = s.host.trim();
    check_host(host, &format!("{key}.host"), p);
    if s.client_id.trim().is_empty() {
        p.error(format!("{key}.client_id"), "must not be empty");
    }
    let client_secret = secret_source(&s.client_secret, &format!("{key}.client_secret"), p, true);
    let backup_password = s
        .backup_password
        .as_ref()
        .map(|b| secret_source(b, &format!("{key}.backup_password"), p, true));
    if s.insecure_http {
        p.warn(
            format!("{key}.insecure_http"),
            "plain HTTP sends the client secret and session data unencrypted; use it for test rigs only",
        );
    }
    let (requests_per_second, requests_per_hour, live_reserve) = account_limits(s, key, p);
    let proxy = proxy(s.proxy.as_deref(), &format!("{key}.proxy"), p);
    let max_in_flight = match s.max_in_flight {
        None => defaults::MAX_IN_FLIGHT,
        Some(n) if (1..=64).contains(&n) => n as usize,
        Some(n) => {
            p.error(
                format!("{key}.max_in_flight"),
                format!("{n} is out of range; use 1 to 64"),
            );
            defaults::MAX_IN_FLIGHT
        }
    };
    let timeout = p.duration(
        &format!("{key}.timeout"),
        s.timeout.as_deref(),
        defaults::SITE_TIMEOUT,
    );
    Site {
        name: s.name.clone(),
        host: host.to_string(),
        client_id: s.client_id.clone(),
        client_secret,
        ca_file: s.ca_file.as_deref().map(PathBuf::from),
        insecure_http: s.insecure_http,
        backup_password,
        requests_per_second,
        requests_per_hour,
        live_reserve,
        proxy,
        max_in_flight,
        timeout,
    }
}

/// `host`: a name or address with an optional port, no scheme, no path.
fn check_host(host: &str, host_key: &str, p: &mut Problems) {
    if let Some(idx) = host.find("://") {
        p.error(
            host_key,
            format!(
                "\"{host}\" has a scheme; write the host name only, like \"{}\" (drop \"{}\")",
                host[idx + 3..].trim_end_matches('/'),
                &host[..idx + 3]
            ),
        );
    } else if host.is_empty() {
        p.error(host_key, "must not be empty");
    } else if host.contains('/') {
        p.error(
            host_key,
            format!("\"{host}\" has a path; write host or host:port only"),
        );
    } else if host.chars().any(char::is_whitespace) {
        p.error(host_key, format!("\"{host}\" contains white space"));
    } else if let Some(port) = port_of(host)
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        p.error(host_key, format!("\"{port}\" is not a valid port"));
    }
}

/// `requests_per_second`, `requests_per_hour` and `live_reserve`: the API account's
/// budget.
fn account_limits(s: &RawSite, key: &str, p: &mut Problems) -> (f64, u32, u32) {
    let requests_per_second = s
        .requests_per_second
        .unwrap_or(defaults::REQUESTS_PER_SECOND);
    if !(requests_per_second > 0.0 && requests_per_second <= 1000.0) {
        p.error(
            format!("{key}.requests_per_second"),
            format!("{requests_per_second} is out of range; use more than 0 and at most 1000"),
        );
    }
    if requests_per_second > 20.0 {
        p.warn(
            format!("{key}.requests_per_second"),
            format!("{requests_per_second} is more than the 20 a second the vendor allows an API account; the appliance refuses the rest"),
        );
    }
    let requests_per_hour = match s.requests_per_hour {
        None => defaults::REQUESTS_PER_HOUR,
        Some(n) if (1..=1_000_000).contains(&n) => {
            if n > 15_000 {
                p.warn(
                    format!("{key}.requests_per_hour"),
                    format!("{n} is more than the 15,000 an hour the vendor allows an API account; the appliance refuses the rest"),
                );
            }
            n as u32
        }
        Some(n) => {
            p.error(
                format!("{key}.requests_per_hour"),
                format!("{n} is out of range; use 1 to 1000000 (the vendor allows 15000)"),
            );
            defaults::REQUESTS_PER_HOUR
        }
    };
    let live_reserve = match s.live_reserve {
        None => requests_per_hour / 10,
        Some(n) if n >= 0 && n < i64::from(requests_per_hour) => n as u32,
        Some(n) => {
            p.error(
                format!("{key}.live_reserve"),
                format!("{n} is out of range; use 0 up to less than requests_per_hour ({requests_per_hour})"),
            );
            requests_per_hour / 10
        }
    };
    (requests_per_second, requests_per_hour, live_reserve)
}

/// `proxy`: a URL, `"none"`, or absent for the environment's.
fn proxy(text: Option<&str>, key: &str, p: &mut Problems) -> Proxy {
    match text.map(str::trim) {
        None => Proxy::Environment,
        Some("none") => Proxy::None,
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            if url.len() <= "https://".len() || url.chars().any(char::is_whitespace) {
                p.error(
                    key,
                    "not a proxy URL; use http://host:port, https://host:port or \"none\"",
                );
            }
            Proxy::Url(url.to_string())
        }
        Some(other) => {
            p.error(
                key,
                format!("\"{}\" is not a proxy; use an http:// or https:// URL, or \"none\" (absent: HTTPS_PROXY and NO_PROXY from the environment)", crate::config::redact_userinfo(other)),
            );
            Proxy::Environment
        }
    }
}
