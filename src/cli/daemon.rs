//! `btic run` and `btic demo`: the daemon, and the daemon fed by the simulator on
//! embedded defaults.

use std::net::SocketAddr;
use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::CliError;
use crate::config::Config;
use crate::log_file::DailyFile;
use crate::pipeline::daemon;
use crate::simulator::{Options, Simulator};

/// The demo pipeline, built into the binary.
const DEMO_PIPELINE: &str = include_str!("../../pipelines/demo.toml");
/// Where the demo's simulator listens (the demo pipeline's site host).
const DEMO_SIMULATOR: &str = "127.0.0.1:18443";

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("starting the runtime: {e}")))
}

/// A token cancelled by SIGINT or SIGTERM.
fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("installing the SIGTERM handler: {e}");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown requested");
        cancel.cancel();
    });
    token
}

/// Loads a pipeline file; every problem goes to stderr, and the error exits 2.
pub(super) fn load(path: &Path) -> Result<Config, CliError> {
    Config::load(path).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("error: {e}");
        }
        CliError::config(format!("{}: invalid pipeline file", path.display()))
    })
}

/// The `[log] file` of the pipeline file at `path`, opened; `None` when it has none or
/// is invalid (`run` then reports its problems).
pub fn open_log_file(path: &Path) -> Result<Option<DailyFile>, CliError> {
    let Ok(config) = Config::load(path) else {
        return Ok(None);
    };
    let Some(file) = &config.log.file else {
        return Ok(None);
    };
    DailyFile::open(file, config.log.keep_days)
        .map(Some)
        .map_err(|e| CliError::failed(format!("opening the log file {}: {e}", file.display())))
}

/// `btic run --config FILE`.
pub fn run(path: &Path) -> Result<(), CliError> {
    let config = load(path)?;
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    runtime()?.block_on(async {
        let shutdown = shutdown_on_signals();
        daemon::run(config, shutdown, Some(crate::console::router))
            .await
            .map_err(|e| CliError::failed(e.to_string()))
    })
}

/// `btic demo [--listen ADDR]`: the simulator on 127.0.0.1:18443 and the demo pipeline
/// into `./btic-demo/`, its metrics listener on `listen` when given.
pub fn demo(listen: Option<SocketAddr>) -> Result<(), CliError> {
    let mut config = Config::from_toml(Path::new("pipelines/demo.toml (built in)"), DEMO_PIPELINE)
        .map_err(|e| CliError::failed(format!("the built-in demo pipeline: {e}")))?;
    if let Some(listen) = listen {
        config.metrics.listen = listen;
    }
    // Another host may reach a wildcard or outside listener: the console then needs a
    // token, made up for this run and printed below.
    let token = (!crate::pipeline::access::is_loopback(config.metrics.listen.ip())).then(|| {
        let token = hex::encode(rand::random::<[u8; 16]>());
        config.console.token = Some(crate::config::SecretSource::Plain(
            crate::config::Secret::new(token.clone()),
        ));
        token
    });
    let ca_path = config
        .sites
        .first()
        .and_then(|s| s.ca_file.clone())
        .ok_or_else(|| CliError::failed("the demo pipeline has no CA file"))?;
    runtime()?.block_on(async {
        let shutdown = shutdown_on_signals();
        let options = Options {
            listen: DEMO_SIMULATOR.parse().expect("a valid address"),
            sessions_per_day: 300,
            days: 3,
            ..Options::default()
        };
        let simulator = Simulator::start(options)
            .await
            .map_err(|e| CliError::failed(e.to_string()))?;
        if let Some(parent) = ca_path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| CliError::failed(format!("creating {}: {e}", parent.display())))?;
        }
        std::fs::write(&ca_path, simulator.ca_pem.clone().unwrap_or_default())
            .map_err(|e| CliError::failed(format!("writing {}: {e}", ca_path.display())))?;
        let files = config.destinations.iter().find_map(|d| match &d.kind {
            crate::config::DestinationKind::Files(f) => Some(f.directory.display().to_string()),
            _ => None,
        });
        println!("btic demo");
        println!("  appliance simulator  https://{}", simulator.host());
        println!("  session files        ./{}/", files.unwrap_or_default());
        println!("  SQLite database      ./btic-demo/btic.sqlite");
        println!(
            "  metrics              http://{}/metrics",
            config.metrics.listen
        );
        let console = crate::pipeline::access::local_address(config.metrics.listen);
        match &token {
            Some(token) => println!(
                "  console              http://{console}/  (from other hosts: token {token})"
            ),
            None => println!("  console              http://{console}/"),
        }
        println!(
            "  status               btic status --config pipelines/demo.toml  (in another terminal)"
        );
        println!("  stop                 Ctrl-C");
        let outcome = daemon::run(config, shutdown, Some(crate::console::router)).await;
        simulator.shutdown().await;
        outcome.map_err(|e| CliError::failed(e.to_string()))
    })
}
