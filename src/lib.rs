//! kqlgate: a streaming, multi-tenant query proxy for Azure Data Explorer (Kusto).
//!
//! Clients that cannot do AAD send HTTP Basic credentials (tenant id, API key) and a Kusto REST
//! body; kqlgate checks the key, pins the request to the tenant's own database, applies the
//! tenant's limits and forwards it over pooled connections with the proxy's own credential,
//! streaming the answer back. See `docs/ARCHITECTURE.md` for the map of modules.

pub mod access_log;
pub mod admin;
pub mod body;
pub mod clock;
pub mod config;
pub mod endpoint;
pub mod error;
pub mod gateway;
pub mod headers;
pub mod keys;
pub mod kql;
pub mod pipeline;
pub mod reload;
pub mod server;
pub mod services;
pub mod tls;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

pub use config::Config;
pub use reload::check_config;
use reload::tls_files;

/// What `run` serves and how it behaves around the request path.
pub struct Options {
    /// The file the config came from: reloads read it again. `None`: no reloads.
    pub config_path: Option<PathBuf>,
    /// The limiters' clock (a manual one in tests).
    pub clock: Arc<dyn clock::Clock>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            config_path: None,
            clock: clock::SystemClock::shared(),
        }
    }
}

/// Binds the configured address and serves until `shutdown` resolves (then drains).
pub async fn run(
    config: Config,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let address = config.server.listen;
    // A std listener: each worker registers its own copy with its own event loop.
    let listener = std::net::TcpListener::bind(address)
        .with_context(|| format!("cannot listen on {address}"))?;
    run_on(listener, config, options, shutdown).await
}

/// Serves on `listener` (bound by the caller; `[server] listen` is not used) until `shutdown`
/// resolves. Tests run the server in-process this way.
pub async fn run_on(
    listener: std::net::TcpListener,
    config: Config,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let tls = tls_files(&config);
    let open_files = services::load::raise_open_file_limit();
    // The writer's guard flushes queued audit records when `run_on` returns.
    let (audit, _audit_writer) = match &config.audit {
        Some(settings) => {
            let (audit, guard) = services::audit::Audit::open(settings)?;
            (Some(audit), Some(guard))
        }
        None => (None, None),
    };
    let admin = config.admin.clone();
    let gateway = Arc::new(gateway::Gateway::new(
        config,
        options.clock,
        open_files,
        audit,
    )?);
    if let Some(admin) = admin {
        admin::start(admin.listen, gateway.clone()).await?;
    }
    if let Some(path) = options.config_path {
        reload::start(gateway.clone(), path)?;
    }
    tracing::info!(
        address = %listener.local_addr()?,
        scheme = if tls.is_some() { "https" } else { "http" },
        workers = gateway.server().workers,
        open_files,
        max_connections = gateway.load.max_connections,
        "kqlgate listening"
    );
    server::serve(listener, gateway, tls, shutdown).await
}
