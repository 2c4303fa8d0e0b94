//! The simulator's bodies: session content and the XML the appliance writes for it.
//!
//! This is the one seam between the HTTP layer and the session generator and renderer;
//! everything the server sends as XML is made here.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::model::Session;

/// The XML namespace of reporting answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Namespace {
    /// `http://www.bomgar.com/namespaces/API/reporting` (older appliances).
    Bomgar,
    /// `https://www.beyondtrust.com/namespaces/API/reporting` (documented).
    #[default]
    Beyondtrust,
    /// `http://www.beyondtrust.com/sra/namespaces/API/reporting` (seen on PRA cloud).
    Sra,
    /// No namespace at all.
    None,
}

impl Namespace {
    /// Parses `bomgar|beyondtrust|sra|none`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "bomgar" => Some(Namespace::Bomgar),
            "beyondtrust" => Some(Namespace::Beyondtrust),
            "sra" => Some(Namespace::Sra),
            "none" => Some(Namespace::None),
            _ => None,
        }
    }

    fn attribute(self, api: &str) -> String {
        match self {
            Namespace::Bomgar => format!(" xmlns=\"http://www.bomgar.com/namespaces/API/{api}\""),
            Namespace::Beyondtrust => {
                format!(" xmlns=\"https://www.beyondtrust.com/namespaces/API/{api}\"")
            }
            Namespace::Sra => {
                format!(" xmlns=\"http://www.beyondtrust.com/sra/namespaces/API/{api}\"")
            }
            Namespace::None => String::new(),
        }
    }
}

/// The LSID of session `index` of `seed`.
pub fn lsid(seed: u64, index: u64) -> String {
    let a = mix(seed, index, 11);
    let b = mix(seed, index, 12);
    format!("{a:016x}{b:016x}")
}

fn mix(seed: u64, index: u64, salt: u64) -> u64 {
    let mut z =
        seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Session `index` of `seed` with these times (`end`: `None` while in progress).
pub fn session(seed: u64, index: u64, start: DateTime<Utc>, end: Option<DateTime<Utc>>) -> Session {
    let r = mix(seed, index, 13);
    let mut s = Session {
        lsid: lsid(seed, index),
        session_type: "support".into(),
        lseq: Some(1000 + index as i64),
        start_time: Some(start),
        end_time: end,
        ..Session::default()
    };
    if let Some(end) = end {
        let secs = (end - start).num_seconds();
        s.duration = Some(format!(
            "{:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        ));
    }
    if r.is_multiple_of(3) {
        s.recording_download_url = Some(format!(
            "https://appliance/session_download?lsid={}",
            s.lsid
        ));
    }
    s
}

/// Whether a session has a screen recording.
pub fn has_recording(session: &Session) -> bool {
    session.has_screen_recording()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn time_element(name: &str, t: Option<DateTime<Utc>>) -> String {
    match t {
        Some(t) => format!(
            "<{name} timestamp=\"{}\">{}</{name}>",
            t.timestamp(),
            t.to_rfc3339_opts(SecondsFormat::Secs, false)
        ),
        None => format!("<{name}></{name}>"),
    }
}

/// A `SupportSession` answer.
pub fn session_list(sessions: &[Session], ns: Namespace) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<session_list{}>\n",
        ns.attribute("reporting")
    );
    for s in sessions {
        let _ = write!(
            out,
            "<session lsid=\"{}\">\n    <session_type>{}</session_type>\n    <lseq>{}</lseq>\n    {}\n    {}\n",
            escape(&s.lsid),
            escape(&s.session_type),
            s.lseq.unwrap_or_default(),
            time_element("start_time", s.start_time),
            time_element("end_time", s.end_time),
        );
        if let Some(d) = &s.duration {
            let _ = writeln!(out, "    <duration>{d}</duration>");
        }
        if let Some(url) = &s.recording_download_url {
            let _ = writeln!(
                out,
                "    <session_recording_download_url>{}</session_recording_download_url>",
                escape(url)
            );
        }
        out.push_str("</session>\n");
    }
    out.push_str("</session_list>\n");
    out
}

/// A `SupportSessionListing` answer.
pub fn listing(sessions: &[Session], ns: Namespace) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<session_summary_list{}>\n",
        ns.attribute("reporting")
    );
    for s in sessions {
        let _ = writeln!(
            out,
            "<session_summary lsid=\"{}\" has_recording=\"{}\" />",
            escape(&s.lsid),
            u8::from(has_recording(s))
        );
    }
    out.push_str("</session_summary_list>\n");
    out
}

/// A `PresentationSession` answer (the simulator has no presentations: an empty root).
pub fn presentation_list(ns: Namespace) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presentation_session_list{}></presentation_session_list>\n",
        ns.attribute("reporting")
    )
}

/// A `get_api_info` answer.
pub fn api_info(now: DateTime<Utc>, permissions: &[(String, bool)], ns: Namespace) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<api_information{}>\n  <api_version>1.24.1</api_version>\n  <company_name>Example Corp</company_name>\n  <timestamp>{}</timestamp>\n",
        ns.attribute("command"),
        now.timestamp()
    );
    for (name, granted) in permissions {
        let _ = writeln!(out, "  <{name}>{}</{name}>", u8::from(*granted));
    }
    out.push_str("</api_information>\n");
    out
}

/// An `<error>` answer: as the root, or nested in `root` when given.
pub fn error(message: &str, nested_in: Option<&str>, ns: Namespace) -> String {
    match nested_in {
        None => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error{}>{}</error>\n",
            ns.attribute("reporting"),
            escape(message)
        ),
        Some(root) => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root}{}><error>{}</error></{root}>\n",
            ns.attribute("reporting"),
            escape(message)
        ),
    }
}
