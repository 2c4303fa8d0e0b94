//! Row mapping: one `model::Session` becomes the rows of every table, with no database
//! in sight. Every field of the model lands somewhere; what the guide has no column for
//! goes to btic's added columns or to `session_event_data` pairs (names in `sql`'s
//! module doc).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use crate::model::{
    Customer, Event, Party, RecordingLink, Representative, Session, SystemInfoCategory, Text,
};

use super::schema::{
    self, CUSTOM_ATTRIBUTE, CUSTOMER, REPRESENTATIVE, SESSION, SESSION_EVENT, TEAM, Table,
};

/// One column value, typed loosely; the column's `ColumnType` says how it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// Text (a value of up to 24 bytes inline, as in the model).
    Text(Text),
    /// An integer (stored as 32 or 64 bits per column).
    Int(i64),
    /// A UTC instant.
    Time(DateTime<Utc>),
}

impl From<Option<Text>> for Value {
    fn from(v: Option<Text>) -> Self {
        v.map_or(Value::Null, Value::Text)
    }
}

impl From<Option<&Text>> for Value {
    fn from(v: Option<&Text>) -> Self {
        v.map_or(Value::Null, |s| Value::Text(s.clone()))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.into())
    }
}

impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Value::Null, Value::Int)
    }
}

impl From<Option<u32>> for Value {
    fn from(v: Option<u32>) -> Self {
        v.map_or(Value::Null, |n| Value::Int(i64::from(n)))
    }
}

impl From<Option<bool>> for Value {
    fn from(v: Option<bool>) -> Self {
        v.map_or(Value::Null, |b| Value::Int(i64::from(b)))
    }
}

impl From<Option<DateTime<Utc>>> for Value {
    fn from(v: Option<DateTime<Utc>>) -> Self {
        v.map_or(Value::Null, Value::Time)
    }
}

/// Whether `rep` is the session's owner as its `<primary_rep gsnumber id>` names it,
/// for representatives without a `primary_rep` flag of their own (real appliances name
/// the owner only there: `sekoia_pra_AccessSession_lsid.xml`). `None` when the session
/// names no owner.
fn is_primary_rep(s: &Session, rep: &Representative) -> Option<bool> {
    let owner = s.primary_rep.as_ref()?;
    let same = |a: &Option<Text>, b: &Option<Text>| match (a, b) {
        (Some(a), Some(b)) => Some(a.trim() == b.trim()),
        _ => None,
    };
    // The gsnumber identifies a connection; the id, when both have one, the user.
    let by_gsnumber = same(&owner.gsnumber, &rep.gsnumber)?;
    Some(by_gsnumber && same(&owner.id, &rep.id).unwrap_or(true))
}

/// Whether `customer` is the session's `<primary_customer gsnumber>`, for customers
/// without a `primary_cust` flag of their own.
fn is_primary_customer(s: &Session, customer: &Customer) -> Option<bool> {
    let owner = s.primary_customer.as_ref()?;
    match (&owner.gsnumber, &customer.gsnumber) {
        (Some(a), Some(b)) => Some(a.trim() == b.trim()),
        _ => None,
    }
}

/// The customer's display name when the appliance wrote no `info/name`: the name the
/// session gives its primary customer (the guide's `display_name` falls back to the
/// user logged in on the customer's computer, which is what that element holds then).
fn primary_customer_name(s: &Session, customer: &Customer) -> Option<Text> {
    let owner = s.primary_customer.as_ref()?;
    (is_primary_customer(s, customer) == Some(true) && !owner.name.is_empty())
        .then(|| owner.name.clone())
}

/// The values of one row, in `Table::columns` order (without `id` and the parent link).
pub type Row = Vec<Value>;

/// One event's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRows {
    /// The `session_event` row.
    pub event: Row,
    /// `session_event_data` rows: `name`, `value`.
    pub data: Vec<Row>,
    /// `system_information` rows: `category`, `information`.
    pub system_information: Vec<Row>,
}

/// Every row one session produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRows {
    /// The `session` row.
    pub session: Row,
    /// Events in document order, with their children.
    pub events: Vec<EventRows>,
    /// `representative` rows.
    pub representatives: Vec<Row>,
    /// `customer` rows.
    pub customers: Vec<Row>,
    /// `team` rows.
    pub teams: Vec<Row>,
    /// `custom_attribute` rows.
    pub custom_attributes: Vec<Row>,
}

