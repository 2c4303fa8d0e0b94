//! What a complete answer body means to the client: an `<error>` element (as the root or
//! nested in a report's root), whether that error is "no data" or an expired recording,
//! and the fields of `get_api_info`. Elements are matched by local name, whatever the
//! namespace.

use std::path::Path;

use quick_xml::Reader;
use quick_xml::events::Event;

use crate::model::{ApiInfo, DataValue};

/// Bodies at least this large are not inspected for `<error>`: error answers are a few
/// hundred bytes, and reading a large report twice would double the work.
const ERROR_BODY_MAX_BYTES: u64 = 64 * 1024;

/// The text of an `<error>` element at the root or directly under it, if any.
/// `Err` when a small body is not well-formed XML.
pub(crate) async fn error_in(path: &Path) -> Result<Option<String>, String> {
    let meta = tokio::fs::metadata(path).await.map_err(|e| e.to_string())?;
    if meta.len() >= ERROR_BODY_MAX_BYTES {
        return Ok(None);
    }
    let body = tokio::fs::read(path).await.map_err(|e| e.to_string())?;
    find_error(&body)
}

/// `find_error` on bytes.
pub(crate) fn find_error(body: &[u8]) -> Result<Option<String>, String> {
    let mut reader = Reader::from_reader(body);
    let mut depth = 0usize;
    let mut in_error: Option<(usize, String)> = None;
    let mut buf = Vec::new();
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| {
            format!(
                "not well-formed XML at byte {}: {e}",
                reader.buffer_position()
            )
        })?;
        match event {
            Event::Start(e) => {
                depth += 1;
                if in_error.is_none() && depth <= 2 && e.local_name().as_ref() == "error" {
                    in_error = Some((depth, String::new()));
                }
            }
            Event::Empty(e)
                if in_error.is_none() && depth < 2 && e.local_name().as_ref() == "error" =>
            {
                return Ok(Some(String::new()));
            }
            Event::End(_) => {
                if let Some((d, text)) = &in_error
                    && *d == depth
                {
                    return Ok(Some(text.trim().to_string()));
                }
                depth = depth.saturating_sub(1);
            }
            Event::Text(t) => {
                if let Some((_, text)) = &mut in_error {
                    text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some((_, text)) = &mut in_error {
                    text.push_str(&t);
                }
            }
            Event::GeneralRef(r) => {
                if let Some((_, text)) = &mut in_error {
                    text.push_str(&resolve_entity(&r));
                }
            }
            Event::Eof => return Ok(None),
            _ => {}
        }
        buf.clear();
    }
}

fn resolve_entity(name: &str) -> String {
    match name {
        "amp" => "&".into(),
        "lt" => "<".into(),
        "gt" => ">".into(),
        "quot" => "\"".into(),
        "apos" => "'".into(),
        _ => {
            let code = name
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()));
            code.and_then(char::from_u32)
                .map(String::from)
                .unwrap_or_else(|| format!("&{name};"))
        }
    }
}

/// Whether an `<error>` text means "nothing matched" (an empty result, not a failure).
pub(crate) fn means_no_data(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.starts_with("no ") && (m.contains("found") || m.contains("match"))
}

/// Whether an `<error>` text means the recording is past its retention.
pub(crate) fn means_expired(message: &str) -> bool {
    message.to_ascii_lowercase().contains("has expired")
}

/// Whether `get_api_info` grants a permission (`1`, `true`, or any level other than
/// `0`/`none`/`false`/`deny`).
pub fn has_permission(info: &ApiInfo, permission: &str) -> bool {
    info.permissions
        .iter()
        .find(|p| p.name == permission)
        .is_some_and(|p| {
            let v = p.value.trim().to_ascii_lowercase();
            !(v.is_empty() || v == "0" || v == "false" || v == "none" || v == "deny")
        })
}

/// Reads an `<api_information>` body.
pub(crate) fn parse_api_info(body: &[u8]) -> Result<ApiInfo, String> {
    let mut reader = Reader::from_reader(body);
    let mut info = ApiInfo::default();
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut root_seen = false;
    let mut buf = Vec::new();
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| {
            format!(
                "not well-formed XML at byte {}: {e}",
                reader.buffer_position()
            )
        })?;
        match event {
            Event::Start(e) => {
                let name = e.local_name().as_ref().to_string();
                if path.is_empty() {
                    if name != "api_information" {
                        return Err(format!("expected <api_information>, found <{name}>"));
                    }
                    root_seen = true;
                }
                path.push(name);
                text.clear();
            }
            Event::Text(t) => text.push_str(&t.xml10_content()),
            Event::GeneralRef(r) => text.push_str(&resolve_entity(&r)),
            Event::End(_) => {
                if path.len() == 2 {
                    let value = text.trim().to_string();
                    match path[1].as_str() {
                        "api_version" => info.api_version = Some(value),
                        "company_name" => info.company_name = Some(value),
                        "timestamp" => {
                            info.timestamp = value
                                .parse()
                                .ok()
                                .and_then(|t| chrono::DateTime::from_timestamp(t, 0));
                        }
                        name if name.starts_with("perm_") => {
                            info.permissions.push(DataValue {
                                name: name.to_string(),
                                value,
                            });
                        }
                        _ => {}
                    }
                }
                path.pop();
                text.clear();
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !root_seen {
        return Err("the answer holds no <api_information> element".into());
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_elements_are_found_as_root_or_nested() {
        let cases: [(&str, Option<&str>); 5] = [
            (
                r#"<?xml version="1.0"?><error xmlns="http://www.bomgar.com/namespaces/API/reporting">Login failed</error>"#,
                Some("Login failed"),
            ),
            (
                r#"<session_list xmlns="x"><error>No archives found for the given search criteria.</error></session_list>"#,
                Some("No archives found for the given search criteria."),
            ),
            ("<session_list></session_list>", None),
            (
                "<session_list><session lsid=\"a\"><error>x</error></session></session_list>",
                None,
            ),
            ("<r:error xmlns:r=\"y\">A &amp; B</r:error>", Some("A & B")),
        ];
        for (body, expected) in cases {
            assert_eq!(
                find_error(body.as_bytes()).unwrap().as_deref(),
                expected,
                "{body}"
            );
        }
    }

    #[test]
    fn no_data_and_expiry_are_told_apart() {
        assert!(means_no_data(
            "No archives found for the given search criteria."
        ));
        assert!(!means_no_data("Login failed"));
        assert!(means_expired(
            "This recording has expired and can no longer be viewed or downloaded."
        ));
    }

    #[test]
    fn api_info_gives_version_time_and_permissions() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<api_information xmlns="https://www.beyondtrust.com/namespaces/API/command">
  <api_version>1.24.1</api_version><timestamp>1717412400</timestamp>
  <perm_reporting_support>1</perm_reporting_support><perm_backup>0</perm_backup>
</api_information>"#;
        let info = parse_api_info(body).unwrap();
        assert_eq!(info.api_version.as_deref(), Some("1.24.1"));
        assert_eq!(info.timestamp.map(|t| t.timestamp()), Some(1_717_412_400));
        assert!(has_permission(&info, "perm_reporting_support"));
        assert!(!has_permission(&info, "perm_backup"));
    }
}
