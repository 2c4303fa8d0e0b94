//! The alert rules and the metrics they read, checked by promtool: `check rules` and the
//! unit tests of `deploy/prometheus-rules.test.yml`, `check metrics` on a real scrape of
//! a daemon run against the simulator, and the rules evaluated on that scrape, so that
//! they query the names and labels btic really exports.
//!
//! promtool comes from `.ci/promtool` (Debian's `prometheus` package, unpacked under
//! `target/tools` and never installed). When it cannot be had, the tests that need it
//! print an `ignored, SKIPPED` line and return; with `CI` set they fail instead.

mod rig;

use rig::skip;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use rig::{Daemon, Sim, eventually, free_port, pipeline, scrape_text};

const RULES: &str = "deploy/prometheus-rules.yml";
const RULE_TESTS: &str = "deploy/prometheus-rules.test.yml";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// promtool's path, from `.ci/promtool` (once per test binary: it may download).
fn find_promtool() -> &'static Result<PathBuf, String> {
    static PROMTOOL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PROMTOOL.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo(".ci/promtool"))
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("running .ci/promtool: {e}"))?;
        let path = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .map(PathBuf::from)
            .unwrap_or_default();
        if out.status.success() && path.is_file() {
            Ok(path)
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
            Err(format!(
                ".ci/promtool could not provide promtool: {}",
                last.trim()
            ))
        }
    })
}

/// promtool, or `None` after printing that `test` is skipped (a failure under `CI`).
/// The line is written to the real stdout, past the harness's capture, so that it shows
/// in the run's output.
fn promtool(test: &str) -> Option<PathBuf> {
    match find_promtool() {
        Ok(path) => Some(path.clone()),
        Err(reason) => {
            skip::missing(test, &format!("promtool: {reason}"));
            None
        }
    }
}

/// Runs promtool with `args` in the repository (and `stdin`, if any).
fn run(promtool: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(promtool)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting promtool");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_alert_rules_pass_promtool_check_rules() {
    let Some(promtool) = promtool("the_alert_rules_pass_promtool_check_rules") else {
        return;
    };
    let out = run(&promtool, &["check", "rules", RULES], None);
    assert!(out.status.success(), "{}", said(&out));
}

#[test]
fn the_alert_rules_pass_their_promtool_unit_tests() {
    let Some(promtool) = promtool("the_alert_rules_pass_their_promtool_unit_tests") else {
        return;
    };
    let out = run(&promtool, &["test", "rules", RULE_TESTS], None);
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("SUCCESS"), "{}", said(&out));
}

/// Alert name -> (cases where it fires, cases where it does not) in a promtool test
/// file: each `alertname:` line is one case, quiet when its `exp_alerts` is `[]`.
fn cases(tests: &str) -> BTreeMap<String, (usize, usize)> {
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut lines = tests.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(name) = line.strip_prefix("alertname:") else {
            continue;
        };
        let expected = lines
            .by_ref()
            .find(|l| l.starts_with("exp_alerts:"))
            .expect("a case without exp_alerts");
        let entry = cases.entry(name.trim().to_string()).or_default();
        if expected == "exp_alerts: []" {
            entry.1 += 1;
        } else {
            entry.0 += 1;
        }
    }
    cases
}

#[test]
fn every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not() {
    let rules = std::fs::read_to_string(repo(RULES)).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    assert!(alerts.len() >= 8, "{alerts:?}");
    let cases = cases(&std::fs::read_to_string(repo(RULE_TESTS)).unwrap());
    for alert in &alerts {
        let (firing, quiet) = cases.get(*alert).copied().unwrap_or_default();
        assert!(
            firing > 0 && quiet > 0,
            "{alert}: {firing} firing and {quiet} quiet cases in {RULE_TESTS}"
        );
    }
    for tested in cases.keys() {
        assert!(
            alerts.contains(&tested.as_str()),
            "{RULE_TESTS} tests {tested}, which {RULES} does not have"
        );
    }
}

#[test]
fn the_case_counter_tells_firing_from_quiet_cases() {
    let tests = "
      - eval_time: 5m
        alertname: A
        exp_alerts: []
      - eval_time: 9m
        alertname: A
        exp_alerts:
          - exp_labels: {severity: warning}
      - eval_time: 9m
        alertname: B
        exp_alerts:
          - exp_labels: {severity: warning}
";
    let expected = BTreeMap::from([("A".to_string(), (1, 1)), ("B".to_string(), (1, 0))]);
    assert_eq!(cases(tests), expected);
}

