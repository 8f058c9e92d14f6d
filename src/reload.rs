//! Reloading the config without a restart: on SIGHUP, when the config file changes (its
//! directory is watched, so a Kubernetes ConfigMap's `..data` symlink swap is seen too; `[server]
//! watch_config = false` turns that off), and so on `kqlgate reload`, which sends the SIGHUP.
//!
//! The new file is validated exactly as `kqlgate check` does. An invalid one is refused with its
//! key path in the log and the old table stays in force (`/readyz` stays ready); a valid one is
//! swapped in whole (`Gateway::reload`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::Watcher;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config::{problem, Config, ConfigError};
use crate::gateway::Gateway;

/// Events of one change (an editor's write-and-rename, a ConfigMap swap) arrive in a burst…
const SETTLE: Duration = Duration::from_millis(200);
/// …which is waited for this long at most, should the events never stop.
const SETTLE_AT_MOST: Duration = Duration::from_secs(2);

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Signal,
    FileChanged,
}

/// Starts the reload triggers; must run inside the Tokio runtime.
pub fn start(gateway: Arc<Gateway>, path: PathBuf) -> anyhow::Result<()> {
    let (trigger, triggers) = mpsc::unbounded_channel();
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let on_signal = trigger.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            if on_signal.send(Cause::Signal).is_err() {
                return;
            }
        }
    });
    let watcher = match gateway.server().watch_config {
        true => Some(watch_directory(&path, trigger)?),
        false => None,
    };
    tokio::spawn(reload_loop(gateway, path, triggers, watcher));
    Ok(())
}

/// Watches the directory holding `path`: the file itself may be replaced, or be a symlink.
fn watch_directory(
    path: &Path,
    trigger: mpsc::UnboundedSender<Cause>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let directory = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let name = path.file_name().map(|n| n.to_owned());
    // The file itself, or a ConfigMap's `..data` and `..<timestamp>` entries; other files in
    // the directory (a log, say) change all the time and are none of our business.
    let concerns = move |changed: &Path| {
        changed.file_name().is_some_and(|changed| {
            Some(changed) == name.as_deref() || changed.to_string_lossy().starts_with("..")
        })
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if !event.kind.is_access() && event.paths.iter().any(|p| concerns(p)) {
                let _ = trigger.send(Cause::FileChanged);
            }
        }
    })?;
    watcher.watch(&directory, notify::RecursiveMode::NonRecursive)?;
    tracing::info!(directory = %directory.display(), "watching the config for changes");
    Ok(watcher)
}

async fn reload_loop(
    gateway: Arc<Gateway>,
    path: PathBuf,
    mut triggers: mpsc::UnboundedReceiver<Cause>,
    // Kept alive for as long as reloads run.
    _watcher: Option<notify::RecommendedWatcher>,
) {
    let mut loaded = content_hash(&path);
    while let Some(mut cause) = triggers.recv().await {
        // Take the whole burst: a signal in it wins, so the reload is never skipped.
        let settle_until = tokio::time::Instant::now() + SETTLE_AT_MOST;
        while tokio::time::Instant::now() < settle_until {
            tokio::time::sleep(SETTLE).await;
            let mut more = false;
            while let Ok(next) = triggers.try_recv() {
                more = true;
                if next == Cause::Signal {
                    cause = Cause::Signal;
                }
            }
            if !more {
                break;
            }
        }
        let current = content_hash(&path);
        if cause == Cause::FileChanged && current == loaded {
            continue; // another file in the directory changed, or the same content was written
        }
        let gateway = gateway.clone();
        let file = path.clone();
        // Parsing 10,000 tenants takes a while: off the event loop that serves requests.
        let outcome = tokio::task::spawn_blocking(move || reload(&gateway, &file, cause)).await;
        if matches!(outcome, Ok(true)) {
            loaded = current;
        }
    }
}

/// Validates and swaps in the file at `path`; whether it was taken.
fn reload(gateway: &Gateway, path: &Path, cause: Cause) -> bool {
    let started = Instant::now();
    let config = match check_config(path) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(
                config = %path.display(),
                key = %error.path,
                %error,
                "config not reloaded: it is invalid; the previous one stays in force"
            );
            gateway.metrics.config_reload(false);
            return false;
        }
    };
    match gateway.reload(config) {
        Ok(reloaded) => {
            tracing::info!(
                config = %path.display(),
                cause = ?cause,
                tenants = reloaded.tenants,
                added = reloaded.added,
                removed = reloaded.removed,
                duration_ms = started.elapsed().as_millis() as u64,
                "config reloaded"
            );
            for key in reloaded.restart_needed {
                tracing::warn!(
                    key,
                    "changed in the config; it takes effect after a restart"
                );
            }
            gateway.metrics.config_reload(true);
            true
        }
        Err(error) => {
            tracing::error!(config = %path.display(), error = %format!("{error:#}"), "config not reloaded; the previous one stays in force");
            gateway.metrics.config_reload(false);
            false
        }
    }
}

fn content_hash(path: &Path) -> Option<[u8; 32]> {
    let content = std::fs::read(path).ok()?;
    Some(Sha256::digest(content).into())
}

/// Loads and validates a config file as `kqlgate check`, `serve` and every reload do: the file's
/// keys and values, and the TLS certificate and key it names.
pub fn check_config(path: &Path) -> Result<Config, ConfigError> {
    let config = Config::load(path)?;
    if let Some(files) = tls_files(&config) {
        crate::tls::check(&files).map_err(|e| problem("server.tls_cert", format!("{e:#}")))?;
    }
    Ok(config)
}

pub fn tls_files(config: &Config) -> Option<crate::tls::TlsFiles> {
    config
        .server
        .tls
        .as_ref()
        .map(|(cert, key)| crate::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        })
}
