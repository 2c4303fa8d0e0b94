//! The simulated API account's budget and the simulator's test controls, over real HTTPS
//! against `Simulator::start` on 127.0.0.1: the vendor's rate limits and headers, another
//! client of the same account, 429 storms, the `access_denied` answer, the API version,
//! sessions written late, the counters, and the `/_sim/*` controls.

use std::collections::BTreeMap;
use std::time::Duration;

use btic::parse::SessionReader;
use btic::simulator::{Options, RateBudget, Simulator};
use reqwest::StatusCode;

/// A running simulator and an HTTPS client that trusts only its CA.
struct Rig {
    sim: Simulator,
    http: reqwest::Client,
}

impl Rig {
    async fn start(options: Options) -> Rig {
        let sim = Simulator::start(options).await.unwrap();
        let pem = sim.ca_pem.as_ref().unwrap().as_bytes();
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(pem).unwrap()])
            .build()
            .unwrap();
        Rig { sim, http }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.sim.host())
    }

    /// `POST /oauth2/token` with the right credentials.
    async fn token_request(&self) -> reqwest::Response {
        self.http
            .post(self.url("/oauth2/token"))
            .basic_auth("demo", Some("demo-secret"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap()
    }

    async fn token(&self) -> String {
        let response = self.token_request().await;
        assert_eq!(response.status(), StatusCode::OK);
        let answer: serde_json::Value = response.json().await.unwrap();
        answer["access_token"].as_str().unwrap().to_string()
    }

    async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn post_json(&self, path: &str, body: &str) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    async fn shutdown(self) {
        self.sim.shutdown().await;
    }
}

const API_INFO: &str = "/api/command?action=get_api_info";

/// A `SupportSession` window by end time, `[from, from + duration)` or up to now.
fn by_end(from: i64, duration: i64) -> String {
    format!("/api/reporting?generate_report=SupportSession&end_time={from}&duration={duration}")
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// `(X-RateLimit-Limit, X-RateLimit-Remaining)` as numbers.
fn budget_headers(response: &reqwest::Response) -> (u32, u32) {
    let number = |name| {
        header(response, name)
            .unwrap_or_else(|| panic!("{name} missing from {}", response.url()))
            .parse()
            .unwrap()
    };
    (number("x-ratelimit-limit"), number("x-ratelimit-remaining"))
}

fn lsids_in(body: &[u8]) -> Vec<String> {
    SessionReader::new(body)
        .map(|s| s.unwrap().session.lsid.into())
        .collect()
}

#[tokio::test]
async fn every_counted_answer_carries_the_budget_headers_and_remaining_goes_down_by_one() {
    let rig = Rig::start(Options {
        recording_bytes: 10_000,
        backup_bytes: 10_000,
        sessions_per_day: 100,
        days: 1,
        ..Options::default()
    })
    .await;
    let now = rig.sim.appliance_now().timestamp();
    let mut answers = Vec::new();
    let token = rig.token_request().await;
    answers.push(("token", StatusCode::OK, budget_headers(&token)));
    let token: serde_json::Value = token.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap();
    let info = rig.get(token, API_INFO).await;
    answers.push(("get_api_info", info.status(), budget_headers(&info)));
    let refused = rig.get("not-a-token", API_INFO).await;
    answers.push(("dead token", refused.status(), budget_headers(&refused)));
    let report = rig.get(token, &by_end(now - 86_400, 0)).await;
    answers.push(("report", report.status(), budget_headers(&report)));
    let body = report.bytes().await.unwrap();
    let lsid = SessionReader::new(&body[..])
        .map(|s| s.unwrap().session)
        .find(|s| s.has_screen_recording())
        .expect("a session with a recording")
        .lsid;
    let recording = rig
        .get(
            token,
            &format!("/api/reporting?generate_report=SupportSessionRecording&lsid={lsid}"),
        )
        .await;
    answers.push(("recording", recording.status(), budget_headers(&recording)));
    assert_eq!(recording.bytes().await.unwrap().len(), 10_000);
    let backup = rig
        .http
        .post(rig.url("/api/backup"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    answers.push(("backup", backup.status(), budget_headers(&backup)));
    let unknown = rig.get(token, "/api/command?action=nothing").await;
    answers.push(("unknown action", unknown.status(), budget_headers(&unknown)));

    let expected: Vec<_> = [
        ("token", StatusCode::OK),
        ("get_api_info", StatusCode::OK),
        ("dead token", StatusCode::UNAUTHORIZED),
        ("report", StatusCode::OK),
        ("recording", StatusCode::OK),
        ("backup", StatusCode::OK),
        ("unknown action", StatusCode::OK),
    ]
    .into_iter()
    .zip(1..)
    .map(|((name, status), spent)| (name, status, (15_000, 15_000 - spent)))
    .collect();
    assert_eq!(answers, expected);

    // Free endpoints neither spend nor carry the headers.
    let health = rig.http.get(rig.url("/check_health")).send().await.unwrap();
    assert_eq!(header(&health, "x-ratelimit-remaining"), None);
    let truth = rig
        .http
        .get(rig.url("/_sim/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&truth, "x-ratelimit-remaining"), None);
    let info = rig.get(token, API_INFO).await;
    assert_eq!(budget_headers(&info), (15_000, 15_000 - 8));
    rig.shutdown().await;
}

#[tokio::test]
async fn the_per_second_limit_refuses_with_429_without_retry_after_and_frees_a_second_later() {
    let rig = Rig::start(Options {
        budget: RateBudget {
            per_second: 3,
            per_hour: 0,
            ..RateBudget::default()
        },
        ..Options::default()
    })
    .await;
    for _ in 0..3 {
        let response = rig.token_request().await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, "x-ratelimit-limit"),
            None,
            "no hour limit"
        );
    }
    let refused = rig.token_request().await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "retry-after"), None, "not configured");
    assert_eq!(refused.text().await.unwrap(), "Too Many Requests");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(rig.token_request().await.status(), StatusCode::OK);
    let stats = rig.sim.stats();
    assert_eq!((stats.rate_limited, stats.max_in_second), (1, 3));
    assert_eq!(stats.requests["token"], 4, "the 429 is not a token request");
    rig.shutdown().await;
}

#[tokio::test]
async fn the_hour_limit_refuses_with_retry_after_until_its_window_passes_and_429s_cost_nothing() {
    let rig = Rig::start(Options {
        budget: RateBudget {
            per_second: 0,
            per_hour: 5,
            hour: Duration::from_secs(2),
            retry_after: true,
        },
        ..Options::default()
    })
    .await;
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let response = rig.token_request().await;
        assert_eq!(response.status(), StatusCode::OK);
        remaining.push(budget_headers(&response).1);
    }
    let spent = tokio::time::Instant::now();
    assert_eq!(remaining, [4, 3, 2, 1, 0]);
    // The refusals come a second later, so that, had they counted, they would still
    // be in the window when the first five have left it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..5 {
        let refused = rig.token_request().await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(budget_headers(&refused), (5, 0));
        let wait: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
        assert_eq!(wait, 1, "the first slot frees within the second");
    }
    tokio::time::sleep_until(spent + Duration::from_millis(2100)).await;
    for expected in (0..5).rev() {
        let response = rig.token_request().await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(budget_headers(&response).1, expected);
    }
    let stats = rig.sim.stats();
    assert_eq!(stats.rate_limited, 5);
    assert_eq!((stats.max_in_hour, stats.client_max_in_hour), (5, 5));
    rig.shutdown().await;
}

