//! `[[schedule]]` and its transfers: when they run and what goes where.

use std::time::Duration;

use chrono::NaiveTime;

use super::{DAY, Problems};
use crate::config::raw::{RawDestination, RawSchedule};
use crate::config::units::parse_duration;
use crate::config::{DataKind, Destination, Schedule, Site, Transfer};

const MIN_EVERY: Duration = Duration::from_secs(60);

const MAX_EVERY: Duration = Duration::from_secs(7 * 86_400);

pub(super) fn build_schedule(
    s: &RawSchedule,
    key: &str,
    sites: &[Site],
    raw_destinations: &[RawDestination],
    destinations: &[Destination],
    p: &mut Problems,
) -> Schedule {
    let every = every(&s.every, &format!("{key}.every"), p);
    let at = s.at.as_deref().and_then(|text| {
        let at_key = format!("{key}.at");
        if !every.as_secs().is_multiple_of(DAY) {
            p.error(
                &at_key,
                format!(
                    "a time of day needs a period of whole days, but every = \"{}\"",
                    s.every
                ),
            );
            return None;
        }
        NaiveTime::parse_from_str(text, "%H:%M")
            .map_err(|_| {
                p.error(
                    &at_key,
                    format!("\"{text}\" is not a UTC time of day like \"02:00\""),
                )
            })
            .ok()
    });
    if s.transfer.is_empty() {
        p.error(key, "a schedule needs at least one [[schedule.transfer]]");
    }
    let transfers = s
        .transfer
        .iter()
        .enumerate()
        .map(|(j, t)| {
            let tkey = format!("{key}.transfer[{j}]");
            if !sites.iter().any(|site| site.name == t.site) {
                p.error(
                    format!("{tkey}.site"),
                    format!("no site named \"{}\"", t.site),
                );
            }
            let dest = destinations.iter().find(|d| d.name == t.destination);
            if dest.is_none() && !raw_destinations.iter().any(|d| d.name == t.destination) {
                p.error(
                    format!("{tkey}.destination"),
                    format!("no destination named \"{}\"", t.destination),
                );
            }
            let data = data_kinds(&t.data, &tkey, dest, p);
            if t.include_in_progress && !data.contains(&DataKind::Sessions) {
                p.error(
                    format!("{tkey}.include_in_progress"),
                    "only applies to transfers of sessions",
                );
            }
            Transfer {
                site: t.site.clone(),
                destination: t.destination.clone(),
                data,
                include_in_progress: t.include_in_progress,
            }
        })
        .collect();
    Schedule {
        name: s.name.clone(),
        every,
        at,
        transfers,
    }
}

/// `every`: a period from a minute to a week.
fn every(text: &str, every_key: &str, p: &mut Problems) -> Duration {
    match parse_duration(text) {
        Ok(d) if (MIN_EVERY..=MAX_EVERY).contains(&d) => d,
        Ok(_) => {
            p.error(
                every_key,
                format!("\"{text}\" is out of range; use 1m to 7d"),
            );
            MIN_EVERY
        }
        Err(e) => {
            p.error(every_key, e);
            MIN_EVERY
        }
    }
}

/// A transfer's `data`: known kinds, each once, each one its destination takes.
fn data_kinds(
    items: &[String],
    tkey: &str,
    dest: Option<&Destination>,
    p: &mut Problems,
) -> Vec<DataKind> {
    if items.is_empty() {
        p.error(
            format!("{tkey}.data"),
            "list at least one of sessions, recordings, presentations, presentation_recordings, backups",
        );
    }
    let mut data = Vec::new();
    for (k, item) in items.iter().enumerate() {
        let dkey = format!("{tkey}.data[{k}]");
        match DataKind::parse(item) {
            None => p.error(
                dkey,
                format!("unknown data kind \"{item}\"; use sessions, recordings, presentations, presentation_recordings or backups"),
            ),
            Some(kind) if data.contains(&kind) => {
                p.error(dkey, format!("\"{item}\" is listed twice"))
            }
            Some(kind) => {
                if let Some(d) = dest
                    && !d.takes(kind)
                {
                    p.error(
                        dkey,
                        format!(
                            "{item} can only go to a files destination, but \"{}\" is {}",
                            d.name,
                            d.type_name()
                        ),
                    );
                }
                data.push(kind);
            }
        }
    }
    data
}