/// `scrape` as promtool input series: every sample held for an hour at one-minute
/// steps, with the `job` and `instance` labels Prometheus adds. Timestamps (UNIX
/// seconds, `*_timestamp_seconds`) are moved so that they are as old at the end of that
/// hour, in promtool's time that starts at 0, as they were at `scraped_at`.
fn input_series(scrape: &str, instance: &str, scraped_at: f64) -> String {
    let target = format!("job=\"btic\",instance=\"{instance}\"");
    let mut yaml = format!("      - series: 'up{{{target}}}'\n        values: '1x60'\n");
    for line in scrape.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let series = match series.split_once('{') {
            Some((name, labels)) => format!("{name}{{{target},{labels}"),
            None => format!("{series}{{{target}}}"),
        };
        let mut value: f64 = value.parse().expect("a sample value");
        let name = series.split('{').next().unwrap();
        if name.ends_with("_timestamp_seconds") {
            value = value - scraped_at + 3600.0;
        }
        yaml.push_str(&format!(
            "      - series: '{}'\n        values: '{value}x60'\n",
            series.replace('\'', "''")
        ));
    }
    yaml
}

/// The value of the sample `series` (a metric name with its labels) in `scrape`.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

const SIM_ARGS: &[&str] = &[
    "--days",
    "1",
    "--sessions-per-day",
    "150",
    "--recording-bytes",
    "4096",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_scrape_passes_promtool_check_metrics_and_fires_only_the_dead_letter_alert() {
    let Some(promtool) = promtool(
        "a_real_scrape_passes_promtool_check_metrics_and_fires_only_the_dead_letter_alert",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), SIM_ARGS);
    // The appliance refuses the report window six hours back: a dead letter in fetch/sim.
    let (now, _) = sim.truth(None).await;
    sim.window_faults(&[now - 6 * 3600], &[]).await;
    let port = free_port();
    let destinations = format!(
        "[[destination]]\nname = \"lite\"\ntype = \"sqlite\"\npath = \"{}\"\n\n\
         [[destination]]\nname = \"archive\"\ntype = \"files\"\ndirectory = \"{}\"\nformat = \"json\"\n",
        dir.path().join("btic.sqlite").display(),
        dir.path().join("archive").display()
    );
    let transfers = "[[schedule.transfer]]\nsite = \"sim\"\ndestination = \"lite\"\ndata = [\"sessions\"]\n\
         [[schedule.transfer]]\nsite = \"sim\"\ndestination = \"archive\"\ndata = [\"sessions\", \"recordings\"]\n";
    let config = pipeline(dir.path(), &sim, port, &destinations, transfers);
    let log = dir.path().join("run.log");
    let daemon = Daemon::start(&config, &log);

    // Settled: the refused window is a dead letter, the watermark has caught up with the
    // appliance, and every queue has drained.
    let mut text = String::new();
    let settled = eventually(Duration::from_secs(120), async || {
        text = scrape_text(port).await;
        let lag = "btic_watermark_lag_seconds{site=\"sim\",kind=\"SupportSession\"}";
        sample(&text, "btic_dead_letter_items{destination=\"fetch/sim\"}") == Some(1.0)
            && sample(&text, lag).is_some_and(|l| l < 120.0)
            && sample(&text, "btic_queue_depth{queue=\"deliver/archive\"}") == Some(0.0)
            && text
                .lines()
                .filter(|l| l.starts_with("btic_queue_depth{"))
                .all(|l| l.ends_with(" 0") || l.contains("queue=\"dead_letter\""))
    })
    .await;
    let scraped_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        settled,
        "{text}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0), "{}", std::fs::read_to_string(&log).unwrap());

    let checked = run(&promtool, &["check", "metrics"], Some(&text));
    assert!(
        checked.status.success() && said(&checked).trim().is_empty(),
        "promtool check metrics: {}\n{text}",
        said(&checked)
    );

    // The rules on that scrape, held for an hour: only the dead letter's alert fires,
    // with the labels btic exports.
    let instance = format!("127.0.0.1:{port}");
    let tests = format!(
        r#"rule_files:
  - '{rules}'
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
{series}    promql_expr_test:
      - expr: ALERTS{{alertstate="firing"}}
        eval_time: 60m
        exp_samples:
          - labels: 'ALERTS{{alertname="BticDeadLetters",alertstate="firing",destination="fetch/sim",instance="{instance}",job="btic",severity="warning"}}'
            value: 1
"#,
        rules = repo(RULES).display(),
        series = input_series(&text, &instance, scraped_at),
    );
    let file = dir.path().join("scrape.test.yml");
    std::fs::write(&file, &tests).unwrap();
    let out = run(&promtool, &["test", "rules", file.to_str().unwrap()], None);
    assert!(out.status.success(), "{}\n{tests}", said(&out));
}
