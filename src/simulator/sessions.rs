//! A deterministic generator of realistic support sessions.
//!
//! `generate(seed, index, start, end)` always returns the same `Session` for the same
//! inputs, on every platform and with every version of the crate's dependencies: the
//! randomness comes from [`SplitMix64`], a fixed twelve-line generator kept here, not
//! from `rand` (whose algorithms may change between versions). The sessions carry what
//! real appliances write (see the API reference, §4): `Unknown` values, `ip:port` and
//! `[IPv6]:port` addresses, empty events, repeated timestamps, chat with quotes,
//! ampersands and emoji, bodies with characters XML cannot carry (sent again as
//! `encoded_body`), file transfers, system information, custom attributes, teams, Jump
//! groups and recordings.
//!
//! Every text value is free of leading and trailing whitespace (the parser trims) and of
//! characters XML cannot carry (except inside `encoded_body`), so a generated session
//! survives render → parse unchanged.

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::model::{
    CustomAttribute, Customer, DataValue, Event, JumpGroup, Party, PublicSite, RecordingLink,
    Representative, Session, SystemInfoCategory, Team, Text, TransferredFile,
};

/// The splitmix64 generator (Steele, Lea and Flood, 2014): tiny, fast, and fixed here so
/// that a seed means the same sessions forever.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0; the tiny modulo bias does not matter here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The LSID of session `index` of `seed`: 32 lowercase hex digits.
pub fn lsid(seed: u64, index: u64) -> String {
    let mut rng = session_rng(seed, index);
    format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64())
}

fn session_rng(seed: u64, index: u64) -> SplitMix64 {
    let mut mix = SplitMix64::new(index ^ 0x005E_ED0F_5E55_1045);
    SplitMix64::new(seed ^ mix.next_u64())
}

/// Session `index` of `seed`, started at `start` and ended at `end` (`None`: in progress).
pub fn generate(
    seed: u64,
    index: u64,
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
) -> Session {
    let mut rng = session_rng(seed, index);
    // The first two draws are the LSID (see `lsid`).
    let lsid = format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64());
    let start = whole_seconds(start);
    let end = end.map(whole_seconds);
    let mut g = Generator { rng, lsid };
    g.session(index, start, end)
}

/// An endless sequence of sessions of one seed, starting at `first` and spaced by a
/// few seconds to a few minutes; about one in thirty is still in progress.
#[derive(Debug, Clone)]
pub struct Sessions {
    seed: u64,
    index: u64,
    next_start: DateTime<Utc>,
    rng: SplitMix64,
}

impl Sessions {
    /// Sessions of `seed` from `first` on.
    pub fn new(seed: u64, first: DateTime<Utc>) -> Self {
        Sessions {
            seed,
            index: 0,
            next_start: whole_seconds(first),
            rng: SplitMix64::new(seed.rotate_left(17) ^ 0xA5A5_A5A5),
        }
    }
}

impl Iterator for Sessions {
    type Item = Session;

    fn next(&mut self) -> Option<Session> {
        let start = self.next_start;
        let end = if self.rng.chance(3) {
            None
        } else {
            Some(start + Duration::seconds(self.rng.range(20, 2 * 3600) as i64))
        };
        let session = generate(self.seed, self.index, start, end);
        self.index += 1;
        self.next_start = start + Duration::seconds(self.rng.range(1, 300) as i64);
        Some(session)
    }
}

/// 2024-06-03T11:00:00Z: a fixed instant for tests and benchmarks that need one.
pub fn epoch() -> DateTime<Utc> {
    Utc.timestamp_opt(1_717_412_400, 0)
        .single()
        .unwrap_or_default()
}

fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.timestamp_opt(t.timestamp(), 0)
        .single()
        .unwrap_or_default()
}

const REP_NAMES: &[&str] = &[
    "Alex Rep",
    "Zoë O'Brien",
    "Sam \"Ace\" Lee",
    "Chris & Pat Support",
    "李明",
    "Rocket 🚀 Ops",
    "Jean-Luc <Tier 2>",
    "Unknown",
];

const CUSTOMER_NAMES: &[&str] = &[
    "Jane Customer",
    "Bob's Laptop",
    "ACME <Lab> PC",
    "Ünïcödé Üser",
    "Unknown",
    "Pat & Sons Ltd.",
    "Dev 🐧 Box",
    "WORKSTATION-042",
];

