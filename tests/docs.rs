//! The README is held to the code's own lists: every metric `metrics.rs` declares is
//! documented, every data kind a transfer or `--data` takes is named, and the table of
//! keys gives the defaults `config::defaults` holds; every repository path README.md and
//! ARCHITECTURE.md name exists.

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

/// README's table of keys: each row's first key (the first name in backticks of the
/// first cell) with its default cell.
fn readme_defaults(readme: &str) -> Vec<(String, String)> {
    readme
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            let key = cells.first()?.split('`').nth(1)?;
            Some((key.to_string(), cells.get(1)?.to_string()))
        })
        .collect()
}

/// Where README's default for a key differs from the code's, or is missing.
fn wrong_defaults(readme: &str, documented: &[(&str, String)]) -> Vec<String> {
    let table = readme_defaults(readme);
    documented
        .iter()
        .filter_map(
            |(key, default)| match table.iter().find(|(k, _)| k == key) {
                None => Some(format!("{key}: not in the table")),
                Some((_, cell)) if cell != default => {
                    Some(format!("{key}: README says {cell}, the code {default}"))
                }
                Some(_) => None,
            },
        )
        .collect()
}

#[test]
fn the_readme_table_of_keys_gives_the_code_defaults() {
    let documented = btic::config::defaults::documented();
    let wrong = wrong_defaults(&readme(), &documented);
    assert!(wrong.is_empty(), "README.md's table of keys: {wrong:#?}");
}

#[test]
fn a_wrong_or_missing_default_is_reported() {
    let readme = "| `a.b` | `15m` | x |\n| `c`, `d` | 10 | y |\n";
    let documented = [
        ("a.b", "`15m`".to_string()),
        ("c", "11".to_string()),
        ("e", "1".to_string()),
    ];
    assert_eq!(
        wrong_defaults(readme, &documented),
        ["c: README says 10, the code 11", "e: not in the table"]
    );
}

/// The repository paths a document names in backticks (`src/…`, `tests/…`, `deploy/…`,
/// `benches/…`, `pipelines/…`).
fn named_paths(text: &str) -> Vec<&str> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| {
            ["src/", "tests/", "deploy/", "benches/", "pipelines/"]
                .iter()
                .any(|root| t.starts_with(root))
        })
        .filter(|t| !t.contains(' '))
        .collect()
}

#[test]
fn every_path_the_documents_name_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for document in ["README.md", "ARCHITECTURE.md"] {
        let text = std::fs::read_to_string(root.join(document)).unwrap();
        let paths = named_paths(&text);
        assert!(paths.len() >= 5, "{document}: paths not found: {paths:?}");
        let missing: Vec<&str> = paths
            .into_iter()
            .filter(|p| !root.join(p).exists())
            .collect();
        assert!(
            missing.is_empty(),
            "{document} names what does not exist: {missing:?}"
        );
    }
}

#[test]
fn a_named_path_is_found() {
    assert_eq!(
        named_paths("see `src/keys.rs` and `tests/` but not `btic run` or `src/x y`"),
        ["src/keys.rs", "tests/"]
    );
}
