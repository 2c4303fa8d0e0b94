//! One report request as a value: which report, and which sessions (a window of start
//! or end times, or a list of LSIDs). It names a request in messages, in the dead letter
//! and in queued items, and its text form (`SupportSession end_time=1700000000
//! duration=3600`, `SupportSession lsids=a,b`) is what queued report bodies have always
//! carried, so it reads back with [`FromStr`].

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::plan::Window;
use crate::appliance::WindowBy;
use crate::model::Report;

/// A refused window is halved while longer than this (a minute).
const REFUSED_WINDOW_SECONDS: i64 = 60;

/// Which sessions a request selects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Selection {
    /// Sessions whose start (`WindowBy::Start`) or end (`WindowBy::End`) falls in the
    /// window, in appliance time.
    Window(WindowBy, Window),
    /// Sessions by LSID.
    Lsids(Vec<String>),
}

/// A report request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    /// The report.
    pub report: Report,
    /// The sessions it asks for.
    pub selection: Selection,
}

impl FetchRequest {
    /// The closed sessions of `report` that ended in `window`.
    pub fn ended(report: Report, window: Window) -> FetchRequest {
        FetchRequest {
            report,
            selection: Selection::Window(WindowBy::End, window),
        }
    }

    /// `SupportSession` for these LSIDs.
    pub fn lsids(lsids: &[String]) -> FetchRequest {
        FetchRequest {
            report: Report::SupportSession,
            selection: Selection::Lsids(lsids.to_vec()),
        }
    }

    /// The two halves of a window, in time order, or `None` for a list or a window of
    /// one second.
    pub fn split_window(&self) -> Option<(FetchRequest, FetchRequest)> {
        let Selection::Window(by, w) = &self.selection else {
            return None;
        };
        let (a, b) = w.split()?;
        let half = |w| FetchRequest {
            report: self.report,
            selection: Selection::Window(*by, w),
        };
        Some((half(a), half(b)))
    }

    /// The two halves of an LSID list of two or more, or `None`. An appliance refuses
    /// such a request as a whole when one LSID is bad, so halving isolates it.
    pub fn split_list(&self) -> Option<(FetchRequest, FetchRequest)> {
        match &self.selection {
            Selection::Lsids(lsids) if lsids.len() > 1 => {
                let (a, b) = lsids.split_at(lsids.len() / 2);
                let half = |part: &[String]| FetchRequest {
                    report: self.report,
                    selection: Selection::Lsids(part.to_vec()),
                };
                Some((half(a), half(b)))
            }
            _ => None,
        }
    }

    /// The two halves to ask for instead of a request the appliance refused for good:
    /// an LSID list's halves, or a window's while it is longer than a minute (the
    /// narrowest window that waits in the dead letter). `None` otherwise.
    pub fn split_refused(&self) -> Option<(FetchRequest, FetchRequest)> {
        match &self.selection {
            Selection::Lsids(_) => self.split_list(),
            Selection::Window(_, w) if (w.end - w.start).num_seconds() > REFUSED_WINDOW_SECONDS => {
                self.split_window()
            }
            Selection::Window(..) => None,
        }
    }

    /// For people: the report and what it selects, with times in RFC 3339
    /// (`SupportSession, sessions that ended in [2024-06-03T11:00:00Z, 2024-06-03T12:00:00Z)`).
    pub fn describe(&self) -> String {
        match &self.selection {
            Selection::Window(by, w) => format!(
                "{}, sessions that {} in [{}, {})",
                self.report.as_str(),
                match by {
                    WindowBy::End => "ended",
                    WindowBy::Start => "started",
                },
                w.start.to_rfc3339(),
                w.end.to_rfc3339()
            ),
            Selection::Lsids(lsids) => format!(
                "{}, {} session{} by LSID ({})",
                self.report.as_str(),
                lsids.len(),
                if lsids.len() == 1 { "" } else { "s" },
                lsids.join(",")
            ),
        }
    }
}

impl fmt::Display for FetchRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selection {
            Selection::Window(by, w) => write!(
                f,
                "{} {}={} duration={}",
                self.report.as_str(),
                match by {
                    WindowBy::End => "end_time",
                    WindowBy::Start => "start_time",
                },
                w.first_second().timestamp(),
                w.duration_secs()
            ),
            Selection::Lsids(lsids) => {
                write!(f, "{} lsids={}", self.report.as_str(), lsids.join(","))
            }
        }
    }
}

/// A request text that is not one this build writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a report request: {0:?}")]
pub struct UnknownRequest(pub String);

impl FromStr for FetchRequest {
    type Err = UnknownRequest;

