//! Where a report's sessions, recordings and presentations go: one module for the live
//! lane (the schedules' transfers) and for backfill jobs (the destinations named or
//! implied). Destinations are asked what they take (`Destination::takes`), never what
//! kind they are.

use super::items::Routes;
use crate::config::{Config, DataKind};
use crate::model::Report;

/// The data kinds of `report`: its sessions' and its recordings'.
fn kinds_of(report: Report) -> (DataKind, DataKind) {
    match report {
        Report::SupportSession => (DataKind::Sessions, DataKind::Recordings),
        Report::PresentationSession => (DataKind::Presentations, DataKind::PresentationRecordings),
    }
}

/// The live routes of (site, report) over all schedules: a (site, report) has one
/// watermark, so its sessions go to every destination any transfer names for them.
pub fn live(config: &Config, site: &str, report: Report) -> Routes {
    let (data, recordings) = kinds_of(report);
    let mut routes = Routes::default();
    let add = |list: &mut Vec<String>, name: &String| {
        if !list.contains(name) {
            list.push(name.clone());
        }
    };
    for t in config.schedules.iter().flat_map(|s| &s.transfers) {
        if t.site != site {
            continue;
        }
        if t.data.contains(&data) {
            add(&mut routes.sessions, &t.destination);
        }
        if t.data.contains(&recordings) {
            add(&mut routes.recordings, &t.destination);
        }
        let in_progress = config
            .destination(&t.destination)
            .is_some_and(|d| d.takes_in_progress());
        if report == Report::SupportSession && t.include_in_progress && in_progress {
            add(&mut routes.in_progress, &t.destination);
        }
    }
    routes.track_open = !routes.in_progress.is_empty();
    routes
}

/// A backfill's routes would send data to a destination that cannot take it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} go only to files destinations, and {destination:?} is not one", data.as_str())]
pub struct CannotTake {
    /// The destination named.
    pub destination: String,
    /// What it cannot take.
    pub data: DataKind,
}

/// The routes of a backfill of `data` into `destinations`: the sessions' (with their
/// recordings) and the presentations' (with theirs). Each kind goes to the destinations
/// that take it; when the destinations were `named` on the command line, one that
/// cannot take a kind asked for is an error, otherwise it is passed over.
pub fn backfill(
    config: &Config,
    destinations: &[String],
    data: &[DataKind],
    named: bool,
) -> Result<(Routes, Routes), CannotTake> {
    let mut sessions = Routes::default();
    let mut presentations = Routes::default();
    for name in destinations {
        let Some(destination) = config.destination(name) else {
            continue;
        };
        for (kind, to) in [
            (DataKind::Sessions, &mut sessions.sessions),
            (DataKind::Recordings, &mut sessions.recordings),
            (DataKind::Presentations, &mut presentations.sessions),
            (
                DataKind::PresentationRecordings,
                &mut presentations.recordings,
            ),
        ] {
            if !data.contains(&kind) {
                continue;
            }
            if destination.takes(kind) {
                to.push(name.clone());
            } else if named {
                return Err(CannotTake {
                    destination: name.clone(),
                    data: kind,
                });
            }
        }
    }
    Ok((sessions, presentations))
}
