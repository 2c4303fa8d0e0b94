//! Typed session records shared by parse and deliver.
//!
//! One `Session` is one `<session>` element of a `SupportSession` report: every field the
//! Integration Client's tables need, plus what the XML carries beyond them, so nothing is
//! lost on the way to a destination. Values are kept as the appliance wrote them (trimmed);
//! the literal `Unknown` stays `Unknown`. Identifiers (`gsnumber`, `id`) are text because
//! appliances have been seen writing non-numeric ones. Times are UTC instants taken from
//! the `timestamp` attribute.
//!
//! The types derive serde for two uses: the `btic inspect` JSON (field names are a
//! documented contract) and postcard-encoded queue items. postcard encodes fields by
//! position, so no `skip_serializing_if` or untagged enums here.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A value of a session as the appliance wrote it: text of up to 24 bytes (most ids,
/// names, addresses and event types) is kept inline, longer text on the heap. Encoded
/// exactly as a `String` (serde and postcard see a string), so queued items and the
/// `inspect` JSON are unchanged.
pub type Text = compact_str::CompactString;

/// One support session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Session {
    /// The session's unique id (`lsid` attribute), usually 32 hex digits.
    pub lsid: Text,
    /// `session_type`, normally `support`.
    pub session_type: Text,
    /// `lseq`: an incrementing number, neither unique nor strictly increasing.
    pub lseq: Option<i64>,
    /// `start_time`.
    pub start_time: Option<DateTime<Utc>>,
    /// `end_time`; `None` while the session is in progress (or closed abnormally).
    pub end_time: Option<DateTime<Utc>>,
    /// `duration` as written (`HH:MM:SS`).
    pub duration: Option<Text>,
    /// `public_site`.
    pub public_site: Option<PublicSite>,
    /// `external_key`.
    pub external_key: Option<Text>,
    /// `jump_group` (Jump sessions).
    pub jump_group: Option<JumpGroup>,
    /// `custom_attributes`.
    pub custom_attributes: Vec<CustomAttribute>,
    /// `session_chat_view_url`.
    pub chat_view_url: Option<Text>,
    /// `session_chat_download_url`.
    pub chat_download_url: Option<Text>,
    /// `session_recording_view_url`; present only if the screen was recorded.
    pub recording_view_url: Option<Text>,
    /// `session_recording_download_url`; present only if the screen was recorded.
    pub recording_download_url: Option<Text>,
    /// `command_shell_recordings`: one per shell, instances from 0.
    pub command_shell_recordings: Vec<RecordingLink>,
    /// `show_my_screen_recordings`: one per Show My Screen run, instances from 0.
    pub show_my_screen_recordings: Vec<RecordingLink>,
    /// `file_transfer_count`.
    pub file_transfer_count: Option<u32>,
    /// `file_move_count`.
    pub file_move_count: Option<u32>,
    /// `file_delete_count`.
    pub file_delete_count: Option<u32>,
    /// `primary_customer`.
    pub primary_customer: Option<Party>,
    /// `primary_rep`.
    pub primary_rep: Option<Party>,
    /// `customer_list`.
    pub customers: Vec<Customer>,
    /// `rep_list`.
    pub representatives: Vec<Representative>,
    /// `team_list`.
    pub teams: Vec<Team>,
    /// `session_details`: events in document order (their position identifies them).
    pub events: Vec<Event>,
}

impl Session {
    /// Whether the session has ended (has an end time).
    pub fn is_closed(&self) -> bool {
        self.end_time.is_some()
    }

    /// Whether a screen recording exists for this session.
    pub fn has_screen_recording(&self) -> bool {
        self.recording_download_url.is_some() || self.recording_view_url.is_some()
    }
}

/// `public_site`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PublicSite {
    /// `id` attribute.
    pub id: Option<Text>,
    /// The site's name (`Default` unless set).
    pub name: Text,
}