/// The `session` row.
fn session_row(host_name: &str, s: &Session) -> Row {
    let row = vec![
        Value::from(s.lsid.as_str()),
        Value::from(s.session_type.as_str()),
        s.start_time.into(),
        s.end_time.into(),
        s.duration.clone().into(),
        s.file_transfer_count.into(),
        Value::from(host_name),
        s.external_key.clone().into(),
        s.public_site.as_ref().and_then(|p| p.id.as_ref()).into(),
        s.public_site.as_ref().map(|p| p.name.clone()).into(),
        s.lseq.into(),
        s.jump_group.as_ref().and_then(|j| j.id.as_ref()).into(),
        s.jump_group.as_ref().map(|j| j.name.clone()).into(),
        s.jump_group.as_ref().and_then(|j| j.kind.as_ref()).into(),
        s.file_move_count.into(),
        s.file_delete_count.into(),
        s.chat_view_url.clone().into(),
        s.chat_download_url.clone().into(),
        s.recording_view_url.clone().into(),
        s.recording_download_url.clone().into(),
        recordings_json(&s.command_shell_recordings),
        recordings_json(&s.show_my_screen_recordings),
    ];
    debug_assert_eq!(row.len(), SESSION.columns.len());
    row
}

/// A `representative` row.
fn representative_row(s: &Session, r: &Representative) -> Row {
    vec![
        r.gsnumber.as_ref().into(),
        r.id.as_ref().into(),
        r.username.as_ref().into(),
        // The guide's display_name is the private display name; older
        // appliances write only `display_name`.
        r.display_name
            .as_ref()
            .or(r.private_display_name.as_ref())
            .into(),
        r.public_display_name.as_ref().into(),
        r.display_number.as_ref().into(),
        r.public_ip.as_ref().into(),
        r.private_ip.as_ref().into(),
        r.session_owner.into(),
        r.primary.or_else(|| is_primary_rep(s, r)).into(),
        r.seconds_involved.into(),
        r.hostname.as_ref().into(),
        r.os.as_ref().into(),
        r.private_display_name.as_ref().into(),
        r.invited.into(),
    ]
}

/// A `customer` row.
fn customer_row(s: &Session, c: &Customer) -> Row {
    vec![
        c.gsnumber.as_ref().into(),
        c.issue.as_ref().into(),
        c.details.as_ref().into(),
        c.name
            .clone()
            .or_else(|| primary_customer_name(s, c))
            .into(),
        c.company.as_ref().into(),
        c.company_code.as_ref().into(),
        c.public_ip.as_ref().into(),
        c.private_ip.as_ref().into(),
        c.rpat.into(),
        c.hostname.as_ref().into(),
        c.os.as_ref().into(),
        c.username.as_ref().into(),
        c.primary.or_else(|| is_primary_customer(s, c)).into(),
    ]
}

impl SessionRows {
    /// Maps a session seen on the site `host_name`. `system_information` rows are made
    /// only when `store_system_information` is true.
    pub fn new(host_name: &str, s: &Session, store_system_information: bool) -> Self {
        let session = session_row(host_name, s);
        let representatives = s
            .representatives
            .iter()
            .map(|r| representative_row(s, r))
            .collect();
        let customers = s.customers.iter().map(|c| customer_row(s, c)).collect();
        let teams = s
            .teams
            .iter()
            .map(|t| {
                vec![
                    t.id.as_ref().into(),
                    Value::from(t.name.as_str()),
                    t.primary.into(),
                ]
            })
            .collect();
        let custom_attributes = s
            .custom_attributes
            .iter()
            .map(|a| {
                vec![
                    Value::from(a.display_name.as_str()),
                    Value::from(a.code_name.as_str()),
                    Value::from(a.value.as_str()),
                ]
            })
            .collect();
        SessionRows {
            session,
            events: s
                .events
                .iter()
                .map(|e| event_rows(e, store_system_information))
                .collect(),
            representatives,
            customers,
            teams,
            custom_attributes,
        }
    }

    /// The session's `lsid`.
    pub fn lsid(&self) -> &str {
        match &self.session[0] {
            Value::Text(s) => s,
            _ => "",
        }
    }

