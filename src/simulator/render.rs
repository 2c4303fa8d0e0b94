//! Writes model values as the appliance's XML: `SupportSession` (`<session_list>`),
//! `SupportSessionListing` (`<session_summary_list>`), `get_api_info`
//! (`<api_information>`) and `<error>` bodies.
//!
//! The output imitates what real appliances send, ugliness included, so that clients
//! are tested against it: loose and uneven indentation, empty events written as an open
//! tag, blank lines and a close tag, system information values padded with whitespace,
//! times written twice (the `timestamp` attribute and ISO 8601 text). Text and attributes
//! are escaped; characters XML cannot carry are dropped from text (the generator puts
//! the full text in `encoded_body`, which is written as base64).
//!
//! Rendering a `Session` and parsing it back gives the same `Session` (tested in
//! `tests/parse_roundtrip.rs`).

use std::borrow::Borrow;
use std::io::{self, Read, Write};

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};

use crate::model::{
    ApiInfo, CustomAttribute, Customer, Event, Party, RecordingLink, Representative, Session,
    SessionSummary, SystemInfoCategory,
};
use crate::simulator::sessions::is_xml_unsafe;

/// The XML namespace a report's root element declares; appliances of different versions
/// and products use different ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// `http://www.bomgar.com/namespaces/API/reporting` (older appliances).
    Bomgar,
    /// `https://www.beyondtrust.com/namespaces/API/reporting` (documented).
    BeyondTrust,
    /// `http://www.beyondtrust.com/sra/namespaces/API/reporting` (seen on PRA cloud).
    Sra,
    /// No namespace declaration at all.
    None,
}

impl Namespace {
    /// Every variant, for tests that try them all.
    pub const ALL: [Namespace; 4] = [
        Namespace::Bomgar,
        Namespace::BeyondTrust,
        Namespace::Sra,
        Namespace::None,
    ];

    /// The namespace URI, if any.
    pub fn uri(self) -> Option<&'static str> {
        match self {
            Namespace::Bomgar => Some("http://www.bomgar.com/namespaces/API/reporting"),
            Namespace::BeyondTrust => Some("https://www.beyondtrust.com/namespaces/API/reporting"),
            Namespace::Sra => Some("http://www.beyondtrust.com/sra/namespaces/API/reporting"),
            Namespace::None => None,
        }
    }

    /// The namespace of the command API's answers (`get_api_info`), the reporting
    /// namespace's sibling (`.../namespaces/API/command`).
    pub fn command_uri(self) -> Option<&'static str> {
        match self {
            Namespace::Bomgar => Some("http://www.bomgar.com/namespaces/API/command"),
            Namespace::BeyondTrust => Some("https://www.beyondtrust.com/namespaces/API/command"),
            Namespace::Sra => Some("http://www.beyondtrust.com/sra/namespaces/API/command"),
            Namespace::None => None,
        }
    }

    fn attribute(self) -> String {
        match self.uri() {
            Some(uri) => format!(" xmlns=\"{uri}\""),
            None => String::new(),
        }
    }
}

const DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// Writes a whole `SupportSession` body: `<session_list>` with one `<session>` per item.
pub fn write_session_list<W, I>(w: &mut W, ns: Namespace, sessions: I) -> io::Result<()>
where
    W: Write,
    I: IntoIterator,
    I::Item: Borrow<Session>,
{
    write_session_list_start(w, ns)?;
    for s in sessions {
        write_session(w, s.borrow())?;
    }
    write_session_list_end(w)
}

/// The XML declaration and the `<session_list>` start tag.
pub fn write_session_list_start(w: &mut impl Write, ns: Namespace) -> io::Result<()> {
    let xsi = if ns == Namespace::Sra {
        " xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\""
    } else {
        ""
    };
    writeln!(w, "{DECLARATION}<session_list{}{xsi}>", ns.attribute())
}

/// The `</session_list>` end tag.
pub fn write_session_list_end(w: &mut impl Write) -> io::Result<()> {
    w.write_all(b"</session_list>\n")
}

