//! The state every request shares, built once from a validated [`Config`]: tenants with their
//! limiters, the authenticator, and one pooled upstream client per cluster.

use std::net::IpAddr;
use std::sync::atomic::AtomicBool;

use http::HeaderMap;

use crate::config::{Config, ServerSettings, Tenant};
use crate::error::ProxyError;
use crate::identity::{Credential, Identities};
use crate::pipeline::authenticate::Authenticator;
use crate::pipeline::forward::Upstream;
use crate::pipeline::guard::DefaultProperties;
use crate::pipeline::limit::TenantLimits;

pub struct Gateway {
    pub server: ServerSettings,
    tenants: Vec<TenantState>,
    authenticator: Authenticator,
    upstreams: Vec<Upstream>,
    /// Set on shutdown, so `/readyz` tells load balancers to stop sending traffic.
    pub draining: AtomicBool,
    /// The body of `GET /v1/rest/auth/metadata`, when AAD callers are configured.
    pub aad_metadata: Option<String>,
}

pub struct TenantState {
    pub config: Tenant,
    pub limits: TenantLimits,
    /// What this tenant's requests present to the cluster: its own identity, or the cluster's.
    pub credential: Credential,
    /// The request properties forwarded when a request brings none.
    pub default_properties: DefaultProperties,
}

impl Gateway {
    /// Must run inside the Tokio runtime: AAD identities start refreshing their tokens here.
    pub fn new(config: Config) -> anyhow::Result<Gateway> {
        let authenticator = Authenticator::new(&config.auth, &config.tenants, config.aad.as_ref())?;
        let mut identities = Identities::new()?;
        let upstreams = config
            .clusters
            .iter()
            .map(|cluster| {
                Ok((
                    Upstream::new(cluster, config.server.workers)?,
                    identities.credential(&cluster.credential)?,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let tenants = config
            .tenants
            .into_iter()
            .map(|tenant| {
                let credential = match &tenant.upstream {
                    Some(own) => identities.credential(own)?,
                    None => upstreams[tenant.cluster].1.clone(),
                };
                let enforce = config.clusters[tenant.cluster].enforce_request_properties;
                Ok(TenantState {
                    default_properties: DefaultProperties::new(enforce),
                    limits: TenantLimits::new(&tenant),
                    config: tenant,
                    credential,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let upstreams = upstreams
            .into_iter()
            .map(|(upstream, _)| upstream)
            .collect();
        Ok(Gateway {
            server: config.server,
            aad_metadata: config.aad.as_ref().map(|aad| aad.metadata().to_string()),
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
