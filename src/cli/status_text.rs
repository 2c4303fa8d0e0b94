//! `btic status` (and `btic history`) for people: the `Status` the pipeline gathers, as text, one section per
//! part (sites, queues, dead letters, the state directory, schedules). `--json` prints
//! the same `Status` as it is.

use std::fmt::Write as _;

use indicatif::HumanBytes;

use crate::keys::{RunKind, RunRecord};
use crate::pipeline::status::{BudgetStatus, DiskStatus, ScheduleStatus, SiteStatus, Status};

/// The whole status, as `btic status` prints it.
pub fn render(status: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        if status.daemon {
            "daemon: running"
        } else {
            "daemon: not running (read from the state directory)"
        }
    );
    let _ = writeln!(out, "\nsites");
    for site in &status.sites {
        render_site(site, &mut out);
    }
    let _ = writeln!(out, "\nqueues");
    if status.queues.iter().all(|q| q.depth == 0) {
        let _ = writeln!(out, "  all empty");
    }
    for q in status.queues.iter().filter(|q| q.depth > 0) {
        let age = q
            .oldest_age_seconds
            .map_or(String::new(), |a| format!(", oldest {a:.0} s"));
        let _ = writeln!(out, "  {:<28} {} items{age}", q.name, q.depth);
    }
    let _ = writeln!(out, "\ndead letters");
    if status.dead_letters.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for d in &status.dead_letters {
        let _ = writeln!(out, "  {:<28} {}", d.queue, d.count);
    }
    render_disk(&status.disk, &mut out);
    render_schedules(&status.schedules, &mut out);
    out
}

/// One site: clock skew, sessions in progress, watermarks and the API budget.
fn render_site(site: &SiteStatus, out: &mut String) {
    let skew = site
        .skew_seconds
        .map_or("not measured yet".to_string(), |v| format!("{v:+.1} s"));
    let _ = writeln!(out, "  {:<16} clock skew {skew}", site.name);
    if site.watermarks.is_empty() {
        let _ = writeln!(out, "    no watermark yet");
    }
    if site.open_sessions > 0 {
        let _ = writeln!(
            out,
            "    {} sessions in progress, fetched again until they end",
            site.open_sessions
        );
    }
    for w in &site.watermarks {
        let _ = writeln!(
            out,
            "    {:<20} watermark {} (appliance time), lag {:.0} s",
            w.report, w.appliance_time, w.lag_seconds
        );
    }
    if let Some(budget) = &site.budget {
        render_budget(budget, out);
    }
}

/// A site's API budget, on one to four lines.
fn render_budget(budget: &BudgetStatus, out: &mut String) {
    let _ = writeln!(
        out,
        "    API budget: {} of {} requests used in the last hour, {} left ({} kept for the live lane)",
        budget.used, budget.per_hour, budget.remaining, budget.live_reserve
    );
    if let (Some(limit), Some(left)) = (budget.appliance_limit, budget.appliance_remaining) {
        let _ = writeln!(
            out,
            "      the appliance says {left} of the account's {limit} remain (X-RateLimit-Remaining, read {}){}",
            budget.appliance_seen_at.as_deref().unwrap_or("?"),
            if budget.held_by_appliance {
                ": other clients spend the account, so btic slows down"
            } else {
                ""
            }
        );
    }
    if let Some(until) = &budget.paused_until {
        let _ = writeln!(
            out,
            "      paused until {until}: {}",
            budget.paused_reason.as_deref().unwrap_or("")
        );
    }
    if budget.refused > 0 {
        let _ = writeln!(
            out,
            "      {} requests refused by the appliance (HTTP 429) since the daemon started",
            budget.refused
        );
    }
}

/// The state directory: its size against the budget, free space, and a pause.
fn render_disk(disk: &DiskStatus, out: &mut String) {
    let _ = writeln!(out, "\nstate directory");
    match (disk.state_bytes, disk.free_bytes) {
        (Some(used), Some(free)) => {
            let _ = writeln!(
                out,
                "  {} on disk (budget {}), {} free (floor {})",
                HumanBytes(used),
                disk.max_state_bytes
                    .map_or("none".to_string(), |b| HumanBytes(b).to_string()),
                HumanBytes(free),
                match disk.min_free_bytes {
                    0 => "none".to_string(),
                    b => HumanBytes(b).to_string(),
                }
            );
        }
        _ => {
            let _ = writeln!(out, "  could not be measured");
        }
    }
    match disk.paused.as_deref() {
        Some("state_bytes") => {
            let _ = writeln!(
                out,
                "  fetching and downloading paused: over pipeline.max_state_bytes until the backlog drains"
            );
        }
        Some(_) => {
            let _ = writeln!(
                out,
                "  fetching and downloading paused: under pipeline.min_free_bytes free"
            );
        }
        None => {}
    }
}

/// Every schedule's last success and last run.
fn render_schedules(schedules: &[ScheduleStatus], out: &mut String) {
    let _ = writeln!(out, "\nschedules");
    for s in schedules {
        let _ = writeln!(
            out,
            "  {:<24} last success {}, last run {}: {}",
            s.name,
            s.last_success.as_deref().unwrap_or("never"),
            s.last_attempt.as_deref().unwrap_or("never"),
            s.outcome
        );
    }
}

/// `btic history` for people: one line per run, newest first.
pub fn history(runs: &[RunRecord]) -> String {
    let mut out = String::new();
    if runs.is_empty() {
        out.push_str("no runs recorded yet\n");
        return out;
    }
    for run in runs {
        let kind = match run.kind {
            RunKind::Schedule => "schedule",
            RunKind::Backfill => "backfill",
        };
        let started = chrono::DateTime::from_timestamp_millis(run.started_ms)
            .map_or_else(|| run.started_ms.to_string(), |t| t.to_rfc3339());
        let sessions = run
            .sessions
            .map_or(String::new(), |n| format!(", {n} sessions delivered"));
        let _ = writeln!(
            out,
            "{started}  {kind} {}: {:.1} s, {} windows, {} bodies ({}){sessions}, {} dead-lettered: {}",
            run.name,
            run.duration_ms as f64 / 1000.0,
            run.windows,
            run.bodies,
            HumanBytes(run.bytes),
            run.dead_lettered,
            run.outcome
        );
    }
    out
}