/// `jump_group`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct JumpGroup {
    /// `id` attribute: unique per type.
    pub id: Option<Text>,
    /// `type` attribute: `shared` or `personal`.
    pub kind: Option<Text>,
    /// The group's name.
    pub name: Text,
}

/// `custom_attribute`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CustomAttribute {
    /// `display_name` attribute.
    pub display_name: Text,
    /// `code_name` attribute.
    pub code_name: Text,
    /// The value.
    pub value: Text,
}

/// A recording the appliance offers for download (`command_shell_recording` and the like).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RecordingLink {
    /// `instance` attribute, 0-based.
    pub instance: u32,
    /// `download_url`.
    pub download_url: Option<Text>,
    /// `view_url`.
    pub view_url: Option<Text>,
}

/// Someone named by reference: `primary_customer`, `primary_rep`, an event's
/// `performed_by` or `destination`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Party {
    /// `type` attribute: `system`, `customer` or `representative` (events only).
    pub kind: Option<Text>,
    /// `gsnumber` attribute.
    pub gsnumber: Option<Text>,
    /// `id` attribute (representatives).
    pub id: Option<Text>,
    /// The name.
    pub name: Text,
}

/// `customer` in `customer_list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Customer {
    /// `gsnumber` attribute.
    pub gsnumber: Option<Text>,
    /// `username`.
    pub username: Option<Text>,
    /// `public_ip`, possibly with a port (`203.0.113.10:50522`, `[2001:db8::1]:56722`).
    pub public_ip: Option<Text>,
    /// `private_ip`.
    pub private_ip: Option<Text>,
    /// `hostname`.
    pub hostname: Option<Text>,
    /// `os`.
    pub os: Option<Text>,
    /// `primary_cust` (1 or 0).
    pub primary: Option<bool>,
    /// `rpat` support flag when written (1 or 0).
    pub rpat: Option<bool>,
    /// `info/name`: the name given in the issue submission form.
    pub name: Option<Text>,
    /// `info/company`.
    pub company: Option<Text>,
    /// `info/company_code`.
    pub company_code: Option<Text>,
    /// `info/issue`.
    pub issue: Option<Text>,
    /// `info/details`: the issue description.
    pub details: Option<Text>,
}

/// `representative` in `rep_list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Representative {
    /// `gsnumber` attribute.
    pub gsnumber: Option<Text>,
    /// `id` attribute: the user id.
    pub id: Option<Text>,
    /// `username`.
    pub username: Option<Text>,
    /// `display_name`.
    pub display_name: Option<Text>,
    /// `public_display_name`.
    pub public_display_name: Option<Text>,
    /// `private_display_name`.
    pub private_display_name: Option<Text>,
    /// `display_number`.
    pub display_number: Option<Text>,
    /// `public_ip`.
    pub public_ip: Option<Text>,
    /// `private_ip`.
    pub private_ip: Option<Text>,
    /// `hostname`.
    pub hostname: Option<Text>,
    /// `os`.
    pub os: Option<Text>,
    /// `session_owner` (1 or 0).
    pub session_owner: Option<bool>,
    /// `primary_rep` (1 or 0).
    pub primary: Option<bool>,
    /// `seconds_involved`.
    pub seconds_involved: Option<i64>,
    /// `invited` (1 or 0).
    pub invited: Option<bool>,
}

/// `team` in `team_list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Team {
    /// `id` attribute.
    pub id: Option<Text>,
    /// The team's display name.
    pub name: Text,
    /// `primary` flag (1 or 0): the last team the session was transferred to.
    pub primary: Option<bool>,
}

