//! `[[notify]]`: mail (SMTP) and webhook notifiers, and the webhook URL rule `btic check`
//! shares.

use std::path::PathBuf;
use std::time::Duration;

use super::{Problems, is_loopback, port_of, secret_source};
use crate::config::defaults;
use crate::config::raw::{RawNotify, RawSecret};
use crate::config::secret::{Secret, SecretSource};
use crate::config::{
    EventClass, Notifier, NotifierKind, SmtpNotifier, SmtpTls, WebhookNotifier, host_without_port,
};

pub(super) fn build_notifier(n: &RawNotify, key: &str, p: &mut Problems) -> Option<Notifier> {
    let present: [(&str, bool); 9] = [
        ("host", n.host.is_some()),
        ("tls", n.tls.is_some()),
        ("from", n.from.is_some()),
        ("to", n.to.is_some()),
        ("username", n.username.is_some()),
        ("password", n.password.is_some()),
        ("ca_file", n.ca_file.is_some()),
        ("url", n.url.is_some()),
        ("headers", n.headers.is_some()),
    ];
    let allowed: &[&str] = match n.kind.as_str() {
        "smtp" => &[
            "host", "tls", "from", "to", "username", "password", "ca_file",
        ],
        "webhook" => &["url", "headers"],
        other => {
            p.error(
                format!("{key}.type"),
                format!("unknown notifier type \"{other}\"; use smtp or webhook"),
            );
            return None;
        }
    };
    for (name, is_set) in present {
        if is_set && !allowed.contains(&name) {
            p.error(
                format!("{key}.{name}"),
                format!("not a key of a {} notifier", n.kind),
            );
        }
    }
    let kind = if n.kind == "smtp" {
        NotifierKind::Smtp(build_smtp(n, key, p))
    } else {
        NotifierKind::Webhook(build_webhook(n, key, p))
    };
    let min_interval = p.duration(
        &format!("{key}.min_interval"),
        n.min_interval.as_deref(),
        defaults::NOTIFY_MIN_INTERVAL,
    );
    if min_interval < Duration::from_secs(1) {
        p.error(format!("{key}.min_interval"), "must be at least 1s");
    }
    let failing_after = p.duration(
        &format!("{key}.failing_after"),
        n.failing_after.as_deref(),
        defaults::NOTIFY_FAILING_AFTER,
    );
    let events = match &n.events {
        None => EventClass::ALL.to_vec(),
        Some(list) => {
            let names = EventClass::ALL.map(EventClass::as_str).join(", ");
            if list.is_empty() {
                p.error(
                    format!("{key}.events"),
                    format!("list at least one of {names} (or leave the key out for all)"),
                );
            }
            let mut events = Vec::new();
            for (j, item) in list.iter().enumerate() {
                let ekey = format!("{key}.events[{j}]");
                match EventClass::parse(item) {
                    None => p.error(ekey, format!("unknown event \"{item}\"; use {names}")),
                    Some(c) if events.contains(&c) => {
                        p.error(ekey, format!("\"{item}\" is listed twice"))
                    }
                    Some(c) => events.push(c),
                }
            }
            events
        }
    };
    Some(Notifier {
        name: n.name.clone(),
        kind,
        min_interval,
        events,
        failing_after,
    })
}

fn build_smtp(n: &RawNotify, key: &str, p: &mut Problems) -> SmtpNotifier {
    let tls = match n.tls.as_deref() {
        None | Some("starttls") => SmtpTls::StartTls,
        Some("tls") => SmtpTls::Tls,
        Some("none") => SmtpTls::None,
        Some(other) => {
            p.error(
                format!("{key}.tls"),
                format!("unknown value \"{other}\"; use starttls, tls or none"),
            );
            SmtpTls::StartTls
        }
    };
    let (host, port) = smtp_server(n.host.as_deref().unwrap_or("").trim(), tls, key, p);
    let (from, to) = addresses(n, key, p);
    let password = n
        .password
        .as_ref()
        .map(|s| secret_source(s, &format!("{key}.password"), p, true));
    match (&n.username, &n.password) {
        (Some(_), None) => p.error(
            format!("{key}.username"),
            "SMTP AUTH needs a password as well as a username",
        ),
        (None, Some(_)) => p.error(
            format!("{key}.password"),
            "SMTP AUTH needs a username as well as a password",
        ),
        _ => {}
    }
    SmtpNotifier {
        server: host_without_port(host)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
        tls,
        from: from.unwrap_or_else(|| {
            lettre::message::Mailbox::new(
                None,
                lettre::Address::new("btic", "invalid").expect("a valid address"),
            )
        }),
        to,
        username: n.username.clone(),
        password,
        ca_file: n.ca_file.as_deref().map(PathBuf::from),
    }
}