    fn from_str(text: &str) -> Result<FetchRequest, UnknownRequest> {
        let unknown = || UnknownRequest(text.to_string());
        let mut words = text.split_whitespace();
        let report: Report = words
            .next()
            .and_then(|name| name.parse().ok())
            .ok_or_else(unknown)?;
        let mut by_from = None;
        let mut duration = None;
        for word in words {
            let (key, value) = word.split_once('=').ok_or_else(unknown)?;
            match key {
                "lsids" => {
                    let lsids = value.split(',').map(str::to_string).collect();
                    return Ok(FetchRequest {
                        report,
                        selection: Selection::Lsids(lsids),
                    });
                }
                "end_time" | "start_time" => {
                    let by = if key == "end_time" {
                        WindowBy::End
                    } else {
                        WindowBy::Start
                    };
                    let from = value.parse::<i64>().ok().and_then(unix);
                    by_from = Some((by, from.ok_or_else(unknown)?));
                }
                "duration" => duration = Some(value.parse::<i64>().map_err(|_| unknown())?),
                _ => return Err(unknown()),
            }
        }
        let ((by, start), seconds) = by_from.zip(duration).ok_or_else(unknown)?;
        Ok(FetchRequest {
            report,
            selection: Selection::Window(
                by,
                Window {
                    start,
                    end: start + TimeDelta::seconds(seconds.max(1)),
                },
            ),
        })
    }
}

fn unix(seconds: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(seconds, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start: i64, end: i64) -> Window {
        Window {
            start: unix(start).unwrap(),
            end: unix(end).unwrap(),
        }
    }

    #[test]
    fn the_text_form_reads_back_as_the_same_request() {
        let requests = [
            FetchRequest::ended(Report::SupportSession, window(1_700_000_000, 1_700_003_600)),
            FetchRequest::ended(Report::PresentationSession, window(10, 11)),
            FetchRequest {
                report: Report::SupportSession,
                selection: Selection::Window(WindowBy::Start, window(5, 905)),
            },
            FetchRequest::lsids(&["a".into()]),
            FetchRequest::lsids(&["a".into(), "b".into(), "c".into()]),
        ];
        for request in requests {
            let text = request.to_string();
            assert_eq!(text.parse::<FetchRequest>(), Ok(request), "{text}");
        }
        assert_eq!(
            FetchRequest::ended(Report::SupportSession, window(1_700_000_000, 1_700_003_600))
                .to_string(),
            "SupportSession end_time=1700000000 duration=3600"
        );
    }

    #[test]
    fn texts_of_other_shapes_are_unknown() {
        for text in [
            "",
            "SupportSessionListing end_time=1 duration=2",
            "SupportSession end_date=2023-11-14",
            "SupportSession end_time=x duration=2",
            "SupportSession end_time=1",
        ] {
            assert!(text.parse::<FetchRequest>().is_err(), "{text}");
        }
    }

    #[test]
    fn lists_split_into_lists_and_windows_into_windows_covering_the_same() {
        let lsids: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let (x, y) = FetchRequest::lsids(&lsids).split_list().unwrap();
        assert_eq!(x, FetchRequest::lsids(&lsids[..1]));
        assert_eq!(y, FetchRequest::lsids(&lsids[1..]));
        assert_eq!(FetchRequest::lsids(&lsids[..1]).split_list(), None);
        assert_eq!(FetchRequest::lsids(&lsids).split_window(), None);
        let hour = FetchRequest::ended(Report::SupportSession, window(0, 3600));
        assert_eq!(hour.split_list(), None);
        let (a, b) = hour.split_window().unwrap();
        assert_eq!(
            a,
            FetchRequest::ended(Report::SupportSession, window(0, 1800))
        );
        assert_eq!(
            b,
            FetchRequest::ended(Report::SupportSession, window(1800, 3600))
        );
        let second = FetchRequest::ended(Report::SupportSession, window(0, 1));
        assert_eq!(second.split_window(), None);
    }

    #[test]
    fn a_refused_window_halves_down_to_a_minute_and_a_list_to_one_lsid() {
        let mut request = FetchRequest::ended(Report::SupportSession, window(0, 3600));
        let mut steps = 0;
        while let Some((a, _)) = request.split_refused() {
            request = a;
            steps += 1;
        }
        let Selection::Window(_, w) = &request.selection else {
            unreachable!()
        };
        assert_eq!((steps, w.duration_secs()), (6, 56));
        let list = FetchRequest::lsids(&["a".into(), "b".into()]);
        assert_eq!(list.split_refused(), list.split_list());
        assert_eq!(FetchRequest::lsids(&["a".into()]).split_refused(), None);
    }

    #[test]
    fn descriptions_give_the_window_in_rfc_3339() {
        assert_eq!(
            FetchRequest::ended(Report::SupportSession, window(1_717_412_400, 1_717_416_000))
                .describe(),
            "SupportSession, sessions that ended in [2024-06-03T11:00:00+00:00, 2024-06-03T12:00:00+00:00)"
        );
        assert_eq!(
            FetchRequest::lsids(&["x".into()]).describe(),
            "SupportSession, 1 session by LSID (x)"
        );
    }
}