/// Writes one `<session>` element (no declaration, no root).
pub fn write_session(w: &mut impl Write, s: &Session) -> io::Result<()> {
    let mut x = Xml { w };
    x.raw("<session")?;
    x.attr("lsid", &s.lsid)?;
    x.raw(">\n")?;
    x.leaf(4, "session_type", &[], Some(&s.session_type))?;
    x.leaf(4, "lseq", &[], s.lseq.map(|v| v.to_string()).as_deref())?;
    x.time(4, "start_time", s.start_time)?;
    x.time(4, "end_time", s.end_time)?;
    x.leaf(4, "duration", &[], s.duration.as_deref())?;
    if let Some(site) = &s.public_site {
        x.leaf(
            4,
            "public_site",
            &[("id", site.id.as_deref())],
            Some(&site.name),
        )?;
    }
    x.leaf(4, "external_key", &[], s.external_key.as_deref())?;
    x.custom_attributes(&s.custom_attributes)?;
    x.links_and_counts(s)?;
    if let Some(p) = &s.primary_customer {
        x.party(4, "primary_customer", p)?;
    }
    if let Some(j) = &s.jump_group {
        x.leaf(
            4,
            "jump_group",
            &[("type", j.kind.as_deref()), ("id", j.id.as_deref())],
            Some(&j.name),
        )?;
        // Real bodies have a stray blank line here.
        x.raw("\n")?;
    }
    if let Some(p) = &s.primary_rep {
        x.party(4, "primary_rep", p)?;
    }
    x.raw("    <customer_list>\n")?;
    for c in &s.customers {
        x.customer(c)?;
    }
    x.raw("    </customer_list>\n    <rep_list>\n")?;
    for r in &s.representatives {
        x.representative(r)?;
    }
    x.raw("    </rep_list>\n")?;
    if !s.teams.is_empty() {
        x.raw("    <team_list>\n")?;
        for t in &s.teams {
            let primary = t.primary.map(flag);
            x.leaf(
                8,
                "team",
                &[("id", t.id.as_deref()), ("primary", primary)],
                Some(&t.name),
            )?;
        }
        x.raw("    </team_list>\n")?;
    }
    x.raw("<session_details>\n")?;
    for e in &s.events {
        x.event(e)?;
    }
    x.raw("</session_details>\n</session>\n")
}

/// Writes a `SupportSessionListing` body.
pub fn write_session_summary_list(
    w: &mut impl Write,
    ns: Namespace,
    rows: &[SessionSummary],
) -> io::Result<()> {
    let mut x = Xml { w };
    x.raw(DECLARATION)?;
    writeln!(x.w, "<session_summary_list{}>", ns.attribute())?;
    for r in rows {
        x.raw("<session_summary")?;
        x.attr("lsid", &r.lsid)?;
        x.attr("has_recording", flag(r.has_recording))?;
        if let Some(k) = &r.external_key {
            x.attr("external_key", k)?;
        }
        x.raw("  />\n")?;
    }
    x.raw("</session_summary_list>\n")
}

/// Writes a `get_api_info` body.
pub fn write_api_info(w: &mut impl Write, ns: Namespace, info: &ApiInfo) -> io::Result<()> {
    // As an RS 19.1 appliance answers (`ragmob_rs19_get_api_info_REAL.xml`): the command
    // API's namespace, a blank line after the declaration, tabs, and the permissions
    // nested as `<permission name="...">`, oddly indented.
    let mut x = Xml { w };
    x.raw(DECLARATION)?;
    x.raw("\n")?;
    match ns.command_uri() {
        Some(uri) => writeln!(x.w, "<api_information xmlns=\"{uri}\">")?,
        None => x.raw("<api_information>\n")?,
    }
    let timestamp = info.timestamp.map(|t| t.timestamp().to_string());
    for (name, value) in [
        ("api_version", info.api_version.as_deref()),
        ("company_name", info.company_name.as_deref()),
        ("timestamp", timestamp.as_deref()),
    ] {
        if let Some(value) = value {
            write!(x.w, "\t<{name}>")?;
            x.text(value)?;
            writeln!(x.w, "</{name}>")?;
        }
    }
    x.raw("\t<permissions>\n")?;
    for p in &info.permissions {
        x.raw("\t\t\t\t<permission")?;
        x.attr("name", &p.name)?;
        x.raw(">")?;
        x.text(&p.value)?;
        x.raw("</permission>\n")?;
    }
    x.raw("\t\t\n\t</permissions>\n</api_information>\n")
}

