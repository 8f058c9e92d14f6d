//! Limits shared by every replica, kept in Redis: rate buckets (GCRA on Redis's clock), leases
//! for requests in flight (tenants' and clusters'), sign-in failure budgets and the global
//! ceiling on key checks. One Lua script per decision (the `.lua` files beside this module,
//! each documenting its keys, arguments and cost), so a decision is one round trip.
//!
//! Every call is bounded by `timeout_ms`. A circuit breaker stops asking a Redis that fails:
//! after [`FAILURES_TO_OPEN`] failures in a row calls fail at once (the caller falls back, per
//! `on_redis_failure`) while a probe pings Redis every [`PROBE_INTERVAL`] and closes the
//! breaker when it answers. Each transition is logged and counted.
//!
//! Leases are renewed by one background task for all requests in flight, in pipelined
//! batches, and released through a channel drained by another; a replica that dies stops
//! renewing, and its leases expire after `lease_seconds`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{FromRedisValue, Script};
use tokio::sync::mpsc;

use crate::config::{OnRedisFailure, RateLimit, RedisSettings};
use crate::services::metrics::Metrics;

/// Failures in a row after which the breaker opens.
pub const FAILURES_TO_OPEN: u32 = 3;
/// How often an open breaker asks Redis whether it is back.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Redis did not answer in time, or answered with an error: decide without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

struct Scripts {
    gcra: Script,
    lease_acquire: Script,
    lease_renew: Script,
    lease_release: Script,
    cluster_acquire: Script,
    cluster_release: Script,
}

impl Scripts {
    fn load() -> Scripts {
        Scripts {
            gcra: Script::new(include_str!("gcra.lua")),
            lease_acquire: Script::new(include_str!("lease_acquire.lua")),
            lease_renew: Script::new(include_str!("lease_renew.lua")),
            lease_release: Script::new(include_str!("lease_release.lua")),
            cluster_acquire: Script::new(include_str!("cluster_acquire.lua")),
            cluster_release: Script::new(include_str!("cluster_release.lua")),
        }
    }
}

/// A lease held in a sorted set: renewed while held, released when its holder drops it.
#[derive(Clone)]
struct HeldLease {
    set: Arc<str>,
    /// The cluster's counts hash, which lives as long as its lease set.
    companion: Option<Arc<str>>,
    member: String,
    /// `Some(tenant)`: a cluster lease, released with cluster_release.lua.
    cluster_tenant: Option<Arc<str>>,
}

pub struct SharedLimits {
    settings: RedisSettings,
    connection: ConnectionManager,
    scripts: Scripts,
    /// Failures in a row; at [`FAILURES_TO_OPEN`] the breaker opens.
    failures: AtomicU32,
    open: AtomicBool,
    /// Unique per process, so lease ids of replicas never collide.
    replica: String,
    next_lease: AtomicU64,
    held: Mutex<HashMap<u64, HeldLease>>,
    releases: mpsc::UnboundedSender<HeldLease>,
    metrics: Arc<Metrics>,
}

/// The answer to a cluster lease request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterAnswer {
    pub admitted: bool,
    pub tenant_count: u32,
    pub total: u32,
}