/// `event` in `session_details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Event {
    /// `timestamp` attribute.
    pub timestamp: Option<DateTime<Utc>>,
    /// `event_type` attribute (an open list: Session Start, Chat Message, ...).
    pub event_type: Text,
    /// `performed_by`.
    pub performed_by: Option<Party>,
    /// `destination`.
    pub destination: Option<Party>,
    /// `data/value` pairs in document order.
    pub data: Vec<DataValue>,
    /// `body`: chat or note text.
    pub body: Option<Text>,
    /// `encoded_body`, base64-decoded (present when the text has characters XML cannot carry).
    pub encoded_body: Option<Text>,
    /// `filename`.
    pub filename: Option<Text>,
    /// `filesize`.
    pub filesize: Option<Text>,
    /// `files/file`.
    pub files: Vec<TransferredFile>,
    /// `system_information/category`.
    pub system_information: Vec<SystemInfoCategory>,
}

/// `data/value` of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DataValue {
    /// `name` attribute.
    pub name: Text,
    /// `value` attribute.
    pub value: Text,
}

/// `files/file` of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TransferredFile {
    /// The file's name.
    pub name: Text,
    /// Its size when given.
    pub size: Option<Text>,
}

/// `system_information/category`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SystemInfoCategory {
    /// `name` attribute (General, Memory, Drives, ...).
    pub name: Text,
    /// `description/field`: the column headers, as (name attribute, text).
    pub columns: Vec<DataValue>,
    /// `data/row`: each row's fields as (name attribute, trimmed text).
    pub rows: Vec<Vec<DataValue>>,
}

/// One row of a `SupportSessionListing` report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SessionSummary {
    /// `lsid` attribute.
    pub lsid: String,
    /// `has_recording` attribute.
    pub has_recording: bool,
    /// External key when present.
    pub external_key: Option<String>,
}

/// `get_api_info`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ApiInfo {
    /// `api_version`.
    pub api_version: Option<String>,
    /// `company_name`.
    pub company_name: Option<String>,
    /// `timestamp`: the appliance's clock when it answered.
    pub timestamp: Option<DateTime<Utc>>,
    /// `perm_*` elements and their values as written (`1`, `0`, `full_support`, ...).
    pub permissions: Vec<DataValue>,
}

/// The reports btic reads sessions from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Report {
    /// `SupportSession`: support sessions (and, through them, their recordings).
    SupportSession,
    /// `PresentationSession`: presentations.
    PresentationSession,
}

impl Report {
    /// Every report kind, in the order btic fetches them. Everything that goes through
    /// each kind (marks, gauges, status, backfill cursors) walks this list, so a new
    /// variant is seen everywhere at once.
    pub const ALL: [Report; 2] = [Report::SupportSession, Report::PresentationSession];

    /// The `generate_report` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Report::SupportSession => "SupportSession",
            Report::PresentationSession => "PresentationSession",
        }
    }
}

/// A name that is no report kind btic reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownReport(pub String);

impl std::fmt::Display for UnknownReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown report kind {:?}", self.0)
    }
}

impl std::error::Error for UnknownReport {}

impl std::str::FromStr for Report {
    type Err = UnknownReport;

    /// The report whose `generate_report` value is `name`.
    fn from_str(name: &str) -> Result<Report, UnknownReport> {
        Report::ALL
            .into_iter()
            .find(|r| r.as_str() == name)
            .ok_or_else(|| UnknownReport(name.to_string()))
    }
}

/// A recording of a session (or presentation): which one, with its instance where a
/// session can have several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Recording {
    /// The support session's screen recording (`SupportSessionRecording`).
    Screen,
    /// A Show My Screen recording, by instance from 0 (`ShowMyScreenRecording`).
    ShowMyScreen(u32),
    /// A command shell recording, by instance from 0 (`CommandShellRecording`).
    CommandShell(u32),
    /// A presentation's recording (`PresentationSessionRecording`).
    Presentation,
}

impl Recording {
    /// Every recording `session` says exists.
    pub fn of(session: &Session) -> Vec<Recording> {
        let mut out = Vec::new();
        if session.has_screen_recording() {
            out.push(Recording::Screen);
        }
        out.extend(
            session
                .show_my_screen_recordings
                .iter()
                .map(|r| Recording::ShowMyScreen(r.instance)),
        );
        out.extend(
            session
                .command_shell_recordings
                .iter()
                .map(|r| Recording::CommandShell(r.instance)),
        );
        out
    }