/// Writes an `<error>` body as the root element, as appliances answer a failed login.
pub fn write_error(w: &mut impl Write, ns: Namespace, message: &str) -> io::Result<()> {
    let mut x = Xml { w };
    x.raw(DECLARATION)?;
    x.raw("\n")?;
    write!(x.w, "<error{}>", ns.attribute())?;
    x.text(message)?;
    x.raw("</error>\n\n\n\n")
}

/// Writes an `<error>` nested in a report's root element (`root`, e.g. `session_list`).
pub fn write_nested_error(
    w: &mut impl Write,
    ns: Namespace,
    root: &str,
    message: &str,
) -> io::Result<()> {
    let mut x = Xml { w };
    x.raw(DECLARATION)?;
    writeln!(x.w, "<{root}{}>", ns.attribute())?;
    x.raw("  <error>")?;
    x.text(message)?;
    writeln!(x.w, "</error>\n</{root}>")
}

/// Renders a `SupportSession` body lazily as a `Read`: one session at a time, so a body
/// of any size streams in constant memory. With a byte limit, the list is closed after
/// the first session that reaches the limit (benchmarks ask for "N MB of sessions").
#[derive(Debug)]
pub struct SessionListReader<I> {
    sessions: I,
    ns: Namespace,
    buf: Vec<u8>,
    pos: usize,
    written: u64,
    limit: Option<u64>,
    state: ReaderState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReaderState {
    Start,
    Sessions,
    Done,
}

impl<I: Iterator<Item = Session>> SessionListReader<I> {
    /// A body with every session of `sessions`.
    pub fn new(ns: Namespace, sessions: I) -> Self {
        SessionListReader {
            sessions,
            ns,
            buf: Vec::with_capacity(64 * 1024),
            pos: 0,
            written: 0,
            limit: None,
            state: ReaderState::Start,
        }
    }

    /// Stops taking sessions once the body has reached `bytes`.
    pub fn with_limit(mut self, bytes: u64) -> Self {
        self.limit = Some(bytes);
        self
    }

    fn refill(&mut self) -> io::Result<()> {
        self.buf.clear();
        self.pos = 0;
        match self.state {
            ReaderState::Start => {
                write_session_list_start(&mut self.buf, self.ns)?;
                self.state = ReaderState::Sessions;
            }
            ReaderState::Sessions => {
                let full = self.limit.is_some_and(|l| self.written >= l);
                match self.sessions.next().filter(|_| !full) {
                    Some(s) => write_session(&mut self.buf, &s)?,
                    None => {
                        write_session_list_end(&mut self.buf)?;
                        self.state = ReaderState::Done;
                    }
                }
            }
            ReaderState::Done => {}
        }
        Ok(())
    }
}

impl<I: Iterator<Item = Session>> Read for SessionListReader<I> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.state == ReaderState::Done {
                return Ok(0);
            }
            self.refill()?;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        self.written += n as u64;
        Ok(n)
    }
}

/// A `SupportSession` body of at least `bytes` bytes (sessions of `seed` from
/// [`sessions::epoch`](crate::simulator::sessions::epoch)), rendered into memory.
pub fn session_list_of_size(seed: u64, ns: Namespace, bytes: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes as usize + 64 * 1024);
    let sessions =
        crate::simulator::sessions::Sessions::new(seed, crate::simulator::sessions::epoch());
    SessionListReader::new(ns, sessions)
        .with_limit(bytes)
        .read_to_end(&mut out)
        .map(|_| out)
        .unwrap_or_default()
}

fn flag(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

/// A small XML writer with the appliance's formatting habits.
struct Xml<'w, W: Write> {
    w: &'w mut W,
}