const OSES: &[&str] = &[
    "Windows 11 Pro",
    "Windows 10 Enterprise",
    "Windows Server 2022 Datacenter Azure Edition (21H2)",
    "macOS 14.5 (Sonoma)",
    "Ubuntu 22.04.4 LTS",
    "Unknown",
];

const HOSTS: &[&str] = &[
    "JANE-PC",
    "Windows2022",
    "mbp-of-sam.local",
    "build-07",
    "Unknown",
];

const CHATS: &[&str] = &[
    "Hello, I will take a look.",
    "Can you click \"Allow\" please?",
    "Thanks & have a nice day!",
    "It says <error> when I print 🙁",
    "Rebooting now…",
    "Ok 👍",
    "Line one\nline two\nline three",
    "Tab\tseparated\tvalues",
    "Path is C:\\Users\\jane\\AppData & it's 'hidden'",
    "Emoji party 🎉🎉🎉 and 日本語",
];

const NOTES: &[&str] = &[
    "Customer needs a new printer driver.",
    "Escalated to <Tier 2> & waiting.",
    "Ticket INC0012345 updated",
];

const FILES: &[&str] = &[
    "report.pdf",
    "driver & tools.zip",
    "C:\\Windows\\Temp\\log<1>.txt",
    "photo 📷.jpg",
    "/home/jane/.bashrc",
    "setup.exe",
];

const TEAMS: &[&str] = &["General Queue", "Tier 2 & Escalations", "Team 🌍 EMEA"];

const EVENT_TYPES_MISC: &[&str] = &[
    "Conference Member State Changed",
    "Foreground Window Changed",
    "Registry Key Added",
    "Registry Value Modified",
    "Service Access Allowed",
    "Legal Agreement Response",
    "Session Assigned",
    "Callback Button Deployed",
    "Directory Created",
];

/// The counts of file events the appliance writes beside the events.
fn count_file_events(s: &mut Session) {
    let count = |matches: fn(&str) -> bool| {
        s.events.iter().filter(|e| matches(&e.event_type)).count() as u32
    };
    let transfers = count(|t| t.starts_with("File Upload") || t == "File Download");
    let moves = count(|t| t == "File Moved");
    let deletes = count(|t| t == "File Deleted");
    s.file_transfer_count = Some(transfers);
    s.file_move_count = Some(moves);
    s.file_delete_count = Some(deletes);
}

struct Generator {
    rng: SplitMix64,
    lsid: String,
}

impl Generator {
    fn session(&mut self, index: u64, start: DateTime<Utc>, end: Option<DateTime<Utc>>) -> Session {
        let closed = end.is_some();
        let recorded = self.rng.chance(40);
        let jump = self.rng.chance(25);
        let mut s = Session {
            lsid: self.lsid.clone().into(),
            session_type: "support".into(),
            lseq: Some(1000 + index as i64 - self.rng.below(3) as i64),
            start_time: Some(start),
            end_time: end,
            duration: end.map(|e| hms((e - start).num_seconds()).into()),
            public_site: Some(PublicSite {
                id: Some("1".into()),
                name: if self.rng.chance(80) {
                    "Default".into()
                } else {
                    "Partners & Co".into()
                },
            }),
            external_key: Some(if self.rng.chance(70) {
                String::new().into()
            } else {
                format!("INC{:07}", self.rng.below(10_000_000)).into()
            }),
            ..Session::default()
        };
        if jump {
            s.jump_group = Some(self.jump_group());
        }
        s.custom_attributes = self.custom_attributes();
        self.links(&mut s, closed, recorded);

        let customer = self.customer();
        let reps: Vec<Representative> = (0..self.rng.range(1, 3))
            .map(|i| self.representative(i == 0))
            .collect();
        s.primary_customer = Some(Party {
            kind: None,
            gsnumber: customer.gsnumber.clone(),
            id: None,
            name: customer.name.clone().unwrap_or_default(),
        });
        s.primary_rep = Some(Party {
            kind: None,
            gsnumber: reps[0].gsnumber.clone(),
            id: reps[0].id.clone(),
            name: reps[0].display_name.clone().unwrap_or_default(),
        });
        for i in 0..self.rng.below(3) {
            s.teams.push(Team {
                id: Some(self.rng.range(1, 20).to_string().into()),
                name: TEAMS[i as usize].into(),
                primary: Some(i == 0),
            });
        }

        let span = end
            .map(|e| (e - start).num_seconds())
            .unwrap_or(1800)
            .max(1);
        s.events = self.events(start, span, closed, &customer, &reps);
        count_file_events(&mut s);
        s.customers = vec![customer];
        s.representatives = reps;
        s
    }

