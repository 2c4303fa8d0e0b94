//! The answers real appliances gave (`tests/fixtures/captures/`, see its README), fed to
//! btic as they were sent: a loopback HTTP server replays each body with the headers
//! captured with it (chunked, no `Content-Length`), and the real client reads them.
//! Each capture gets a test saying what btic makes of it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{any, post};
use btic::appliance::{
    ApplianceClient, ApplianceError, ClientOptions, Window, WindowBy, has_permission,
};
use btic::config::{Proxy, RetryPolicy, Secret, SecretSource, Site};
use btic::model::Recording;
use btic::parse::{ErrorMeaning, find_error, parse_api_info};
use chrono::DateTime;

const CAPTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/captures");

fn capture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(CAPTURES).join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The captured headers of each answer, by the request line heading its section
/// (`POST /oauth2/token`, ...), without the values the recorder omitted and without
/// `Transfer-Encoding` (the server frames the body itself: chunked, as no length is
/// given).
fn captured_headers() -> BTreeMap<String, Vec<(String, String)>> {
    let text = String::from_utf8(capture("rs19_response_headers.txt")).unwrap();
    let mut sections = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("# ") {
            let request: Vec<&str> = title.split_whitespace().take(2).collect();
            current = Some(request.join(" "));
            sections.insert(current.clone().unwrap(), Vec::new());
        } else if let (Some(section), Some((name, value))) = (&current, line.split_once(": ")) {
            if value == "<omitted>" || name.eq_ignore_ascii_case("transfer-encoding") {
                continue;
            }
            sections
                .get_mut(section)
                .unwrap()
                .push((name.to_string(), value.to_string()));
        }
    }
    sections
}

/// What the replaying server answers.
struct Replay {
    headers: BTreeMap<String, Vec<(String, String)>>,
}

