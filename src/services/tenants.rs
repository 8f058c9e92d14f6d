//! The tenant table: one consistent [`Snapshot`] of the configured tenants and clusters, swapped
//! whole on reload. A request loads the snapshot once and keeps it to its end, so it sees one
//! table from start to finish, and a stream started before a reload finishes under the table it
//! started with. Nothing refers to a tenant by its position: tenants are found by id, AAD
//! principals map to ids, and limiter state lives beside the table, keyed by id.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Cluster, Config, Principal, ServerSettings, Tenant};
use crate::services::aad::TokenClaims;
use crate::services::identity::{Credential, Identities};
use crate::services::limiter::{ClusterState, Limiter};
use crate::services::limits::TenantState;
use crate::services::metrics::{Label, Metrics};
use crate::services::properties::DefaultProperties;
use crate::services::upstream::Upstream;

pub struct Snapshot {
    /// `[server]` as this snapshot has it; the keys a running process cannot change stay as
    /// they were at start (see `ServerSettings::fixed_differences`).
    pub server: ServerSettings,
    tenants: HashMap<String, Arc<TenantEntry>>,
    principals: HashMap<Principal, Arc<TenantEntry>>,
    clusters: HashMap<String, Arc<ClusterEntry>>,
}

pub struct TenantEntry {
    pub config: Tenant,
    /// The tenant id as a metrics label.
    pub label: Label,
    pub cluster: Arc<ClusterEntry>,
    /// What this tenant's requests present to the cluster: its own identity, or the cluster's.
    pub credential: Credential,
    /// The request properties forwarded when a request brings none.
    pub default_properties: DefaultProperties,
    /// Rate and in-flight state, shared with the tenant's entries in other snapshots.
    pub limits: Arc<TenantState>,
}

pub struct ClusterEntry {
    pub config: Cluster,
    /// The cluster's name as a metrics label.
    pub label: Label,
    pub upstream: Upstream,
    pub credential: Credential,
    /// Requests in flight and the adaptive cap, shared with the cluster's entries in other
    /// snapshots.
    pub cap: Arc<ClusterState>,
}

/// What building a snapshot reuses from the running process.
pub struct Reuse<'a> {
    pub previous: Option<&'a Snapshot>,
    pub identities: &'a mut Identities,
    pub limits: &'a Limiter,
    pub metrics: &'a Arc<Metrics>,
    pub workers: usize,
}

impl Snapshot {
    /// Builds the table for `config`. Clusters whose settings did not change keep their pools
    /// (and so their warm connections); identities keep their tokens. Must run inside the Tokio
    /// runtime: new AAD identities start refreshing their tokens here.
    pub fn build(config: Config, reuse: Reuse) -> anyhow::Result<Snapshot> {
        let mut clusters = HashMap::with_capacity(config.clusters.len());
        for cluster in config.clusters {
            let kept = reuse
                .previous
                .and_then(|p| p.clusters.get(&cluster.name))
                .filter(|old| old.config == cluster)
                .cloned();
            let entry = match kept {
                Some(entry) => entry,
                None => {
                    let label = Label::from(cluster.name.as_str());
                    Arc::new(ClusterEntry {
                        upstream: Upstream::new(&cluster, reuse.workers, reuse.metrics, &label)?,
                        credential: reuse.identities.credential(&cluster.credential)?,
                        cap: reuse.limits.cluster_state(&cluster.name),
                        label,
                        config: cluster,
                    })
                }
            };
            reuse.metrics.configured(None, Some(&entry.label));
            clusters.insert(entry.config.name.clone(), entry);
        }
        let mut tenants = HashMap::with_capacity(config.tenants.len());
        let mut principals = HashMap::new();
        for tenant in config.tenants {
            // Validated at load: every tenant names a configured cluster.
            let cluster = clusters[&tenant.cluster].clone();
            let credential = match &tenant.upstream {
                Some(own) => reuse.identities.credential(own)?,
                None => cluster.credential.clone(),
            };
            let entry = Arc::new(TenantEntry {
                label: Label::from(tenant.id.as_str()),
                default_properties: DefaultProperties::new(
                    cluster.config.enforce_request_properties,
                ),
                limits: reuse.limits.tenant_state(&tenant.id),
                credential,
                cluster,
                config: tenant,
            });
            reuse.metrics.configured(Some(&entry.label), None);
            for principal in &entry.config.aad_principals {
                principals.insert(principal.clone(), entry.clone());
            }
            tenants.insert(entry.config.id.clone(), entry);
        }
        Ok(Snapshot {
            server: config.server,
            tenants,
            principals,
            clusters,
        })
    }

    pub fn tenant(&self, id: &str) -> Option<&Arc<TenantEntry>> {
        self.tenants.get(id)
    }

    pub fn tenants(&self) -> impl Iterator<Item = &Arc<TenantEntry>> {
        self.tenants.values()
    }

    pub fn clusters(&self) -> impl Iterator<Item = &Arc<ClusterEntry>> {
        self.clusters.values()
    }

    /// The tenant a valid token's principal maps to, most specific first: `oid:`, then `app:`
    /// (`appid` or `azp`), then `tid:`.
    pub fn tenant_for_claims(&self, claims: &TokenClaims) -> Option<Arc<TenantEntry>> {
        let lower = |v: &Option<String>| v.as_deref().map(str::to_ascii_lowercase);
        let candidates = [
            lower(&claims.oid).map(Principal::Object),
            lower(&claims.appid)
                .or(lower(&claims.azp))
                .map(Principal::App),
            lower(&claims.tid).map(Principal::Tenant),
        ];
        candidates
            .into_iter()
            .flatten()
            .find_map(|principal| self.principals.get(&principal).cloned())
    }
}