#[tokio::test]
async fn the_other_client_spends_the_accounts_budget_and_is_refused_once_it_is_spent() {
    let rig = Rig::start(Options {
        budget: RateBudget {
            per_second: 0,
            per_hour: 10,
            ..RateBudget::default()
        },
        other_client_per_minute: 6000.0,
        ..Options::default()
    })
    .await;
    // A hundred a second: ten spend the budget within a tenth of a second or so.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = rig.token_request().await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(budget_headers(&refused), (10, 0));
    let stats = rig.sim.stats();
    assert_eq!(stats.other_requests, 10);
    assert!(stats.other_refused > 0, "{stats:?}");
    assert_eq!((stats.max_in_hour, stats.client_max_in_hour), (10, 0));
    assert_eq!(stats.rate_limited, 1);
    // Once it stops, it spends nothing more.
    rig.sim.set_other_client(0.0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let tried = rig.sim.stats().other_refused;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rig.sim.stats().other_refused, tried);
    rig.shutdown().await;
}

#[tokio::test]
async fn a_storm_answers_429_with_its_retry_after_and_spends_nothing() {
    let rig = Rig::start(Options::default()).await;
    let token = rig.token().await;
    rig.sim.storm(Duration::from_millis(500), Some(7));
    for _ in 0..3 {
        let refused = rig.get(&token, API_INFO).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&refused, "retry-after").as_deref(), Some("7"));
        assert_eq!(budget_headers(&refused), (15_000, 14_999));
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let info = rig.get(&token, API_INFO).await;
    assert_eq!(info.status(), StatusCode::OK);
    assert_eq!(budget_headers(&info), (15_000, 14_998));
    // A storm without Retry-After.
    rig.sim.storm(Duration::from_secs(60), None);
    let refused = rig.token_request().await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "retry-after"), None);
    rig.sim.storm(Duration::ZERO, None);
    assert_eq!(rig.token_request().await.status(), StatusCode::OK);
    let stats = rig.sim.stats();
    assert_eq!((stats.rate_limited, stats.api_requests), (4, 4));
    rig.shutdown().await;
}