impl SharedLimits {
    /// Connects lazily (a Redis that is down at start is a Redis that is down: the breaker
    /// handles it) and starts the renewal, release and probe tasks. Must run inside Tokio.
    pub fn start(
        settings: RedisSettings,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<SharedLimits>> {
        let mut info = redis::IntoConnectionInfo::into_connection_info(settings.url.as_str())?;
        if let Some(password) = &settings.password {
            let redis = info
                .redis_settings()
                .clone()
                .set_password(password.expose());
            info = info.set_redis_settings(redis);
        }
        let client = redis::Client::open(info)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout.max(Duration::from_millis(200))))
            .set_response_timeout(Some(settings.timeout.max(Duration::from_millis(200))))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        let (releases, release_queue) = mpsc::unbounded_channel();
        let shared = Arc::new(SharedLimits {
            settings,
            connection,
            scripts: Scripts::load(),
            failures: AtomicU32::new(0),
            open: AtomicBool::new(false),
            replica: format!("{:016x}", rand::random::<u64>()),
            next_lease: AtomicU64::new(0),
            held: Mutex::new(HashMap::new()),
            releases,
            metrics,
        });
        shared.metrics.limits_backend_started();
        tokio::spawn(renew_leases(Arc::downgrade(&shared)));
        tokio::spawn(release_leases(Arc::downgrade(&shared), release_queue));
        tokio::spawn(probe(Arc::downgrade(&shared)));
        Ok(shared)
    }

    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// What a `decision` does without Redis (`on_redis_failure`); counted.
    pub fn fallback(&self, decision: &'static str) -> OnRedisFailure {
        let mode = self.settings.on_failure;
        self.metrics.limits_fallback(decision, mode.name());
        mode
    }

    /// `limit` ÷ `replicas_hint`, rounded up: this replica's share while Redis is away.
    pub fn share(&self, limit: u32) -> u32 {
        limit.div_ceil(self.settings.replicas_hint).max(1)
    }

    /// A rate's share: the rate and the burst divided among the replicas.
    pub fn share_rate(&self, rate: RateLimit) -> RateLimit {
        RateLimit {
            per_second: rate.per_second / f64::from(self.settings.replicas_hint),
            burst: self.share(rate.burst),
        }
    }

    /// Whether calls go to Redis now (the breaker is closed).
    pub fn available(&self) -> bool {
        !self.open.load(Ordering::Relaxed)
    }

    /// `kqlgate:{tag}:name`: every key of one tenant (or cluster, or the sign-in budgets) in
    /// one Redis Cluster slot.
    pub fn key(&self, tag: &str, name: &str) -> String {
        format!("{}{{{tag}}}:{name}", self.settings.key_prefix)
    }

    /// One GCRA decision (gcra.lua): `Ok(Ok(()))` allowed, `Ok(Err(wait))` refused.
    pub async fn gcra(
        &self,
        key: &str,
        per_second: f64,
        burst: u32,
        cost: u32,
        spend: bool,
    ) -> Result<Result<(), Duration>, Unavailable> {
        let interval_us = (1e6 / per_second).round().max(1.0) as u64;
        let mut invocation = self.scripts.gcra.key(key);
        invocation.arg(interval_us).arg(burst).arg(cost);
        if spend {
            invocation.arg("spend");
        }
        let (allowed, wait_us): (i64, i64) = self.call(invocation).await?;
        Ok(if allowed == 1 {
            Ok(())
        } else {
            Err(Duration::from_micros(wait_us.max(0) as u64))
        })
    }

    /// One of at most `limit` leases in the set `key` (lease_acquire.lua), renewed until the
    /// returned lease drops.
    pub async fn acquire(
        self: &Arc<Self>,
        key: &str,
        limit: u32,
    ) -> Result<Option<Lease>, Unavailable> {
        let id = self.lease_id();
        let member = format!("{}:{id}", self.replica);
        let mut invocation = self.scripts.lease_acquire.key(key);
        invocation.arg(limit).arg(&member).arg(self.lease_ms());
        let (acquired, _count): (i64, i64) = self.call(invocation).await?;
        if acquired != 1 {
            return Ok(None);
        }
        Ok(Some(self.hold(
            id,
            HeldLease {
                set: key.into(),
                companion: None,
                member,
                cluster_tenant: None,
            },
        )))
    }

    /// A place under a cluster's cap, with fair shares across tenants (cluster_acquire.lua).
    pub async fn acquire_cluster(
        self: &Arc<Self>,
        cluster_tag: &str,
        tenant: &str,
        cap: u32,
        wait_window: Duration,
    ) -> Result<(ClusterAnswer, Option<Lease>), Unavailable> {
        let leases = self.key(cluster_tag, "leases");
        let counts = self.key(cluster_tag, "counts");
        let waiting = self.key(cluster_tag, "waiting");
        let id = self.lease_id();
        let lease_id = format!("{}:{id}", self.replica);
        let mut invocation = self.scripts.cluster_acquire.key(&leases);
        invocation
            .key(&counts)
            .key(&waiting)
            .arg(cap)
            .arg(tenant)
            .arg(&lease_id)
            .arg(self.lease_ms())
            .arg(wait_window.as_millis() as u64);
        let (admitted, tenant_count, total, _active): (i64, i64, i64, i64) =
            self.call(invocation).await?;
        let answer = ClusterAnswer {
            admitted: admitted == 1,
            tenant_count: tenant_count.max(0) as u32,
            total: total.max(0) as u32,
        };
        let lease = answer.admitted.then(|| {
            self.hold(
                id,
                HeldLease {
                    set: leases.into(),
                    companion: Some(counts.into()),
                    member: format!("{tenant}|{lease_id}"),
                    cluster_tenant: Some(tenant.into()),
                },
            )
        });
        Ok((answer, lease))
    }

    fn lease_id(&self) -> u64 {
        self.next_lease.fetch_add(1, Ordering::Relaxed)
    }

    fn lease_ms(&self) -> u64 {
        self.settings.lease.as_millis() as u64
    }

    fn hold(self: &Arc<Self>, id: u64, lease: HeldLease) -> Lease {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, lease);
        Lease {
            shared: self.clone(),
            id,
        }
    }

    /// Runs one script within the timeout, through the breaker.
    async fn call<T: FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, Unavailable> {
        if !self.available() {
            return Err(Unavailable);
        }
        let mut connection = self.connection.clone();
        let outcome = tokio::time::timeout(
            self.settings.timeout,
            invocation.invoke_async::<T>(&mut connection),
        )
        .await;
        match outcome {
            Ok(Ok(value)) => {
                self.failures.store(0, Ordering::Relaxed);
                Ok(value)
            }
            Ok(Err(error)) => {
                self.failed(&error.to_string());
                Err(Unavailable)
            }
            Err(_) => {
                self.failed("no answer within limits.timeout_ms");
                Err(Unavailable)
            }
        }
    }

    fn failed(&self, cause: &str) {
        self.metrics.limits_backend_error();
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= FAILURES_TO_OPEN && !self.open.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                %cause,
                on_redis_failure = self.settings.on_failure.name(),
                "redis unavailable: limits decided without it until it answers again"
            );
            self.metrics.limits_backend_up(false);
        }
    }

    fn recovered(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if self.open.swap(false, Ordering::Relaxed) {
            tracing::info!("redis answers again: limits shared through it");
            self.metrics.limits_backend_up(true);
        }
    }
}

