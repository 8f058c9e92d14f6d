//! The long-lived services the pipeline's stages call, each built once and shared by every
//! request (or, for the tenant table, swapped whole on reload):
//!
//! | module | owns |
//! |---|---|
//! | `tenants` | the [`tenants::Snapshot`] of tenants and clusters a request sees from start to end |
//! | `auth` | Basic and Bearer callers → tenant; the verified-key cache and sign-in budgets |
//! | `aad` | AAD token validation against the issuers' signing keys |
//! | `limiter` | the limit decisions: tenant rate and in flight, cluster cap with fair shares and AIMD |
//! | `limits` | rate and in-flight state per tenant id, surviving reloads; keyed budgets |
//! | `shared` | limits shared by replicas in Redis: Lua scripts, leases, circuit breaker |
//! | `load` | connections, requests in flight, memory: when to shed load |
//! | `upstream` | a cluster's connection pools, one per worker |
//! | `identity` | kqlgate's own credentials at the clusters, tokens refreshed in the background |
//! | `properties` | the request properties forwarded: forced, refused, passed |
//! | `metrics` | the Prometheus metrics, labelled by configured tenants and clusters |
//! | `audit` | the audit log: one JSON record per query, with its cost |
//! | `cost` | the cost Kusto reports for a query, read from the answer as it streams |

pub mod aad;
pub mod audit;
pub mod auth;
pub mod cost;
pub mod identity;
pub mod limiter;
pub mod limits;
pub mod load;
pub mod metrics;
pub mod properties;
pub mod shared;
pub mod tenants;
pub mod upstream;