impl Replay {
    /// `body` with the headers captured for `section`, streamed (so chunked).
    fn answer(&self, section: &str, status: StatusCode, body: Vec<u8>) -> Response {
        let mut builder = Response::builder().status(status);
        for (name, value) in &self.headers[section] {
            builder = builder.header(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            body.chunks(64).map(|c| Ok(c.to_vec())).collect();
        builder
            .body(Body::from_stream(futures::stream::iter(chunks)))
            .unwrap()
    }
}

async fn token(State(replay): State<Arc<Replay>>, headers: HeaderMap) -> Response {
    // `demo:demo-secret`
    let good = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v == "Basic ZGVtbzpkZW1vLXNlY3JldA==");
    if !good {
        // What the PRA 25.2 token endpoint answers a refused client with (the code is
        // captured, the status is not: 401 is what RFC 6749 gives `invalid_client`).
        return replay.answer(
            "POST /oauth2/token",
            StatusCode::UNAUTHORIZED,
            br#"{"error":"invalid_client"}"#.to_vec(),
        );
    }
    let body = String::from_utf8(capture("rs19_token.json"))
        .unwrap()
        .replace("<ACCESS_TOKEN>", "captured-token");
    replay.answer("POST /oauth2/token", StatusCode::OK, body.into_bytes())
}

async fn command(
    State(replay): State<Arc<Replay>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    match q.get("action").map(String::as_str) {
        Some("get_api_info") => replay.answer(
            "GET /api/command?action=get_api_info",
            StatusCode::OK,
            capture("rs19_get_api_info.xml"),
        ),
        Some("check_health") => replay.answer(
            "GET /api/command?action=check_health",
            StatusCode::OK,
            capture("rs19_check_health.xml"),
        ),
        _ => Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(Body::empty())
            .unwrap(),
    }
}

async fn reporting(
    State(replay): State<Arc<Replay>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    // Report answers were not captured with their headers; they are framed like the
    // command API's.
    let section = "GET /api/command?action=get_api_info";
    let body = match q.get("generate_report").map(String::as_str) {
        _ if q.contains_key("lsids") || q.contains_key("lsid") => {
            if q.get("generate_report")
                .is_some_and(|r| r.ends_with("Recording"))
            {
                capture("rs_no_archives_error.xml")
            } else {
                capture("invalid_lsid_error_unverified.xml")
            }
        }
        Some("SupportSession") if q.contains_key("end_time") => capture("pra_no_data_error.xml"),
        _ => capture("pra_access_session.xml"),
    };
    replay.answer(section, StatusCode::OK, body)
}

/// Serves the captures on 127.0.0.1 over plain HTTP; returns the host.
async fn replay_server() -> String {
    let replay = Arc::new(Replay {
        headers: captured_headers(),
    });
    let app = Router::new()
        .route("/oauth2/token", post(token))
        .route("/api/command", any(command))
        .route("/api/reporting", any(reporting))
        .with_state(replay);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    host
}

fn client(host: &str, secret: &str, dir: &Path) -> ApplianceClient {
    let site = Site {
        name: "rs19".into(),
        host: host.into(),
        client_id: "demo".into(),
        client_secret: SecretSource::Plain(Secret::new(secret)),
        ca_file: None,
        insecure_http: true,
        backup_password: None,
        requests_per_second: 1000.0,
        requests_per_hour: 10_000,
        live_reserve: 1000,
        proxy: Proxy::Environment,
        max_in_flight: 1,
        timeout: Duration::from_secs(30),
    };
    let options = ClientOptions {
        retry: RetryPolicy {
            max_attempts: 2,
            initial: Duration::from_millis(10),
            max_interval: Duration::from_millis(20),
        },
        ..ClientOptions::default()
    };
    ApplianceClient::with_options(
        &site,
        Secret::new(secret),
        None,
        &dir.join("spool"),
        options,
    )
    .unwrap()
}

#[tokio::test]
async fn rs19_get_api_info_as_answered_gives_its_nine_permissions_and_the_appliance_clock() {
    let dir = tempfile::tempdir().unwrap();
    let host = replay_server().await;
    let client = client(&host, "demo-secret", dir.path());
    let info = client.api_info().await.unwrap();
    assert_eq!(info.api_version.as_deref(), Some("1.19.0"));
    assert_eq!(info.company_name.as_deref(), Some("supportsuse"));
    assert_eq!(info.timestamp, DateTime::from_timestamp(1_574_638_362, 0));
    let permissions: Vec<(&str, &str)> = info
        .permissions
        .iter()
        .map(|p| (p.name.as_str(), p.value.as_str()))
        .collect();
    assert_eq!(
        permissions,
        [
            ("perm_command", "full_access"),
            ("perm_reporting_support", "1"),
            ("perm_reporting_presentation", "1"),
            ("perm_reporting_license", "1"),
            ("perm_reporting_archive", "1"),
            ("perm_real_time_state", "0"),
            ("perm_ecm", "0"),
            ("perm_backup", "0"),
            ("perm_scim", "0"),
        ]
    );
    for granted in [
        "perm_command",
        "perm_reporting_support",
        "perm_reporting_presentation",
    ] {
        assert!(has_permission(&info, granted), "{granted}");
    }
    for missing in ["perm_backup", "perm_scim", "perm_not_listed"] {
        assert!(!has_permission(&info, missing), "{missing}");
    }
    // The appliance's clock is its `timestamp` (2019-11-24T23:32:42Z): the skew is
    // appliance minus host, however far apart they are.
    let skew = client.skew().expect("skew measured").num_seconds();
    let expected = 1_574_638_362 - chrono::Utc::now().timestamp();
    assert!(
        (skew - expected).abs() <= 2,
        "skew {skew}, expected {expected}"
    );
}

#[test]
fn rs19_get_api_info_reads_the_same_from_the_file_and_the_flat_form_still_reads() {
    let info = parse_api_info(&capture("rs19_get_api_info.xml")[..]).unwrap();
    assert_eq!(info.permissions.len(), 9);
    let flat = "<api_information><perm_reporting_support>1</perm_reporting_support>\
                <perm_backup>0</perm_backup></api_information>";
    let info = parse_api_info(flat.as_bytes()).unwrap();
    assert!(has_permission(&info, "perm_reporting_support"));
    assert!(!has_permission(&info, "perm_backup"));
}

#[tokio::test]
async fn an_empty_window_answered_with_the_pra_no_data_error_is_an_empty_result() {
    let dir = tempfile::tempdir().unwrap();
    let host = replay_server().await;
    let client = client(&host, "demo-secret", dir.path());
    let window = Window {
        by: WindowBy::End,
        from: chrono::Utc::now() - chrono::TimeDelta::hours(1),
        duration: Duration::from_secs(3600),
    };
    let fetched = client.support_sessions(window).await.unwrap();
    assert_eq!(fetched.body, None, "no data is an empty result");
    // And the file itself, `<error >` with its space.
    let found = find_error(&capture("pra_no_data_error.xml")[..])
        .unwrap()
        .unwrap();
    assert_eq!(found.kind, ErrorMeaning::NoData);
}

#[test]
fn the_no_data_text_is_known_in_english_and_in_french() {
    let text = String::from_utf8(capture("no_data_text_fragments.txt")).unwrap();
    let fragments: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(fragments.len(), 2);
    for fragment in fragments {
        let body = format!(
            "<?xml version=\"1.0\"?>\n<error xmlns=\"http://www.beyondtrust.com/sra/namespaces/API/reporting\">{fragment}</error>"
        );
        let found = find_error(body.as_bytes()).unwrap().unwrap();
        assert_eq!(found.kind, ErrorMeaning::NoData, "{fragment}");
    }
}

#[tokio::test]
async fn a_refused_client_is_a_credentials_error_naming_the_oauth_code() {
    let dir = tempfile::tempdir().unwrap();
    let host = replay_server().await;
    let err = client(&host, "wrong-secret", dir.path())
        .api_info()
        .await
        .unwrap_err();
    assert!(matches!(err, ApplianceError::Credentials { .. }), "{err}");
    let text = err.to_string();
    // The code the captured PRA 25.2 answer carried, and never the secret.
    assert!(
        capture("pra_token_error.txt")
            .windows(b"invalid_client".len())
            .any(|w| w == b"invalid_client")
    );
    assert!(text.contains("invalid_client"), "{text}");
    assert!(!text.contains("wrong-secret"), "{text}");
}

#[tokio::test]
async fn a_recording_without_archives_is_no_data_and_a_refused_lsid_list_is_an_error_of_that_request()
 {
    let dir = tempfile::tempdir().unwrap();
    let host = replay_server().await;
    let client = client(&host, "demo-secret", dir.path());
    let recording = client
        .recording(Recording::Screen, "e9e99aeb9ad54fb381634498502c5a1b")
        .await
        .unwrap();
    assert_eq!(recording.body, None);
    let err = client
        .support_sessions_by_lsid(&["a".into(), "b".into()])
        .await
        .unwrap_err();
    assert!(matches!(err, ApplianceError::ErrorBody { .. }), "{err}");
    assert!(err.to_string().contains("Invalid lsid."), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn the_pra_session_capture_arrives_whole_through_a_chunked_answer() {
    let dir = tempfile::tempdir().unwrap();
    let host = replay_server().await;
    let client = client(&host, "demo-secret", dir.path());
    let window = Window {
        by: WindowBy::Start,
        from: chrono::Utc::now() - chrono::TimeDelta::hours(1),
        duration: Duration::ZERO,
    };
    let fetched = client.support_sessions(window).await.unwrap();
    let body = fetched.body.expect("a body");
    assert_eq!(
        std::fs::read(&body.path).unwrap(),
        capture("pra_access_session.xml")
    );
    let sessions: Vec<_> = btic::parse::SessionReader::new(std::io::BufReader::new(
        std::fs::File::open(&body.path).unwrap(),
    ))
    .map(|s| s.unwrap().session)
    .collect();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].lsid, "e9e99aeb9ad54fb381634498502c5a1b");
}

#[test]
fn the_rs19_health_answer_is_not_an_error() {
    assert!(
        find_error(&capture("rs19_check_health.xml")[..])
            .unwrap()
            .is_none()
    );
}

/// Starts the simulator over plain HTTP with `options` and returns it with a bearer
/// token for its API account.
async fn simulator(options: btic::simulator::Options) -> (btic::simulator::Simulator, String) {
    let sim = btic::simulator::Simulator::start(btic::simulator::Options {
        http: true,
        ..options
    })
    .await
    .unwrap();
    let token: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/oauth2/token", sim.host()))
        .basic_auth("demo", Some("demo-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_string();
    (sim, token)
}

async fn get(sim: &btic::simulator::Simulator, token: &str, query: &str) -> reqwest::Response {
    let path = if query.starts_with("action=") {
        "command"
    } else {
        "reporting"
    };
    reqwest::Client::new()
        .get(format!("http://{}/api/{path}?{query}", sim.host()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_simulator_frames_and_writes_get_api_info_as_the_rs19_appliance_did() {
    let (sim, token) = simulator(btic::simulator::Options {
        namespace: btic::simulator::Namespace::Bomgar,
        ..Default::default()
    })
    .await;
    let response = get(&sim, &token, "action=get_api_info").await;
    let headers = response.headers().clone();
    let captured = &captured_headers()["GET /api/command?action=get_api_info"];
    for name in ["Server", "Connection", "Content-Type"] {
        let (_, value) = captured.iter().find(|(n, _)| n == name).unwrap();
        assert_eq!(headers[name], value.as_str(), "{name}");
    }
    assert_eq!(headers[header::TRANSFER_ENCODING], "chunked");
    assert!(headers.get(header::CONTENT_LENGTH).is_none());
    let body = response.text().await.unwrap();
    let real = String::from_utf8(capture("rs19_get_api_info.xml")).unwrap();
    // The same opening: declaration, blank line, the command namespace.
    assert_eq!(
        body.lines().take(3).collect::<Vec<_>>(),
        real.lines().take(3).collect::<Vec<_>>()
    );
    let info = parse_api_info(body.as_bytes()).unwrap();
    let names: Vec<&str> = info.permissions.iter().map(|p| p.name.as_str()).collect();
    let real_info = parse_api_info(real.as_bytes()).unwrap();
    let real_names: Vec<&str> = real_info
        .permissions
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, real_names);
    assert!(body.contains(
        "\t<permissions>\n\t\t\t\t<permission name=\"perm_command\">full_access</permission>"
    ));
    sim.shutdown().await;
}

#[tokio::test]
async fn the_simulator_answers_an_empty_window_as_the_pra_appliance_did_in_either_language() {
    let empty = "generate_report=SupportSession&end_time=0&duration=60";
    let (sim, token) = simulator(Default::default()).await;
    let body = get(&sim, &token, empty).await.text().await.unwrap();
    let found = find_error(body.as_bytes()).unwrap().unwrap();
    assert_eq!(found.kind, ErrorMeaning::NoData);
    let real = find_error(&capture("pra_no_data_error.xml")[..])
        .unwrap()
        .unwrap();
    assert_eq!(found.message, real.message, "the captured text");
    sim.shutdown().await;

    let (sim, token) = simulator(btic::simulator::Options {
        language: btic::simulator::Language::French,
        ..Default::default()
    })
    .await;
    let body = get(&sim, &token, empty).await.text().await.unwrap();
    let found = find_error(body.as_bytes()).unwrap().unwrap();
    assert!(
        found.message.ends_with("n’est disponible."),
        "{}",
        found.message
    );
    assert_eq!(found.kind, ErrorMeaning::NoData);
    sim.shutdown().await;

    let (sim, token) = simulator(btic::simulator::Options {
        empty_answer: btic::simulator::EmptyAnswer::Element,
        ..Default::default()
    })
    .await;
    let body = get(&sim, &token, empty).await.text().await.unwrap();
    assert!(find_error(body.as_bytes()).unwrap().is_none(), "{body}");
    assert!(body.contains("<session_list"), "{body}");
    sim.shutdown().await;
}
