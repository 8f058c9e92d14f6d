//! Prometheus metrics (`prometheus-client`, served on the admin listener). Labels are bounded:
//! a `tenant` label is a configured tenant id (or empty: none or unknown — Prometheus reads an
//! empty label as no label), never what a caller sent; a `construct` is a name from the guard's
//! catalogue; every other label comes from a fixed list. A removed tenant's series disappear on
//! reload ([`Metrics::forget_tenant`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::endpoint::Endpoint;
use crate::kql::catalogue;
use crate::services::cost::QueryCost;

/// A tenant id as a label value, shared rather than copied per request.
pub type Label = Arc<str>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    tenant: Label,
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    tenant: Label,
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    tenant: Label,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GuardLabels {
    tenant: Label,
    construct: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScanLabels {
    tenant: Label,
    cache: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    cluster: Label,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    decision: &'static str,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IdentityLabels {
    identity: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IdentityResultLabels {
    identity: Label,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Why kqlgate refused a request itself (`kqlgate_refusals_total{reason}`).
pub const REFUSAL_REASONS: [&str; 9] = [
    "rate",
    "concurrency",
    "cluster",
    "limits_unavailable",
    "db",
    "guard",
    "body_size",
    "bad_request",
    "body_timeout",
];

/// Why a sign-in was refused before its key was checked (`kqlgate_signin_refusals_total`).
pub const SIGNIN_REFUSALS: [&str; 4] = [
    "failure_budget",
    "global_ceiling",
    "busy",
    "limits_unavailable",
];

/// How an upstream exchange failed (`kqlgate_upstream_errors_total{kind}`).
pub const UPSTREAM_ERRORS: [&str; 5] = ["connect", "timeout", "reset", "5xx", "retried"];

type Histo = Family<RouteLabels, Histogram, fn() -> Histogram>;
type ClusterHisto = Family<ClusterLabels, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 1 ms to about 2.5 minutes.
    Histogram::new(exponential_buckets(0.001, 2.5, 14))
}

pub struct Metrics {
    /// Off when nothing can read the metrics (no `[admin]` listener): requests then skip
    /// recording them.
    enabled: bool,
    /// Tenants and clusters removed by a reload: their last requests, finishing after it, are
    /// not recorded, so the series stay gone.
    retired_tenants: std::sync::RwLock<std::collections::HashSet<Label>>,
    retired_clusters: std::sync::RwLock<std::collections::HashSet<Label>>,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Histo,
    first_byte: ClusterHisto,
    bytes_sent: Family<TenantLabels, Counter>,
    in_flight: Family<TenantLabels, Gauge>,
    refusals: Family<RefusalLabels, Counter>,
    guard_refusals: Family<GuardLabels, Counter>,
    signin_failures: Family<TenantLabels, Counter>,
    signin_refusals: Family<ReasonLabels, Counter>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pool_connections: Family<ClusterLabels, Gauge>,
    cluster_throttled: Family<ClusterLabels, Counter>,
    cluster_cap: Family<ClusterLabels, Gauge>,
    limits_backend_up: Gauge,
    limits_backend_errors: Counter,
    limits_backend_transitions: Family<ResultLabels, Counter>,
    limits_fallbacks: Family<FallbackLabels, Counter>,
    connections_open: Gauge,
    connections_refused: Counter,
    connections_closed: Family<ReasonLabels, Counter>,
    shed: Family<ReasonLabels, Counter>,
    token_refreshes: Family<IdentityResultLabels, Counter>,
    token_expiry: Family<IdentityLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    token_expires_at: Mutex<HashMap<Label, Instant>>,
    jwks_refreshes: Family<ResultLabels, Counter>,
    config_reloads: Family<ResultLabels, Counter>,
    cpu_seconds: Family<TenantLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    execution_seconds: Family<TenantLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    scanned_bytes: Family<ScanLabels, Counter>,
    rows_returned: Family<TenantLabels, Counter>,
    results_cache_hits: Family<TenantLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::with_recording(true)
    }

    /// Metrics that requests do not record (nothing serves them).
    pub fn unread() -> Metrics {
        Metrics::with_recording(false)
    }

    fn with_recording(enabled: bool) -> Metrics {
        let mut registry = Registry::with_prefix("kqlgate");
        let metrics = Metrics {
            enabled,
            retired_tenants: Default::default(),
            retired_clusters: Default::default(),
            requests: Family::default(),
            duration: Family::new_with_constructor(seconds_histogram),
            first_byte: Family::new_with_constructor(seconds_histogram),
            bytes_sent: Family::default(),
            in_flight: Family::default(),
            refusals: Family::default(),
            guard_refusals: Family::default(),
            signin_failures: Family::default(),
            signin_refusals: Family::default(),
            upstream_errors: Family::default(),
            pool_connections: Family::default(),
            cluster_throttled: Family::default(),
            cluster_cap: Family::default(),
            limits_backend_up: Gauge::default(),
            limits_backend_errors: Counter::default(),
            limits_backend_transitions: Family::default(),
            limits_fallbacks: Family::default(),
            connections_open: Gauge::default(),
            connections_refused: Counter::default(),
            connections_closed: Family::default(),
            shed: Family::default(),
            token_refreshes: Family::default(),
            token_expiry: Family::default(),
            token_expires_at: Mutex::new(HashMap::new()),
            jwks_refreshes: Family::default(),
            config_reloads: Family::default(),
            cpu_seconds: Family::default(),
            execution_seconds: Family::default(),
            scanned_bytes: Family::default(),
            rows_returned: Family::default(),
            results_cache_hits: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "requests",
            "Requests answered, by tenant, route and HTTP status",
            metrics.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from a request's arrival to its answer's last byte",
            metrics.duration.clone(),
        );
        r.register(
            "upstream_first_byte_seconds",
            "Time from sending a request to the cluster to its answer's head",
            metrics.first_byte.clone(),
        );
        r.register(
            "response_bytes",
            "Bytes of answers sent to clients",
            metrics.bytes_sent.clone(),
        );
        r.register(
            "requests_in_flight",
            "Requests in flight, their streamed answers included",
            metrics.in_flight.clone(),
        );
        r.register(
            "refusals",
            "Requests kqlgate refused itself, by reason",
            metrics.refusals.clone(),
        );
        r.register(
            "guard_refusals",
            "Query texts the guard refused, by the construct it named",
            metrics.guard_refusals.clone(),
        );
        r.register(
            "signin_failures",
            "Credentials that did not verify (tenant empty: an unknown tenant id)",
            metrics.signin_failures.clone(),
        );
        r.register(
            "signin_refusals",
            "Sign-ins refused before their key was checked, by reason",
            metrics.signin_refusals.clone(),
        );
        r.register(
            "upstream_errors",
            "Failed exchanges with a cluster, by kind",
            metrics.upstream_errors.clone(),
        );
        r.register(
            "upstream_pool_connections",
            "Connections open to a cluster, pooled or in use",
            metrics.pool_connections.clone(),
        );
        r.register(
            "cluster_throttled",
            "Answers of 429 from a cluster",
            metrics.cluster_throttled.clone(),
        );
        r.register(
            "cluster_cap",
            "A cluster's cap on requests in flight now: max_concurrent, lower after 429s",
            metrics.cluster_cap.clone(),
        );
        r.register(
            "limits_backend_up",
            "1 while the Redis limits backend answers, 0 while limits are decided without it",
            metrics.limits_backend_up.clone(),
        );
        r.register(
            "limits_backend_errors",
            "Redis calls that failed or passed limits.timeout_ms",
            metrics.limits_backend_errors.clone(),
        );
        r.register(
            "limits_backend_transitions",
            "Changes of the Redis backend's state, to up or down",
            metrics.limits_backend_transitions.clone(),
        );
        r.register(
            "limits_fallbacks",
            "Limit decisions made without Redis, by decision and on_redis_failure mode",
            metrics.limits_fallbacks.clone(),
        );
        r.register(
            "connections_open",
            "Client connections open",
            metrics.connections_open.clone(),
        );
        r.register(
            "connections_refused",
            "Client connections closed at once past max_connections",
            metrics.connections_refused.clone(),
        );
        r.register(
            "connections_closed",
            "Client connections closed by a deadline, by which",
            metrics.connections_closed.clone(),
        );
        r.register(
            "load_shed",
            "Requests answered 503 because kqlgate was near a limit, by which",
            metrics.shed.clone(),
        );
        r.register(
            "token_refreshes",
            "Token requests for kqlgate's cluster identities, by result",
            metrics.token_refreshes.clone(),
        );
        r.register(
            "token_expiry_seconds",
            "Seconds until an identity's current token expires",
            metrics.token_expiry.clone(),
        );
        r.register(
            "jwks_refreshes",
            "Fetches of the AAD signing keys, by result",
            metrics.jwks_refreshes.clone(),
        );
        r.register(
            "config_reloads",
            "Config reloads, by result",
            metrics.config_reloads.clone(),
        );
        r.register(
            "query_cpu_seconds",
            "CPU time Kusto reported for the tenant's queries",
            metrics.cpu_seconds.clone(),
        );
        r.register(
            "query_execution_seconds",
            "Execution time Kusto reported for the tenant's queries",
            metrics.execution_seconds.clone(),
        );
        r.register(
            "query_scanned_bytes",
            "Bytes Kusto reported scanning from its shard cache, by tier and hit or miss",
            metrics.scanned_bytes.clone(),
        );
        r.register(
            "query_rows_returned",
            "Result rows Kusto reported returning",
            metrics.rows_returned.clone(),
        );
        r.register(
            "query_results_cache_hits",
            "Queries Kusto answered from its results cache",
            metrics.results_cache_hits.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        r.register("build_info", "kqlgate's version", build);
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The metrics in the OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        self.refresh_token_expiry();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The metrics in Prometheus's classic text format (0.0.4), for scrapers that do not ask for
    /// OpenMetrics and for `promtool check metrics`. prometheus-client writes OpenMetrics only;
    /// the two differ in counters' metadata (`# TYPE x counter` with samples `x_total`, where
    /// the classic format names `x_total` throughout) and the closing `# EOF`.
    pub fn encode_classic(&self) -> String {
        let open_metrics = self.encode();
        let counters: std::collections::HashSet<&str> = open_metrics
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(open_metrics.len());
        for line in open_metrics.lines() {
            if line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            let metadata = ["# HELP ", "# TYPE "]
                .into_iter()
                .find_map(|prefix| line.strip_prefix(prefix).map(|rest| (prefix, rest)));
            match metadata {
                Some((prefix, rest)) => {
                    let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                    let suffix = if counters.contains(name) {
                        "_total"
                    } else {
                        ""
                    };
                    out.push_str(&format!("{prefix}{name}{suffix} {tail}\n"));
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }

    // === Requests ===

    /// One answered request, when its answer ended.
    pub fn request(&self, done: &Finished) {
        if !self.enabled || self.retired(&self.retired_tenants, done.tenant.as_ref()) {
            return;
        }
        let tenant = done.tenant.clone().unwrap_or_else(|| Label::from(""));
        let route = done.endpoint.map_or("other", Endpoint::path);
        self.requests
            .get_or_create(&RequestLabels {
                tenant: tenant.clone(),
                route,
                status: done.status,
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabels {
                tenant: tenant.clone(),
                route,
            })
            .observe(done.duration.as_secs_f64());
        self.bytes_sent
            .get_or_create(&TenantLabels {
                tenant: tenant.clone(),
            })
            .inc_by(done.bytes_out);
        if let Some(reason) = done.refusal {
            self.refusals
                .get_or_create(&RefusalLabels {
                    tenant: tenant.clone(),
                    reason,
                })
                .inc();
        }
        if let Some(construct) = done.guard_construct {
            self.guard_refusals
                .get_or_create(&GuardLabels {
                    tenant: tenant.clone(),
                    construct,
                })
                .inc();
        }
        let cluster = done
            .cluster
            .as_ref()
            .filter(|c| !self.retired(&self.retired_clusters, Some(c)));
        if let Some(cluster) = cluster {
            let labels = ClusterLabels {
                cluster: cluster.clone(),
            };
            if let Some(first_byte) = done.first_byte {
                self.first_byte
                    .get_or_create(&labels)
                    .observe(first_byte.as_secs_f64());
            }
            if done.upstream_status == Some(429) {
                self.cluster_throttled.get_or_create(&labels).inc();
            }
            let kind = match done.upstream_status {
                Some(status) if status >= 500 => Some("5xx"),
                _ => done.upstream_error,
            };
            if let Some(kind) = kind {
                self.upstream_error(cluster, kind);
            }
        }
        if let Some(cost) = &done.cost {
            self.cost(&tenant, cost);
        }
    }

    fn cost(&self, tenant: &Label, cost: &QueryCost) {
        let labels = TenantLabels {
            tenant: tenant.clone(),
        };
        if let Some(cpu) = cost.cpu_seconds {
            self.cpu_seconds.get_or_create(&labels).inc_by(cpu);
        }
        if let Some(execution) = cost.execution_seconds {
            self.execution_seconds
                .get_or_create(&labels)
                .inc_by(execution);
        }
        for (cache, result, bytes) in [
            ("hot", "hit", cost.cache_hot_hit_bytes),
            ("hot", "miss", cost.cache_hot_miss_bytes),
            ("cold", "hit", cost.cache_cold_hit_bytes),
            ("cold", "miss", cost.cache_cold_miss_bytes),
        ] {
            if let Some(bytes) = bytes {
                let labels = ScanLabels {
                    tenant: tenant.clone(),
                    cache,
                    result,
                };
                self.scanned_bytes.get_or_create(&labels).inc_by(bytes);
            }
        }
        if let Some(rows) = cost.rows_returned {
            self.rows_returned.get_or_create(&labels).inc_by(rows);
        }
        if cost.from_results_cache {
            self.results_cache_hits.get_or_create(&labels).inc();
        }
    }

    /// The tenant's requests in flight, one more until the returned guard drops.
    pub fn in_flight(self: &Arc<Metrics>, tenant: &Label) -> Option<InFlight> {
        if !self.enabled {
            return None;
        }
        let gauge = self
            .in_flight
            .get_or_create(&TenantLabels {
                tenant: tenant.clone(),
            })
            .clone();
        gauge.inc();
        Some(InFlight { gauge })
    }

    // === Sign-ins, upstream, connections ===

    /// A credential that did not verify; `tenant` only when it is a configured one.
    pub fn signin_failure(&self, tenant: Option<&Label>) {
        let tenant = tenant.cloned().unwrap_or_else(|| Label::from(""));
        self.signin_failures
            .get_or_create(&TenantLabels { tenant })
            .inc();
    }

    pub fn signin_refused(&self, reason: &'static str) {
        self.signin_refusals
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn upstream_error(&self, cluster: &Label, kind: &'static str) {
        let labels = UpstreamErrorLabels {
            cluster: cluster.clone(),
            kind,
        };
        self.upstream_errors.get_or_create(&labels).inc();
    }

    /// A connection to `cluster` opened; closed again when the returned guard drops.
    pub fn pool_connection(self: &Arc<Metrics>, cluster: &Label) -> PoolConnection {
        let gauge = self
            .pool_connections
            .get_or_create(&ClusterLabels {
                cluster: cluster.clone(),
            })
            .clone();
        gauge.inc();
        PoolConnection { gauge }
    }

    // === Limits ===

    pub fn cluster_cap(&self, cluster: &Label, cap: u32) {
        self.cluster_cap
            .get_or_create(&ClusterLabels {
                cluster: cluster.clone(),
            })
            .set(i64::from(cap));
    }

    /// The Redis backend is in use (up until it fails).
    pub fn limits_backend_started(&self) {
        self.limits_backend_up.set(1);
    }

    /// The Redis backend went up or down.
    pub fn limits_backend_up(&self, up: bool) {
        let before = self.limits_backend_up.set(i64::from(up));
        if before != i64::from(up) {
            let state = if up { "up" } else { "down" };
            self.limits_backend_transitions
                .get_or_create(&ResultLabels { result: state })
                .inc();
        }
    }

    pub fn limits_backend_error(&self) {
        self.limits_backend_errors.inc();
    }

    pub fn limits_fallback(&self, decision: &'static str, mode: &'static str) {
        self.limits_fallbacks
            .get_or_create(&FallbackLabels { decision, mode })
            .inc();
    }

    pub fn connection_opened(&self) {
        self.connections_open.inc();
    }

    pub fn connection_ended(&self) {
        self.connections_open.dec();
    }

    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    pub fn connection_closed(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn load_shed(&self, reason: &'static str) {
        self.shed.get_or_create(&ReasonLabels { reason }).inc();
    }

    // === Identities, keys, reloads ===

    /// A token request of `identity` and how it went; `expires_at`: the token it got.
    pub fn token_refresh(&self, identity: &Label, expires_at: Option<Instant>) {
        let result = if expires_at.is_some() {
            "success"
        } else {
            "failure"
        };
        let labels = IdentityResultLabels {
            identity: identity.clone(),
            result,
        };
        self.token_refreshes.get_or_create(&labels).inc();
        if let Some(at) = expires_at {
            let mut expiries = self
                .token_expires_at
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            expiries.insert(identity.clone(), at);
        }
    }

    fn refresh_token_expiry(&self) {
        let expiries = self
            .token_expires_at
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        for (identity, at) in expiries.iter() {
            let left = at.saturating_duration_since(now).as_secs_f64();
            self.token_expiry
                .get_or_create(&IdentityLabels {
                    identity: identity.clone(),
                })
                .set(left);
        }
    }

    pub fn jwks_refresh(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.jwks_refreshes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.config_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Drops every series of a tenant that is no longer configured.
    fn retired(
        &self,
        set: &std::sync::RwLock<std::collections::HashSet<Label>>,
        label: Option<&Label>,
    ) -> bool {
        label.is_some_and(|label| {
            let set = set.read().unwrap_or_else(|e| e.into_inner());
            !set.is_empty() && set.contains(label)
        })
    }

    /// A tenant or cluster in the table (again): its series are recorded.
    pub fn configured(&self, tenant: Option<&Label>, cluster: Option<&Label>) {
        for (set, label) in [
            (&self.retired_tenants, tenant),
            (&self.retired_clusters, cluster),
        ] {
            if let Some(label) = label {
                if self.retired(set, Some(label)) {
                    set.write().unwrap_or_else(|e| e.into_inner()).remove(label);
                }
            }
        }
    }

    pub fn forget_tenant(&self, tenant: &str) {
        let tenant: Label = tenant.into();
        self.retired_tenants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant.clone());
        let routes = Endpoint::ALL.iter().map(|e| e.path()).chain(["other"]);
        for route in routes {
            for status in 100..=599 {
                self.requests.remove(&RequestLabels {
                    tenant: tenant.clone(),
                    route,
                    status,
                });
            }
            self.duration.remove(&RouteLabels {
                tenant: tenant.clone(),
                route,
            });
        }
        for reason in REFUSAL_REASONS {
            self.refusals.remove(&RefusalLabels {
                tenant: tenant.clone(),
                reason,
            });
        }
        let constructs = catalogue::entries()
            .map(|e| e.name)
            .chain(crate::kql::RULE_LABELS);
        for construct in constructs {
            self.guard_refusals.remove(&GuardLabels {
                tenant: tenant.clone(),
                construct,
            });
        }
        for cache in ["hot", "cold"] {
            for result in ["hit", "miss"] {
                self.scanned_bytes.remove(&ScanLabels {
                    tenant: tenant.clone(),
                    cache,
                    result,
                });
            }
        }
        let labels = TenantLabels { tenant };
        for family in [
            &self.bytes_sent,
            &self.signin_failures,
            &self.rows_returned,
            &self.results_cache_hits,
        ] {
            family.remove(&labels);
        }
        self.in_flight.remove(&labels);
        self.cpu_seconds.remove(&labels);
        self.execution_seconds.remove(&labels);
    }

    /// Drops every series of a cluster that is no longer configured.
    pub fn forget_cluster(&self, cluster: &str) {
        let labels = ClusterLabels {
            cluster: cluster.into(),
        };
        self.retired_clusters
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(labels.cluster.clone());
        self.first_byte.remove(&labels);
        self.cluster_throttled.remove(&labels);
        self.cluster_cap.remove(&labels);
        self.pool_connections.remove(&labels);
        for kind in UPSTREAM_ERRORS {
            let labels = UpstreamErrorLabels {
                cluster: labels.cluster.clone(),
                kind,
            };
            self.upstream_errors.remove(&labels);
        }
    }
}

/// What a request's record says when its answer ended, for the metrics.
pub struct Finished {
    pub tenant: Option<Label>,
    pub endpoint: Option<Endpoint>,
    pub status: u16,
    pub duration: Duration,
    pub bytes_out: u64,
    /// kqlgate's own refusal, one of [`REFUSAL_REASONS`].
    pub refusal: Option<&'static str>,
    pub guard_construct: Option<&'static str>,
    pub cluster: Option<Label>,
    pub first_byte: Option<Duration>,
    pub upstream_status: Option<u16>,
    /// One of [`UPSTREAM_ERRORS`].
    pub upstream_error: Option<&'static str>,
    pub cost: Option<QueryCost>,
}

/// A request counted in its tenant's `requests_in_flight`.
pub struct InFlight {
    /// The series' own gauge: a series removed meanwhile (its tenant is gone) stays removed.
    gauge: Gauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// A connection counted in its cluster's `upstream_pool_connections`.
pub struct PoolConnection {
    gauge: Gauge,
}

impl Drop for PoolConnection {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(tenant: &str, status: u16) -> Finished {
        Finished {
            tenant: Some(tenant.into()),
            endpoint: Some(Endpoint::QueryV2),
            status,
            duration: Duration::from_millis(12),
            bytes_out: 100,
            refusal: (status == 429).then_some("rate"),
            guard_construct: None,
            cluster: Some("main".into()),
            first_byte: Some(Duration::from_millis(5)),
            upstream_status: Some(status),
            upstream_error: None,
            cost: None,
        }
    }

    #[test]
    fn requests_are_counted_per_tenant_route_and_status() {
        let metrics = Metrics::new();
        metrics.request(&finished("contoso", 200));
        metrics.request(&finished("contoso", 200));
        metrics.request(&finished("fabrikam", 429));
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"kqlgate_requests_total{tenant="contoso",route="/v2/rest/query",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"kqlgate_refusals_total{tenant="fabrikam",reason="rate"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kqlgate_cluster_throttled_total{cluster="main"} 1"#),
            "{text}"
        );
        assert!(text.contains("kqlgate_build_info"), "{text}");
    }

    #[test]
    fn a_forgotten_tenant_leaves_no_series() {
        let metrics = Metrics::new();
        metrics.request(&finished("gone", 200));
        let mut refused = finished("gone", 403);
        refused.refusal = Some("guard");
        refused.guard_construct = Some("cluster");
        metrics.request(&refused);
        metrics.signin_failure(Some(&"gone".into()));
        metrics.request(&finished("stays", 200));
        assert!(metrics.encode().contains("tenant=\"gone\""));
        metrics.forget_tenant("gone");
        let text = metrics.encode();
        assert!(!text.contains("tenant=\"gone\""), "{text}");
        assert!(text.contains("tenant=\"stays\""), "{text}");
    }

    #[test]
    fn token_expiry_is_counted_down_at_scrape_time() {
        let metrics = Metrics::new();
        let identity: Label = "client-secret:app".into();
        metrics.token_refresh(&identity, Some(Instant::now() + Duration::from_secs(100)));
        let text = metrics.encode();
        let line = text
            .lines()
            .find(|l| l.starts_with("kqlgate_token_expiry_seconds{"))
            .unwrap();
        let left: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((98.0..=100.0).contains(&left), "{line}");
    }
}
