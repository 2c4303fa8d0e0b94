//! Pipeline files: every example validates, and bad files fail with the exact message,
//! place and key path.

use std::path::Path;

use btic::config::Config;

const BASE: &str = r#"state_dir = "/tmp/btic"

[[site]]
name = "support"
host = "support.example.com"
client_id = "id"
client_secret = { env = "BTIC_SECRET" }

[[destination]]
name = "reports"
type = "postgres"
url = "postgres://btic@127.0.0.1/btic"

[[destination]]
name = "archive"
type = "files"
directory = "/srv/btic"

[[schedule]]
name = "often"
every = "5m"
[[schedule.transfer]]
site = "support"
destination = "reports"
data = ["sessions"]
"#;

fn errors_of(src: &str) -> String {
    match Config::from_toml(Path::new("bad.toml"), src) {
        Ok(_) => "valid".to_string(),
        Err(e) => e.to_string(),
    }
}

/// `BASE` with `from` replaced by `to` (which must occur exactly once).
fn edit(from: &str, to: &str) -> String {
    assert_eq!(
        BASE.matches(from).count(),
        1,
        "{from:?} must occur once in BASE"
    );
    BASE.replace(from, to)
}

/// Checks each (file, every error it has) case; reports all that differ.
fn check_cases(cases: &[(String, &str)]) {
    let mut failures = Vec::new();
    for (i, (src, expected)) in cases.iter().enumerate() {
        let actual = errors_of(src);
        if actual != *expected {
            failures.push(format!(
                "case {i}:\n  expected: {expected}\n  actual:   {actual}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_base_of_the_bad_cases_is_valid() {
    assert_eq!(errors_of(BASE), "valid");
}

#[test]
fn every_example_pipeline_validates() {
    let mut seen = 0;
    for entry in std::fs::read_dir("pipelines").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 4, "expected the four example pipelines, saw {seen}");
}

#[test]
fn bad_configurations_name_file_line_and_key() {
    let cases: Vec<(String, &str)> = vec![
        (
            edit(
                "host = \"support.example.com\"",
                "host = \"https://support.example.com/\"",
            ),
            "bad.toml:5:8: site[0].host: \"https://support.example.com/\" has a scheme; write the host name only, like \"support.example.com\" (drop \"https://\")",
        ),
        (
            edit(
                "host = \"support.example.com\"",
                "host = \"support.example.com/api\"",
            ),
            "bad.toml:5:8: site[0].host: \"support.example.com/api\" has a path; write host or host:port only",
        ),
        (
            edit(
                "host = \"support.example.com\"",
                "host = \"support.example.com:99999\"",
            ),
            "bad.toml:5:8: site[0].host: \"99999\" is not a valid port",
        ),
        (
            edit("every = \"5m\"", "every = \"30s\""),
            "bad.toml:21:9: schedule[0].every: \"30s\" is out of range; use 1m to 7d",
        ),
        (
            edit("every = \"5m\"", "every = \"8d\""),
            "bad.toml:21:9: schedule[0].every: \"8d\" is out of range; use 1m to 7d",
        ),
        (
            edit("every = \"5m\"", "every = \"5 minutes\""),
            "bad.toml:21:9: schedule[0].every: invalid duration \"5 minutes\"; write it like \"90s\", \"15m\", \"2h\" or \"7d\"",
        ),
        (
            edit("every = \"5m\"", "every = \"5m\"\nat = \"02:00\""),
            "bad.toml:22:6: schedule[0].at: a time of day needs a period of whole days, but every = \"5m\"",
        ),
        (
            edit("every = \"5m\"", "every = \"1d\"\nat = \"2am\""),
            "bad.toml:22:6: schedule[0].at: \"2am\" is not a UTC time of day like \"02:00\"",
        ),
        (
            edit("destination = \"reports\"\n", "destination = \"nowhere\"\n"),
            "bad.toml:24:15: schedule[0].transfer[0].destination: no destination named \"nowhere\"",
        ),
        (
            edit("site = \"support\"\n", "site = \"elsewhere\"\n"),
            "bad.toml:23:8: schedule[0].transfer[0].site: no site named \"elsewhere\"",
        ),
        (
            edit(
                "data = [\"sessions\"]",
                "data = [\"sessions\", \"recordings\"]",
            ),
            "bad.toml:25:21: schedule[0].transfer[0].data[1]: recordings can only go to a files destination, but \"reports\" is postgres",
        ),
        (
            edit(
                "data = [\"sessions\"]",
                "data = [\"sessions\", \"presentations\"]",
            ),
            "bad.toml:25:21: schedule[0].transfer[0].data[1]: presentations can only go to a files destination, but \"reports\" is postgres",
        ),
        (
            edit("data = [\"sessions\"]", "data = [\"backups\"]"),
            "bad.toml:25:9: schedule[0].transfer[0].data[0]: backups can only go to a files destination, but \"reports\" is postgres",
        ),
        (
            edit("data = [\"sessions\"]", "data = [\"session\"]"),
            "bad.toml:25:9: schedule[0].transfer[0].data[0]: unknown data kind \"session\"; use sessions, recordings, presentations, presentation_recordings or backups",
        ),
        (
            edit(
                "data = [\"sessions\"]",
                "data = [\"sessions\", \"sessions\"]",
            ),
            "bad.toml:25:21: schedule[0].transfer[0].data[1]: \"sessions\" is listed twice",
        ),
        (
            edit(
                "directory = \"/srv/btic\"",
                "directory = \"/srv/btic\"\nfile_name_format = \"%LSID%-%DATE%.%EXTENSION%\"",
            ),
            "bad.toml:18:20: destination[1].file_name_format: unknown replacement value \"%DATE%\"; use one of %LSEQ% %LSID% %EXTERNAL_KEY% %SESSION_TYPE% %SUPPORT_SITE_HOST% %INSTANCE% %EXTENSION%",
        ),
        (
            edit(
                "directory = \"/srv/btic\"",
                "directory = \"/srv/btic\"\nfile_name_format = \"%lsid%.%EXTENSION%\"",
            ),
            "bad.toml:18:20: destination[1].file_name_format: unknown replacement value \"%lsid%\"; use one of %LSEQ% %LSID% %EXTERNAL_KEY% %SESSION_TYPE% %SUPPORT_SITE_HOST% %INSTANCE% %EXTENSION%",
        ),
        (
            edit(
                "directory = \"/srv/btic\"",
                "directory = \"/srv/btic\"\nfile_name_format = \"100%.xml\"",
            ),
            "bad.toml:18:20: destination[1].file_name_format: unmatched \"%\" in \"100%.xml\"; replacement values are written %NAME%",
        ),
        (
            edit(
                "directory = \"/srv/btic\"",
                "directory = \"/srv/btic\"\non_conflict = \"rename\"",
            ),
            "bad.toml:18:15: destination[1].on_conflict: unknown value \"rename\"; use append_number, overwrite or skip",
        ),
        (
            edit(
                "directory = \"/srv/btic\"",
                "directory = \"/srv/btic\"\nurl = \"postgres://x\"",
            ),
            "bad.toml:18:7: destination[1].url: not a key of a files destination",
        ),
        (
            edit("type = \"postgres\"", "type = \"mysql\""),
            "bad.toml:11:8: destination[0].type: unknown destination type \"mysql\"; use files, sqlserver, postgres or sqlite",
        ),
        (
            edit("name = \"archive\"", "name = \"reports\""),
            "bad.toml:15:8: destination[1].name: a destination named \"reports\" is already defined",
        ),
        (
            edit("client_id = \"id\"", "client_id = \"id\"\ncolor = \"blue\""),
            "bad.toml:7:1: site[0].color: unknown field `color`, expected one of `name`, `host`, `client_id`, `client_secret`, `ca_file`, `insecure_http`, `backup_password`, `requests_per_second`, `requests_per_hour`, `live_reserve`, `proxy`, `max_in_flight`, `timeout`",
        ),
        (
            edit(
                "client_secret = { env = \"BTIC_SECRET\" }",
                "client_secret = { vault = \"x\" }",
            ),
            "bad.toml:7:17: site[0].client_secret: expected a secret: a string, { env = \"NAME\" } or { file = \"PATH\" }",
        ),
        (
            edit("client_id = \"id\"\n", ""),
            "bad.toml:3:1: site[0]: missing field `client_id`",
        ),
        (
            edit(
                "state_dir = \"/tmp/btic\"",
                "state_dir = \"/tmp/btic\"\nstart_from = \"last week\"",
            ),
            "bad.toml:2:14: start_from: \"last week\" is neither a duration (\"7d\") nor a date (YYYY-MM-DD or RFC 3339)",
        ),
        (
            edit(
                "state_dir = \"/tmp/btic\"",
                "state_dir = \"/tmp/btic\"\n[metrics]\nlisten = \"localhost\"",
            ),
            "bad.toml:3:10: metrics.listen: \"localhost\" is not an address like 127.0.0.1:9464",
        ),
        (
            edit(
                "state_dir = \"/tmp/btic\"",
                "state_dir = \"/tmp/btic\"\n[pipeline]\nretry = { max_attempts = 0 }",
            ),
            "bad.toml:3:26: pipeline.retry.max_attempts: 0 is out of range; use 1 to 1000",
        ),
        (
            edit(
                "state_dir = \"/tmp/btic\"",
                "state_dir = \"/tmp/btic\"\n[pipeline]\nstall_after = \"2s\"",
            ),
            "bad.toml:3:15: pipeline.stall_after: must be at least 10s",
        ),
        (
            edit("every = \"5m\"", "every = 5"),
            "bad.toml:21:9: schedule[0].every: invalid type: integer `5`, expected a string",
        ),
        (
            edit("url = \"postgres://btic@127.0.0.1/btic\"\n", ""),
            "bad.toml:9:1: destination[0].url: a postgres destination needs a url",
        ),
        (
            edit(
                "client_id = \"id\"",
                "client_id = \"id\"\ninsecure_http = \"yes\"",
            ),
            "bad.toml:7:17: site[0].insecure_http: invalid type: string \"yes\", expected a boolean",
        ),
    ];
    assert!(cases.len() >= 20);
    check_cases(&cases);
}

#[test]
fn all_problems_are_reported_at_once() {
    let src =
        edit("every = \"5m\"", "every = \"1s\"").replace("site = \"support\"\n", "site = \"x\"\n");
    let errors = Config::from_toml(Path::new("bad.toml"), &src).unwrap_err();
    assert_eq!(errors.0.len(), 2, "{errors}");
}

#[test]
fn plain_secrets_are_accepted_with_a_warning_that_hides_them() {
    let src = edit(
        "client_secret = { env = \"BTIC_SECRET\" }",
        "client_secret = \"s3cr3t-value\"",
    );
    let config = Config::from_toml(Path::new("p.toml"), &src).unwrap();
    assert_eq!(config.warnings.len(), 1);
    let text = config.warnings[0].to_string();
    assert!(
        text.starts_with("p.toml:7:17: site[0].client_secret: secret written in the pipeline file"),
        "{text}"
    );
    assert!(!format!("{config:?} {text}").contains("s3cr3t-value"));
}

#[test]
fn missing_secret_sources_name_the_key_not_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    let src = edit(
        "client_secret = { env = \"BTIC_SECRET\" }",
        "client_secret = { env = \"BTIC_TEST_NEVER_SET_7731\" }",
    );
    std::fs::write(&path, &src).unwrap();
    let config = Config::load(&path).unwrap();
    let errors = config.resolve_secrets().unwrap_err().to_string();
    assert!(
        errors.ends_with(
            ":7:1: site[0].client_secret: environment variable BTIC_TEST_NEVER_SET_7731 is not set"
        ),
        "{errors}"
    );
}

/// A valid `[[notify]]` pair appended to `BASE` (starting at line 33).
const NOTIFY: &str = r#"
[[notify]]
name = "ops-mail"
type = "smtp"
host = "smtp.example.com"
from = "btic <btic@example.com>"
to = ["ops@example.com", "oncall@example.com"]
username = "btic"
password = { env = "BTIC_SMTP_PASSWORD" }

[[notify]]
name = "chat"
type = "webhook"
url = { env = "BTIC_WEBHOOK_URL" }
min_interval = "1m"
events = ["dead_letter", "stage_stalled"]

[log]
file = "/var/log/btic/btic.log"
keep_days = 14
"#;

fn with_notify(from: &str, to: &str) -> String {
    assert!(
        from.is_empty() || NOTIFY.matches(from).count() == 1,
        "{from:?} must occur once"
    );
    format!("{BASE}{}", NOTIFY.replace(from, to))
}

#[test]
fn notifiers_and_the_log_file_take_their_defaults() {
    use btic::config::{EventClass, NotifierKind, SmtpTls};
    use std::time::Duration;

    let config = Config::from_toml(Path::new("p.toml"), &with_notify("", "")).unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let [mail, chat] = &config.notifiers[..] else {
        panic!("two notifiers: {:?}", config.notifiers);
    };
    let NotifierKind::Smtp(smtp) = &mail.kind else {
        panic!("{mail:?}")
    };
    assert_eq!(
        (smtp.server.as_str(), smtp.port, smtp.tls),
        ("smtp.example.com", 587, SmtpTls::StartTls)
    );
    assert_eq!(smtp.from.to_string(), "btic <btic@example.com>");
    assert_eq!(smtp.to.len(), 2);
    assert_eq!(mail.min_interval, Duration::from_secs(900));
    assert_eq!(mail.failing_after, Duration::from_secs(900));
    assert_eq!(mail.events, EventClass::ALL.to_vec());
    assert_eq!(chat.min_interval, Duration::from_secs(60));
    assert_eq!(
        chat.events,
        vec![EventClass::DeadLetter, EventClass::StageStalled]
    );
    assert_eq!(
        config.log.file.as_deref(),
        Some(Path::new("/var/log/btic/btic.log"))
    );
    assert_eq!(config.log.keep_days, Some(14));
    let ports: Vec<u16> = [("tls", 465), ("none", 25)]
        .iter()
        .map(|(tls, _)| {
            let src = with_notify(
                "host = \"smtp.example.com\"",
                &format!("host = \"127.0.0.1\"\ntls = \"{tls}\""),
            );
            match &Config::from_toml(Path::new("p.toml"), &src)
                .unwrap()
                .notifiers[0]
                .kind
            {
                NotifierKind::Smtp(s) => s.port,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    assert_eq!(ports, vec![465, 25]);
}

#[test]
fn bad_notifiers_and_log_settings_name_file_line_and_key() {
    let cases: Vec<(String, &str)> = vec![
        (
            with_notify("name = \"chat\"", "name = \"ops-mail\""),
            "bad.toml:37:8: notify[1].name: a notifier named \"ops-mail\" is already defined",
        ),
        (
            with_notify("type = \"webhook\"", "type = \"pager\""),
            "bad.toml:38:8: notify[1].type: unknown notifier type \"pager\"; use smtp or webhook",
        ),
        (
            with_notify(
                "host = \"smtp.example.com\"",
                "host = \"smtp.example.com:0\"",
            ),
            "bad.toml:30:8: notify[0].host: \"0\" is not a valid port",
        ),
        (
            with_notify(
                "host = \"smtp.example.com\"",
                "host = \"smtps://smtp.example.com\"",
            ),
            "bad.toml:30:8: notify[0].host: \"smtps://smtp.example.com\" is not a host name; write host or host:port, no scheme",
        ),
        (
            with_notify(
                "host = \"smtp.example.com\"",
                "host = \"smtp.example.com\"\ntls = \"ssl\"",
            ),
            "bad.toml:31:7: notify[0].tls: unknown value \"ssl\"; use starttls, tls or none",
        ),
        (
            with_notify(
                "to = [\"ops@example.com\",",
                "to = [\"ops at example.com\",",
            ),
            "bad.toml:32:7: notify[0].to[0]: \"ops at example.com\" is not an e-mail address like btic@example.com or \"btic <btic@example.com>\"",
        ),
        (
            with_notify(
                "to = [\"ops@example.com\", \"oncall@example.com\"]",
                "to = []",
            ),
            "bad.toml:32:1: notify[0].to: an smtp notifier needs at least one address in to = [...]",
        ),
        (
            with_notify("username = \"btic\"\n", ""),
            "bad.toml:33:1: notify[0].password: SMTP AUTH needs a username as well as a password",
        ),
        (
            with_notify(
                "url = { env = \"BTIC_WEBHOOK_URL\" }",
                "url = \"ftp://chat.example.com/hook\"",
            ),
            "bad.toml:39:7: notify[1].url: expected an http:// or https:// URL",
        ),
        (
            with_notify(
                "url = { env = \"BTIC_WEBHOOK_URL\" }",
                "url = { env = \"BTIC_WEBHOOK_URL\" }\nfrom = \"a@b.c\"",
            ),
            "bad.toml:40:8: notify[1].from: not a key of a webhook notifier",
        ),
        (
            with_notify("min_interval = \"1m\"", "min_interval = \"1 minute\""),
            "bad.toml:40:16: notify[1].min_interval: invalid duration \"1 minute\"; write it like \"90s\", \"15m\", \"2h\" or \"7d\"",
        ),
        (
            with_notify("\"stage_stalled\"]", "\"stalls\"]"),
            "bad.toml:41:26: notify[1].events[1]: unknown event \"stalls\"; use dead_letter, schedule_failing, stage_stalled, disk_budget, storage_fail_stop",
        ),
        (
            with_notify(
                "url = { env = \"BTIC_WEBHOOK_URL\" }",
                "url = { env = \"X\" }\nheaders = { \"Bad Name\" = \"v\" }",
            ),
            "bad.toml:40:26: notify[1].headers.Bad Name: \"Bad Name\" is not a valid HTTP header name",
        ),
        (
            with_notify("keep_days = 14", "keep_days = 0"),
            "bad.toml:45:13: log.keep_days: 0 is out of range; use 1 or more, or leave it out to keep every file",
        ),
        (
            with_notify("file = \"/var/log/btic/btic.log\"\n", ""),
            "bad.toml:44:13: log.keep_days: applies to log.file, which is not set",
        ),
    ];
    check_cases(&cases);
}

#[test]
fn unencrypted_mail_and_plain_webhook_urls_off_loopback_are_warned_without_the_url() {
    let warnings = |src: &str| -> Vec<String> {
        Config::from_toml(Path::new("p.toml"), src)
            .unwrap()
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let off_loopback = with_notify(
        "host = \"smtp.example.com\"",
        "host = \"smtp.example.com:25\"\ntls = \"none\"",
    )
    .replace(
        "url = { env = \"BTIC_WEBHOOK_URL\" }",
        "url = \"http://chat.example.com/hooks/T0K3N\"",
    );
    let found = warnings(&off_loopback);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(
        found[0].starts_with("p.toml:31:7: notify[0].tls: tls = \"none\" sends mail"),
        "{found:?}"
    );
    assert!(found[1].starts_with(
        "p.toml:40:7: notify[1].url: the webhook URL is written in the pipeline file"
    ));
    assert!(found[2].ends_with("plain http sends every message unencrypted; use https"));
    assert!(!found.concat().contains("T0K3N"), "{found:?}");
    let loopback = with_notify(
        "host = \"smtp.example.com\"",
        "host = \"127.0.0.1:2525\"\ntls = \"none\"",
    )
    .replace(
        "url = { env = \"BTIC_WEBHOOK_URL\" }",
        "url = \"http://[::1]:8080/hook\"",
    );
    assert_eq!(warnings(&loopback), Vec::<String>::new());
}

#[test]
fn the_readme_notify_example_is_valid() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let start = readme
        .find("```toml\n[[notify]]")
        .expect("README shows a [[notify]] example")
        + "```toml\n".len();
    let example = &readme[start..start + readme[start..].find("```").unwrap()];
    let config = Config::from_toml(Path::new("README.md"), &format!("{BASE}{example}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.notifiers.len(), 2);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}
