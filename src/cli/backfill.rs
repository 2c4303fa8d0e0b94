//! `btic backfill`: fetches a past range (or given LSIDs) of one site into chosen
//! destinations as a backfill job (see `pipeline::backfill`). When `btic run` holds the
//! state directory the daemon runs the job beside its live lane and this command
//! follows it through the admin API; otherwise this process opens the state directory
//! and runs the stage workers the job needs until everything it enqueued is delivered
//! or dead-lettered.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::CliError;
use crate::config::units::parse_date;
use crate::config::{Config, DataKind};
use crate::metrics::Health;
use crate::pipeline::admin::Admin;
use crate::pipeline::backfill::{self, BackfillRequest, Progress, Summary};
use crate::pipeline::budget::DiskBudget;
use crate::pipeline::daemon::spool_dir;
use crate::pipeline::reachability::Reachability;
use crate::pipeline::stages::{self, Scope, Stages};

/// The arguments of `btic backfill`.
#[derive(Debug, Clone, Default)]
pub struct BackfillArgs {
    /// The `[[site]]`.
    pub site: String,
    /// Start of the `end_time` range (YYYY-MM-DD or RFC 3339).
    pub from: Option<String>,
    /// End of the range, exclusive.
    pub to: Option<String>,
    /// LSIDs instead of a range.
    pub lsids: Vec<String>,
    /// Destinations (default: every destination a transfer names for the site).
    pub destinations: Vec<String>,
    /// Data kinds, comma separated (`sessions`, `recordings`, `presentations`,
    /// `presentation_recordings`; default `sessions`).
    pub data: Option<String>,
    /// Start even when the job would spend more than an hour of the API budget.
    pub yes: bool,
}

/// A job estimated to need more of the account's budget than this asks for `--yes`.
const ASK_ABOVE_HOURS: f64 = 1.0;

/// Checks `args` against `config` and builds the request.
pub fn request(config: &Config, args: &BackfillArgs) -> Result<BackfillRequest, CliError> {
    let (from, to) = match (&args.from, &args.to, args.lsids.is_empty()) {
        (Some(f), Some(t), true) => {
            let from = parse_date(f).map_err(|e| CliError::config(format!("--from: {e}")))?;
            let to = parse_date(t).map_err(|e| CliError::config(format!("--to: {e}")))?;
            if from >= to {
                return Err(CliError::config("--from must be before --to"));
            }
            (Some(from.timestamp()), Some(to.timestamp()))
        }
        (None, None, false) => (None, None),
        (None, None, true) => {
            return Err(CliError::config("give a range (--from and --to) or --lsid"));
        }
        (_, _, false) => {
            return Err(CliError::config("give either a range or --lsid, not both"));
        }
        _ => return Err(CliError::config("--from and --to go together")),
    };
    let mut kinds = Vec::new();
    for k in args.data.as_deref().unwrap_or("sessions").split(',') {
        match DataKind::parse(k.trim()) {
            Some(
                kind @ (DataKind::Sessions
                | DataKind::Recordings
                | DataKind::Presentations
                | DataKind::PresentationRecordings),
            ) => kinds.push(kind),
            _ => {
                return Err(CliError::config(format!(
                    "--data: {k:?} cannot be backfilled (sessions, recordings, presentations, presentation_recordings)"
                )));
            }
        }
    }
    let ask = backfill::Ask {
        site: args.site.clone(),
        range: from.zip(to),
        lsids: args.lsids.clone(),
        destinations: args.destinations.clone(),
        kinds,
    };
    BackfillRequest::from_ask(config, &ask).map_err(|e| CliError::config(e.to_string()))
}

