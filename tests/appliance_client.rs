//! The appliance client against the simulator over real HTTP(S) on 127.0.0.1.

use std::path::Path;
use std::time::Duration;

use btic::appliance::{ApplianceClient, ApplianceError, ClientOptions, Window, WindowBy};
use btic::config::{Proxy, RetryPolicy, Secret, SecretSource, Site};
use btic::model::Recording;
use btic::parse::SessionReader;
use btic::simulator::{Faults, Options, RateBudget, Simulator};
use chrono::TimeDelta;

fn site(sim: &Simulator, dir: &Path) -> Site {
    let ca_file = sim.ca_pem.as_ref().map(|pem| {
        let path = dir.join("ca.pem");
        std::fs::write(&path, pem).unwrap();
        path
    });
    Site {
        name: "sim".into(),
        host: sim.host(),
        client_id: "demo".into(),
        client_secret: SecretSource::Plain(Secret::new("demo-secret")),
        ca_file,
        insecure_http: sim.ca_pem.is_none(),
        backup_password: None,
        requests_per_second: 1000.0,
        requests_per_hour: 10_000,
        live_reserve: 1000,
        proxy: Proxy::Environment,
        max_in_flight: 4,
        timeout: Duration::from_secs(30),
    }
}

fn fast_retries(max_attempts: u32) -> ClientOptions {
    ClientOptions {
        retry: RetryPolicy {
            max_attempts,
            initial: Duration::from_millis(10),
            max_interval: Duration::from_millis(50),
        },
        ..ClientOptions::default()
    }
}

fn client(site: &Site, dir: &Path, options: ClientOptions) -> ApplianceClient {
    ApplianceClient::with_options(
        site,
        Secret::new("demo-secret"),
        None,
        &dir.join("spool"),
        options,
    )
    .unwrap()
}

fn last_hours(client: &ApplianceClient, by: WindowBy, hours: i64) -> Window {
    Window {
        by,
        from: client.appliance_now() - TimeDelta::hours(hours),
        duration: Duration::ZERO,
    }
}

fn sessions_in(fetched: &btic::appliance::Fetched) -> Vec<btic::model::Session> {
    let Some(body) = &fetched.body else {
        return Vec::new();
    };
    let file = std::io::BufReader::new(std::fs::File::open(&body.path).unwrap());
    SessionReader::new(file)
        .map(|s| s.unwrap().session)
        .collect()
}

async fn start(options: Options) -> Simulator {
    Simulator::start(options).await.unwrap()
}

#[tokio::test]
async fn one_token_serves_many_concurrent_requests_and_is_renewed_after_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(Options {
        token_ttl: Duration::from_secs(3),
        token_type: "bearer".into(),
        ..Options::default()
    })
    .await;
    let site = site(&sim, dir.path());
    let client = client(&site, dir.path(), fast_retries(3));
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.support_sessions(last_hours(&c, WindowBy::End, 2))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        let fetched = t.await.unwrap();
        assert_eq!(fetched.status, 200);
        assert_eq!(fetched.extension, "xml");
    }
    assert_eq!(sim.stats().tokens_issued, 1, "one token for all requests");
    // A 3 s token is renewed a third of its life early, at 2 s.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    client.api_info().await.unwrap();
    assert_eq!(sim.stats().tokens_issued, 2);
    assert_eq!(sim.stats().unauthorized, 0, "renewed before it expired");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_refused_token_is_renewed_once_and_a_second_refusal_is_a_credentials_error() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(Options::default()).await;
    let site = site(&sim, dir.path());
    let client = client(&site, dir.path(), fast_retries(3));
    client.api_info().await.unwrap();
    sim.revoke_tokens();
    client.api_info().await.unwrap();
    let stats = sim.stats();
    assert_eq!((stats.tokens_issued, stats.unauthorized), (2, 1));
    sim.shutdown().await;

    // Tokens that are dead on arrival: the fresh one is refused too.
    let sim = start(Options {
        token_ttl: Duration::ZERO,
        ..Options::default()
    })
    .await;
    let site = self::site(&sim, dir.path());
    let client = self::client(&site, dir.path(), fast_retries(5));
    let err = client.api_info().await.unwrap_err();
    assert!(matches!(err, ApplianceError::Credentials { .. }), "{err}");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(text.contains("client \"demo\""), "{text}");
    assert!(!text.contains("demo-secret"), "{text}");
    assert_eq!(sim.stats().tokens_issued, 2, "exactly one renewal");
    sim.shutdown().await;
}