/// A lease in Redis, renewed in the background until dropped, then released.
pub struct Lease {
    shared: Arc<SharedLimits>,
    id: u64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let held = self
            .shared
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        if let Some(held) = held {
            let _ = self.shared.releases.send(held);
        }
    }
}

/// Renews every held lease a third of a lease's life before it would end.
async fn renew_leases(shared: std::sync::Weak<SharedLimits>) {
    let period = match shared.upgrade() {
        Some(s) => s.settings.lease / 3,
        None => return,
    };
    let mut tick = tokio::time::interval(period.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let leases: Vec<HeldLease> = shared
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        if leases.is_empty() || !shared.available() {
            continue;
        }
        let mut pipeline = redis::pipe();
        for lease in &leases {
            let mut keys = vec![lease.set.to_string()];
            keys.extend(lease.companion.iter().map(|c| c.to_string()));
            pipeline
                .cmd("EVALSHA")
                .arg(shared.scripts.lease_renew.get_hash())
                .arg(keys.len())
                .arg(keys)
                .arg(&lease.member)
                .arg(shared.lease_ms())
                .ignore();
        }
        run_pipeline(&shared, pipeline, &[&shared.scripts.lease_renew]).await;
    }
}

/// Releases dropped leases, batching what has queued up into one round trip.
async fn release_leases(
    shared: std::sync::Weak<SharedLimits>,
    mut queue: mpsc::UnboundedReceiver<HeldLease>,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = queue.try_recv() {
            batch.push(more);
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if !shared.available() {
            continue; // they expire on their own
        }
        let mut pipeline = redis::pipe();
        for lease in &batch {
            match (&lease.cluster_tenant, &lease.companion) {
                (Some(tenant), Some(counts)) => {
                    let member = lease.member.split_once('|').map_or("", |(_, id)| id);
                    pipeline
                        .cmd("EVALSHA")
                        .arg(shared.scripts.cluster_release.get_hash())
                        .arg(2)
                        .arg(&*lease.set)
                        .arg(&**counts)
                        .arg(&**tenant)
                        .arg(member)
                        .ignore();
                }
                _ => {
                    pipeline
                        .cmd("EVALSHA")
                        .arg(shared.scripts.lease_release.get_hash())
                        .arg(1)
                        .arg(&*lease.set)
                        .arg(&lease.member)
                        .ignore();
                }
            }
        }
        run_pipeline(
            &shared,
            pipeline,
            &[
                &shared.scripts.cluster_release,
                &shared.scripts.lease_release,
            ],
        )
        .await;
    }
}

/// Runs a pipeline of EVALSHAs; on NOSCRIPT (a restarted or flushed Redis) loads the scripts
/// and runs it once more. Background work: failures count against the breaker, like a
/// request's would.
async fn run_pipeline(shared: &SharedLimits, pipeline: redis::Pipeline, scripts: &[&Script]) {
    let mut connection = shared.connection.clone();
    let limit = shared.settings.timeout.max(Duration::from_millis(500));
    let first = tokio::time::timeout(limit, pipeline.query_async::<()>(&mut connection)).await;
    let error = match first {
        Ok(Ok(())) => return,
        Ok(Err(error))
            if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
        {
            error
        }
        Ok(Err(error)) => return shared.failed(&error.to_string()),
        Err(_) => return shared.failed("no answer within limits.timeout_ms"),
    };
    tracing::debug!(%error, "loading the limit scripts into redis");
    for script in scripts {
        let invocation = script.prepare_invoke();
        let load = invocation.load_async(&mut connection);
        if tokio::time::timeout(limit, load).await.is_err() {
            return shared.failed("no answer within limits.timeout_ms");
        }
    }
    if let Ok(Err(error)) =
        tokio::time::timeout(limit, pipeline.query_async::<()>(&mut connection)).await
    {
        shared.failed(&error.to_string());
    }
}

/// While the breaker is open, pings Redis every PROBE_INTERVAL and closes it on an answer.
async fn probe(shared: std::sync::Weak<SharedLimits>) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.available() {
            continue;
        }
        let mut connection = shared.connection.clone();
        let command = redis::cmd("PING");
        let ping = command.query_async::<String>(&mut connection);
        let limit = shared.settings.timeout.max(Duration::from_millis(100));
        if let Ok(Ok(_)) = tokio::time::timeout(limit, ping).await {
            shared.recovered();
        }
    }
}
