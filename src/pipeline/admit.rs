//! Stage: admit. A tenant's request rate is checked before its body is read, so a throttled
//! tenant costs nothing; its place among its requests in flight is taken after the body is in,
//! so a stalled upload never holds one (a full tenant is still refused before its body, by a
//! check that takes nothing). Over either limit a request is refused at once with 429 — never
//! queued, so one tenant's backlog cannot hold connections or memory that others need.

use crate::error::{retry_after_secs, ProxyError};
use crate::services::limits::{Slot, TenantLimits};
use crate::services::tenants::TenantEntry;

/// Takes one of the tenant's rate tokens.
pub fn rate(limits: &TenantLimits, tenant: &TenantEntry) -> Result<(), ProxyError> {
    limits
        .take_rate(&tenant.limits, tenant.config.rate)
        .map_err(|wait| ProxyError::TooManyRequests {
            reason: "this tenant's request rate limit is exceeded".into(),
            retry_after_secs: retry_after_secs(wait),
        })
}

/// Refuses, without taking a place, a request that would not fit among the tenant's in flight.
pub fn room(limits: &TenantLimits, tenant: &TenantEntry) -> Result<(), ProxyError> {
    if limits.has_room(&tenant.limits, tenant.config.max_concurrent) {
        Ok(())
    } else {
        Err(too_many_in_flight(tenant))
    }
}

/// Takes a place among the tenant's requests in flight, held until the answer's last byte.
pub fn slot(tenant: &TenantEntry) -> Result<Slot, ProxyError> {
    TenantLimits::take_slot(&tenant.limits, tenant.config.max_concurrent)
        .ok_or_else(|| too_many_in_flight(tenant))
}

fn too_many_in_flight(tenant: &TenantEntry) -> ProxyError {
    ProxyError::TooManyRequests {
        reason: format!(
            "this tenant already has {} requests in flight, its limit",
            tenant.config.max_concurrent.unwrap_or(0)
        ),
        retry_after_secs: 1,
    }
}