    /// A jump group, shared or personal.
    fn jump_group(&mut self) -> JumpGroup {
        if self.rng.chance(50) {
            JumpGroup {
                id: Some(self.rng.range(1, 40).to_string().into()),
                kind: Some("shared".into()),
                name: "Servers & Network".into(),
            }
        } else {
            JumpGroup {
                id: Some(self.rng.range(1, 40).to_string().into()),
                kind: Some("personal".into()),
                name: self.rng.pick(REP_NAMES).to_string().into(),
            }
        }
    }

    /// Up to three custom attributes.
    fn custom_attributes(&mut self) -> Vec<CustomAttribute> {
        let mut attributes = Vec::new();
        for i in 0..self.rng.below(4) {
            let (display, code) = [
                ("Ticket Number", "ticket_number"),
                ("Priority", "priority"),
                ("Cost Center", "cost_center"),
                ("Notes", "notes"),
            ][i as usize];
            let value = match self.rng.below(4) {
                0 => String::new(),
                1 => format!("{}", self.rng.below(100_000)),
                2 => "High & urgent".into(),
                _ => "Ünïcödé ✓".into(),
            };
            attributes.push(CustomAttribute {
                display_name: display.into(),
                code_name: code.into(),
                value: value.into(),
            });
        }
        attributes
    }

    /// The chat and recording links; recordings only once the session has ended.
    fn links(&mut self, s: &mut Session, closed: bool, recorded: bool) {
        let host = "support.example.com";
        let token = format!("{:040x}", self.rng.next_u64() as u128 * 31);
        let link = |kind: &str, view: bool| {
            format!(
                "https://{host}/session_download?lsid=l%3D{}%3Bh%3D{token}%3Bt%3Dsd%3Bm%3D{kind}&dl_action={kind}{}",
                self.lsid,
                if view { "&view=1" } else { "" }
            )
        };
        if closed {
            s.chat_view_url = Some(link("chat", true).into());
            s.chat_download_url = Some(link("chat", false).into());
        }
        if recorded {
            s.recording_view_url = Some(link("rec", true).into());
            s.recording_download_url = Some(link("rec", false).into());
        }
        for instance in 0..self.rng.below(4) as u32 {
            s.command_shell_recordings.push(RecordingLink {
                instance,
                download_url: Some(format!("{}&instance={instance}", link("shell", false)).into()),
                view_url: Some(format!("{}&instance={instance}", link("shell", true)).into()),
            });
        }
        if self.rng.chance(10) {
            s.show_my_screen_recordings.push(RecordingLink {
                instance: 0,
                download_url: Some(link("sms", false).into()),
                view_url: if self.rng.chance(50) {
                    Some(link("sms", true).into())
                } else {
                    None
                },
            });
        }

        // The appliance links recordings only once a session has ended. The draws above
        // happen either way, so a session that ends later is the same session.
        if !closed {
            s.recording_view_url = None;
            s.recording_download_url = None;
            s.command_shell_recordings.clear();
            s.show_my_screen_recordings.clear();
        }
    }

    fn ip(&mut self) -> String {
        match self.rng.below(6) {
            0 => "Unknown".into(),
            1 => format!(
                "[2001:db8:{:x}::{:x}]:{}",
                self.rng.below(0xffff),
                self.rng.below(0xffff),
                self.rng.range(1024, 65535)
            ),
            2 => format!(
                "10.{}.{}.{}",
                self.rng.below(256),
                self.rng.below(256),
                self.rng.range(1, 254)
            ),
            _ => format!(
                "203.0.113.{}:{}",
                self.rng.range(1, 254),
                self.rng.range(1024, 65535)
            ),
        }
    }

    fn maybe(&mut self, percent: u64, value: impl FnOnce(&mut Self) -> String) -> Option<Text> {
        if self.rng.chance(percent) {
            Some(value(self).into())
        } else {
            None
        }
    }

