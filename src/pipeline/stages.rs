//! The one place that starts the stage workers: `btic run` starts them for every site
//! and destination, `btic backfill` without a daemon for its site and destinations.
//!
//! Tasks and what bounds them: one parse worker and one worker that moves rejected
//! sessions to the dead letter; per site one fetch worker (requests to make again) and
//! one download worker; per destination one deliver worker, on a thread of its own
//! (driving the runtime's IO from there), so a slow or stuck database blocks nobody
//! else and database drivers' futures need not be `Send`. Each ends when `stop` is
//! cancelled, after finishing the item it holds (its hand-off happens whole or not at
//! all). Nothing here buffers items in memory: every hand-over between stages goes
//! through the queue on disk.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::budget::DiskBudget;
use super::deliver_worker::DeliverWorker;
use super::download_worker::DownloadWorker;
use super::fetch_worker::{FetchStage, FetchWorker};
use super::parse_worker;
use super::reachability::Reachability;
use crate::appliance::{
    AccountBudget, ApplianceClient, ApplianceError, BudgetLimits, ClientOptions, account_of,
};
use crate::config::{Config, ResolvedSecrets};
use crate::fetch::Fetcher;
use crate::metrics::Health;
use crate::queue::Queue;

/// Why the stages could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A site's secret is missing from the resolved secrets.
    #[error("no client secret for site {0:?}")]
    NoSecret(String),
    /// A site's client could not be set up.
    #[error(transparent)]
    Appliance(#[from] ApplianceError),
}

/// Which sites and destinations get workers.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Every site and destination of the pipeline file.
    All,
    /// These only.
    Only {
        /// The sites.
        sites: &'a [&'a str],
        /// The destinations.
        destinations: &'a [&'a str],
    },
}

/// Running stage workers.
#[derive(Debug)]
pub struct Stages {
    /// The fetch stage of each site that got workers (the scheduler and backfill jobs
    /// fetch through these).
    pub fetch: BTreeMap<String, FetchStage>,
    /// The workers' tasks; each ends after `stop`.
    pub tasks: JoinSet<()>,
}

/// Everything the stages share.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The pipeline file.
    pub config: Arc<Config>,
    /// Its secrets.
    pub secrets: Arc<ResolvedSecrets>,
    /// The queue.
    pub queue: Queue,
    /// Liveness of the stages.
    pub health: Arc<Health>,
    /// Destinations' reachability, for the scheduler's run outcomes.
    pub reachability: Arc<Reachability>,
    /// The disk budget fetch and download wait for.
    pub budget: Arc<DiskBudget>,
}

/// One request budget per API account: the sites with the same host and client id
/// share it, with the smallest of their settings (the appliance counts the account).
pub fn account_budgets(config: &Config) -> BTreeMap<String, Arc<AccountBudget>> {
    let mut limits: BTreeMap<String, BudgetLimits> = BTreeMap::new();
    for site in &config.sites {
        let own = BudgetLimits {
            per_second: site.requests_per_second,
            per_hour: site.requests_per_hour,
            live_reserve: site.live_reserve,
            hour: BudgetLimits::hour_from_env(),
        };
        limits
            .entry(account_of(site))
            .and_modify(|l| {
                l.per_second = l.per_second.min(own.per_second);
                l.per_hour = l.per_hour.min(own.per_hour);
                l.live_reserve = l.live_reserve.max(own.live_reserve).min(l.per_hour);
            })
            .or_insert(own);
    }
    limits
        .into_iter()
        .map(|(account, l)| (account.clone(), Arc::new(AccountBudget::new(account, l))))
        .collect()
}

/// Starts the workers of `scope`, stopping when `stop` is cancelled. Spool files go
/// under `spool`. (The disk budget's monitor is the caller's: it decides who hears of a
/// change.)
pub fn start(
    shared: &Shared,
    scope: Scope<'_>,
    spool: &Path,
    stop: &CancellationToken,
) -> Result<Stages, StartError> {
    let Shared {
        config,
        secrets,
        queue,
        health,
        reachability,
        budget,
    } = shared;
    let mut tasks = JoinSet::new();
    let mut fetch = BTreeMap::new();
    let wanted_site = |name: &str| match scope {
        Scope::All => true,
        Scope::Only { sites, .. } => sites.contains(&name),
    };
    let wanted_destination = |name: &str| match scope {
        Scope::All => true,
        Scope::Only { destinations, .. } => destinations.contains(&name),
    };
    let budgets = account_budgets(config);
    for site in config.sites.iter().filter(|s| wanted_site(&s.name)) {
        let secret = secrets
            .client_secrets
            .get(&site.name)
            .cloned()
            .ok_or_else(|| StartError::NoSecret(site.name.clone()))?;
        let options = ClientOptions {
            retry: config.pipeline.retry,
            budget: budgets.get(&account_of(site)).cloned(),
            ..ClientOptions::default()
        };
        let client = ApplianceClient::with_options(
            site,
            secret,
            secrets.backup_passwords.get(&site.name).cloned(),
            spool,
            options,
        )?;
        let fetcher = Fetcher::new(site.clone(), client.clone());
        fetch.insert(
            site.name.clone(),
            FetchStage::new(
                fetcher.clone(),
                queue.clone(),
                config.pipeline.clone(),
                config.start_from,
                budget.clone(),
            ),
        );
        let worker = FetchWorker {
            fetcher,
            queue: queue.clone(),
            retry: config.pipeline.retry,
            max_body_bytes: config.pipeline.max_body_bytes,
            health: health.clone(),
            budget: budget.clone(),
        };
        tasks.spawn(worker.run(stop.clone()));
        let worker = DownloadWorker {
            site: site.name.clone(),
            client,
            queue: queue.clone(),
            retry: config.pipeline.retry,
            health: health.clone(),
            budget: budget.clone(),
        };
        tasks.spawn(worker.run(stop.clone()));
    }
    for destination in config
        .destinations
        .iter()
        .filter(|d| wanted_destination(&d.name))
    {
        let worker = DeliverWorker {
            destination: destination.clone(),
            url: secrets.urls.get(&destination.name).cloned(),
            queue: queue.clone(),
            retry: config.pipeline.retry,
            health: health.clone(),
            reachability: reachability.clone(),
        };
        let runtime = tokio::runtime::Handle::current();
        let stop = stop.clone();
        tasks.spawn_blocking(move || runtime.block_on(worker.run(stop)));
    }
    tasks.spawn(parse_worker::run(
        queue.clone(),
        stop.clone(),
        health.clone(),
        parse_worker::item_shapes(config),
    ));
    tasks.spawn(parse_worker::run_rejected(queue.clone(), stop.clone()));
    Ok(Stages { fetch, tasks })
}
