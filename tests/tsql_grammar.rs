//! Every statement the SQL Server dialect can send (`btic::deliver::sql::tsql::statements`)
//! parses with the grammars-v4 T-SQL grammar: the npm package `antlr4ts-sql`, installed
//! from `tools/tsql-check/package-lock.json` with `npm ci` into this build's target
//! directory the first time, and driven by `tools/tsql-check/check.js`. Control cases
//! prove the checker tells T-SQL from what is not.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use btic::deliver::sql::tsql;

const TOOLS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/tsql-check");

/// The directory holding `node_modules` with the pinned grammar, installed once per
/// lock file: a changed lock file installs again.
fn installed() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tsql-check");
        let lock = std::fs::read(Path::new(TOOLS).join("package-lock.json")).unwrap();
        let stamp = dir.join("installed-lock.json");
        if std::fs::read(&stamp).ok().as_deref() == Some(&lock[..])
            && dir.join("node_modules/antlr4ts-sql/package.json").exists()
        {
            return dir;
        }
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(Path::new(TOOLS).join(file), dir.join(file)).unwrap();
        }
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
            .current_dir(&dir)
            .output()
            .expect("npm (node 20) is needed for the T-SQL grammar check");
        assert!(
            out.status.success(),
            "npm ci of the T-SQL grammar failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&stamp, &lock).unwrap();
        dir
    })
}

/// The syntax errors of each statement, in order (empty when it parsed).
fn parse(statements: &[String]) -> Vec<Vec<String>> {
    let mut child = Command::new("node")
        .arg(Path::new(TOOLS).join("check.js"))
        .env("NODE_PATH", installed().join("node_modules"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (20) is needed for the T-SQL grammar check");
    let input = serde_json::to_vec(statements).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "check.js failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let errors: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(errors.len(), statements.len());
    errors
}

#[test]
fn every_statement_the_sql_server_dialect_sends_parses_as_t_sql() {
    let statements = tsql::statements();
    // Connection setup, migrations (9 tables, 8 indexes), staging (8 tables, twice)
    // and the write path are all there.
    assert!(statements.len() >= 50, "{}", statements.len());
    let errors = parse(&statements);
    let refused: Vec<String> = statements
        .iter()
        .zip(&errors)
        .filter(|(_, e)| !e.is_empty())
        .map(|(s, e)| format!("{s}\n  {}", e.join("\n  ")))
        .collect();
    assert!(
        refused.is_empty(),
        "{} of {} statements are not T-SQL:\n{}",
        refused.len(),
        statements.len(),
        refused.join("\n")
    );
    println!("{} statements parsed as T-SQL", statements.len());
}

#[test]
fn the_checker_refuses_what_is_not_t_sql_and_accepts_what_is() {
    let good = [
        "SELECT 1",
        "UPDATE t SET t.[a] = s.[a] FROM [x] t JOIN #s s ON s.[id] = t.[id]",
        "SELECT [a] FROM [x] WITH (UPDLOCK, HOLDLOCK) WHERE [a] = @P1",
        "IF OBJECT_ID(N'x', N'U') IS NULL CREATE TABLE [x] ([a] int NOT NULL PRIMARY KEY)",
    ];
    let bad = [
        // A misspelt keyword (`SELEC 1` alone would be a call of procedure SELEC).
        "SELEC [a] FROM [x]",
        // An unclosed column list.
        "CREATE TABLE #x ([a] int",
        // PostgreSQL's upsert is not T-SQL.
        "INSERT INTO [x] ([a]) VALUES (1) ON CONFLICT ([a]) DO NOTHING",
        // Nothing after WHERE.
        "DELETE FROM [x] WHERE",
        // PostgreSQL's parameters and RETURNING.
        "INSERT INTO [x] ([a]) VALUES ($1) RETURNING [id]",
    ];
    let statements: Vec<String> = good.iter().chain(&bad).map(|s| s.to_string()).collect();
    let errors = parse(&statements);
    for (s, e) in good.iter().zip(&errors) {
        assert!(e.is_empty(), "refused good T-SQL {s:?}: {e:?}");
    }
    for (s, e) in bad.iter().zip(&errors[good.len()..]) {
        assert!(!e.is_empty(), "accepted bad T-SQL {s:?}");
    }
}