/// `btic backfill`.
pub fn backfill(path: &Path, args: &BackfillArgs) -> Result<(), CliError> {
    let config = Config::load(path).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("error: {e}");
        }
        CliError::config(format!("{}: invalid pipeline file", path.display()))
    })?;
    let request = request(&config, args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("starting the runtime: {e}")))?;
    runtime.block_on(async {
        let job = request.job_id();
        let estimate = estimate(&config, &request).await;
        eprintln!("backfill {job}: {}", describe(&estimate));
        if estimate.hours > ASK_ABOVE_HOURS && !args.yes {
            return Err(CliError::failed(format!(
                "backfill {job}: this needs more than an hour of the API account's budget; run again with --yes to start it (it goes on beside the live export, which keeps its reserve)"
            )));
        }
        let config = Arc::new(config);
        let admin = Admin::connect(config.clone())
            .await
            .map_err(|e| CliError::failed(e.to_string()))?;
        let bar = progress_bar();
        let outcome = match &admin {
            Admin::Daemon(addr, client) => {
                bar.suspend(|| eprintln!("backfill {job}: run by the daemon at {addr}"));
                follow(addr, client, &request, &bar).await
            }
            Admin::Direct(queue, _) => {
                bar.suspend(|| eprintln!("backfill {job}: no daemon running, working in this process"));
                in_process(queue, &config, &request, &bar).await
            }
        };
        bar.finish_and_clear();
        admin
            .close()
            .await
            .map_err(|e| CliError::failed(e.to_string()))?;
        let summary = outcome?;
        let presentations = if request.presentations.sessions.is_empty() {
            String::new()
        } else {
            format!(", {} presentations delivered", summary.presentations_delivered)
        };
        println!(
            "backfill {job}: {} sessions delivered, {} recordings delivered, {} dead-lettered, {} report bodies, {} bytes{presentations}",
            summary.sessions_delivered,
            summary.recordings_delivered,
            summary.dead_lettered,
            summary.bodies,
            summary.bytes
        );
        Ok(())
    })
}

/// What the job costs the account, from a one-day sample of its range when the
/// appliance can be asked (`SupportSessionListing`, one request).
async fn estimate(config: &Config, request: &BackfillRequest) -> backfill::Estimate {
    let site = config
        .site(&request.site)
        .expect("the request names a known site");
    let sample = match (request.from, request.to) {
        (Some(from), Some(to)) => match sample(config, site, from, to).await {
            Ok(sample) => Some(sample),
            Err(e) => {
                eprintln!("backfill: could not sample the range to estimate its cost: {e}");
                None
            }
        },
        _ => None,
    };
    backfill::estimate(request, site, &config.pipeline, sample)
}

/// The sessions that ended in the last day of `[from, to)` and how many were recorded.
async fn sample(
    config: &Config,
    site: &crate::config::Site,
    from: i64,
    to: i64,
) -> Result<backfill::Sample, String> {
    use crate::appliance::{ApplianceClient, ClientOptions, Priority, Window, WindowBy};
    let secrets = config.resolve_secrets().map_err(|e| e.to_string())?;
    let secret = secrets
        .client_secrets
        .get(&site.name)
        .cloned()
        .ok_or_else(|| format!("no client secret for site {:?}", site.name))?;
    let spool = tempfile::tempdir().map_err(|e| e.to_string())?;
    let options = ClientOptions {
        retry: config.pipeline.retry,
        ..ClientOptions::default()
    };
    let client = ApplianceClient::with_options(site, secret, None, spool.path(), options)
        .map_err(|e| e.to_string())?
        .at(Priority::Backfill);
    let start = from.max(to - 86_400);
    let seconds = (to - start).max(1) as u64;
    let window = Window {
        by: WindowBy::End,
        from: chrono::DateTime::from_timestamp(start, 0).unwrap_or_default(),
        duration: Duration::from_secs(seconds),
    };
    let fetched = client
        .support_session_listing(window)
        .await
        .map_err(|e| e.to_string())?;
    let rows = match &fetched.body {
        None => Vec::new(),
        Some(body) => {
            let file = std::fs::File::open(&body.path).map_err(|e| e.to_string())?;
            crate::parse::parse_listing(std::io::BufReader::new(file)).map_err(|e| e.to_string())?
        }
    };
    Ok(backfill::Sample {
        seconds,
        sessions: rows.len() as u64,
        recorded: rows.iter().filter(|r| r.has_recording).count() as u64,
    })
}

