//! The postcard form of everything the pipeline keeps in its queue (items, and the
//! backfill records of its state area), pinned by a golden file. Queue items are positional postcard with no version of their own, so any change
//! to these types — a field added, removed or reordered, in the item or in the `Session`
//! inside it — makes items already on an installation's disk undecodable (they would go
//! to the dead letter). Each sample is encoded and compared with
//! `tests/golden/queue_items.txt`, and each line of that file is decoded and compared
//! with its sample.
//!
//! A failure here means the format changed. Add a new enum variant at the end instead
//! (old items keep decoding), or bump the queue's format version with an upgrade for
//! the old one; only then rewrite the golden file with `BTIC_BLESS=1`.

mod golden;

use std::fmt::Debug;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use btic::appliance::WindowBy;
use btic::fetch::plan::Window;
use btic::fetch::{FetchRequest, Selection};
use btic::model::Report;
use btic::model::{
    CustomAttribute, Customer, DataValue, Event, JumpGroup, Naming, Party, PublicSite, Recording,
    RecordingLink, ReportRoot, Representative, Session, SystemInfoCategory, Team, TransferredFile,
};
use btic::pipeline::backfill::{BackfillRequest, JobRecord, Summary};
use btic::pipeline::handoff::Finished;
use btic::pipeline::items::{
    DeliverItem, DownloadTask, FetchTask, FetchedBody, Lane, Rejected, Routes,
};

const GOLDEN: &str = "tests/golden/queue_items.txt";

fn time(seconds: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(seconds, 0)
}

fn party(name: &str) -> Party {
    Party {
        kind: Some("representative".into()),
        gsnumber: Some("7".into()),
        id: Some("42".into()),
        name: name.into(),
    }
}

/// A session with every optional part present once, so each nested type's layout is
/// pinned too.
fn session() -> Session {
    let value = |name: &str, value: &str| DataValue {
        name: name.into(),
        value: value.into(),
    };
    Session {
        lsid: "c0ffee00000000000000000000000001".into(),
        session_type: "support".into(),
        lseq: Some(12),
        start_time: time(1_700_000_000),
        end_time: time(1_700_000_600),
        duration: Some("00:10:00".into()),
        public_site: Some(PublicSite {
            id: Some("1".into()),
            name: "Default".into(),
        }),
        external_key: Some("TICKET-1".into()),
        jump_group: Some(JumpGroup {
            id: Some("3".into()),
            kind: Some("shared".into()),
            name: "Servers".into(),
        }),
        custom_attributes: vec![CustomAttribute {
            display_name: "Region".into(),
            code_name: "region".into(),
            value: "EU".into(),
        }],
        chat_view_url: Some("https://a/chat".into()),
        chat_download_url: Some("https://a/chat.dl".into()),
        recording_view_url: Some("https://a/rec".into()),
        recording_download_url: Some("https://a/rec.dl".into()),
        command_shell_recordings: vec![RecordingLink {
            instance: 0,
            download_url: Some("https://a/sh.dl".into()),
            view_url: None,
        }],
        show_my_screen_recordings: vec![RecordingLink {
            instance: 1,
            download_url: None,
            view_url: Some("https://a/sms".into()),
        }],
        file_transfer_count: Some(2),
        file_move_count: Some(0),
        file_delete_count: None,
        primary_customer: Some(party("Ann")),
        primary_rep: Some(party("Bob")),
        customers: vec![Customer {
            gsnumber: Some("1".into()),
            username: Some("ann".into()),
            public_ip: Some("198.51.100.1".into()),
            private_ip: Some("10.0.0.1".into()),
            hostname: Some("ann-pc".into()),
            os: Some("Windows".into()),
            primary: Some(true),
            rpat: Some(false),
            name: Some("Ann".into()),
            company: Some("Example".into()),
            company_code: Some("EX".into()),
            issue: Some("Printer".into()),
            details: Some("It jams".into()),
        }],
        representatives: vec![Representative {
            gsnumber: Some("7".into()),
            id: Some("42".into()),
            username: Some("bob".into()),
            display_name: Some("Bob".into()),
            public_display_name: Some("Bob B".into()),
            private_display_name: Some("Bob Builder".into()),
            display_number: Some("1".into()),
            public_ip: Some("198.51.100.2".into()),
            private_ip: Some("10.0.0.2".into()),
            hostname: Some("bob-pc".into()),
            os: Some("Linux".into()),
            session_owner: Some(true),
            primary: Some(true),
            seconds_involved: Some(600),
            invited: Some(false),
        }],
        teams: vec![Team {
            id: Some("5".into()),
            name: "Helpdesk".into(),
            primary: Some(true),
        }],
        events: vec![Event {
            timestamp: time(1_700_000_100),
            event_type: "File Download".into(),
            performed_by: Some(party("Bob")),
            destination: Some(party("Ann")),
            data: vec![value("Reason", "needed")],
            body: Some("hello".into()),
            encoded_body: Some("aGVsbG8=".into()),
            filename: Some("a.txt".into()),
            filesize: Some("5".into()),
            files: vec![TransferredFile {
                name: "a.txt".into(),
                size: Some("5".into()),
            }],
            system_information: vec![SystemInfoCategory {
                name: "Disks".into(),
                columns: vec![value("drive", "Drive")],
                rows: vec![vec![value("drive", "C:")]],
            }],
        }],
    }
}