impl<W: Write> Xml<'_, W> {
    fn raw(&mut self, s: &str) -> io::Result<()> {
        self.w.write_all(s.as_bytes())
    }

    fn indent(&mut self, n: usize) -> io::Result<()> {
        const SPACES: &str = "                                ";
        self.raw(&SPACES[..n.min(SPACES.len())])
    }

    /// Escaped text; characters XML cannot carry are dropped, and a carriage return is
    /// written as a character reference so that it survives line-end normalisation.
    fn text(&mut self, s: &str) -> io::Result<()> {
        let mut last = 0;
        for (i, c) in s.char_indices() {
            let rep = match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '\r' => "&#13;",
                c if is_xml_unsafe(c) => "",
                _ => continue,
            };
            self.raw(&s[last..i])?;
            self.raw(rep)?;
            last = i + c.len_utf8();
        }
        self.raw(&s[last..])
    }

    /// ` name="value"`, escaped for a double-quoted attribute; whitespace other than a
    /// space is written as character references (attribute values are normalised).
    fn attr(&mut self, name: &str, value: &str) -> io::Result<()> {
        write!(self.w, " {name}=\"")?;
        let mut last = 0;
        for (i, c) in value.char_indices() {
            let rep = match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                '\t' => "&#9;",
                '\n' => "&#10;",
                '\r' => "&#13;",
                c if is_xml_unsafe(c) => "",
                _ => continue,
            };
            self.raw(&value[last..i])?;
            self.raw(rep)?;
            last = i + c.len_utf8();
        }
        self.raw(&value[last..])?;
        self.raw("\"")
    }

    fn attrs(&mut self, attrs: &[(&str, Option<&str>)]) -> io::Result<()> {
        for (name, value) in attrs {
            if let Some(v) = value {
                self.attr(name, v)?;
            }
        }
        Ok(())
    }

    /// `<name attrs>text</name>` on its own line; nothing when `text` is `None`.
    fn leaf(
        &mut self,
        indent: usize,
        name: &str,
        attrs: &[(&str, Option<&str>)],
        text: Option<&str>,
    ) -> io::Result<()> {
        if let Some(t) = text {
            self.leaf_inline(indent, name, attrs, t)?;
            self.raw("\n")?;
        }
        Ok(())
    }

    fn leaf_inline(
        &mut self,
        indent: usize,
        name: &str,
        attrs: &[(&str, Option<&str>)],
        text: &str,
    ) -> io::Result<()> {
        self.indent(indent)?;
        write!(self.w, "<{name}")?;
        self.attrs(attrs)?;
        self.raw(">")?;
        self.text(text)?;
        write!(self.w, "</{name}>")
    }

    /// A time element: UNIX seconds in `timestamp`, ISO 8601 in the text; an empty
    /// element when there is no time (a session in progress).
    fn time(&mut self, indent: usize, name: &str, t: Option<DateTime<Utc>>) -> io::Result<()> {
        self.indent(indent)?;
        match t {
            Some(t) => {
                write!(self.w, "<{name} timestamp=\"{}\">", t.timestamp())?;
                self.raw(&t.to_rfc3339_opts(SecondsFormat::AutoSi, false))?;
                writeln!(self.w, "</{name}>")
            }
            None => writeln!(self.w, "<{name}></{name}>"),
        }
    }

    fn party(&mut self, indent: usize, name: &str, p: &Party) -> io::Result<()> {
        self.leaf(
            indent,
            name,
            &[
                ("type", p.kind.as_deref()),
                ("gsnumber", p.gsnumber.as_deref()),
                ("id", p.id.as_deref()),
            ],
            Some(&p.name),
        )
    }

    /// `<custom_attributes>`, empty or with one `<custom_attribute>` a line.
    fn custom_attributes(&mut self, attributes: &[CustomAttribute]) -> io::Result<()> {
        self.indent(4)?;
        self.raw("<custom_attributes>")?;
        for a in attributes {
            self.raw("\n")?;
            self.leaf_inline(
                8,
                "custom_attribute",
                &[
                    ("display_name", Some(&a.display_name)),
                    ("code_name", Some(&a.code_name)),
                ],
                &a.value,
            )?;
        }
        if !attributes.is_empty() {
            self.raw("\n    ")?;
        }
        self.raw("</custom_attributes>\n")?;
        Ok(())
    }

    /// The chat and recording links, the recordings, and the file counts.
    fn links_and_counts(&mut self, s: &Session) -> io::Result<()> {
        self.leaf(4, "session_chat_view_url", &[], s.chat_view_url.as_deref())?;
        self.leaf(
            4,
            "session_chat_download_url",
            &[],
            s.chat_download_url.as_deref(),
        )?;
        self.leaf(
            4,
            "session_recording_view_url",
            &[],
            s.recording_view_url.as_deref(),
        )?;
        self.leaf(
            4,
            "session_recording_download_url",
            &[],
            s.recording_download_url.as_deref(),
        )?;
        self.recordings(
            "command_shell_recordings",
            "command_shell_recording",
            &s.command_shell_recordings,
        )?;
        self.recordings(
            "show_my_screen_recordings",
            "show_my_screen_recording",
            &s.show_my_screen_recordings,
        )?;
        let count = |v: Option<u32>| v.map(|n| n.to_string());
        self.leaf(
            4,
            "file_transfer_count",
            &[],
            count(s.file_transfer_count).as_deref(),
        )?;
        self.leaf(
            4,
            "file_move_count",
            &[],
            count(s.file_move_count).as_deref(),
        )?;
        self.leaf(
            4,
            "file_delete_count",
            &[],
            count(s.file_delete_count).as_deref(),
        )?;
        Ok(())
    }

    fn recordings(&mut self, list: &str, item: &str, links: &[RecordingLink]) -> io::Result<()> {
        if links.is_empty() {
            return Ok(());
        }
        writeln!(self.w, "    <{list}>")?;
        for l in links {
            write!(self.w, "        <{item} instance=\"{}\">", l.instance)?;
            if let Some(d) = &l.download_url {
                self.leaf_inline(0, "download_url", &[], d)?;
            }
            if let Some(v) = &l.view_url {
                self.leaf_inline(0, "view_url", &[], v)?;
            }
            writeln!(self.w, "</{item}>")?;
        }
        writeln!(self.w, "    </{list}>")
    }

    fn customer(&mut self, c: &Customer) -> io::Result<()> {
        self.raw("    <customer")?;
        self.attrs(&[("gsnumber", c.gsnumber.as_deref())])?;
        self.raw(">\n")?;
        self.leaf(4, "username", &[], c.username.as_deref())?;
        self.leaf(4, "public_ip", &[], c.public_ip.as_deref())?;
        self.leaf(4, "private_ip", &[], c.private_ip.as_deref())?;
        self.leaf(4, "hostname", &[], c.hostname.as_deref())?;
        self.leaf(4, "os", &[], c.os.as_deref())?;
        self.leaf(4, "primary_cust", &[], c.primary.map(flag))?;
        self.leaf(4, "rpat", &[], c.rpat.map(flag))?;
        let info = [
            ("name", &c.name),
            ("company", &c.company),
            ("company_code", &c.company_code),
            ("issue", &c.issue),
            ("details", &c.details),
        ];
        if info.iter().any(|(_, v)| v.is_some()) {
            self.raw("    <info>")?;
            for (name, value) in info {
                if let Some(v) = value {
                    self.leaf_inline(0, name, &[], v)?;
                }
            }
            self.raw("</info>\n")?;
        }
        self.raw("</customer>\n")
    }

    fn representative(&mut self, r: &Representative) -> io::Result<()> {
        self.raw("    <representative")?;
        self.attrs(&[("gsnumber", r.gsnumber.as_deref()), ("id", r.id.as_deref())])?;
        self.raw(">\n")?;
        self.leaf(4, "username", &[], r.username.as_deref())?;
        self.leaf(4, "display_name", &[], r.display_name.as_deref())?;
        self.leaf(
            4,
            "public_display_name",
            &[],
            r.public_display_name.as_deref(),
        )?;
        self.leaf(
            4,
            "private_display_name",
            &[],
            r.private_display_name.as_deref(),
        )?;
        self.leaf(4, "display_number", &[], r.display_number.as_deref())?;
        self.leaf(8, "public_ip", &[], r.public_ip.as_deref())?;
        self.leaf(4, "private_ip", &[], r.private_ip.as_deref())?;
        self.leaf(4, "hostname", &[], r.hostname.as_deref())?;
        self.leaf(4, "os", &[], r.os.as_deref())?;
        self.leaf(4, "session_owner", &[], r.session_owner.map(flag))?;
        self.leaf(4, "primary_rep", &[], r.primary.map(flag))?;
        let seconds = r.seconds_involved.map(|s| s.to_string());
        self.leaf(8, "seconds_involved", &[], seconds.as_deref())?;
        self.leaf(4, "invited", &[], r.invited.map(flag))?;
        self.raw("</representative>\n")
    }

    fn event(&mut self, e: &Event) -> io::Result<()> {
        self.raw("<event")?;
        if let Some(t) = e.timestamp {
            write!(self.w, " timestamp=\"{}\"", t.timestamp())?;
        }
        self.attr("event_type", &e.event_type)?;
        self.raw(" >\n")?;
        let empty = e.performed_by.is_none()
            && e.destination.is_none()
            && e.data.is_empty()
            && e.body.is_none()
            && e.encoded_body.is_none()
            && e.filename.is_none()
            && e.filesize.is_none()
            && e.files.is_empty()
            && e.system_information.is_empty();
        if empty {
            // What appliances write for an event without details.
            return self.raw("\n    </event>\n");
        }
        if let Some(p) = &e.performed_by {
            self.party(4, "performed_by", p)?;
        }
        if let Some(p) = &e.destination {
            self.party(4, "destination", p)?;
        }
        if !e.data.is_empty() {
            self.raw("    <data>\n")?;
            for v in &e.data {
                self.raw("            <value")?;
                self.attr("name", &v.name)?;
                self.attr("value", &v.value)?;
                self.raw(" />\n")?;
            }
            self.raw("        </data>\n")?;
        }
        self.leaf(4, "body", &[], e.body.as_deref())?;
        if let Some(b) = &e.encoded_body {
            let encoded = base64::engine::general_purpose::STANDARD.encode(b.as_bytes());
            self.leaf(4, "encoded_body", &[], Some(&encoded))?;
        }
        self.leaf(4, "filename", &[], e.filename.as_deref())?;
        self.leaf(4, "filesize", &[], e.filesize.as_deref())?;
        if !e.files.is_empty() {
            self.raw("    <files>\n")?;
            for f in &e.files {
                self.raw("        <file>")?;
                self.leaf_inline(0, "filename", &[], &f.name)?;
                if let Some(size) = &f.size {
                    self.leaf_inline(0, "filesize", &[], size)?;
                }
                self.raw("</file>\n")?;
            }
            self.raw("    </files>\n")?;
        }
        if !e.system_information.is_empty() {
            self.raw("    <system_information>")?;
            for c in &e.system_information {
                self.category(c)?;
            }
            self.raw("</system_information>\n")?;
        }
        self.raw("</event>\n")
    }

    fn category(&mut self, c: &SystemInfoCategory) -> io::Result<()> {
        self.raw("<category")?;
        self.attr("name", &c.name)?;
        self.raw(">\n        <description>")?;
        for f in &c.columns {
            self.raw("<field")?;
            self.attr("name", &f.name)?;
            self.raw(">")?;
            self.text(&f.value)?;
            self.raw("</field>")?;
        }
        self.raw("</description>\n        <data>")?;
        for row in &c.rows {
            self.raw("<row>")?;
            for f in row {
                // Values come padded with whitespace and line breaks in real bodies.
                self.raw("<field")?;
                self.attr("name", &f.name)?;
                self.raw(">\n            ")?;
                self.text(&f.value)?;
                self.raw("\n        </field>")?;
            }
            self.raw("</row>")?;
        }
        self.raw("</data>\n    </category>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::sessions::{Sessions, epoch};

    #[test]
    fn text_and_attributes_are_escaped() {
        let mut out = Vec::new();
        let mut x = Xml { w: &mut out };
        x.text("a & b < c > d \u{1} \r").unwrap();
        x.attr("n", "\"q\" & <t>\n").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a &amp; b &lt; c &gt; d  &#13; n=\"&quot;q&quot; &amp; &lt;t&gt;&#10;\""
        );
    }

    #[test]
    fn the_streaming_reader_writes_what_the_list_writer_writes() {
        let sessions: Vec<Session> = Sessions::new(3, epoch()).take(20).collect();
        let mut whole = Vec::new();
        write_session_list(&mut whole, Namespace::Bomgar, &sessions).unwrap();
        let mut streamed = Vec::new();
        SessionListReader::new(Namespace::Bomgar, sessions.into_iter())
            .read_to_end(&mut streamed)
            .unwrap();
        assert_eq!(whole, streamed);
    }

    #[test]
    fn a_sized_body_reaches_its_size_and_is_closed() {
        let body = session_list_of_size(1, Namespace::Sra, 300_000);
        assert!(body.len() >= 300_000);
        assert!(body.len() < 400_000);
        assert!(body.ends_with(b"</session_list>\n"));
    }
}