/// `host[:port]` of the SMTP server, the port defaulting by `tls`.
fn smtp_server<'a>(host: &'a str, tls: SmtpTls, key: &str, p: &mut Problems) -> (&'a str, u16) {
    let default_port = match tls {
        SmtpTls::StartTls => 587,
        SmtpTls::Tls => 465,
        SmtpTls::None => 25,
    };
    let host_key = format!("{key}.host");
    let mut port = default_port;
    if host.is_empty() {
        p.error(
            &host_key,
            "an smtp notifier needs a host (host or host:port)",
        );
    } else if host.contains("://") || host.contains('/') {
        p.error(
            &host_key,
            format!("\"{host}\" is not a host name; write host or host:port, no scheme"),
        );
    } else if let Some(text) = port_of(host) {
        match text.parse::<u16>() {
            Ok(n) if n > 0 => port = n,
            _ => p.error(&host_key, format!("\"{text}\" is not a valid port")),
        }
    }
    if tls == SmtpTls::None && !host.is_empty() && !is_loopback(host) {
        p.warn(
            format!("{key}.tls"),
            "tls = \"none\" sends mail (and any password) unencrypted over the network; use it for loopback relays and test rigs only",
        );
    }
    (host, port)
}

/// `from` and `to`: mailboxes, one sender and at least one recipient.
fn addresses(
    n: &RawNotify,
    key: &str,
    p: &mut Problems,
) -> (
    Option<lettre::message::Mailbox>,
    Vec<lettre::message::Mailbox>,
) {
    let mailbox = |p: &mut Problems, key: String, text: &str| {
        text.parse::<lettre::message::Mailbox>()
            .map_err(|_| {
                p.error(
                    key,
                    format!("\"{text}\" is not an e-mail address like btic@example.com or \"btic <btic@example.com>\""),
                )
            })
            .ok()
    };
    let from = match n.from.as_deref() {
        Some(text) => mailbox(p, format!("{key}.from"), text),
        None => {
            p.error(
                format!("{key}.from"),
                "an smtp notifier needs a from address",
            );
            None
        }
    };
    let mut to = Vec::new();
    match n.to.as_deref() {
        None | Some([]) => p.error(
            format!("{key}.to"),
            "an smtp notifier needs at least one address in to = [...]",
        ),
        Some(list) => {
            for (j, text) in list.iter().enumerate() {
                to.extend(mailbox(p, format!("{key}.to[{j}]"), text));
            }
        }
    }
    (from, to)
}

fn build_webhook(n: &RawNotify, key: &str, p: &mut Problems) -> WebhookNotifier {
    let url_key = format!("{key}.url");
    let url = match &n.url {
        None => {
            p.error(&url_key, "a webhook notifier needs a url");
            SecretSource::Plain(Secret::new(""))
        }
        Some(raw) => {
            if let RawSecret::Plain(text) = raw {
                match check_webhook_url(text) {
                    Err(e) => p.error(&url_key, e),
                    Ok(host) if !is_loopback(&host) => {
                        p.warn(
                            &url_key,
                            "the webhook URL is written in the pipeline file, and incoming-webhook URLs carry their token; prefer url = { env = \"NAME\" } or { file = \"PATH\" }",
                        );
                        if text.starts_with("http://") {
                            p.warn(
                                &url_key,
                                "plain http sends every message unencrypted; use https",
                            );
                        }
                    }
                    Ok(_) => {}
                }
            }
            secret_source(raw, &url_key, p, false)
        }
    };
    let mut headers = Vec::new();
    for (name, value) in n.headers.iter().flatten() {
        let hkey = format!("{key}.headers.{name}");
        if name.is_empty() || !name.bytes().all(is_header_name_byte) {
            p.error(&hkey, format!("\"{name}\" is not a valid HTTP header name"));
        }
        headers.push((name.clone(), secret_source(value, &hkey, p, false)));
    }
    WebhookNotifier { url, headers }
}

/// Checks a webhook URL as written; returns its host (and port) for the loopback test.
/// The message never repeats the URL, which may hold a token.
pub(crate) fn check_webhook_url(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or("expected an http:// or https:// URL")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err("the URL has no host name".into());
    }
    Ok(host.to_string())
}

/// RFC 9110 token characters, the only ones a header name may have.
fn is_header_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