fn naming() -> Naming {
    Naming::of("support.example.com", &session())
}

fn root() -> ReportRoot {
    ReportRoot {
        prefix: Some("r".into()),
        namespaces: vec![(
            Some("r".into()),
            "http://www.beyondtrust.com/sra/namespaces/API/reporting".into(),
        )],
    }
}

fn job() -> Lane {
    Lane::Backfill("0123abcd".into())
}

/// One golden line: a name, then the hex of the sample's postcard encoding.
fn line<T: Serialize>(name: &str, sample: &T) -> String {
    let bytes = postcard::to_allocvec(sample).expect("encoding a sample");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{name} {hex}\n")
}

/// Decodes golden line `name` as `T` and compares it with `sample`.
fn decodes_as<T: DeserializeOwned + PartialEq + Debug>(golden: &str, name: &str, sample: &T) {
    let Some(hex) = golden
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
    else {
        panic!("{GOLDEN} has no line {name:?} (run with BTIC_BLESS=1 to add it)");
    };
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex in the golden file"))
        .collect();
    let decoded: T = postcard::from_bytes(&bytes)
        .unwrap_or_else(|e| panic!("{name} as written on disk no longer decodes: {e}"));
    assert_eq!(&decoded, sample, "{name} decodes to something else");
}

macro_rules! samples {
    ($($name:literal => $sample:expr),* $(,)?) => {
        /// Every sample's golden line, in order.
        fn render() -> String {
            let mut out = String::new();
            $(out.push_str(&line($name, &$sample));)*
            out
        }

        /// Decodes every golden line as its sample's type.
        fn decode_all(golden: &str) {
            $(decodes_as(golden, $name, &$sample);)*
        }
    };
}

