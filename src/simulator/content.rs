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
            lsid: s.lsid.to_string(),
            has_recording: has_recording(s),
            external_key: s
                .external_key
                .as_deref()
                .filter(|k| !k.is_empty())
                .map(str::to_owned),
        })
        .collect();
    written(|w| render::write_session_summary_list(w, ns, &rows))
}

/// Salt of the presentations' schedule seed, so their LSIDs differ from the sessions'.
const PRESENTATION_SALT: u64 = 0x7072_6573_656e_7421;

/// The seed of the presentations' schedule for a simulator seed.
pub fn presentation_seed(seed: u64) -> u64 {
    seed ^ PRESENTATION_SALT
}

/// Presentations a day: one for every twenty support sessions, at least one.
pub fn presentations_per_day(sessions_per_day: u32) -> u32 {
    (sessions_per_day / 20).max(1)
}

/// Whether presentation `index` was recorded (every other one).
pub fn presentation_has_recording(index: u64) -> bool {
    index.is_multiple_of(2)
}

const PRESENTERS: [&str; 4] = [
    "Ada Lovelace",
    "Grace Hopper",
    "Tom O'Neil & Partners",
    "Zoë Ångström",
];

/// Presentation `index` of its schedule `seed` (from [`presentation_seed`]): one
/// `<presentation_session>` element. The API reference gives the report but not its
/// elements, so these are modelled on the support session's (LSID attribute, `lseq`,
/// times, public site) plus a presenter and attendees.
pub fn presentation(seed: u64, index: u64, start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    let seconds = (end - start).num_seconds().max(0);
    let presenter = PRESENTERS[(index % PRESENTERS.len() as u64) as usize];
    let attendees: String = (0..index % 4)
        .map(|i| {
            format!(
                "<attendee id=\"{}\"><name>Attendee {i}</name></attendee>",
                index * 10 + i
            )
        })
        .collect();
    format!(
        "<presentation_session lsid=\"{lsid}\">\
         <lseq>{lseq}</lseq>\
         <start_time timestamp=\"{st}\">{sr}</start_time>\
         <end_time timestamp=\"{et}\">{er}</end_time>\
         <duration>{h:02}:{m:02}:{s:02}</duration>\
         <public_site id=\"1\">Default</public_site>\
         <primary_presenter gsnumber=\"{g}\">{presenter}</primary_presenter>\
         <attendee_list>{attendees}</attendee_list>\
         </presentation_session>",
        lsid = lsid(seed, index),
        lseq = index + 1,
        st = start.timestamp(),
        sr = start.to_rfc3339(),
        et = end.timestamp(),
        er = end.to_rfc3339(),
        h = seconds / 3600,
        m = seconds / 60 % 60,
        s = seconds % 60,
        g = 100 + index % 7,
        presenter = presenter.replace('&', "&amp;").replace('\'', "&apos;"),
    )
}

/// A `PresentationSession` answer holding these elements (an empty result is an empty
/// root element).
pub fn presentation_list(elements: &[String], ns: Namespace) -> Vec<u8> {
    let xmlns = ns
        .uri()
        .map(|u| format!(" xmlns=\"{u}\""))
        .unwrap_or_default();
    let mut out =
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presentation_session_list{xmlns}>");
    for element in elements {
        out.push('\n');
        out.push_str(element);
    }
    out.push_str("\n</presentation_session_list>\n");
    out.into_bytes()
}

/// The API version that stopped reporting `company_name` (RS 24.3).
const WITHOUT_COMPANY_NAME: &str = "1.24.1";

/// Whether API version `a` comes before `b`, comparing the dotted numbers as numbers
/// (1.9 before 1.24); a missing part counts as 0 and a part that is not a number as 0.
pub fn version_before(a: &str, b: &str) -> bool {
    let parts = |v: &str| -> Vec<u64> {
        v.trim()
            .split('.')
            .map(|p| p.trim().parse().unwrap_or(0))
            .collect()
    };
    let (a, b) = (parts(a), parts(b));
    let len = a.len().max(b.len());
    let at = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
    (0..len)
        .map(|i| at(&a, i).cmp(&at(&b, i)))
        .find(|o| o.is_ne())
        .is_some_and(std::cmp::Ordering::is_lt)
}

/// A `get_api_info` answer of API `version` (with a company name before 1.24.1).
pub fn api_info(
    now: DateTime<Utc>,
    version: &str,
    permissions: &[(String, bool)],
    ns: Namespace,
) -> Vec<u8> {
    let info = ApiInfo {
        api_version: Some(version.into()),
        company_name: version_before(version, WITHOUT_COMPANY_NAME).then(|| "Example Corp".into()),
        timestamp: Some(now),
        permissions: permissions
            .iter()
            .map(|(name, granted)| DataValue {
                name: name.as_str().into(),
                value: match (name.as_str(), granted) {
                    (_, false) => "0",
                    ("perm_command", true) => "full_access",
                    (_, true) => "1",
                }
                .into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_numbers_part_by_part() {
        let check = |a: &str, b: &str, before: bool| {
            assert_eq!(version_before(a, b), before, "{a} before {b}");
        };
        check("1.9", "1.24", true);
        check("1.24.0", "1.24.1", true);
        check("1.24", "1.24.1", true);
        check("1.24.1", "1.24.1", false);
        check("1.24.1", "1.24.1.0", false);
        check("1.25.0", "1.24.1", false);
        check("2", "1.24.1", false);
        check("1.19.0", "1.24.1", true);
    }

    #[test]
    fn the_company_name_is_reported_only_before_1_24_1() {
        let now = DateTime::from_timestamp(1_717_412_400, 0).unwrap();
        let text = |v: &str| String::from_utf8(api_info(now, v, &[], Namespace::BeyondTrust));
        let old = text("1.24.0").unwrap();
        assert!(old.contains("<api_version>1.24.0</api_version>"), "{old}");
        assert!(old.contains("<company_name>"), "{old}");
        let new = text("1.25.0").unwrap();
        assert!(new.contains("<api_version>1.25.0</api_version>"), "{new}");
        assert!(!new.contains("company_name"), "{new}");
    }
}
