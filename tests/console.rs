//! The operator's console in a real browser: Debian's Chromium driven through its
//! WebDriver (`chromedriver`) against a daemon fed by the simulator, with one report
//! window the appliance refuses with a text holding markup. Screenshots of each page are
//! saved under `target/console-screenshots/`.

mod rig;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use rig::{Daemon, Sim, eventually, free_port, pipeline, skip, sqlite_lsids};
use serde_json::json;

/// What the appliance says when it refuses the window: markup a page must show as text.
const HOSTILE: &str =
    "<script>document.title='pwned'</script><b id=\"injected\">bold</b> cannot report";

/// The second site's secret, which the appliance refuses.
const WRONG_SECRET: &str = "wrong-secret-value-4711";

/// A `chromedriver` on a free loopback port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// `None` (the test skipped) when Chromium or its driver is not installed.
    async fn start(test: &str) -> Option<Driver> {
        for tool in ["chromium", "chromedriver"] {
            if Command::new(tool).arg("--version").output().is_err() {
                skip::missing(
                    test,
                    &format!("{tool} is not installed (apt-get install chromium chromium-driver)"),
                );
                return None;
            }
        }
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let driver = Driver { child, url };
        let up = eventually(Duration::from_secs(20), async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        assert!(up, "chromedriver did not listen on {port}");
        Some(driver)
    }

    /// A headless Chromium session (root needs `--no-sandbox`).
    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000"],
            }),
        );
        ClientBuilder::rustls()
            .expect("a WebDriver client")
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// The page's visible text.
async fn text(browser: &Client) -> String {
    browser
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The CSRF token of the page at `url`, as its forms carry it.
async fn csrf(http: &reqwest::Client, url: &str) -> String {
    let page = http.get(url).send().await.unwrap().text().await.unwrap();
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with the token")
        + 19;
    page[at..at + 64].to_string()
}

/// The end of a session about six hours before appliance-now: its window is refused.
async fn refused_time(sim: &Sim) -> i64 {
    let (now, _) = sim.truth(None).await;
    sim.truth_with_end(now)
        .await
        .values()
        .map(|(_, end)| *end)
        .filter(|end| *end < now - 6 * 3600)
        .max()
        .expect("a session six hours ago")
}

/// A SQLite destination `lite` (`btic.sqlite` in `dir`) and the transfer of the
/// simulator's sessions into it.
fn sqlite(dir: &Path) -> (String, &'static str) {
    let destination = format!(
        "[[destination]]\nname = \"lite\"\ntype = \"sqlite\"\npath = \"{}\"\n",
        dir.join("btic.sqlite").display()
    );
    let transfer =
        "[[schedule.transfer]]\nsite = \"sim\"\ndestination = \"lite\"\ndata = [\"sessions\"]\n";
    (destination, transfer)
}

struct Rig {
    _dir: tempfile::TempDir,
    sim: Sim,
    daemon: Option<Daemon>,
    config: PathBuf,
    db: PathBuf,
    base: String,
    log: PathBuf,
}

impl Rig {
    /// The daemon, with every session delivered but the refused window's, which waits in
    /// the dead letter.
    async fn start() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let sim = Sim::start(dir.path(), &["--days", "1", "--sessions-per-day", "300"]);
        let refused_at = refused_time(&sim).await;
        sim.refuse_with(&[refused_at], HOSTILE).await;
        let db = dir.path().join("btic.sqlite");
        let (destination, transfer) = sqlite(dir.path());
        // A second account on the same appliance, with a secret it refuses: Checks shows
        // it failed, without the secret.
        let destination = format!(
            "[[site]]\nname = \"wrong\"\nhost = \"{}\"\nclient_id = \"demo\"\nclient_secret = \"{WRONG_SECRET}\"\nca_file = \"{}\"\n\n{destination}",
            sim.host,
            sim.ca.display()
        );
        let port = free_port();
        let config = pipeline(dir.path(), &sim, port, &destination, transfer);
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            text.replace("max_window = \"12h\"", "max_window = \"1h\""),
        )
        .unwrap();
        let log = dir.path().join("run.log");
        // Chart samples every 2 s, so the charts have lines within the test.
        let daemon = Daemon::start_with(&config, &log, &[("BTIC_TREND_SECONDS", "2")]);
        let rig = Rig {
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
            sim,
            daemon: Some(daemon),
            config,
            db,
            log,
        };
        let ready = format!("{}/readyz", rig.base);
        let up = eventually(Duration::from_secs(30), async || {
            reqwest::get(&ready)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        assert!(
            up,
            "the daemon did not become ready; log:\n{}",
            rig.log_text()
        );
        let waiting = eventually(Duration::from_secs(120), async || {
            !rig::dead_letters(&rig.config).is_empty()
        })
        .await;
        assert!(waiting, "no dead letter; log:\n{}", rig.log_text());
        rig
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every session the appliance has, each once, in SQLite.
    async fn all_delivered_once(&self, within: Duration) -> bool {
        let (now, _) = self.sim.truth(None).await;
        let truth = self.sim.truth_with_end(now - 10).await;
        eventually(within, async || {
            let rows = sqlite_lsids(&self.db);
            truth.keys().all(|l| rows.contains_key(l))
        })
        .await
            && sqlite_lsids(&self.db).values().all(|n| *n == 1)
    }
}

/// A console action that is cross-origin or lacks the CSRF token is refused (403) and
/// changes nothing.
async fn forged_actions_are_refused(rig: &Rig, http: &reqwest::Client) {
    let letters = rig::dead_letters(&rig.config).len();
    let token = csrf(http, &format!("{}/dead-letters", rig.base)).await;
    let replay = format!("{}/dead-letters/replay", rig.base);
    let cross = http
        .post(&replay)
        .header("Origin", "http://evil.example")
        .form(&[("csrf", token.as_str()), ("queue", "fetch/sim")])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    let tokenless = http
        .post(&replay)
        .header("Origin", &rig.base)
        .form(&[("queue", "fetch/sim")])
        .send()
        .await
        .unwrap();
    assert_eq!(tokenless.status(), 403);
    let wrong = http
        .post(&replay)
        .form(&[("csrf", "0".repeat(64).as_str()), ("queue", "fetch/sim")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    let admin = http
        .post(format!("{}/admin/replay", rig.base))
        .header("Origin", "http://evil.example")
        .json(&json!({"id": null, "destination": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 403);
    assert_eq!(
        rig::dead_letters(&rig.config).len(),
        letters,
        "nothing changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_daemon_and_its_actions_work_in_a_real_browser() {
    let test = "the_console_shows_the_daemon_and_its_actions_work_in_a_real_browser";
    let Some(driver) = Driver::start(test).await else {
        return;
    };
    let rig = Rig::start().await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let browser = driver.browser().await;

    // The overview: the site, its watermark, the dead letter of its fetch queue.
    browser.goto(&format!("{}/", rig.base)).await.unwrap();
    let overview = text(&browser).await;
    assert!(
        overview.contains("sim"),
        "{overview}\nlog:\n{}",
        rig.log_text()
    );
    assert!(
        overview.contains("SupportSession: 20"),
        "the watermark: {overview}"
    );
    let dead = browser
        .find(Locator::Css("a[href='/dead-letters?queue=fetch%2Fsim']"))
        .await
        .expect("the fetch queue's dead letters, linked");
    assert!(dead.text().await.unwrap().parse::<u64>().unwrap() >= 1);
    screenshot(&browser, "overview").await;

    // The dead letters: the appliance's markup is text, not markup.
    dead.click().await.unwrap();
    let letters = text(&browser).await;
    assert!(letters.contains(HOSTILE), "shown as text: {letters}");
    assert_ne!(browser.title().await.unwrap(), "pwned");
    assert!(browser.find(Locator::Id("injected")).await.is_err());
    screenshot(&browser, "dead-letters").await;

    forged_actions_are_refused(&rig, &http).await;

    // Replay: the appliance answers again; the window's sessions arrive once.
    rig.sim.refuse_with(&[], "").await;
    browser
        .find(Locator::XPath(
            "//button[contains(., 'Replay all of fetch/sim')]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let notice = browser
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css("p.notice"))
        .await
        .unwrap();
    assert!(notice.text().await.unwrap().contains("replayed"));
    assert!(
        rig.all_delivered_once(Duration::from_secs(90)).await,
        "log:\n{}",
        rig.log_text()
    );
    assert!(rig::dead_letters(&rig.config).is_empty());
    screenshot(&browser, "dead-letters-replayed").await;

    api_tester(&rig, &browser).await;
    tap(&rig, &browser, &http).await;
    checks_history_and_log(&rig, &browser).await;

    // By now the charts have samples: four drawings with lines, the site among them.
    browser.goto(&format!("{}/", rig.base)).await.unwrap();
    let charts = browser.find_all(Locator::Css("figure svg")).await.unwrap();
    assert_eq!(charts.len(), 4);
    let lines = browser
        .find_all(Locator::Css("figure svg polyline"))
        .await
        .unwrap();
    assert!(lines.len() >= 4, "{} lines", lines.len());
    let captions = browser
        .find(Locator::Css("div.charts"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        captions.contains("lite") && captions.contains("sim"),
        "{captions}"
    );
    browser.set_window_size(1280, 1300).await.unwrap();
    screenshot(&browser, "overview-charts").await;

    browser.close().await.unwrap();
    let (code, _) = rig.daemon.unwrap().terminate();
    assert_eq!(code, Some(0));
}

/// The API tester's form starts a backfill whose bar reaches 100 %; its sessions arrive
/// (again, once each: the destination is idempotent).
async fn api_tester(rig: &Rig, browser: &Client) {
    browser.goto(&format!("{}/tester", rig.base)).await.unwrap();
    screenshot(browser, "api-tester").await;
    let today = chrono::Utc::now().date_naive();
    let from = (today - chrono::Days::new(2)).to_string();
    let to = (today + chrono::Days::new(1)).to_string();
    browser
        .execute(
            "document.querySelector('[name=from]').value = arguments[0];
             document.querySelector('[name=to]').value = arguments[1];",
            vec![json!(from), json!(to)],
        )
        .await
        .unwrap();
    browser
        .find(Locator::Css("input[name=destination][value=lite]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .find(Locator::XPath("//button[contains(., 'Download')]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let waited = browser
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css("progress"))
        .await;
    let moving = match waited {
        Ok(bar) => bar,
        Err(e) => panic!("{e}: no progress bar on\n{}", text(browser).await),
    };
    assert!(moving.attr("value").await.unwrap().is_some());
    screenshot(browser, "api-tester-progress").await;
    let finished = eventually(Duration::from_secs(120), async || {
        text(browser).await.contains("Finished:")
    })
    .await;
    let page = text(browser).await;
    assert!(finished, "{page}\nlog:\n{}", rig.log_text());
    let value = browser
        .execute("return document.querySelector('progress').value", vec![])
        .await
        .unwrap();
    assert_eq!(value, json!(100));
    let delivered: u64 = page
        .split("Finished: ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(delivered > 100, "{page}");
    assert!(rig.all_delivered_once(Duration::from_secs(5)).await);
    screenshot(browser, "api-tester-finished").await;
}

/// The tap shows sessions passing parse and deliver while a backfill by LSID runs.
async fn tap(rig: &Rig, browser: &Client, http: &reqwest::Client) {
    browser.goto(&format!("{}/tap", rig.base)).await.unwrap();
    // The page's stream is open once the browser has asked for it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lsids: Vec<String> = sqlite_lsids(&rig.db).into_keys().take(20).collect();
    let started = http
        .post(format!("{}/admin/backfill", rig.base))
        .json(&json!({
            "site": "sim", "from": null, "to": null, "lsids": lsids,
            "routes": {"sessions": ["lite"], "recordings": [], "in_progress": [], "track_open": false},
            "presentations": {"sessions": [], "recordings": [], "in_progress": [], "track_open": false},
        }))
        .send()
        .await
        .unwrap();
    assert!(
        started.status().is_success(),
        "{}",
        started.text().await.unwrap()
    );
    let passing = eventually(Duration::from_secs(60), async || {
        let page = text(browser).await;
        page.contains("delivered") && page.contains("parse")
    })
    .await;
    assert!(passing, "{}", text(browser).await);
    screenshot(browser, "tap").await;
}

/// A network namespace joined to this one by a veth pair: a peer on another address,
/// as another host on the network would be. Removed when dropped.
struct Peer {
    namespace: String,
    host_ip: String,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.namespace])
            .status();
    }
}

impl Peer {
    /// `None` (the test skipped) without `ip`, `curl` or the right to make namespaces.
    fn make(test: &str) -> Option<Peer> {
        for tool in ["ip", "curl"] {
            if Command::new(tool).arg("-V").output().is_err() {
                skip::missing(test, &format!("{tool} is not installed"));
                return None;
            }
        }
        let n = std::process::id() % 100_000;
        let (outside, inside) = (format!("btic{n}h"), format!("btic{n}p"));
        let octet = n % 250 + 1;
        let host_ip = format!("10.231.{octet}.1");
        let peer = Peer {
            namespace: format!("btic-peer-{n}"),
            host_ip: host_ip.clone(),
        };
        let ns = peer.namespace.as_str();
        let steps: [&[&str]; 7] = [
            &["netns", "add", ns],
            &[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ],
            &["link", "set", &inside, "netns", ns],
            &["addr", "add", &format!("{host_ip}/30"), "dev", &outside],
            &["link", "set", &outside, "up"],
            &[
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.231.{octet}.2/30"),
                "dev",
                &inside,
            ],
            &["-n", ns, "link", "set", &inside, "up"],
        ];
        for step in steps {
            let out = Command::new("ip").args(step).output().unwrap();
            if !out.status.success() {
                let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
                skip::missing(test, &format!("ip {}: {why}", step.join(" ")));
                return None;
            }
        }
        Some(peer)
    }

    /// `curl` from the peer: the status code and the body.
    fn curl(&self, args: &[&str]) -> (u16, String) {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.namespace,
                "curl",
                "-s",
                "--max-time",
                "10",
            ])
            .args(["-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

/// From another address, with the listener on `0.0.0.0`: without a token the console
/// and every action are refused while `/metrics` answers; with a token, a request
/// without it gets 401 and one with it (bearer, or the login form's cookie) is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_host_needs_the_console_token_and_metrics_stay_open() {
    let test = "another_host_needs_the_console_token_and_metrics_stay_open";
    let Some(peer) = Peer::make(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--days", "1", "--sessions-per-day", "50"]);
    let port = free_port();
    let (destination, transfer) = sqlite(dir.path());
    let config = pipeline(dir.path(), &sim, port, &destination, transfer);
    let text = std::fs::read_to_string(&config).unwrap();
    let wildcard = text.replace(&format!("127.0.0.1:{port}"), &format!("0.0.0.0:{port}"));
    std::fs::write(&config, &wildcard).unwrap();
    let url = |path: &str| format!("http://{}:{port}{path}", peer.host_ip);
    let log = dir.path().join("run.log");
    let ready = async || {
        let ready = format!("http://127.0.0.1:{port}/readyz");
        let up = eventually(Duration::from_secs(30), async || {
            reqwest::get(&ready)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(up, "the daemon did not become ready; log:\n{said}");
    };

    // No token: loopback-only, said once at the start.
    let daemon = Daemon::start(&config, &log);
    ready().await;
    assert_eq!(peer.curl(&[&url("/metrics")]).0, 200);
    assert_eq!(peer.curl(&[&url("/healthz")]).0, 200);
    for path in [
        "/",
        "/dead-letters",
        "/tap",
        "/admin/status",
        "/admin/dead-letters",
    ] {
        let (code, body) = peer.curl(&[&url(path)]);
        assert_eq!(code, 403, "{path}: {body}");
    }
    let (code, _) = peer.curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        "{\"id\":null,\"destination\":null}",
        &url("/admin/replay"),
    ]);
    assert_eq!(code, 403);
    let (code, _) = peer.curl(&["-d", "token=x", &url("/login")]);
    assert_eq!(code, 401, "no token configured: no login either");
    // This host is still served.
    let local = reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap();
    assert_eq!(local.status(), 200);
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
    let said = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        said.matches("answer this host (loopback) only").count(),
        1,
        "{said}"
    );

    // A token: 401 without it, served with it.
    let token = "console-token-for-the-test";
    std::fs::write(
        &config,
        format!("{wildcard}\n[console]\ntoken = {{ env = \"BTIC_CONSOLE_TOKEN\" }}\n"),
    )
    .unwrap();
    let daemon = Daemon::start_with(&config, &log, &[("BTIC_CONSOLE_TOKEN", token)]);
    ready().await;
    assert_eq!(peer.curl(&[&url("/metrics")]).0, 200);
    let (code, body) = peer.curl(&[&url("/")]);
    assert_eq!(code, 401);
    assert!(!body.contains(token));
    assert_eq!(peer.curl(&[&url("/admin/status")]).0, 401);
    let bearer = format!("Authorization: Bearer {token}");
    assert_eq!(peer.curl(&["-H", &bearer, &url("/")]).0, 200);
    assert_eq!(peer.curl(&["-H", &bearer, &url("/admin/status")]).0, 200);
    assert_eq!(
        peer.curl(&["-H", "Authorization: Bearer wrong", &url("/")])
            .0,
        401
    );
    // The login form: a wrong token is refused, the right one sets the cookie.
    assert_eq!(peer.curl(&["-d", "token=wrong", &url("/login")]).0, 401);
    let jar = dir.path().join("cookies");
    let jar = jar.to_str().unwrap();
    let (code, _) = peer.curl(&["-c", jar, "-d", &format!("token={token}"), &url("/login")]);
    assert_eq!(code, 303);
    let cookie = std::fs::read_to_string(jar).unwrap();
    assert!(
        cookie.contains("#HttpOnly_") && cookie.contains("btic_console"),
        "{cookie}"
    );
    assert!(!cookie.contains(token), "the cookie is not the token");
    let (code, page) = peer.curl(&["-b", jar, &url("/")]);
    assert_eq!(code, 200);
    assert!(page.contains("Overview") && !page.contains(token));
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(!said.contains(token), "the token is never logged");

    // `[console] enabled = false`: no console, even here; the admin API stays.
    std::fs::write(&config, format!("{wildcard}\n[console]\nenabled = false\n")).unwrap();
    let daemon = Daemon::start(&config, &log);
    ready().await;
    let local = |path: &str| format!("http://127.0.0.1:{port}{path}");
    assert_eq!(reqwest::get(local("/")).await.unwrap().status(), 404);
    assert_eq!(
        reqwest::get(local("/dead-letters")).await.unwrap().status(),
        404
    );
    assert_eq!(
        reqwest::get(local("/admin/status")).await.unwrap().status(),
        200
    );
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
}

/// Checks shows the refused secret as failed without showing it; the history lists the
/// schedule's runs and the backfill job; the log page shows the daemon's lines.
async fn checks_history_and_log(rig: &Rig, browser: &Client) {
    browser.goto(&format!("{}/checks", rig.base)).await.unwrap();
    browser
        .find(Locator::XPath("//button[contains(., 'Run the checks')]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .at_most(Duration::from_secs(90))
        .for_element(Locator::XPath("//h2[contains(., 'Results')]"))
        .await
        .unwrap();
    let rows = browser.find_all(Locator::Css("tbody tr")).await.unwrap();
    let mut seen = Vec::new();
    for row in rows {
        seen.push(row.text().await.unwrap());
    }
    assert!(
        seen.iter().any(|r| r.starts_with("site sim ok")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|r| r.starts_with("site wrong FAILED")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|r| r.starts_with("destination lite ok")),
        "{seen:?}"
    );
    let source = browser.source().await.unwrap();
    assert!(!source.contains(WRONG_SECRET) && !source.contains("demo-secret"));
    screenshot(browser, "checks").await;

    browser
        .goto(&format!("{}/history", rig.base))
        .await
        .unwrap();
    let history = text(browser).await;
    assert!(history.contains("schedule often"), "{history}");
    assert!(history.contains("backfill "), "{history}");
    screenshot(browser, "history").await;

    browser
        .goto(&format!("{}/log?level=info", rig.base))
        .await
        .unwrap();
    let log = text(browser).await;
    assert!(log.contains("btic is running"), "{log}");
    screenshot(browser, "log").await;
}
