//! Stage: admit. A tenant's request rate is checked before its body is read, so a throttled
//! tenant costs nothing; its place among its requests in flight, and its cluster's, are taken
//! after the body is in, so a stalled upload never holds one (a tenant full in this replica is
//! still refused before its body, by a check that takes nothing). Over a tenant's limit a
//! request is refused at once with 429 — never queued, so one tenant's backlog cannot hold
//! connections or memory that others need; under a cluster's cap it may wait up to the
//! cluster's `queue_timeout_ms`. The decisions themselves are `services::limiter`'s.

use crate::error::{retry_after_secs, ProxyError};
use crate::services::limiter::{Admission, ClusterAdmission, Limiter, Refusal};
use crate::services::tenants::TenantEntry;

/// Takes one of the tenant's rate tokens.
pub async fn rate(limits: &Limiter, tenant: &TenantEntry) -> Result<(), Refused> {
    limits
        .take_rate(&tenant.config.id, &tenant.limits, tenant.config.rate)
        .await
        .map_err(|refusal| refused(tenant, refusal))
}

/// Refuses, without taking a place, a request that would not fit among the tenant's in flight.
pub fn room(limits: &Limiter, tenant: &TenantEntry) -> Result<(), Refused> {
    if limits.has_room(&tenant.limits, tenant.config.max_concurrent) {
        Ok(())
    } else {
        Err(refused(tenant, Refusal::Concurrency))
    }
}

/// Takes a place among the tenant's requests in flight, held until the answer's last byte.
pub async fn slot(limits: &Limiter, tenant: &TenantEntry) -> Result<Admission, Refused> {
    limits
        .take_slot(
            &tenant.config.id,
            &tenant.limits,
            tenant.config.max_concurrent,
        )
        .await
        .map_err(|refusal| refused(tenant, refusal))
}

/// Takes a place under the cluster's cap, if it has one.
pub async fn cluster(
    limits: &Limiter,
    tenant: &TenantEntry,
) -> Result<Option<ClusterAdmission>, Refused> {
    let cluster = &tenant.cluster;
    limits
        .take_cluster(
            &cluster.cap,
            &tenant.config.id,
            cluster.config.max_concurrent,
            cluster.config.queue_timeout,
        )
        .await
        .map_err(|refusal| refused(tenant, refusal))
}

/// A limit's refusal: the client's error and its reason label (`kqlgate_refusals_total`).
pub struct Refused {
    pub reason: &'static str,
    pub error: ProxyError,
}

fn reason(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::Rate(_) => "rate",
        Refusal::Concurrency => "concurrency",
        Refusal::Cluster(_) => "cluster",
        Refusal::Unavailable => "limits_unavailable",
    }
}

fn refused(tenant: &TenantEntry, refusal: Refusal) -> Refused {
    Refused {
        reason: reason(&refusal),
        error: error(tenant, refusal),
    }
}

fn error(tenant: &TenantEntry, refusal: Refusal) -> ProxyError {
    match refusal {
        Refusal::Rate(wait) => ProxyError::TooManyRequests {
            reason: "this tenant's request rate limit is exceeded".into(),
            retry_after_secs: retry_after_secs(wait),
        },
        Refusal::Concurrency => ProxyError::TooManyRequests {
            reason: format!(
                "this tenant already has {} requests in flight, its limit",
                tenant.config.max_concurrent.unwrap_or(0)
            ),
            retry_after_secs: 1,
        },
        Refusal::Cluster(cap) => ProxyError::TooManyRequests {
            reason: format!(
                "the cluster already has {cap} requests in flight, the most kqlgate sends it"
            ),
            retry_after_secs: 1,
        },
        Refusal::Unavailable => ProxyError::limits_unavailable(),
    }
}
