//! The README is held to the code's own lists: every metric `metrics.rs` declares is
//! documented, and every data kind a transfer or `--data` takes is named.

use btic::config::DataKind;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The metric names `metrics.rs` declares (`pub const X: &str = "btic_...";`).
fn metric_names() -> Vec<String> {
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/metrics.rs")).unwrap();
    source
        .lines()
        .filter(|l| l.trim_start().starts_with("pub const") && l.contains(": &str = \"btic_"))
        .filter_map(|l| l.split('"').nth(1).map(str::to_string))
        .collect()
}

/// Names missing from `text`, each looked for in backticks, alone or with labels
/// (`btic_x` or `btic_x{...}`).
fn missing<'a>(text: &str, names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    names
        .into_iter()
        .filter(|n| !text.contains(&format!("`{n}`")) && !text.contains(&format!("`{n}{{")))
        .collect()
}

#[test]
fn every_metric_is_in_the_readme() {
    let names = metric_names();
    assert!(
        names.len() >= 20,
        "the metric names were not found: {names:?}"
    );
    let readme = readme();
    let missing = missing(&readme, names.iter().map(String::as_str));
    assert!(missing.is_empty(), "README.md does not name: {missing:?}");
}

#[test]
fn every_data_kind_is_in_the_readme() {
    let readme = readme();
    let missing = missing(&readme, DataKind::ALL.iter().map(|k| k.as_str()));
    assert!(missing.is_empty(), "README.md does not name: {missing:?}");
}

#[test]
fn a_name_the_readme_lacks_is_reported() {
    assert_eq!(
        missing(
            "`btic_a` and `btic_b{site}`",
            ["btic_a", "btic_b", "btic_c"]
        ),
        ["btic_c"]
    );
}