samples! {
    "fetched" => FetchedBody {
        site: "main".into(),
        host: "support.example.com".into(),
        request: "SupportSession end_date=2023-11-14".into(),
        body: "spool/bodies/1.xml".into(),
        bytes: 1234,
        routes: Routes {
            sessions: vec!["pg".into(), "archive".into()],
            recordings: vec!["archive".into()],
            in_progress: vec!["pg".into()],
            track_open: true,
        },
        lane: job(),
    },
    "download.recording" => DownloadTask::Recording {
        site: "main".into(),
        naming: naming(),
        recording: Recording::CommandShell(3),
        destinations: vec!["archive".into()],
        lane: Lane::Live,
    },
    "download.backup" => DownloadTask::Backup {
        site: "main".into(),
        host: "support.example.com".into(),
        destinations: vec!["archive".into()],
    },
    "deliver.session" => DeliverItem::Session {
        site: "main".into(),
        host: "support.example.com".into(),
        session: Box::new(session()),
        raw: b"<session lsid=\"c0ffee\"/>".to_vec(),
        root: root(),
        lane: job(),
    },
    "deliver.recording" => DeliverItem::Recording {
        site: "main".into(),
        naming: naming(),
        recording: Recording::ShowMyScreen(1),
        extension: "mp4".into(),
        spool: "spool/recordings/9.bin".into(),
        lane: Lane::Live,
    },
    "deliver.backup" => DeliverItem::Backup {
        site: "main".into(),
        host: "support.example.com".into(),
        spool: "spool/backups/3.bin".into(),
    },
    "deliver.presentation" => DeliverItem::Presentation {
        site: "main".into(),
        naming: Naming::presentation("support.example.com", "beef", Some(2)),
        raw: b"<presentation_session lsid=\"beef\"/>".to_vec(),
        root: root(),
        lane: Lane::Live,
    },
    "deliver.sessions" => DeliverItem::Sessions {
        site: "main".into(),
        host: "support.example.com".into(),
        sessions: vec![session(), Session::default()],
        lane: job(),
    },
    "rejected" => Rejected {
        site: "main".into(),
        reason: "lseq is not a number".into(),
        request: "SupportSession end_date=2023-11-14".into(),
        raw: b"<session lsid=\"bad\"/>".to_vec(),
        lane: Lane::Live,
    },
    "fetch.window" => FetchTask {
        site: "main".into(),
        request: FetchRequest::ended(
            Report::PresentationSession,
            Window {
                start: time(1_700_000_000).unwrap(),
                end: time(1_700_003_600).unwrap(),
            },
        ),
        routes: Routes {
            sessions: vec!["archive".into()],
            ..Routes::default()
        },
        lane: job(),
    },
    "fetch.started" => FetchTask {
        site: "main".into(),
        request: FetchRequest {
            report: Report::SupportSession,
            selection: Selection::Window(
                WindowBy::Start,
                Window {
                    start: time(1_700_000_000).unwrap(),
                    end: time(1_700_000_900).unwrap(),
                },
            ),
        },
        routes: Routes::default(),
        lane: Lane::Live,
    },
    "fetch.lsids" => FetchTask {
        site: "main".into(),
        request: FetchRequest::lsids(&["c0ffee".into(), "beef".into()]),
        routes: Routes {
            sessions: vec!["pg".into()],
            in_progress: vec!["pg".into()],
            track_open: true,
            ..Routes::default()
        },
        lane: Lane::Live,
    },
    "backfill.finished" => vec![
        Finished::Session,
        Finished::Recording,
        Finished::Other,
        Finished::DeadLettered,
        Finished::Sessions(4),
        Finished::Presentation,
    ],
    "backfill.job" => JobRecord {
        request: BackfillRequest {
            site: "main".into(),
            from: Some(1_700_000_000),
            to: Some(1_700_086_400),
            lsids: vec!["c0ffee".into()],
            routes: Routes {
                sessions: vec!["pg".into()],
                ..Routes::default()
            },
            presentations: Routes {
                sessions: vec!["archive".into()],
                recordings: vec!["archive".into()],
                ..Routes::default()
            },
        },
        summary: Some(Summary {
            sessions_delivered: 10,
            recordings_delivered: 2,
            dead_lettered: 1,
            bodies: 3,
            bytes: 4096,
            presentations_delivered: 5,
        }),
    },
}

/// One test, so that a blessing run writes the file before it is read back.
#[test]
fn queue_items_keep_their_encoding_and_pinned_items_still_decode() {
    golden::check(GOLDEN, &render());
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {GOLDEN}: {e}"));
    decode_all(&golden);
}
