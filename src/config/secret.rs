//! Secrets: client secrets, passwords and connection strings. A `Secret` never shows its
//! value through `Debug` or `Display`; the only way to read it is `expose()`, called at
//! the one place that sends it (an HTTP header, a database connect).

use std::fmt;
use std::path::PathBuf;

/// Where a secret comes from, as the pipeline file says.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Written in the file itself (works, but `check` warns).
    Plain(Secret),
    /// Read from an environment variable when the pipeline starts.
    Env(String),
    /// Read from a file (trailing newline removed) when the pipeline starts.
    File(PathBuf),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Plain(_) => f.write_str("*** (in the file)"),
            SecretSource::Env(name) => write!(f, "env {name}"),
            SecretSource::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// Why a secret could not be read. Never carries the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The named environment variable is not set (or not UTF-8).
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    /// The file could not be read.
    #[error("cannot read secret file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// The secret resolved to an empty string.
    #[error("the secret is empty")]
    Empty,
}

impl SecretSource {
    /// Reads the secret (environment or file IO for non-plain sources).
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        let value = match self {
            SecretSource::Plain(s) => return Ok(s.clone()),
            SecretSource::Env(name) => {
                std::env::var(name).map_err(|_| SecretError::EnvMissing(name.clone()))?
            }
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| SecretError::File {
                    path: path.clone(),
                    reason: e.kind().to_string(),
                })?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
        };
        if value.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Secret(value))
    }
}

/// A secret value. `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Hides the password of a URL (`postgres://user:pw@host/db`) or of an ADO connection
/// string (`Password=...;` / `Pwd=...;`), for logs and `status`.
pub fn redact_connection_string(text: &str) -> String {
    if let Some(scheme_end) = text.find("://") {
        let rest = &text[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!(
                    "{}{}:***{}",
                    &text[..scheme_end + 3],
                    &userinfo[..colon],
                    &rest[at..]
                );
            }
        }
        // A password may also hide in the query string.
        return redact_pairs(text, '&');
    }
    redact_pairs(text, ';')
}

fn redact_pairs(text: &str, separator: char) -> String {
    text.split(separator)
        .map(|pair| {
            let key = pair.split('=').next().unwrap_or("").trim();
            let lower = key.to_ascii_lowercase();
            let lower = lower.rsplit(['?', '&']).next().unwrap_or(&lower);
            if pair.contains('=') && matches!(lower, "password" | "pwd" | "passwd") {
                format!("{}=***", pair.split('=').next().unwrap_or(""))
            } else {
                pair.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(&separator.to_string())
}

/// Whether a connection string carries a password in clear text.
pub fn has_inline_password(text: &str) -> bool {
    redact_connection_string(text) != text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_their_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        let src = SecretSource::Plain(s);
        assert!(!format!("{src} {src:?}").contains("hunter2"));
    }

    #[test]
    fn connection_strings_are_redacted() {
        let cases = [
            (
                "postgres://btic:pw@db:5432/x",
                "postgres://btic:***@db:5432/x",
            ),
            ("postgres://btic@db/x", "postgres://btic@db/x"),
            (
                "postgres://db/x?user=a&password=pw",
                "postgres://db/x?user=a&password=***",
            ),
            (
                "Server=tcp:db,1433;User Id=sa;Password=pw;Encrypt=true",
                "Server=tcp:db,1433;User Id=sa;Password=***;Encrypt=true",
            ),
            ("server=db;pwd=x", "server=db;pwd=***"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_connection_string(input), expected, "{input}");
        }
        assert!(has_inline_password("server=db;pwd=x"));
        assert!(!has_inline_password("server=db;Integrated Security=true"));
    }

    #[test]
    fn missing_env_names_the_variable_only() {
        let err = SecretSource::Env("BTIC_TEST_SURELY_UNSET_VAR".into())
            .resolve()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable BTIC_TEST_SURELY_UNSET_VAR is not set"
        );
    }
}
