//! `btic simulate` and `btic check` (online) as real processes.

mod skip;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A `btic simulate` child, killed (by its own handle) when dropped.
struct SimProcess {
    child: Child,
    addr: String,
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn simulate(dir: &Path, extra: &[&str]) -> SimProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_btic"))
        .args(["simulate", "--listen", "127.0.0.1:0", "--ca-out"])
        .arg(dir.join("ca.pem"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on https://")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    SimProcess { child, addr }
}

fn pipeline(dir: &Path, addr: &str) -> std::path::PathBuf {
    let path = dir.join("pipeline.toml");
    let text = format!(
        r#"state_dir = "{dir}/state"
[[site]]
name = "sim"
host = "{addr}"
client_id = "demo"
client_secret = {{ env = "BTIC_TEST_SIM_SECRET" }}
ca_file = "{dir}/ca.pem"
[[destination]]
name = "archive"
type = "files"
directory = "{dir}/files"
[[schedule]]
name = "often"
every = "5m"
[[schedule.transfer]]
site = "sim"
destination = "archive"
data = ["sessions", "backups"]
"#,
        dir = dir.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_reports_permissions_and_skew_of_a_simulated_site() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulate(dir.path(), &["--skew", "-3600"]);
    let config = pipeline(dir.path(), &sim.addr);
    let out = Command::new(env!("CARGO_BIN_EXE_btic"))
        .args(["check", "--config"])
        .arg(&config)
        .env("BTIC_TEST_SIM_SECRET", "demo-secret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("token ok, API version 1.24.0"), "{stdout}");
    assert!(
        stdout.contains("perm_reporting_support       1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("perm_backup                  1"),
        "{stdout}"
    );
    let skew_line = stdout
        .lines()
        .find(|l| l.contains("clock skew"))
        .expect("a skew line");
    let value: f64 = skew_line
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!((value + 3600.0).abs() < 2.0, "{skew_line}");
    assert!(!stdout.contains("demo-secret") && !stderr.contains("demo-secret"));
}

#[test]
fn check_json_is_one_document_with_the_site_and_destination_checks() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulate(dir.path(), &["--deny", "perm_backup"]);
    let config = pipeline(dir.path(), &sim.addr);
    let out = Command::new(env!("CARGO_BIN_EXE_btic"))
        .args(["check", "--json", "--config"])
        .arg(&config)
        .env("BTIC_TEST_SIM_SECRET", "demo-secret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let document: serde_json::Value =
        serde_json::from_str(&stdout).expect("stdout is exactly one JSON document");
    let sites = document["checks"]["sites"].as_array().unwrap();
    assert_eq!(sites.len(), 1, "{document}");
    assert_eq!(sites[0]["ok"], false, "{document}");
    assert_eq!(
        sites[0]["missing_permissions"][0], "perm_backup",
        "{document}"
    );
    assert_eq!(sites[0]["api_version"], "1.24.0", "{document}");
    let destinations = document["checks"]["destinations"].as_array().unwrap();
    assert_eq!(
        destinations.len(),
        document["destinations"].as_array().unwrap().len(),
        "{document}"
    );
}

#[test]
fn check_fails_when_the_account_lacks_the_backup_permission() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulate(dir.path(), &["--deny", "perm_backup"]);
    let config = pipeline(dir.path(), &sim.addr);
    let out = Command::new(env!("CARGO_BIN_EXE_btic"))
        .args(["check", "--config"])
        .arg(&config)
        .env("BTIC_TEST_SIM_SECRET", "demo-secret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("perm_backup                  0  MISSING"),
        "{stdout}"
    );
    assert!(stderr.contains("lacks perm_backup"), "{stderr}");
}

#[test]
fn curl_fetches_a_session_report_with_the_written_ca_after_getting_a_token() {
    if Command::new("curl").arg("--version").output().is_err() {
        skip::missing(
            "curl_fetches_a_session_report_with_the_written_ca_after_getting_a_token",
            "curl is not installed",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sim = simulate(dir.path(), &["--sessions-per-day", "100", "--days", "1"]);
    let ca = dir.path().join("ca.pem");
    let token = Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(&ca)
        .args([
            "-u",
            "demo:demo-secret",
            "-d",
            "grant_type=client_credentials",
        ])
        .arg(format!("https://{}/oauth2/token", sim.addr))
        .output()
        .unwrap();
    assert!(token.status.success(), "{token:?}");
    let answer: serde_json::Value = serde_json::from_slice(&token.stdout).unwrap();
    let access = answer["access_token"].as_str().unwrap();
    let since = chrono::Utc::now().timestamp() - 86_400;
    let report = Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(&ca)
        .args(["-H", &format!("Authorization: Bearer {access}")])
        .arg(format!(
            "https://{}/api/reporting?generate_report=SupportSession&end_time={since}&duration=0",
            sim.addr
        ))
        .output()
        .unwrap();
    assert!(report.status.success(), "{report:?}");
    let sessions: Vec<_> = btic::parse::SessionReader::new(&report.stdout[..])
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(sessions.len() > 50, "{}", sessions.len());
}

#[test]
fn simulate_refuses_budget_and_appliance_flags_out_of_range_with_clear_errors() {
    let cases: [(&[&str], &str); 6] = [
        (&["--budget-hour-seconds", "0"], "--budget-hour-seconds"),
        (
            &["--other-client-per-minute=-1"],
            "--other-client-per-minute",
        ),
        (
            &["--other-client-per-minute", "NaN"],
            "--other-client-per-minute",
        ),
        (&["--denied-status", "200"], "--denied-status"),
        (&["--api-version", "v25"], "--api-version"),
        (&["--late-seconds", "60"], "--late-every"),
    ];
    for (args, named) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_btic"))
            .args(["simulate", "--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn simulate_takes_the_budget_and_api_flags_and_the_controls_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulate(
        dir.path(),
        &[
            "--truth",
            "--requests-per-second",
            "0",
            "--requests-per-hour",
            "3",
            "--budget-hour-seconds",
            "60",
            "--rate-limit-retry-after",
            "--denied-status",
            "403",
            "--api-version",
            "1.25.0",
        ],
    );
    let pem = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap();
    let url = |path: &str| format!("https://{}{path}", sim.addr);
    let answer = http
        .post(url("/oauth2/token"))
        .basic_auth("demo", Some("demo-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.headers()["x-ratelimit-limit"], "3");
    assert_eq!(answer.headers()["x-ratelimit-remaining"], "2");
    let token: serde_json::Value = answer.json().await.unwrap();
    let info = http
        .get(url("/api/command?action=get_api_info"))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(info.contains("<api_version>1.25.0</api_version>"), "{info}");
    assert!(!info.contains("company_name"), "{info}");
    let denied = http
        .get(url("/api/command?action=get_api_info"))
        .bearer_auth("dead")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let refused = http.post(url("/oauth2/token")).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));

    let raised = http
        .post(url("/_sim/budget"))
        .json(&serde_json::json!({ "per_hour": 100 }))
        .send()
        .await
        .unwrap();
    assert_eq!(raised.status(), 200);
    let stats: serde_json::Value = http
        .get(url("/_sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["rate_limited"], 1, "{stats}");
    assert_eq!(stats["unauthorized"], 1, "{stats}");
    assert_eq!(stats["requests"]["get_api_info"], 2, "{stats}");
    assert_eq!(stats["max_in_hour"], 3, "{stats}");
}
