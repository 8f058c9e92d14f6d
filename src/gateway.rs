//! The state every request shares, built once from a validated [`Config`]: tenants with their
//! limiters, the authenticator, and one pooled upstream client per cluster.

use std::net::IpAddr;
use std::sync::atomic::AtomicBool;

use http::HeaderMap;

use crate::config::{Config, ServerSettings, Tenant};
use crate::error::ProxyError;
use crate::pipeline::authenticate::Authenticator;
use crate::pipeline::forward::Upstream;
use crate::pipeline::limit::TenantLimits;

pub struct Gateway {
    pub server: ServerSettings,
    tenants: Vec<TenantState>,
    authenticator: Authenticator,
    upstreams: Vec<Upstream>,
    /// Set on shutdown, so `/readyz` tells load balancers to stop sending traffic.
    pub draining: AtomicBool,
}

pub struct TenantState {
    pub config: Tenant,
    pub limits: TenantLimits,
}

impl Gateway {
    pub fn new(config: Config) -> anyhow::Result<Gateway> {
        let authenticator = Authenticator::new(&config.auth, &config.tenants);
        let upstreams = config
            .clusters
            .iter()
            .map(Upstream::new)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let tenants = config
            .tenants
            .into_iter()
            .map(|tenant| TenantState {
                limits: TenantLimits::new(&tenant),
                config: tenant,
            })
            .collect();
        Ok(Gateway {
            server: config.server,
            tenants,
            authenticator,
            upstreams,
            draining: AtomicBool::new(false),
        })
    }

    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        client: IpAddr,
    ) -> Result<&TenantState, ProxyError> {
        let index = self.authenticator.authenticate(headers, client).await?;
        Ok(&self.tenants[index])
    }

    pub fn upstream_for(&self, tenant: &TenantState) -> &Upstream {
        &self.upstreams[tenant.config.cluster]
    }

    pub fn prune(&self) {
        self.authenticator.prune();
    }
}