    /// The session's `host_name`.
    pub fn host_name(&self) -> &str {
        match &self.session[6] {
            Value::Text(s) => s,
            _ => "",
        }
    }

    /// How many rows this session writes, over all tables.
    pub fn row_count(&self) -> u64 {
        let events: usize = self
            .events
            .iter()
            .map(|e| 1 + e.data.len() + e.system_information.len())
            .sum();
        (1 + events
            + self.representatives.len()
            + self.customers.len()
            + self.teams.len()
            + self.custom_attributes.len()) as u64
    }

    /// The rows of each session-child table with the table they go to.
    pub fn session_children(&self) -> [(&'static Table, &[Row]); 4] {
        [
            (&REPRESENTATIVE, &self.representatives),
            (&CUSTOMER, &self.customers),
            (&TEAM, &self.teams),
            (&CUSTOM_ATTRIBUTE, &self.custom_attributes),
        ]
    }
}

impl EventRows {
    /// The rows of each event-child table with the table they go to.
    pub fn children(&self) -> [(&'static Table, &[Row]); 2] {
        [
            (&schema::SESSION_EVENT_DATA, &self.data),
            (&schema::SYSTEM_INFORMATION, &self.system_information),
        ]
    }
}

fn event_rows(e: &Event, store_system_information: bool) -> EventRows {
    let party = |p: &Option<Party>| -> (Value, Value) {
        match p {
            Some(p) => (Value::from(p.name.as_str()), p.kind.as_ref().into()),
            None => (Value::Null, Value::Null),
        }
    };
    let (by, by_type) = party(&e.performed_by);
    let (to, to_type) = party(&e.destination);
    let event = vec![
        Value::from(e.event_type.as_str()),
        e.timestamp.into(),
        by,
        by_type,
        to,
        to_type,
    ];
    debug_assert_eq!(event.len(), SESSION_EVENT.columns.len());
    let mut data: Vec<Row> = e
        .data
        .iter()
        .map(|d| pair(&d.name, Some(&d.value)))
        .collect();
    let mut extra = |name: &str, value: Option<&Text>| {
        if value.is_some() {
            data.push(pair(name, value));
        }
    };
    extra("body", e.body.as_ref());
    extra("encoded_body", e.encoded_body.as_ref());
    extra("filename", e.filename.as_ref());
    extra("filesize", e.filesize.as_ref());
    for (i, f) in e.files.iter().enumerate() {
        extra(&format!("file.{i}.name"), Some(&f.name));
        extra(&format!("file.{i}.size"), f.size.as_ref());
    }
    for (role, p) in [
        ("performed_by", &e.performed_by),
        ("destination", &e.destination),
    ] {
        if let Some(p) = p {
            extra(&format!("{role}.gsnumber"), p.gsnumber.as_ref());
            extra(&format!("{role}.id"), p.id.as_ref());
        }
    }
    let system_information = if store_system_information {
        e.system_information.iter().map(category_row).collect()
    } else {
        Vec::new()
    };
    EventRows {
        event,
        data,
        system_information,
    }
}

fn pair(name: &str, value: Option<&Text>) -> Row {
    vec![Value::from(name), value.into()]
}

/// `information` of one category: JSON with the column headers and the rows, each as
/// name/value objects in document order, so repeated or reordered fields survive.
/// Written straight from the session's strings (keys in alphabetical order, as a
/// `serde_json::Value` map would write them): a system information section has
/// hundreds of fields, and building maps of them first was most of a session's cost.
fn category_row(c: &SystemInfoCategory) -> Row {
    #[derive(Serialize)]
    struct Header<'a> {
        name: &'a str,
        text: &'a str,
    }
    #[derive(Serialize)]
    struct Field<'a> {
        name: &'a str,
        value: &'a str,
    }
    #[derive(Serialize)]
    struct Information<'a> {
        columns: Vec<Header<'a>>,
        rows: Vec<Vec<Field<'a>>>,
    }
    let information = Information {
        columns: c
            .columns
            .iter()
            .map(|f| Header {
                name: &f.name,
                text: &f.value,
            })
            .collect(),
        rows: c
            .rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|f| Field {
                        name: &f.name,
                        value: &f.value,
                    })
                    .collect()
            })
            .collect(),
    };
    let text = match serde_json::to_string(&information) {
        Ok(text) => text,
        Err(e) => unreachable!("strings always serialize as JSON: {e}"),
    };
    vec![Value::from(c.name.as_str()), Value::Text(text.into())]
}