    fn customer(&mut self) -> Customer {
        let name = self.rng.pick(CUSTOMER_NAMES).to_string();
        let has_info = self.rng.chance(60);
        Customer {
            gsnumber: Some(self.rng.range(2, 500).to_string().into()),
            username: Some(if name == "Unknown" {
                "Unknown".into()
            } else {
                name.to_lowercase().replace(' ', ".").into()
            }),
            public_ip: Some(self.ip().into()),
            private_ip: self.maybe(90, |g| g.ip()),
            hostname: self.maybe(90, |g| g.rng.pick(HOSTS).to_string()),
            os: Some(self.rng.pick(OSES).to_string().into()),
            primary: Some(true),
            rpat: if self.rng.chance(20) {
                Some(false)
            } else {
                None
            },
            name: Some(name.into()),
            company: if has_info {
                Some("Example Corp & Partners".into())
            } else {
                None
            },
            company_code: if has_info {
                Some(format!("EX{:02}", self.rng.below(100)).into())
            } else {
                None
            },
            issue: if has_info {
                Some(self.rng.range(1, 12).to_string().into())
            } else {
                None
            },
            details: if has_info {
                Some("Cannot print since \"update\" <KB5034441> & reboot".into())
            } else {
                None
            },
        }
    }

    fn representative(&mut self, owner: bool) -> Representative {
        let display = self.rng.pick(REP_NAMES).to_string();
        let id = if self.rng.chance(5) {
            format!("ext-{}", self.rng.below(1000))
        } else {
            self.rng.range(1, 300).to_string()
        };
        Representative {
            gsnumber: Some(self.rng.range(1, 500).to_string().into()),
            id: Some(id.into()),
            username: Some(format!("rep{}", self.rng.below(1000)).into()),
            display_name: Some(display.clone().into()),
            public_display_name: Some(
                display
                    .split(' ')
                    .next()
                    .unwrap_or("Rep")
                    .to_string()
                    .into(),
            ),
            private_display_name: self.maybe(70, |_| display.clone()),
            display_number: self.maybe(40, |g| g.rng.range(1, 9).to_string()),
            public_ip: Some(self.ip().into()),
            private_ip: Some(self.ip().into()),
            hostname: self.maybe(60, |g| g.rng.pick(HOSTS).to_string()),
            os: Some(self.rng.pick(OSES).to_string().into()),
            session_owner: Some(owner),
            primary: Some(owner),
            seconds_involved: Some(self.rng.below(7200) as i64),
            invited: if self.rng.chance(50) {
                Some(!owner && self.rng.chance(50))
            } else {
                None
            },
        }
    }

    fn party_customer(c: &Customer) -> Party {
        Party {
            kind: Some("customer".into()),
            gsnumber: c.gsnumber.clone(),
            id: None,
            name: c.name.clone().unwrap_or_default(),
        }
    }

    fn party_rep(r: &Representative) -> Party {
        Party {
            kind: Some("representative".into()),
            gsnumber: r.gsnumber.clone(),
            id: None,
            name: r.display_name.clone().unwrap_or_default(),
        }
    }

    fn system() -> Party {
        Party {
            kind: Some("system".into()),
            gsnumber: Some("0".into()),
            id: None,
            name: "Pre-start Conference".into(),
        }
    }

    fn events(
        &mut self,
        start: DateTime<Utc>,
        span: i64,
        closed: bool,
        customer: &Customer,
        reps: &[Representative],
    ) -> Vec<Event> {
        let count = self.rng.range(2, 40);
        let mut at = 0i64;
        let mut events = Vec::with_capacity(count as usize + 2);
        events.push(Event {
            timestamp: Some(start),
            event_type: "Session Start".into(),
            ..Event::default()
        });
        for _ in 0..count {
            // Repeated timestamps are common: several events in the same second.
            if !self.rng.chance(30) {
                at = (at + self.rng.range(1, (span / count as i64).max(1) as u64) as i64).min(span);
            }
            let mut e = Event {
                timestamp: Some(start + Duration::seconds(at)),
                ..Event::default()
            };
            let rep = self.rng.pick(reps).clone();
            let by_rep = self.rng.chance(70);
            let (by, to) = if by_rep {
                (Self::party_rep(&rep), Self::party_customer(customer))
            } else {
                (Self::party_customer(customer), Self::party_rep(&rep))
            };
            self.event_body(&mut e, &rep, by, to);
            events.push(e);
        }
        if closed {
            events.push(Event {
                timestamp: Some(start + Duration::seconds(span)),
                event_type: "Session End".into(),
                ..Event::default()
            });
        }
        events
    }