/// The vendor documents a JSON `access_denied` body for expired or invalid tokens but
/// not its status: answered with a 403 (or any status), the token is renewed once, and a
/// download after the renewal is whole.
#[tokio::test]
async fn an_access_denied_answer_with_any_status_renews_the_token_once() {
    let dir = tempfile::tempdir().unwrap();
    for status in [403, 401, 400] {
        let sim = start(Options {
            denied_status: status,
            ..Options::default()
        })
        .await;
        let site = site(&sim, dir.path());
        let client = client(&site, dir.path(), fast_retries(3));
        client.api_info().await.unwrap();
        sim.revoke_tokens();
        let fetched = client
            .support_sessions(last_hours(&client, WindowBy::End, 6))
            .await
            .unwrap_or_else(|e| panic!("HTTP {status}: {e}"));
        assert!(!sessions_in(&fetched).is_empty(), "HTTP {status}");
        let stats = sim.stats();
        assert_eq!(
            (stats.tokens_issued, stats.unauthorized),
            (2, 1),
            "HTTP {status}"
        );
        // A second refusal right after a renewal is the credentials' fault.
        sim.revoke_tokens();
        client.api_info().await.unwrap();
        assert_eq!(sim.stats().tokens_issued, 3, "HTTP {status}");
        sim.shutdown().await;
    }
    let sim = start(Options {
        denied_status: 403,
        token_ttl: Duration::ZERO,
        ..Options::default()
    })
    .await;
    let site = site(&sim, dir.path());
    let err = client(&site, dir.path(), fast_retries(3))
        .api_info()
        .await
        .unwrap_err();
    assert!(matches!(err, ApplianceError::Credentials { .. }), "{err}");
    assert!(err.to_string().contains("HTTP 403"), "{err}");
    assert_eq!(sim.stats().tokens_issued, 2, "exactly one renewal");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_wrong_secret_fails_at_once_without_showing_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(Options::default()).await;
    let site = site(&sim, dir.path());
    let client = ApplianceClient::with_options(
        &site,
        Secret::new("not-the-secret"),
        None,
        &dir.path().join("spool"),
        fast_retries(5),
    )
    .unwrap();
    let err = client.api_info().await.unwrap_err();
    assert!(matches!(err, ApplianceError::Credentials { .. }), "{err}");
    assert!(!err.to_string().contains("not-the-secret"));
    assert_eq!(sim.stats().api_requests, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn every_transient_fault_is_retried_until_the_request_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let half = |f: fn(&mut Faults)| {
        let mut faults = Faults {
            slow_delay: Duration::from_millis(3000),
            retry_after_seconds: 1,
            ..Faults::default()
        };
        f(&mut faults);
        faults
    };
    let kinds: [(&str, Faults); 5] = [
        ("5xx", half(|f| f.rate_5xx = 0.5)),
        ("429", half(|f| f.rate_429 = 0.5)),
        ("reset", half(|f| f.rate_reset = 0.5)),
        ("truncate", half(|f| f.rate_truncate = 0.5)),
        ("slow", half(|f| f.rate_slow = 0.5)),
    ];
    for (name, faults) in kinds {
        let sim = start(Options {
            recording_bytes: 300_000,
            ..Options::default()
        })
        .await;
        let mut site = site(&sim, dir.path());
        // Slow answers (3 s) must time out and be retried. The timeout leaves a debug
        // build under the other tests' load time for the answers that are not slow, and
        // 30 attempts make 30 slow draws in a row (1 in 10^9) the only way to give up.
        site.timeout = Duration::from_secs(2);
        let client = client(&site, dir.path(), fast_retries(30));
        // Fetch a session list first, without faults, to find a recording.
        let fetched = client
            .support_sessions(last_hours(&client, WindowBy::End, 48))
            .await
            .unwrap();
        let lsid = sessions_in(&fetched)
            .into_iter()
            .find(|s| s.has_screen_recording())
            .expect("a session with a recording")
            .lsid;
        sim.set_faults(faults);
        // Faults are drawn at random: go on past four rounds until one was
        // injected and retried (a round without any has odds of 1 in 4).
        let mut retried = 0;
        for round in 0..40 {
            if round >= 4 && retried > 0 && sim.stats().faults > 0 {
                break;
            }
            let report = client
                .support_sessions(last_hours(&client, WindowBy::End, 2))
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let recording = client
                .recording(Recording::Screen, &lsid)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let body = recording.body.as_ref().unwrap();
            assert_eq!(body.bytes, 300_000, "{name}");
            assert_eq!(std::fs::metadata(&body.path).unwrap().len(), 300_000);
            retried += (report.attempts > 1) as u32 + (recording.attempts > 1) as u32;
            // A 429 is no failed attempt: the account pauses and the request goes again.
            retried += client.budget().snapshot().refused as u32;
        }
        assert!(sim.stats().faults > 0, "{name}: no fault was injected");
        assert!(retried > 0, "{name}: nothing was retried");
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn error_bodies_are_permanent_and_not_retried_in_either_shape() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(Options::default()).await;
    let site = site(&sim, dir.path());
    let client = client(&site, dir.path(), fast_retries(5));
    client.api_info().await.unwrap();
    sim.set_faults(Faults {
        rate_error_body: 1.0,
        ..Faults::default()
    });
    let before = sim.stats().api_requests;
    // Nested in the report's root.
    let err = client
        .support_sessions(last_hours(&client, WindowBy::End, 2))
        .await
        .unwrap_err();
    assert!(matches!(err, ApplianceError::ErrorBody { .. }), "{err}");
    assert!(!err.is_retryable());
    // As the root.
    let err = client.api_info().await.unwrap_err();
    assert!(matches!(err, ApplianceError::ErrorBody { .. }), "{err}");
    assert_eq!(sim.stats().api_requests - before, 2, "no retry");
    sim.shutdown().await;
}

#[tokio::test]
async fn no_data_is_an_empty_result_and_an_expired_recording_a_permanent_failure() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(Options {
        expired_recording_every: 1,
        ..Options::default()
    })
    .await;
    let site = site(&sim, dir.path());
    let client = client(&site, dir.path(), fast_retries(5));
    let unknown = client
        .recording(Recording::Screen, "00000000000000000000000000000000")
        .await
        .unwrap();
    assert_eq!(unknown.body, None);
    let fetched = client
        .support_sessions(last_hours(&client, WindowBy::End, 48))
        .await
        .unwrap();
    let lsid = sessions_in(&fetched)
        .into_iter()
        .find(|s| s.has_screen_recording())
        .expect("a session with a recording")
        .lsid;
    let before = sim.stats().api_requests;
    let err = client
        .recording(Recording::Screen, &lsid)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ApplianceError::RecordingExpired { .. }),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert_eq!(sim.stats().api_requests - before, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn skew_is_measured_within_two_seconds_either_way() {
    for skew in [-7200i64, 7200] {
        let dir = tempfile::tempdir().unwrap();
        let sim = start(Options {
            skew_seconds: skew,
            ..Options::default()
        })
        .await;
        let site = site(&sim, dir.path());
        let client = client(&site, dir.path(), fast_retries(3));
        client.api_info().await.unwrap();
        let measured = client.skew().unwrap().num_milliseconds() as f64 / 1000.0;
        assert!((measured - skew as f64).abs() < 2.0, "{skew}: {measured}");
        let gap = (client.appliance_now() - sim.appliance_now()).num_milliseconds();
        assert!(gap.abs() < 2000, "{skew}: appliance_now off by {gap} ms");
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn windows_select_by_start_with_sessions_in_progress_and_by_end_only_closed() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(Options {
        sessions_per_day: 400,
        days: 1,
        ..Options::default()
    })
    .await;
    let site = site(&sim, dir.path());
    let client = client(&site, dir.path(), fast_retries(3));
    let by_start = sessions_in(
        &client
            .support_sessions(last_hours(&client, WindowBy::Start, 24))
            .await
            .unwrap(),
    );
    let by_end = sessions_in(
        &client
            .support_sessions(last_hours(&client, WindowBy::End, 24))
            .await
            .unwrap(),
    );
    assert!(by_start.iter().any(|s| s.end_time.is_none()), "in progress");
    assert!(by_end.iter().all(|s| s.end_time.is_some()), "only closed");
    assert!(by_end.len() > 300, "{}", by_end.len());
    // By LSID: one, then several.
    let lsids: Vec<String> = by_end.iter().take(3).map(|s| s.lsid.to_string()).collect();
    let one = sessions_in(&client.support_sessions_by_lsid(&lsids[..1]).await.unwrap());
    assert_eq!(one.len(), 1);
    assert_eq!(one[0], by_end[0]);
    let three = sessions_in(&client.support_sessions_by_lsid(&lsids).await.unwrap());
    assert_eq!(three.len(), 3);
    let listing = client
        .support_session_listing(last_hours(&client, WindowBy::End, 24))
        .await
        .unwrap();
    let rows = btic::parse::parse_listing(std::io::BufReader::new(
        std::fs::File::open(&listing.body.as_ref().unwrap().path).unwrap(),
    ))
    .unwrap();
    assert_eq!(rows.len(), by_end.len());
    sim.shutdown().await;
}

#[tokio::test]
async fn downloads_are_named_from_content_disposition_and_backups_need_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(Options {
        backup_password: Some("s3cret".into()),
        backup_bytes: 100_000,
        ..Options::default()
    })
    .await;
    let site = site(&sim, dir.path());
    let plain = client(&site, dir.path(), fast_retries(3));
    let err = plain.backup().await.unwrap_err();
    assert!(matches!(err, ApplianceError::ErrorBody { .. }), "{err}");
    let with_password = ApplianceClient::with_options(
        &site,
        Secret::new("demo-secret"),
        Some(Secret::new("s3cret")),
        &dir.path().join("spool"),
        fast_retries(3),
    )
    .unwrap();
    let backup = with_password.backup().await.unwrap();
    assert_eq!(backup.extension, "nsb");
    let body = backup.body.unwrap();
    assert_eq!(body.bytes, 100_000);
    assert!(body.path.to_string_lossy().ends_with(".nsb"));
    assert_eq!(body.sha256.len(), 64);

    let fetched = plain
        .support_sessions(last_hours(&plain, WindowBy::End, 48))
        .await
        .unwrap();
    let shell = sessions_in(&fetched)
        .into_iter()
        .find(|s| !s.command_shell_recordings.is_empty())
        .expect("a session with a command shell");
    let rec = plain
        .recording(Recording::CommandShell(0), &shell.lsid)
        .await
        .unwrap();
    assert_eq!(rec.extension, "mp4");
    assert!(plain.check_health().await.unwrap());
    sim.shutdown().await;
}

#[tokio::test]
async fn plain_http_is_used_only_with_insecure_http_and_untrusted_certificates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(Options {
        http: true,
        ..Options::default()
    })
    .await;
    let mut site = site(&sim, dir.path());
    assert!(site.insecure_http);
    let client = self::client(&site, dir.path(), fast_retries(2));
    client.api_info().await.unwrap();
    // The same server without insecure_http: the client speaks TLS and fails clearly.
    site.insecure_http = false;
    let client = self::client(&site, dir.path(), fast_retries(2));
    let err = client.api_info().await.unwrap_err();
    assert!(matches!(err, ApplianceError::Tls { .. }), "{err}");
    assert!(!err.is_retryable());
    sim.shutdown().await;

    // HTTPS without the simulator's CA: refused, and the message says what to do.
    let sim = start(Options::default()).await;
    let mut site = self::site(&sim, dir.path());
    site.ca_file = None;
    let client = self::client(&site, dir.path(), fast_retries(2));
    let err = client.api_info().await.unwrap_err();
    assert!(matches!(err, ApplianceError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("ca_file"), "{err}");
    sim.shutdown().await;
}

#[tokio::test]
async fn the_ground_truth_matches_what_the_client_fetches_digest_for_digest() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(Options {
        truth: true,
        sessions_per_day: 300,
        days: 1,
        namespace: btic::simulator::Namespace::Bomgar,
        ..Options::default()
    })
    .await;
    let site = site(&sim, dir.path());
    let client = client(&site, dir.path(), fast_retries(3));
    let now = sim.appliance_now().timestamp();
    let fetched = client
        .support_sessions(Window {
            by: WindowBy::End,
            from: sim.appliance_now() - TimeDelta::days(2),
            duration: Duration::ZERO,
        })
        .await
        .unwrap();
    let mut ours: Vec<(String, String)> = sessions_in(&fetched)
        .iter()
        .filter(|s| s.end_time.is_some_and(|t| t.timestamp() < now))
        .map(|s| (s.lsid.to_string(), btic::simulator::catalog::digest(s)))
        .collect();
    let http = reqwest::Client::builder()
        .tls_certs_only([
            reqwest::Certificate::from_pem(sim.ca_pem.as_ref().unwrap().as_bytes()).unwrap(),
        ])
        .build()
        .unwrap();
    let truth: serde_json::Value = http
        .get(format!(
            "https://{}/_sim/sessions?closed_before={now}",
            sim.host()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut theirs: Vec<(String, String)> = truth["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["lsid"].as_str().unwrap().to_string(),
                s["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    ours.sort();
    theirs.sort();
    assert!(theirs.len() > 200, "{}", theirs.len());
    assert_eq!(ours, theirs);
    sim.shutdown().await;
}

/// A raw HTTPS client trusting only the simulator's CA, and a fresh token.
async fn raw(sim: &Simulator) -> (reqwest::Client, String) {
    let http = reqwest::Client::builder()
        .tls_certs_only([
            reqwest::Certificate::from_pem(sim.ca_pem.as_ref().unwrap().as_bytes()).unwrap(),
        ])
        .build()
        .unwrap();
    let token = raw_token(&http, sim).await;
    (http, token)
}

async fn raw_token(http: &reqwest::Client, sim: &Simulator) -> String {
    let answer: serde_json::Value = http
        .post(format!("https://{}/oauth2/token", sim.host()))
        .basic_auth("demo", Some("demo-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"].as_str().unwrap().to_string()
}

async fn raw_get(
    http: &reqwest::Client,
    sim: &Simulator,
    token: &str,
    query: &str,
) -> (u16, String) {
    let response = http
        .get(format!("https://{}{query}", sim.host()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response
            .headers()
            .get("connection")
            .map(|v| v.to_str().unwrap()),
        Some("close")
    );
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn the_31st_token_evicts_the_oldest() {
    // 35 requests in a burst: more than the account's 20 a second.
    let sim = start(Options {
        budget: RateBudget::unlimited(),
        ..Options::default()
    })
    .await;
    let (http, first) = raw(&sim).await;
    let info = "/api/command?action=get_api_info";
    assert_eq!(raw_get(&http, &sim, &first, info).await.0, 200);
    let mut later = Vec::new();
    for _ in 0..29 {
        later.push(raw_token(&http, &sim).await);
    }
    assert_eq!(
        raw_get(&http, &sim, &first, info).await.0,
        200,
        "30 live tokens"
    );
    later.push(raw_token(&http, &sim).await);
    assert_eq!(raw_get(&http, &sim, &first, info).await.0, 401, "evicted");
    assert_eq!(raw_get(&http, &sim, &later[0], info).await.0, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn date_windows_count_days_and_time_windows_count_seconds() {
    let sim = start(Options {
        sessions_per_day: 100,
        days: 3,
        ..Options::default()
    })
    .await;
    let (http, token) = raw(&sim).await;
    let count = |body: &str| body.matches("<session lsid=").count();
    let day = sim.appliance_now().date_naive() - chrono::Days::new(1);
    let midnight = day.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp();
    let (status, by_date) = raw_get(
        &http,
        &sim,
        &token,
        &format!("/api/reporting?generate_report=SupportSession&start_date={day}&duration=1"),
    )
    .await;
    assert_eq!(status, 200);
    let (_, by_time) = raw_get(
        &http,
        &sim,
        &token,
        &format!(
            "/api/reporting?generate_report=SupportSession&start_time={midnight}&duration=86400"
        ),
    )
    .await;
    assert!(count(&by_date) >= 95, "{}", count(&by_date));
    assert_eq!(count(&by_date), count(&by_time));
    let (_, bad) = raw_get(
        &http,
        &sim,
        &token,
        "/api/reporting?generate_report=SupportSession&start_time=yesterday&duration=0",
    )
    .await;
    assert!(bad.contains("<error"), "{bad}");
    sim.shutdown().await;
}