fn recordings_json(links: &[RecordingLink]) -> Value {
    if links.is_empty() {
        return Value::Null;
    }
    let items: Vec<_> = links
        .iter()
        .map(|l| json!({"instance": l.instance, "download_url": l.download_url, "view_url": l.view_url}))
        .collect();
    Value::Text(serde_json::Value::Array(items).to_string().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DataValue, SystemInfoCategory, TransferredFile};

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn a_category_is_the_same_json_as_a_map_of_it_would_write() {
        let field = |name: &str, value: &str| DataValue {
            name: name.into(),
            value: value.into(),
        };
        let c = SystemInfoCategory {
            name: "Drives".into(),
            columns: vec![field("Name", "Drive \"letter\""), field("Size", "")],
            rows: vec![
                vec![field("Name", "C:\\"), field("Size", "100 GB\n\u{7}é")],
                vec![field("Size", "1"), field("Size", "2")],
            ],
        };
        let columns: Vec<_> = c
            .columns
            .iter()
            .map(|f| json!({"name": f.name, "text": f.value}))
            .collect();
        let rows: Vec<Vec<_>> = c
            .rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|f| json!({"name": f.name, "value": f.value}))
                    .collect()
            })
            .collect();
        let expected = json!({"columns": columns, "rows": rows}).to_string();
        assert_eq!(
            category_row(&c),
            vec![text("Drives"), Value::Text(expected.into())]
        );
    }

    #[test]
    fn event_extras_follow_the_data_values_in_a_fixed_order() {
        let e = Event {
            event_type: "File Upload".into(),
            performed_by: Some(Party {
                kind: Some("representative".into()),
                gsnumber: Some("1".into()),
                id: Some("7".into()),
                name: "Alex".into(),
            }),
            data: vec![DataValue {
                name: "k".into(),
                value: "v".into(),
            }],
            body: Some("hi".into()),
            filename: Some("a.txt".into()),
            files: vec![TransferredFile {
                name: "b.txt".into(),
                size: None,
            }],
            ..Event::default()
        };
        let rows = event_rows(&e, true);
        let names: Vec<Value> = rows.data.iter().map(|r| r[0].clone()).collect();
        assert_eq!(
            names,
            vec![
                text("k"),
                text("body"),
                text("filename"),
                text("file.0.name"),
                text("performed_by.gsnumber"),
                text("performed_by.id")
            ]
        );
        assert_eq!(rows.event[2], text("Alex"));
        assert_eq!(rows.event[3], text("representative"));
        assert_eq!(rows.event[4], Value::Null);
    }

    #[test]
    fn system_information_is_json_and_only_when_asked() {
        let e = Event {
            system_information: vec![SystemInfoCategory {
                name: "Memory".into(),
                columns: vec![DataValue {
                    name: "Total".into(),
                    value: "Total".into(),
                }],
                rows: vec![vec![DataValue {
                    name: "Total".into(),
                    value: "16 GB".into(),
                }]],
            }],
            ..Event::default()
        };
        assert!(event_rows(&e, false).system_information.is_empty());
        assert_eq!(
            event_rows(&e, true).system_information,
            vec![vec![
                text("Memory"),
                text(
                    r#"{"columns":[{"name":"Total","text":"Total"}],"rows":[[{"name":"Total","value":"16 GB"}]]}"#
                )
            ]]
        );
    }

    #[test]
    fn a_session_row_has_one_value_per_column() {
        let s = Session {
            lsid: "abc".into(),
            session_type: "support".into(),
            lseq: Some(5),
            ..Session::default()
        };
        let rows = SessionRows::new("support.example.com", &s, false);
        assert_eq!(rows.session.len(), SESSION.columns.len());
        assert_eq!(rows.lsid(), "abc");
        assert_eq!(rows.session[6], text("support.example.com"));
        assert_eq!(rows.session[10], Value::Int(5));
        assert_eq!(rows.row_count(), 1);
    }
}
