//! Notifications against real servers on 127.0.0.1: aiosmtpd (STARTTLS and AUTH, mail
//! stored in a maildir) and an axum webhook receiver; `btic notify test`, `btic check`,
//! and a daemon whose appliance refuses a window: the dead letter is mailed, and with the
//! SMTP server stopped and started again the digest of what happened meanwhile arrives
//! once.
//!
//! A test binary of its own (`harness = false`, libtest-mimic) so that the tests that
//! need aiosmtpd report themselves ignored (skipped) when Python cannot get it, never
//! passed; with `CI` set a missing aiosmtpd fails the run instead.

mod notify_support;
mod rig;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use notify_support::{Certs, Receiver, SmtpServer, SmtpSettings, mails};
use rig::{Daemon, Sim, btic, eventually, free_port};

const SMTP_USER: &str = "btic-mailer";
const SMTP_PASSWORD: &str = "Smtp-Pa55-word-7731";
const HOOK_TOKEN: &str = "T0K3N-in-the-path-5521";
const HOOK_AUTH: &str = "Bearer hook-auth-9904";
/// The simulator's API client secret (`rig::Daemon` passes it as BTIC_TEST_SECRET).
const CLIENT_SECRET: &str = "demo-secret";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that none of the test's secrets is in `what`.
fn assert_no_secret(what: &str, label: &str) {
    for secret in [SMTP_PASSWORD, HOOK_TOKEN, HOOK_AUTH, CLIENT_SECRET] {
        assert!(
            !what.contains(secret),
            "{label} holds the secret {secret:?}:\n{what}"
        );
    }
}