/// The estimate for people: requests, and how long the budget makes them take.
fn describe(e: &backfill::Estimate) -> String {
    let hours = e.hours;
    let takes = if hours < 1.0 / 60.0 {
        "under a minute".to_string()
    } else if hours < 1.0 {
        format!("about {:.0} minutes", hours * 60.0)
    } else if hours < 48.0 {
        format!("about {hours:.1} hours")
    } else {
        format!("about {:.1} days", hours / 24.0)
    };
    format!(
        "about {} requests to the appliance ({} report requests, {} recordings, for about {} sessions); at {} requests an hour for backfills (requests_per_hour less live_reserve) that takes {takes}",
        e.requests(),
        e.reports,
        e.recordings,
        e.sessions,
        e.per_hour
    )
}

/// A bar with ETA on a terminal; hidden in pipes.
fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} items, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn show(bar: &ProgressBar, p: &Progress) {
    bar.set_length(p.items.max(1));
    bar.set_position(p.through.min(p.items));
    let fetch = if p.fetched {
        "fetched".to_string()
    } else if let Some(percent) = p.range_done.saturating_mul(100).checked_div(p.range_total) {
        format!("fetching {percent}%")
    } else {
        "fetching".to_string()
    };
    bar.set_message(fetch);
}

async fn follow(
    addr: &std::net::SocketAddr,
    client: &reqwest::Client,
    request: &BackfillRequest,
    bar: &ProgressBar,
) -> Result<Summary, CliError> {
    let failed = |e: crate::pipeline::admin::AdminError| CliError::failed(e.to_string());
    let job = Admin::backfill_start(addr, client, request)
        .await
        .map_err(failed)?;
    loop {
        let p = Admin::backfill_progress(addr, client, &job)
            .await
            .map_err(|e| {
                CliError::failed(format!(
                    "backfill {job}: lost the daemon ({e}); a daemon resumes the job when it \
                     starts again, and the same command follows it"
                ))
            })?;
        show(bar, &p);
        if let Some(summary) = p.summary {
            return Ok(summary);
        }
        if let Some(e) = p.error {
            return Err(CliError::failed(format!("backfill {job}: {e}")));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn in_process(
    queue: &crate::queue::Queue,
    config: &Config,
    request: &BackfillRequest,
    bar: &ProgressBar,
) -> Result<Summary, CliError> {
    let failed = |e: &dyn std::fmt::Display| CliError::failed(e.to_string());
    let secrets = config.resolve_secrets().map_err(|e| failed(&e))?;
    if config.site(&request.site).is_none() {
        return Err(CliError::config(format!(
            "no site named {:?}",
            request.site
        )));
    }
    let spool = spool_dir(config);
    crate::durable::create_dir_all(&spool).map_err(|e| failed(&e))?;
    // The stages the job needs: its site's (requests to make again, downloads), parse,
    // and the deliveries to its destinations.
    let stages = CancellationToken::new();
    let shared = stages::Shared {
        config: Arc::new(config.clone()),
        secrets: Arc::new(secrets),
        queue: queue.clone(),
        health: Arc::new(Health::new(config.pipeline.stall_after)),
        reachability: Arc::new(Reachability::default()),
        budget: DiskBudget::of(config),
    };
    let destinations: Vec<&str> = request
        .destinations()
        .into_iter()
        .map(String::as_str)
        .collect();
    let scope = Scope::Only {
        sites: &[request.site.as_str()],
        destinations: &destinations,
    };
    let Stages { fetch, mut tasks } =
        stages::start(&shared, scope, &spool, &stages).map_err(|e| failed(&e))?;
    tasks.spawn(
        shared
            .budget
            .clone()
            .monitor(queue.clone(), stages.clone(), |_, _| {}),
    );
    let fetcher = fetch
        .get(&request.site)
        .ok_or_else(|| CliError::config(format!("no site named {:?}", request.site)))?;

    // Ctrl-C stops the job between two steps; running the command again resumes it.
    let interrupted = stages.child_token();
    {
        let stop = interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.cancel();
            }
        });
    }
    let outcome = backfill::run(
        queue,
        fetcher,
        &config.pipeline,
        request,
        &interrupted,
        |p| show(bar, p),
    )
    .await;
    stages.cancel();
    let _ = tokio::time::timeout(crate::pipeline::daemon::DRAIN, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    outcome.map_err(|e| failed(&e))
}
