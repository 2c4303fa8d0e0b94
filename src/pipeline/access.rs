//! Who may use the daemon's listener: `/metrics`, `/healthz` and `/readyz` answer every
//! peer (Prometheus scrapes from other hosts); the console and the admin API answer
//! loopback peers, and other peers only when `[console] token` is set and they present
//! it — as `Authorization: Bearer`, or as the cookie the console's login form sets.
//! Every request that changes something (anything but GET and HEAD) from a browser must
//! come from the listener's own origin; the console's forms also carry [`Access::csrf`].

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;

use crate::config::Secret;

/// The cookie the console's login form sets.
pub const COOKIE: &str = "btic_console";
/// Paths every peer may ask for.
const OPEN: [&str; 3] = ["/metrics", "/healthz", "/readyz"];
/// Paths a peer without the token may ask for, to present it.
const LOGIN: &str = "/login";
/// Logins remembered at once; the oldest is forgotten first.
const MAX_LOGINS: usize = 64;

/// The listener's access rules and this process's secrets for them.
pub struct Access {
    /// `[console] token`, read.
    token: Option<Secret>,
    /// The per-process token every console form carries.
    csrf: String,
    /// Cookie values of the logins this process granted, newest last.
    logins: Mutex<VecDeque<String>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

fn random_hex() -> String {
    hex::encode(rand::rng().random::<[u8; 32]>())
}

/// Compares two strings in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Access {
    /// Rules with `token` (none: loopback peers only) and a fresh CSRF token.
    pub fn new(token: Option<Secret>) -> Access {
        Access {
            token,
            csrf: random_hex(),
            logins: Mutex::new(VecDeque::new()),
        }
    }

    /// Whether a token admits peers other than loopback.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The per-process CSRF token the console's forms carry.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Whether `given` is this process's CSRF token.
    pub fn csrf_matches(&self, given: &str) -> bool {
        same(given, &self.csrf)
    }

    /// A login with `given` as the token: the cookie value to set, or `None` when the
    /// token is wrong (or none is configured).
    pub fn login(&self, given: &str) -> Option<String> {
        let token = self.token.as_ref()?;
        if !same(given, token.expose()) {
            return None;
        }
        let value = random_hex();
        let mut logins = self.logins.lock().expect("logins lock");
        if logins.len() >= MAX_LOGINS {
            logins.pop_front();
        }
        logins.push_back(value.clone());
        Some(value)
    }

    /// Whether the request presents the token or a login's cookie.
    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return false;
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer.is_some_and(|b| same(b.trim(), token.expose())) {
            return true;
        }
        let logins = self.logins.lock().expect("logins lock");
        cookies(headers, COOKIE).any(|c| logins.iter().any(|l| same(l, c)))
    }
}

/// The values of cookie `name` in a request's `Cookie` headers.
fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Whether a request that changes something comes from elsewhere: its `Origin` (sent by
/// browsers) is not the listener's own. Programs like the CLI send none.
fn foreign_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (origin.to_str().ok(), host) {
        (Some(origin), Some(host)) => {
            origin != format!("http://{host}") && origin != format!("https://{host}")
        }
        _ => true,
    }
}

/// Whether `ip` is this host's loopback (an IPv4-mapped one included).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// The address a program on this host reaches a listener at: a wildcard listener on
/// loopback.
pub fn local_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// The middleware holding every request to the rules (the server must be made with
/// `into_make_service_with_connect_info::<SocketAddr>`).
pub async fn guard(
    State(access): State<Arc<Access>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if OPEN.contains(&path) {
        return next.run(request).await;
    }
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD);
    if changes && foreign_origin(request.headers()) {
        return (
            StatusCode::FORBIDDEN,
            "refused: a request from another origin may not change anything here",
        )
            .into_response();
    }
    if is_loopback(peer.ip()) || access.admits(request.headers()) || path == LOGIN {
        return next.run(request).await;
    }
    if !access.has_token() {
        return (
            StatusCode::FORBIDDEN,
            "the console and the admin API answer this host (loopback) only; set [console] token to admit other hosts",
        )
            .into_response();
    }
    let page = "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=\"0;url=/login\"><title>btic: sign in</title><p>This needs the console token: <a href=\"/login\">sign in</a>.";
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, "Bearer realm=\"btic\""),
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        ],
        page,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_token_admits_as_bearer_or_through_a_login_cookie_only() {
        let access = Access::new(Some(Secret::new("s3cret")));
        assert!(access.admits(&headers(&[(header::AUTHORIZATION, "Bearer s3cret")])));
        assert!(!access.admits(&headers(&[(header::AUTHORIZATION, "Bearer s3cre")])));
        assert!(!access.admits(&headers(&[(header::COOKIE, "btic_console=s3cret")])));
        assert_eq!(access.login("wrong"), None);
        let cookie = access.login("s3cret").unwrap();
        let sent = format!("a=b; {COOKIE}={cookie}");
        assert!(access.admits(&headers(&[(header::COOKIE, &sent)])));
        assert!(!Access::new(None).admits(&headers(&[(header::AUTHORIZATION, "Bearer ")])));
        assert_eq!(Access::new(None).login(""), None);
    }

    #[test]
    fn only_the_listeners_own_origin_may_change_things() {
        let host = (header::HOST, "127.0.0.1:9464");
        assert!(!foreign_origin(&headers(std::slice::from_ref(&host))));
        assert!(!foreign_origin(&headers(&[
            host.clone(),
            (header::ORIGIN, "http://127.0.0.1:9464")
        ])));
        assert!(foreign_origin(&headers(&[
            host.clone(),
            (header::ORIGIN, "http://evil.example")
        ])));
        assert!(foreign_origin(&headers(&[host, (header::ORIGIN, "null")])));
    }

    #[test]
    fn the_csrf_token_is_per_process_and_checked_whole() {
        let (a, b) = (Access::new(None), Access::new(None));
        assert_ne!(a.csrf(), b.csrf());
        assert!(a.csrf_matches(a.csrf()));
        assert!(!a.csrf_matches(b.csrf()));
        assert!(!a.csrf_matches(""));
    }

    #[test]
    fn a_wildcard_listener_is_reached_on_loopback() {
        let at = |text: &str| local_address(text.parse().unwrap()).to_string();
        assert_eq!(at("0.0.0.0:9464"), "127.0.0.1:9464");
        assert_eq!(at("[::]:9464"), "[::1]:9464");
        assert_eq!(at("10.0.0.5:9464"), "10.0.0.5:9464");
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("10.0.0.5".parse().unwrap()));
    }
}
