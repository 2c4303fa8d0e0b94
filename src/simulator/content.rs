//! The simulator's bodies: the seam between the HTTP layer and the session generator
//! (`sessions`) and renderer (`render`). Everything the server sends as XML is made here.

use chrono::{DateTime, Utc};

use super::render::{self, Namespace};
use super::sessions;
use crate::model::{ApiInfo, DataValue, Session, SessionSummary};

/// The LSID of session `index` of `seed`.
pub fn lsid(seed: u64, index: u64) -> String {
    sessions::lsid(seed, index)
}

/// Session `index` of `seed` with these times (`end`: `None` while in progress).
pub fn session(seed: u64, index: u64, start: DateTime<Utc>, end: Option<DateTime<Utc>>) -> Session {
    sessions::generate(seed, index, start, end)
}

/// Whether a session has any recording (what the listing's `has_recording` says).
pub fn has_recording(session: &Session) -> bool {
    session.has_screen_recording()
        || !session.command_shell_recordings.is_empty()
        || !session.show_my_screen_recordings.is_empty()
}

fn written(write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = write(&mut out);
    out
}

/// A `SupportSession` answer.
pub fn session_list(sessions: &[Session], ns: Namespace) -> Vec<u8> {
    written(|w| render::write_session_list(w, ns, sessions))
}

/// A `SupportSessionListing` answer.
pub fn listing(sessions: &[Session], ns: Namespace) -> Vec<u8> {
    let rows: Vec<SessionSummary> = sessions
        .iter()
        .map(|s| SessionSummary {
            lsid: s.lsid.clone(),
            has_recording: has_recording(s),
            external_key: s.external_key.clone().filter(|k| !k.is_empty()),
        })
        .collect();
    written(|w| render::write_session_summary_list(w, ns, &rows))
}

/// A `PresentationSession` answer: the simulator holds no presentations, and an empty
/// result is an empty root element.
pub fn presentation_list(ns: Namespace) -> Vec<u8> {
    let xmlns = ns
        .uri()
        .map(|u| format!(" xmlns=\"{u}\""))
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presentation_session_list{xmlns}></presentation_session_list>\n"
    )
    .into_bytes()
}

/// A `get_api_info` answer.
pub fn api_info(now: DateTime<Utc>, permissions: &[(String, bool)], ns: Namespace) -> Vec<u8> {
    let info = ApiInfo {
        api_version: Some("1.24.1".into()),
        company_name: Some("Example Corp".into()),
        timestamp: Some(now),
        permissions: permissions
            .iter()
            .map(|(name, granted)| DataValue {
                name: name.clone(),
                value: if *granted { "1" } else { "0" }.into(),
            })
            .collect(),
    };
    written(|w| render::write_api_info(w, ns, &info))
}

/// An `<error>` answer: as the root, or nested in `root` when given.
pub fn error(message: &str, nested_in: Option<&str>, ns: Namespace) -> Vec<u8> {
    match nested_in {
        None => written(|w| render::write_error(w, ns, message)),
        Some(root) => written(|w| render::write_nested_error(w, ns, root, message)),
    }
}
