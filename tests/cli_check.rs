//! `btic check --offline` as a real process: exit codes and output.

use std::process::Command;

fn btic() -> Command {
    Command::new(env!("CARGO_BIN_EXE_btic"))
}

#[test]
fn check_offline_prints_the_summary_of_a_good_file() {
    let out = btic()
        .args(["check", "--config", "pipelines/demo.toml", "--offline"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("pipelines/demo.toml: valid\n"),
        "{stdout}"
    );
    assert!(stdout.contains("demo -> sqlite: sessions"), "{stdout}");
    assert!(
        stdout.contains("demo -> archive: sessions, recordings"),
        "{stdout}"
    );
    assert!(stdout.contains("every 1d at 02:00 UTC"), "{stdout}");
    assert!(
        !stdout.contains("demo-secret"),
        "the secret leaked: {stdout}"
    );
}

#[test]
fn check_offline_json_lists_what_goes_where() {
    let out = btic()
        .args([
            "check",
            "--config",
            "pipelines/postgres.toml",
            "--offline",
            "--json",
        ])
        .env_remove("BTIC_SUPPORT_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schedules"][0]["transfers"][0]["destination"], "reports");
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains("BTIC_SUPPORT_SECRET is not set (needed at run time)"),
        "{warnings}"
    );
}

#[test]
fn check_offline_fails_with_exit_2_and_the_place_of_each_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "state_dir = \"/tmp/x\"\n[[site]]\nname = \"s\"\nhost = \"https://a.example.com\"\nclient_id = \"i\"\nclient_secret = \"top-secret-value\"\n",
    )
    .unwrap();
    let out = btic()
        .args(["check", "--config"])
        .arg(&path)
        .arg("--offline")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.toml:4:8: site[0].host: \"https://a.example.com\" has a scheme"),
        "{stderr}"
    );
    assert!(
        stderr.trim_end().ends_with("1 error in the pipeline file"),
        "{stderr}"
    );
    assert!(!stderr.contains("top-secret-value"));
    assert!(out.stdout.is_empty());
}

#[test]
fn a_missing_file_is_a_one_line_error() {
    let out = btic()
        .args(["check", "--config", "no/such/file.toml", "--offline"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no/such/file.toml:1:1: cannot read the pipeline file"),
        "{stderr}"
    );
}

#[test]
fn version_and_help_work() {
    let out = btic().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("btic "));
    let out = btic().arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("check"));
}
