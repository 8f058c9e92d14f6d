//! Stage: guard. Applies the tenant-isolation guard (`crate::kql`) to the query text and fixes
//! the request properties (`services::properties`). A refusal is a 403 naming the construct and
//! its position; it is logged without the query.

use std::borrow::Cow;

use crate::error::ProxyError;
use crate::kql::{self, Refusal, Role, Scope, TextKind};
use crate::pipeline::query::{QueryBody, Rewrite};
use crate::pipeline::route::Endpoint;
use crate::services::properties;
use crate::services::tenants::TenantEntry;

/// The guard's verdict: the rewrite to forward, or the refusal (kept for the audit record).
pub fn check<'t>(
    tenant: &'t TenantEntry,
    endpoint: Endpoint,
    query: &QueryBody,
) -> Result<Rewrite<'t>, GuardError> {
    let config = &tenant.config;
    let scope = Scope {
        database: &config.database,
        database_names: &config.database_names,
    };
    // The query endpoints serve only `.show` commands, which the viewer role covers.
    let role = match endpoint {
        Endpoint::Mgmt => config.role,
        Endpoint::QueryV1 | Endpoint::QueryV2 => Role::Viewer,
    };
    let options = kql::Options {
        restrict_statement: tenant.cluster.config.restrict_statement,
    };
    let verdict = kql::guard(&query.csl, &scope, role, options).map_err(|refusal| {
        tracing::info!(
            target: "kqlgate::guard",
            tenant = %config.id,
            reason = %refusal.reason,
            construct = refusal.label,
            line = refusal.line,
            column = refusal.column,
            "query refused"
        );
        GuardError::Refused(refusal)
    })?;
    let read_only = verdict.kind == TextKind::Query || role == Role::Viewer;
    let raw = query.properties_json().map(|raw| raw.get());
    let properties: Cow<str> =
        properties::forwarded(config, &tenant.default_properties, raw, read_only)
            .map_err(GuardError::Properties)?;
    Ok(Rewrite {
        csl: verdict.rewritten,
        properties_json: Some(properties),
        read_only,
    })
}

/// Why the guard stopped a request.
pub enum GuardError {
    /// The query text reaches outside the tenant.
    Refused(Refusal),
    /// The request properties are malformed or set what kqlgate refuses.
    Properties(ProxyError),
}

impl From<GuardError> for ProxyError {
    fn from(error: GuardError) -> ProxyError {
        match error {
            GuardError::Refused(refusal) => ProxyError::Forbidden(refusal.to_string()),
            GuardError::Properties(error) => error,
        }
    }
}
