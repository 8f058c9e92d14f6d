//! kqlgate: a streaming, multi-tenant query proxy for Azure Data Explorer (Kusto).
//!
//! Clients that cannot do AAD send HTTP Basic credentials (tenant id, API key) and a Kusto REST
//! body; kqlgate checks the key, pins the request to the tenant's own database, applies the
//! tenant's limits and forwards it over pooled connections with the proxy's own credential,
//! streaming the answer back. See `docs/ARCHITECTURE.md` for the map of modules.

pub mod aad;
pub mod access_log;
pub mod config;
pub mod error;
pub mod gateway;
pub mod headers;
pub mod identity;
pub mod keys;
pub mod kql;
pub mod pipeline;
pub mod server;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;

pub use config::Config;

/// Binds the configured address and serves until `shutdown` resolves (then drains).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let address = config.server.listen;
    // A std listener: each worker registers its own copy with its own event loop.
    let listener = std::net::TcpListener::bind(address)
        .with_context(|| format!("cannot listen on {address}"))?;
    let gateway = Arc::new(gateway::Gateway::new(config)?);
    let scheme = if gateway.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(
        address = %listener.local_addr()?,
        scheme,
        workers = gateway.server.workers,
        "kqlgate listening"
    );
    server::serve(listener, gateway, shutdown).await
}