/// A test's directory with the secrets in files, the certificates and a maildir.
struct Rig {
    dir: tempfile::TempDir,
    certs: Certs,
    maildir: PathBuf,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let certs = Certs::generate(dir.path());
        std::fs::write(dir.path().join("smtp-password"), SMTP_PASSWORD).unwrap();
        std::fs::write(dir.path().join("hook-auth"), HOOK_AUTH).unwrap();
        let maildir = dir.path().join("maildir");
        Rig {
            dir,
            certs,
            maildir,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// STARTTLS and AUTH required, on `port`.
    fn smtp_settings(&self, port: u16) -> SmtpSettings {
        SmtpSettings {
            port,
            maildir: self.maildir.clone(),
            tls: Some((self.certs.cert.clone(), self.certs.key.clone())),
            account: Some((SMTP_USER.into(), SMTP_PASSWORD.into())),
        }
    }

    /// A `[[notify]]` mail section for the server on `port`.
    fn mail_notifier(&self, port: u16, min_interval: &str) -> String {
        format!(
            r#"
[[notify]]
name = "mail"
type = "smtp"
host = "127.0.0.1:{port}"
tls = "starttls"
ca_file = "{ca}"
from = "btic <btic@example.com>"
to = ["ops@example.com", "oncall@example.com"]
username = "{SMTP_USER}"
password = {{ file = "{password}" }}
min_interval = "{min_interval}"
"#,
            ca = self.certs.ca.display(),
            password = self.path().join("smtp-password").display(),
        )
    }

    /// A `[[notify]]` webhook section for `receiver`; the URL (with its token) in a file.
    fn hook_notifier(&self, receiver: &Receiver, min_interval: &str) -> String {
        let url = self.path().join("hook-url");
        std::fs::write(
            &url,
            format!("http://127.0.0.1:{}/hooks/{HOOK_TOKEN}\n", receiver.port),
        )
        .unwrap();
        format!(
            r#"
[[notify]]
name = "hook"
type = "webhook"
url = {{ file = "{url}" }}
headers = {{ Authorization = {{ file = "{auth}" }} }}
min_interval = "{min_interval}"
"#,
            url = url.display(),
            auth = self.path().join("hook-auth").display(),
        )
    }

    /// A pipeline file with no site, only `sections`.
    fn pipeline(&self, sections: &str) -> PathBuf {
        let path = self.path().join("pipeline.toml");
        let text = format!(
            "state_dir = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{}\"\n{sections}",
            self.path().join("state").display(),
            free_port()
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// aiosmtpd (STARTTLS and AUTH) and a webhook receiver, with a pipeline file that has a
/// notifier for each and nothing else.
struct Servers {
    rig: Rig,
    port: u16,
    _smtp: SmtpServer,
    // Drops after `receiver`, whose server task it runs.
    _rt: tokio::runtime::Runtime,
    receiver: Receiver,
    config: PathBuf,
}

impl Servers {
    fn start(pythonpath: &Path) -> Servers {
        let rig = Rig::new();
        let port = free_port();
        let smtp = SmtpServer::start(pythonpath, rig.smtp_settings(port));
        let rt = runtime();
        let receiver = rt.block_on(Receiver::start());
        let config = rig.pipeline(&format!(
            "{}{}",
            rig.mail_notifier(port, "15m"),
            rig.hook_notifier(&receiver, "15m")
        ));
        Servers {
            rig,
            port,
            _smtp: smtp,
            _rt: rt,
            receiver,
            config,
        }
    }
}

fn notify_test(config: &Path, name: Option<&str>) -> Output {
    let mut command = btic();
    command.args(["notify", "test", "--config"]).arg(config);
    if let Some(name) = name {
        command.args(["--name", name]);
    }
    command.output().unwrap()
}

fn notify_test_reaches_the_smtp_server_and_the_webhook(pythonpath: &Path) -> Result<(), Failed> {
    let Servers {
        rig,
        port,
        _smtp,
        _rt,
        receiver,
        config,
    } = Servers::start(pythonpath);

    let out = notify_test(&config, None);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "notifier mail: test message sent, smtp 127.0.0.1:{port} (starttls): accepted by 127.0.0.1:{port} for ops@example.com, oncall@example.com (250)"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("notifier hook: test message sent, webhook at 127.0.0.1:")
            && stdout.contains("(HTTP 200)"),
        "{stdout}"
    );
    assert_no_secret(&format!("{stdout}{stderr}"), "the output");

    let got = mails(&rig.maildir);
    assert_eq!(got.len(), 1, "{got:?}");
    let mail = &got[0];
    assert_eq!(
        mail.header("To").as_deref(),
        Some("ops@example.com, oncall@example.com")
    );
    assert_eq!(
        mail.header("From").as_deref(),
        Some("btic <btic@example.com>")
    );
    let subject = mail.header("Subject").unwrap_or_default();
    assert!(
        subject.ends_with(": test message from notifier \"mail\""),
        "{subject}"
    );
    assert!(
        mail.body.contains("if you read this, this notifier works"),
        "{}",
        mail.body
    );
    assert_no_secret(&mail.raw(), "the mail");

    let posted = receiver.received();
    assert_eq!(posted.len(), 1, "{posted:?}");
    let hook = &posted[0];
    assert_eq!(hook.path, format!("/hooks/{HOOK_TOKEN}"));
    assert_eq!(hook.authorization.as_deref(), Some(HOOK_AUTH));
    assert_eq!(hook.content_type.as_deref(), Some("application/json"));
    let body_text = hook.body["text"].as_str().unwrap_or_default();
    assert!(
        body_text.contains("test message from notifier \"hook\""),
        "{}",
        hook.raw
    );
    assert_eq!(hook.body["events"][0]["kind"], "test");
    assert_eq!(hook.body["btic_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(hook.body["notifier"], "hook");
    assert_no_secret(&hook.raw, "the webhook body");
    println!("--- test mail ---\n{}\n\n{}", mail.headers, mail.body);

    // One notifier by name; an unknown name is a usage error.
    let out = notify_test(&config, Some("hook"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("notifier mail"));
    assert_eq!(
        (mails(&rig.maildir).len(), receiver.received().len()),
        (1, 2)
    );
    let out = notify_test(&config, Some("pager"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no notifier named \"pager\""),
        "{}",
        text(&out.stderr)
    );
    Ok(())
}

fn a_wrong_smtp_port_fails_notify_test_with_a_clear_message() -> Result<(), Failed> {
    let rig = Rig::new();
    let rt = runtime();
    let receiver = rt.block_on(Receiver::start());
    // Nothing listens there (the port was free a moment ago).
    let port = free_port();
    let config = rig.pipeline(&format!(
        "{}{}",
        rig.mail_notifier(port, "15m"),
        rig.hook_notifier(&receiver, "15m")
    ));
    let out = notify_test(&config, None);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("notifier mail: FAILED\n"), "{stdout}");
    assert!(
        stdout.contains("notifier hook: test message sent"),
        "{stdout}"
    );
    let reason = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default();
    assert!(
        reason.starts_with(&format!("error: sending mail through 127.0.0.1:{port}: "))
            && reason.contains("Connection refused"),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("btic: 1 of 2 notifiers failed the test\n"),
        "{stderr}"
    );
    assert_no_secret(&format!("{stdout}{stderr}"), "the output");
    Ok(())
}

fn check_greets_the_smtp_server_with_starttls_and_auth_without_sending(
    pythonpath: &Path,
) -> Result<(), Failed> {
    let Servers {
        rig,
        port,
        _smtp,
        _rt,
        receiver,
        config,
    } = Servers::start(pythonpath);
    let out = btic()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "notifier mail: 127.0.0.1:{port} answered: EHLO, STARTTLS, AUTH ok, nothing sent"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("notifier hook: webhook not contacted"),
        "{stdout}"
    );
    assert!(mails(&rig.maildir).is_empty());
    assert!(receiver.received().is_empty());

    // A wrong password fails the check, and says why without the password.
    std::fs::write(rig.path().join("smtp-password"), "wrong-Pa55-1234").unwrap();
    let out = btic()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: notifier mail: sending mail through 127.0.0.1:{port}: permanent error (535)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("btic: 1 notifier failed the check\n"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-Pa55-1234"), "{stderr}");
    Ok(())
}

fn check_offline_lists_the_notifiers_and_warns_about_unencrypted_mail() -> Result<(), Failed> {
    let rig = Rig::new();
    let config = rig.pipeline(
        r#"
[[notify]]
name = "relay"
type = "smtp"
host = "mail.example.com"
tls = "none"
from = "btic@example.com"
to = ["ops@example.com"]
events = ["dead_letter", "storage_fail_stop"]

[[notify]]
name = "chat"
type = "webhook"
url = { env = "BTIC_TEST_NEVER_SET_5512" }
"#,
    );
    let out = btic()
        .args(["check", "--offline", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains(
        "\nnotifiers (2)\n  relay            smtp      mail.example.com:25 (none), from btic@example.com to ops@example.com; at most every 15m; events dead_letter, storage_fail_stop\n  chat             webhook   url from env BTIC_TEST_NEVER_SET_5512; at most every 15m; events all\n"
    ), "{stdout}");
    assert!(
        stdout.contains("notify[0].tls: tls = \"none\" sends mail"),
        "{stdout}"
    );
    assert!(
        stdout.contains("notify[1].url: environment variable BTIC_TEST_NEVER_SET_5512 is not set (needed at run time)"),
        "{stdout}"
    );
    Ok(())
}

/// Waits until the maildir holds `n` messages; returns them.
async fn wait_for_mails(maildir: &Path, n: usize, limit: Duration) -> Vec<notify_support::Mail> {
    eventually(limit, async || mails(maildir).len() >= n).await;
    mails(maildir)
}

/// The count of the first "N items dead-lettered" line of a message.
fn dead_lettered(body: &str) -> Vec<u64> {
    body.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("- ")?;
            let (n, tail) = rest.split_once(' ')?;
            (tail.starts_with("items dead-lettered from")
                || tail.starts_with("item dead-lettered from"))
            .then(|| n.parse().ok())
            .flatten()
        })
        .collect()
}

fn the_daemon_mails_dead_letters_and_keeps_the_digest_while_the_server_is_down(
    pythonpath: &Path,
) -> Result<(), Failed> {
    let rig = Rig::new();
    let rt = runtime();
    let port = free_port();
    let smtp = SmtpServer::start(pythonpath, rig.smtp_settings(port));
    let receiver = rt.block_on(Receiver::start());
    // The appliance refuses the window holding six hours ago with an <error> btic does
    // not know: that request goes to the dead letter (fetch/sim).
    let refused_at = chrono::Utc::now().timestamp() - 6 * 3600;
    let sim = Sim::start(
        rig.path(),
        &[
            "--days",
            "1",
            "--sessions-per-day",
            "40",
            "--refuse-window",
            &refused_at.to_string(),
        ],
    );
    let destinations = format!(
        "[[destination]]\nname = \"archive\"\ntype = \"files\"\ndirectory = \"{}\"\n",
        rig.path().join("archive").display()
    );
    let transfers =
        "[[schedule.transfer]]\nsite = \"sim\"\ndestination = \"archive\"\ndata = [\"sessions\"]\n";
    let config = rig::pipeline(rig.path(), &sim, free_port(), &destinations, transfers);
    let min_interval = Duration::from_secs(15);
    let mut text_of_config = std::fs::read_to_string(&config).unwrap();
    text_of_config.push_str(&rig.mail_notifier(port, "15s"));
    text_of_config.push_str(&rig.hook_notifier(&receiver, "15s"));
    std::fs::write(&config, text_of_config).unwrap();
    let log = rig.path().join("run.log");
    let daemon = Daemon::start(&config, &log);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    rt.block_on(async {
        // 1. The first dead letters are mailed within min_interval.
        let first = wait_for_mails(&rig.maildir, 1, Duration::from_secs(120)).await;
        let arrived = chrono::Utc::now();
        assert_eq!(first.len(), 1, "no mail came:\n{}", log_text());
        let letters = rig::dead_letters(&config);
        assert!(
            !letters.is_empty(),
            "a mail without dead letters: {first:?}"
        );
        let earliest = letters
            .iter()
            .filter_map(|l| l["last_tried"].as_str())
            .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .min()
            .unwrap();
        let delay = (arrived - earliest.with_timezone(&chrono::Utc))
            .to_std()
            .unwrap_or_default();
        assert!(
            delay <= min_interval,
            "the first mail came {delay:?} after the first dead letter"
        );
        let mail = &first[0];
        assert!(
            mail.body.contains(" dead-lettered from fetch/sim at "),
            "{}",
            mail.body
        );
        assert!(
            mail.body
                .contains("  first error: SupportSession for site \"sim\": ")
                && mail
                    .body
                    .contains("The report could not be generated for the requested range."),
            "{}",
            mail.body
        );
        let subject = mail.header("Subject").unwrap_or_default();
        assert!(
            subject.contains("dead-lettered from fetch/sim"),
            "{subject}"
        );
        assert!(
            eventually(Duration::from_secs(30), async || !receiver
                .received()
                .is_empty())
            .await
        );
        let hook = receiver.received()[0].clone();
        assert_eq!(
            hook.body["events"][0]["kind"], "dead_letter",
            "{}",
            hook.raw
        );
        assert_eq!(hook.body["events"][0]["subject"], "fetch/sim");
        println!("--- first mail ---\n{}\n\n{}", mail.headers, mail.body);
        println!(
            "--- first webhook body ---\n{}",
            serde_json::to_string_pretty(&hook.body).unwrap()
        );

        // Let the backlog's dead letters all arrive (and be mailed) before the server goes.
        let settled = eventually(Duration::from_secs(90), async || {
            let n = rig::dead_letters(&config).len() as u64;
            let told: u64 = mails(&rig.maildir)
                .iter()
                .flat_map(|m| dead_lettered(&m.body))
                .sum();
            tokio::time::sleep(Duration::from_secs(6)).await;
            n == told && rig::dead_letters(&config).len() as u64 == n
        })
        .await;
        assert!(
            settled,
            "mails do not add up to the dead letter:\n{}",
            log_text()
        );
        let before = mails(&rig.maildir).len();
        let total = rig::dead_letters(&config).len() as u64;

        // 2. The SMTP server goes away; the dead letters are replayed and fail again.
        let settings = smtp.stop();
        let out = btic()
            .args(["replay", "--all", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let failed_send = eventually(Duration::from_secs(60), async || {
            log_text().contains("the digest is kept and tried again")
                && rig::dead_letters(&config).len() as u64 == total
        })
        .await;
        assert!(
            failed_send,
            "no failed send while the server was down:\n{}",
            log_text()
        );

        // 3. Back up: one message brings everything since the last.
        let started_again = Instant::now();
        let _smtp = SmtpServer::start(pythonpath, settings);
        let after = wait_for_mails(&rig.maildir, before + 1, Duration::from_secs(60)).await;
        assert_eq!(
            after.len(),
            before + 1,
            "no digest after the restart:\n{}",
            log_text()
        );
        let digest = &after[before];
        assert_eq!(
            dead_lettered(&digest.body).iter().sum::<u64>(),
            total,
            "{}",
            digest.body
        );
        println!(
            "--- digest after the restart ({:?} later) ---\n{}",
            started_again.elapsed(),
            digest.body
        );
        assert!(
            log_text().contains("digest sent after failed attempts"),
            "{}",
            log_text()
        );
        // ... once: nothing more comes while nothing happens.
        tokio::time::sleep(min_interval + Duration::from_secs(10)).await;
        assert_eq!(
            mails(&rig.maildir).len(),
            before + 1,
            "{:?}",
            mails(&rig.maildir)
        );
    });

    for m in mails(&rig.maildir) {
        assert_no_secret(&m.raw(), "a mail");
    }
    for p in receiver.received() {
        assert_no_secret(&p.raw, "a webhook body");
    }
    assert_no_secret(&log_text(), "the daemon's log");
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0), "{}", log_text());
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let aiosmtpd = notify_support::find_aiosmtpd();
    let pythonpath = match &aiosmtpd {
        Ok(path) => path.clone(),
        Err(reason) if std::env::var_os("CI").is_some() => {
            eprintln!("the SMTP tests need aiosmtpd in CI: {reason}");
            std::process::exit(101);
        }
        Err(reason) => {
            println!("SKIPPED: the SMTP tests: {reason}");
            PathBuf::new()
        }
    };
    let with_smtp = |name: &str, test: fn(&Path) -> Result<(), Failed>| {
        let path = pythonpath.clone();
        Trial::test(name, move || test(&path)).with_ignored_flag(aiosmtpd.is_err())
    };
    let trials = vec![
        with_smtp(
            "notify_test_reaches_the_smtp_server_and_the_webhook",
            notify_test_reaches_the_smtp_server_and_the_webhook,
        ),
        with_smtp(
            "check_greets_the_smtp_server_with_starttls_and_auth_without_sending",
            check_greets_the_smtp_server_with_starttls_and_auth_without_sending,
        ),
        with_smtp(
            "the_daemon_mails_dead_letters_and_keeps_the_digest_while_the_server_is_down",
            the_daemon_mails_dead_letters_and_keeps_the_digest_while_the_server_is_down,
        ),
        Trial::test(
            "a_wrong_smtp_port_fails_notify_test_with_a_clear_message",
            a_wrong_smtp_port_fails_notify_test_with_a_clear_message,
        ),
        Trial::test(
            "check_offline_lists_the_notifiers_and_warns_about_unencrypted_mail",
            check_offline_lists_the_notifiers_and_warns_about_unencrypted_mail,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
