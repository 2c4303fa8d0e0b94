//! What a complete answer body means to the client, read with `parse`'s readers: an
//! `<error>` answer (root or nested; "no data", an expired recording, a refused login or
//! anything else) and `get_api_info`.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use crate::model::ApiInfo;
use crate::parse;

/// The `<error>` answer in a spooled body, if it is one. `Err` when the body is not
/// well-formed XML. Reads only up to the first element inside the root.
pub(crate) async fn error_in(path: &Path) -> Result<Option<parse::ErrorAnswer>, String> {
    let path: PathBuf = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
        parse::find_error(BufReader::new(file)).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Reads a spooled `get_api_info` body.
pub(crate) async fn api_info_in(path: &Path) -> Result<ApiInfo, String> {
    let path: PathBuf = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
        parse::parse_api_info(BufReader::new(file)).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Whether `get_api_info` grants a permission: it is there and not `0` (the values seen
/// are `0`/`1`, and levels such as `full_access` or `read_only` for `perm_command`).
pub fn has_permission(info: &ApiInfo, permission: &str) -> bool {
    info.permissions
        .iter()
        .find(|p| p.name == permission)
        .is_some_and(|p| p.value.trim() != "0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DataValue;
    use crate::parse::ErrorMeaning;

    fn check(body: &str, expected: Option<ErrorMeaning>) {
        let found = parse::find_error(body.as_bytes()).unwrap();
        assert_eq!(found.map(|e| e.kind), expected, "{body}");
    }

    #[test]
    fn error_answers_are_told_apart_as_root_or_nested() {
        check(
            r#"<error xmlns="http://www.bomgar.com/namespaces/API/reporting">Login failed</error>"#,
            Some(ErrorMeaning::LoginFailed),
        );
        check(
            "<session_list><error>No archives found for the given search criteria.</error></session_list>",
            Some(ErrorMeaning::NoData),
        );
        check(
            "<error>This recording has expired and can no longer be viewed or downloaded.</error>",
            Some(ErrorMeaning::RecordingExpired),
        );
        check(
            "<session_list><error>Bad things</error></session_list>",
            Some(ErrorMeaning::Other),
        );
        check("<session_list></session_list>", None);
    }

    #[test]
    fn permissions_are_missing_only_when_absent_or_zero() {
        let info = ApiInfo {
            permissions: vec![
                DataValue {
                    name: "perm_reporting_support".into(),
                    value: "1".into(),
                },
                DataValue {
                    name: "perm_backup".into(),
                    value: "0".into(),
                },
                DataValue {
                    name: "perm_support".into(),
                    value: "full_support".into(),
                },
            ],
            ..ApiInfo::default()
        };
        assert!(has_permission(&info, "perm_reporting_support"));
        assert!(!has_permission(&info, "perm_backup"));
        assert!(has_permission(&info, "perm_support"));
        assert!(!has_permission(&info, "perm_absent"));
    }
}