    /// One event between the session start and end: its type and what that type carries.
    fn event_body(&mut self, e: &mut Event, rep: &Representative, by: Party, to: Party) {
        match self.rng.below(12) {
            0..=2 => {
                e.event_type = "Chat Message".into();
                e.performed_by = Some(by);
                e.destination = Some(to);
                self.chat_body(e);
            }
            3 => {
                e.event_type = "Session Note Added".into();
                e.performed_by = Some(by);
                e.body = Some(self.rng.pick(NOTES).to_string().into());
            }
            4 => {
                e.event_type = if self.rng.chance(80) {
                    "File Upload"
                } else {
                    "File Upload Failed"
                }
                .into();
                e.performed_by = Some(by);
                e.destination = Some(to);
                e.filename = Some(self.rng.pick(FILES).to_string().into());
                e.filesize = Some(self.rng.below(50_000_000).to_string().into());
            }
            5 => {
                e.event_type = "File Download".into();
                e.performed_by = Some(by);
                e.filename = Some(self.rng.pick(FILES).to_string().into());
                e.filesize = self.maybe(70, |g| g.rng.below(5_000_000).to_string());
            }
            6 => {
                e.event_type = "Files Shared".into();
                e.performed_by = Some(by);
                for _ in 0..self.rng.range(1, 4) {
                    e.files.push(TransferredFile {
                        name: self.rng.pick(FILES).to_string().into(),
                        size: self.maybe(80, |g| g.rng.below(1_000_000).to_string()),
                    });
                }
            }
            7 => {
                e.event_type = Text::from(*self.rng.pick(&["File Deleted", "File Moved"]));
                e.performed_by = Some(by);
                e.data.push(DataValue {
                    name: "path".into(),
                    value: self.rng.pick(FILES).to_string().into(),
                });
                if e.event_type == "File Moved" {
                    e.data.push(DataValue {
                        name: "new_path".into(),
                        value: "D:\\Archive\\moved & kept.txt".into(),
                    });
                }
            }
            8 => {
                e.event_type = "Conference Owner Changed".into();
                e.destination = Some(Self::system());
                e.data.push(DataValue {
                    name: "owner".into(),
                    value: "Pre-start Conference".into(),
                });
            }
            9 => {
                e.event_type = "System Information Retrieved".into();
                e.performed_by = Some(Self::party_rep(rep));
                e.system_information = self.system_information();
            }
            10 => {
                e.event_type = "Command Shell Session Started".into();
                e.performed_by = Some(Self::party_rep(rep));
                e.data.push(DataValue {
                    name: "instance".into(),
                    value: self.rng.below(3).to_string().into(),
                });
            }
            _ => {
                e.event_type = self.rng.pick(EVENT_TYPES_MISC).to_string().into();
                if self.rng.chance(50) {
                    e.performed_by = Some(by);
                }
                if self.rng.chance(40) {
                    e.data.push(DataValue {
                        name: "state".into(),
                        value: Text::from(*self.rng.pick(&["active", "idle", "1", "Unknown"])),
                    });
                    e.data.push(DataValue {
                        name: "window title".into(),
                        value: "Inbox – Outlook \"Work\" & <more>".into(),
                    });
                }
            }
        }
    }

    fn chat_body(&mut self, e: &mut Event) {
        let text = self.rng.pick(CHATS).to_string();
        if self.rng.chance(10) {
            // A body with characters XML 1.0 cannot carry: the appliance writes the text
            // without them in `body` and the whole text base64-encoded in `encoded_body`.
            let full = format!("{text}\u{1}\u{7}bell\u{1b}[0m");
            e.body = Some(full.chars().filter(|c| !is_xml_unsafe(*c)).collect());
            e.encoded_body = Some(full.into());
        } else {
            e.body = Some(text.into());
        }
    }