#[tokio::test]
async fn a_dead_token_gets_the_vendors_access_denied_json_with_the_chosen_status() {
    let rig = Rig::start(Options {
        denied_status: 403,
        ..Options::default()
    })
    .await;
    let refused = rig.get("expired-or-invalid", API_INFO).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        header(&refused, "content-type").as_deref(),
        Some("application/json")
    );
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "error": "access_denied",
            "message": "The resource owner or authorization server denied the request."
        })
    );
    assert_eq!(rig.sim.stats().unauthorized, 1);
    rig.shutdown().await;

    let err = Simulator::start(Options {
        denied_status: 200,
        ..Options::default()
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("denied_status 200"), "{err}");
}

#[tokio::test]
async fn api_version_1_25_0_reports_no_company_name_and_the_default_1_24_0_does() {
    for (version, company) in [(None, true), (Some("1.25.0"), false)] {
        let mut options = Options::default();
        if let Some(v) = version {
            options.api_version = v.into();
        }
        let rig = Rig::start(options).await;
        let token = rig.token().await;
        let body = rig.get(&token, API_INFO).await.text().await.unwrap();
        let info = btic::parse::parse_api_info(body.as_bytes()).unwrap();
        assert_eq!(
            info.api_version.as_deref(),
            Some(version.unwrap_or("1.24.0"))
        );
        assert_eq!(info.company_name.is_some(), company, "{body}");
        rig.shutdown().await;
    }
}