    /// The `generate_report` value that downloads it.
    pub fn report(self) -> &'static str {
        match self {
            Recording::Screen => "SupportSessionRecording",
            Recording::ShowMyScreen(_) => "ShowMyScreenRecording",
            Recording::CommandShell(_) => "CommandShellRecording",
            Recording::Presentation => "PresentationSessionRecording",
        }
    }

    /// Its instance (`%INSTANCE%`), for the kinds a session can have several of.
    pub fn instance(self) -> Option<u32> {
        match self {
            Recording::ShowMyScreen(i) | Recording::CommandShell(i) => Some(i),
            Recording::Screen | Recording::Presentation => None,
        }
    }

    /// A short name for messages and metrics (`screen`, `command_shell/1`).
    pub fn label(self) -> String {
        match self {
            Recording::Screen => "screen".into(),
            Recording::ShowMyScreen(i) => format!("show_my_screen/{i}"),
            Recording::CommandShell(i) => format!("command_shell/{i}"),
            Recording::Presentation => "presentation".into(),
        }
    }
}

/// `%SESSION_TYPE%` of a presentation and of its recording.
pub const PRESENTATION_TYPE: &str = "presentation";

/// The values a session's (or presentation's) file names are made of.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Naming {
    /// The site's host name without a port (`%SUPPORT_SITE_HOST%`).
    pub host: String,
    /// `%LSID%`.
    pub lsid: String,
    /// `%LSEQ%`.
    pub lseq: Option<i64>,
    /// `%EXTERNAL_KEY%`.
    pub external_key: Option<String>,
    /// `%SESSION_TYPE%` (`support`, `presentation`).
    pub session_type: String,
}

impl Naming {
    /// The naming values of `session`, from the site `host` (no port).
    pub fn of(host: &str, session: &Session) -> Naming {
        Naming {
            host: host.to_string(),
            lsid: session.lsid.to_string(),
            lseq: session.lseq,
            external_key: session.external_key.as_deref().map(str::to_owned),
            session_type: session.session_type.to_string(),
        }
    }

    /// The naming values of a presentation from `host`.
    pub fn presentation(host: &str, lsid: &str, lseq: Option<i64>) -> Naming {
        Naming {
            host: host.to_string(),
            lsid: lsid.to_string(),
            lseq,
            external_key: None,
            session_type: PRESENTATION_TYPE.to_string(),
        }
    }
}

/// A report body's root element as far as the files destination repeats it around a
/// session it writes alone: its prefix and namespace declarations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRoot {
    /// The root's prefix (`r` for `<r:session_list>`), if it had one.
    pub prefix: Option<String>,
    /// Its namespace declarations: (`None`, uri) for `xmlns`, (`Some(p)`, uri) for `xmlns:p`.
    pub namespaces: Vec<(Option<String>, String)>,
}

impl ReportRoot {
    /// A root with only a default namespace, as appliances write it.
    pub fn with_default_namespace(uri: &str) -> ReportRoot {
        ReportRoot {
            prefix: None,
            namespaces: vec![(None, uri.to_string())],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each variant's place in `Report::ALL`. The match is exhaustive: a new variant does
    /// not compile here until it is placed, and then the test checks `ALL` holds it.
    fn place(report: Report) -> usize {
        match report {
            Report::SupportSession => 0,
            Report::PresentationSession => 1,
        }
    }

    #[test]
    fn report_all_lists_every_kind_once_and_names_parse_back() {
        for (i, report) in Report::ALL.into_iter().enumerate() {
            assert_eq!(place(report), i, "{report:?}");
            assert_eq!(report.as_str().parse::<Report>(), Ok(report));
        }
        assert_eq!(
            "SupportTeam".parse::<Report>(),
            Err(UnknownReport("SupportTeam".into()))
        );
    }
}