    fn system_information(&mut self) -> Vec<SystemInfoCategory> {
        let mut categories = Vec::new();
        let general = vec![
            ("Name", "Windows 11 Pro".to_string()),
            ("Version", "10.0.22631".to_string()),
            ("Computer Name", "JANE-PC".to_string()),
            ("Domain", "Unknown".to_string()),
            ("Uptime", format!("{} hours", self.rng.below(900))),
        ];
        categories.push(category(
            "General",
            &[("Item", "Item"), ("Value", "Value")],
            {
                general
                    .into_iter()
                    .map(|(k, v)| vec![("Item", k.to_string()), ("Value", v)])
                    .collect()
            },
        ));
        if self.rng.chance(70) {
            let rows = (0..self.rng.range(1, 4))
                .map(|i| {
                    vec![
                        ("Drive", format!("{}:\\", (b'C' + i as u8) as char)),
                        ("Type", "Local Disk".to_string()),
                        ("Percent Used", format!("{}%", self.rng.below(100))),
                    ]
                })
                .collect();
            categories.push(category(
                "Drives",
                &[
                    ("Drive", "Drive"),
                    ("Type", "Type"),
                    ("Percent Used", "Percent Used"),
                ],
                rows,
            ));
        }
        if self.rng.chance(50) {
            let rows = (0..self.rng.range(5, 30))
                .map(|i| {
                    vec![
                        ("Name", format!("process{i}.exe")),
                        ("PID", self.rng.range(4, 60000).to_string()),
                        ("Memory", format!("{} K", self.rng.below(500_000))),
                    ]
                })
                .collect();
            categories.push(category(
                "Processes",
                &[("Name", "Name"), ("PID", "PID"), ("Memory", "Memory Usage")],
                rows,
            ));
        }
        if self.rng.chance(30) {
            categories.push(category(
                "Memory",
                &[("Total", "Total"), ("Free", "Free")],
                vec![vec![
                    ("Total", "16 GB".to_string()),
                    ("Free", format!("{} MB", self.rng.below(16000))),
                ]],
            ));
        }
        categories
    }
}

fn category(
    name: &str,
    columns: &[(&str, &str)],
    rows: Vec<Vec<(&str, String)>>,
) -> SystemInfoCategory {
    SystemInfoCategory {
        name: name.into(),
        columns: columns
            .iter()
            .map(|(n, v)| DataValue {
                name: n.to_string().into(),
                value: v.to_string().into(),
            })
            .collect(),
        rows: rows
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|(n, v)| DataValue {
                        name: n.to_string().into(),
                        value: v.into(),
                    })
                    .collect()
            })
            .collect(),
    }
}

/// Whether XML 1.0 cannot carry `c` in a document (control characters other than tab,
/// line feed and carriage return, and the non-characters U+FFFE and U+FFFF).
pub fn is_xml_unsafe(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
}

fn hms(seconds: i64) -> String {
    let s = seconds.max(0);
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_inputs_give_the_same_session() {
        let end = Some(epoch() + Duration::minutes(15));
        assert_eq!(generate(7, 3, epoch(), end), generate(7, 3, epoch(), end));
        assert_ne!(generate(7, 3, epoch(), end), generate(7, 4, epoch(), end));
        assert_ne!(generate(7, 3, epoch(), end), generate(8, 3, epoch(), end));
    }

    #[test]
    fn lsids_are_32_hex_digits_and_match_the_session() {
        for index in 0..50 {
            let id = lsid(11, index);
            assert_eq!(id.len(), 32);
            assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
            assert_eq!(generate(11, index, epoch(), None).lsid, id);
        }
    }

    #[test]
    fn the_generator_is_stable_across_versions() {
        // Pinned values: a change here changes every seed's sessions.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(lsid(1, 0), lsid(1, 0));
    }

    #[test]
    fn a_stream_of_sessions_covers_the_ugly_cases() {
        let sessions: Vec<Session> = Sessions::new(5, epoch()).take(300).collect();
        let events = || sessions.iter().flat_map(|s| s.events.iter());
        assert!(sessions.iter().any(|s| s.end_time.is_none()));
        assert!(sessions.iter().any(|s| s.jump_group.is_some()));
        assert!(
            sessions
                .iter()
                .any(|s| s.command_shell_recordings.len() == 3)
        );
        assert!(sessions.iter().any(|s| s.has_screen_recording()));
        assert!(sessions.iter().any(|s| !s.teams.is_empty()));
        assert!(sessions.iter().any(|s| !s.custom_attributes.is_empty()));
        assert!(
            sessions
                .iter()
                .any(|s| s.external_key.as_deref() == Some(""))
        );
        let ips: Vec<&str> = sessions
            .iter()
            .flat_map(|s| s.customers.iter().filter_map(|c| c.public_ip.as_deref()))
            .collect();
        assert!(
            ips.iter()
                .any(|ip| ip.starts_with('[') && ip.contains("]:"))
        );
        assert!(ips.contains(&"Unknown"));
        assert!(events().any(|e| e.encoded_body.is_some()));
        assert!(events().any(|e| !e.files.is_empty()));
        assert!(events().any(|e| e.system_information.len() >= 3));
        assert!(events().any(|e| e.body.as_deref().is_some_and(|b| b.contains('&'))));
        assert!(sessions.iter().any(|s| {
            s.events
                .windows(2)
                .any(|w| w[0].timestamp == w[1].timestamp)
        }));
    }
}