#[tokio::test]
async fn a_late_session_is_missing_from_end_time_windows_until_the_clock_passes_its_time() {
    let rig = Rig::start(Options {
        sessions_per_day: 2000,
        days: 1,
        late_every: 3,
        late_seconds: 900,
        truth: true,
        ..Options::default()
    })
    .await;
    let now = rig.sim.appliance_now().timestamp();
    let truth: serde_json::Value = rig
        .http
        .get(rig.url("/_sim/sessions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sessions = truth["sessions"].as_array().unwrap();
    assert!(sessions.iter().any(|s| s.get("late").is_none()));
    // A late one that ended a little while ago: not written yet.
    let late = sessions
        .iter()
        .rev()
        .find(|s| {
            let end = s["end_time"].as_i64().unwrap();
            s["late"] == true && end + 900 > now + 30 && end + 60 < now
        })
        .expect("a late session that ended one to fourteen minutes ago");
    let lsid = late["lsid"].as_str().unwrap();
    let end = late["end_time"].as_i64().unwrap();
    let start = late["start_time"].as_i64().unwrap();
    let token = rig.token().await;
    let fetch = |path: String| {
        let (rig, token) = (&rig, &token);
        async move {
            let response = rig.get(token, &path).await;
            assert_eq!(response.status(), StatusCode::OK);
            lsids_in(&response.bytes().await.unwrap())
        }
    };
    let window = by_end(end - 60, 120);
    let before = fetch(window.clone()).await;
    assert!(!before.iter().any(|l| l == lsid), "written late");
    let up_to_now = fetch(by_end(end - 60, 0)).await;
    assert!(!up_to_now.iter().any(|l| l == lsid));
    // By start time and by LSID it is there all along.
    let by_start = fetch(format!(
        "/api/reporting?generate_report=SupportSession&start_time={start}&duration=1"
    ))
    .await;
    assert!(by_start.iter().any(|l| l == lsid));
    let by_lsid = fetch(format!(
        "/api/reporting?generate_report=SupportSession&lsid={lsid}"
    ))
    .await;
    assert_eq!(by_lsid, [lsid]);

    rig.sim.advance(Duration::from_secs(900));
    let after = fetch(window).await;
    assert!(after.iter().any(|l| l == lsid), "written at last");
    assert!(
        before.iter().all(|l| after.contains(l)),
        "{before:?} {after:?}"
    );
    rig.shutdown().await;
}

#[tokio::test]
async fn stats_count_requests_by_kind_and_the_sessions_and_bytes_of_report_answers() {
    let rig = Rig::start(Options {
        truth: true,
        sessions_per_day: 100,
        days: 1,
        recording_bytes: 1000,
        backup_bytes: 1000,
        ..Options::default()
    })
    .await;
    let token = rig.token().await;
    let now = rig.sim.appliance_now().timestamp();
    rig.get(&token, API_INFO).await;
    rig.get(&token, API_INFO).await;
    let day = rig.get(&token, &by_end(now - 86_400, 0)).await;
    let day = day.bytes().await.unwrap();
    let sessions = lsids_in(&day).len() as u64;
    assert!(sessions > 50, "{sessions}");
    let empty = rig.get(&token, &by_end(0, 60)).await.bytes().await.unwrap();
    assert!(String::from_utf8_lossy(&empty).contains("No Support report information"));
    let mut bytes = (day.len() + empty.len()) as u64;
    let listing = rig
        .get(
            &token,
            &format!(
                "/api/reporting?generate_report=SupportSessionListing&end_time={}&duration=0",
                now - 3600
            ),
        )
        .await;
    bytes += listing.bytes().await.unwrap().len() as u64;
    rig.get(
        &token,
        "/api/reporting?generate_report=SupportSessionRecording&lsid=00000000000000000000000000000000",
    )
    .await;
    rig.http
        .post(rig.url("/api/backup"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();

    let stats = rig.sim.stats();
    let kinds: BTreeMap<String, u64> = [
        ("token", 1),
        ("get_api_info", 2),
        ("SupportSession", 2),
        ("SupportSessionListing", 1),
        ("SupportSessionRecording", 1),
        ("backup", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n))
    .collect();
    assert_eq!(stats.requests, kinds);
    assert_eq!(stats.sessions_returned, sessions);
    assert_eq!(
        stats.report_bytes, bytes,
        "both reports and the no-data answer"
    );
    assert_eq!(stats.api_requests, 7);
    assert_eq!((stats.max_in_hour, stats.client_max_in_hour), (8, 8));

    // The same counters over HTTP, for rigs that run `btic simulate`.
    let json: serde_json::Value = rig
        .http
        .get(rig.url("/_sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["requests"]["get_api_info"], 2);
    assert_eq!(json["sessions_returned"], sessions);
    assert_eq!(json["report_bytes"], bytes);
    assert_eq!(json["tokens_issued"], 1);
    for key in [
        "api_requests",
        "unauthorized",
        "faults",
        "rate_limited",
        "other_requests",
        "other_refused",
        "max_in_second",
        "max_in_hour",
        "client_max_in_hour",
    ] {
        assert!(json[key].is_u64(), "{key} in {json}");
    }
    rig.shutdown().await;
}

#[tokio::test]
async fn post_sim_budget_changes_the_limits_and_starts_a_storm() {
    let rig = Rig::start(Options {
        truth: true,
        ..Options::default()
    })
    .await;
    let changed = rig
        .post_json(
            "/_sim/budget",
            r#"{"per_hour": 3, "hour_seconds": 60, "retry_after": true}"#,
        )
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let settings: serde_json::Value = changed.json().await.unwrap();
    assert_eq!(
        settings,
        serde_json::json!({
            "per_second": 20, "per_hour": 3, "hour_seconds": 60,
            "retry_after": true, "other_client_per_minute": 0.0
        })
    );
    for expected in [2, 1, 0] {
        assert_eq!(budget_headers(&rig.token_request().await), (3, expected));
    }
    let refused = rig.token_request().await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!((59..=60).contains(&wait), "Retry-After: {wait}");

    // Limits off, then a storm with Retry-After.
    let storm = r#"{"per_second": 0, "per_hour": 0, "storm_seconds": 30, "storm_retry_after": 4}"#;
    assert_eq!(
        rig.post_json("/_sim/budget", storm).await.status(),
        StatusCode::OK
    );
    let refused = rig.token_request().await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "retry-after").as_deref(), Some("4"));
    assert_eq!(header(&refused, "x-ratelimit-limit"), None, "no hour limit");
    let calm = r#"{"storm_seconds": 0, "storm_retry_after": null}"#;
    assert_eq!(
        rig.post_json("/_sim/budget", calm).await.status(),
        StatusCode::OK
    );
    assert_eq!(rig.token_request().await.status(), StatusCode::OK);

    for bad in [
        "",
        "[]",
        r#"{"per_hour": -1}"#,
        r#"{"per_hour": "many"}"#,
        r#"{"perhour": 5}"#,
        r#"{"hour_seconds": 0}"#,
        r#"{"other_client_per_minute": -2}"#,
        r#"{"storm_retry_after": 3}"#,
    ] {
        let response = rig.post_json("/_sim/budget", bad).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        let text = response.text().await.unwrap();
        assert!(text.starts_with("expected a JSON object"), "{bad}: {text}");
    }
    rig.shutdown().await;
}

#[tokio::test]
async fn post_sim_clock_moves_the_appliance_clock_forward() {
    let rig = Rig::start(Options {
        truth: true,
        skew_seconds: -60,
        ..Options::default()
    })
    .await;
    let before = rig.sim.appliance_now().timestamp();
    let moved = rig
        .post_json("/_sim/clock", r#"{"advance_seconds": 7200}"#)
        .await;
    assert_eq!(moved.status(), StatusCode::OK);
    let answer: serde_json::Value = moved.json().await.unwrap();
    let now = answer["appliance_now"].as_i64().unwrap();
    assert!((now - before - 7200).abs() <= 2, "{before} -> {now}");
    assert!((rig.sim.appliance_now().timestamp() - now).abs() <= 2);
    for bad in [
        r#"{"advance_seconds": -5}"#,
        r#"{"advance_seconds": 18446744073709551615}"#,
        r#"{"seconds": 5}"#,
    ] {
        let response = rig.post_json("/_sim/clock", bad).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    rig.shutdown().await;
}

#[tokio::test]
async fn the_test_controls_are_404_without_truth() {
    let rig = Rig::start(Options::default()).await;
    for (path, body) in [
        ("/_sim/budget", r#"{"per_hour": 1}"#),
        ("/_sim/clock", r#"{"advance_seconds": 60}"#),
    ] {
        let response = rig.post_json(path, body).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let text = response.text().await.unwrap();
        assert!(text.contains("start with --truth"), "{path}: {text}");
    }
    let stats = rig.http.get(rig.url("/_sim/stats")).send().await.unwrap();
    assert_eq!(stats.status(), StatusCode::NOT_FOUND);
    // Nothing changed: the vendor's budget, and nothing spent by the controls.
    assert_eq!(budget_headers(&rig.token_request().await), (15_000, 14_999));
    rig.shutdown().await;
}
