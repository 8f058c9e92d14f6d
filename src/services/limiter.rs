//! The limit decisions a request meets: its tenant's rate, its tenant's requests in flight, and
//! its cluster's cap — decided in this replica (`[limits] backend = "local"`) or in Redis,
//! shared by every replica (`"redis"`), with `on_redis_failure` deciding when Redis cannot.
//!
//! The cluster cap (`[clusters.NAME] max_concurrent`) has fair shares: once a tenant has been
//! turned away, a tenant at or above its share (cap ÷ tenants wanting the cluster) is refused
//! while the others wait, so a flooding tenant cannot take every freed place. The cap itself
//! adapts to the cluster: a 429 from it halves the cap (at most once per
//! [`DECREASE_SPACING`]), each successful (2xx) answer raises it by 1/cap, back to
//! `max_concurrent` (AIMD, as TCP does for congestion); other failures change nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::Clock;
use crate::config::{OnRedisFailure, RateLimit};
use crate::services::limits::{Slot, TenantLimits, TenantState};
use crate::services::metrics::{Label, Metrics};
use crate::services::shared::{Lease, SharedLimits, Unavailable};

/// The shortest time between two decreases of a cluster's cap: the 429s of one burst are one
/// signal, not many.
pub const DECREASE_SPACING: Duration = Duration::from_secs(1);
/// How often a request queued for a cluster place asks Redis again (a local release wakes it
/// at once).
const SHARED_QUEUE_POLL: Duration = Duration::from_millis(10);

/// Why a limit refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Over the rate: a token is back after this long.
    Rate(Duration),
    /// The tenant has `max_concurrent` requests in flight.
    Concurrency,
    /// The cluster is at its cap (the cap now).
    Cluster(u32),
    /// Redis did not answer and `on_redis_failure = "deny"`.
    Unavailable,
}

/// A request's places among its tenant's and its cluster's requests in flight, given back when
/// the answer ends.
pub struct Admission {
    _slot: Slot,
    _lease: Option<Lease>,
}

pub struct ClusterAdmission {
    _local: ClusterCount,
    _lease: Option<Lease>,
}

pub struct Limiter {
    clock: Arc<dyn Clock>,
    tenants: TenantLimits,
    clusters: Mutex<HashMap<String, Arc<ClusterState>>>,
    shared: Option<Arc<SharedLimits>>,
    metrics: Arc<Metrics>,
}

impl Limiter {
    pub fn new(
        clock: Arc<dyn Clock>,
        shared: Option<Arc<SharedLimits>>,
        metrics: Arc<Metrics>,
    ) -> Limiter {
        Limiter {
            tenants: TenantLimits::new(clock.clone()),
            clock,
            clusters: Mutex::new(HashMap::new()),
            shared,
            metrics,
        }
    }

    pub fn shared(&self) -> Option<&Arc<SharedLimits>> {
        self.shared.as_ref()
    }

    pub fn tenant_state(&self, id: &str) -> Arc<TenantState> {
        self.tenants.state_for(id)
    }

    /// The cap state of cluster `name`: kept across reloads, like a tenant's.
    pub fn cluster_state(&self, name: &str) -> Arc<ClusterState> {
        let mut clusters = self.clusters.lock().unwrap_or_else(|e| e.into_inner());
        clusters
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(ClusterState::new(name)))
            .clone()
    }

    /// Forgets tenants and clusters the table no longer has.
    pub fn retain(&self, tenant: impl Fn(&str) -> bool, cluster: impl Fn(&str) -> bool) {
        self.tenants.retain(tenant);
        let mut clusters = self.clusters.lock().unwrap_or_else(|e| e.into_inner());
        clusters.retain(|name, _| cluster(name));
    }

    // === A tenant's rate ===

    pub async fn take_rate(
        &self,
        id: &str,
        state: &TenantState,
        rate: Option<RateLimit>,
    ) -> Result<(), Refusal> {
        let Some(rate) = rate else {
            return Ok(());
        };
        if let Some(shared) = &self.shared {
            let key = shared.key(id, "rate");
            match shared
                .gcra(&key, rate.per_second, rate.burst, 1, false)
                .await
            {
                Ok(decision) => return decision.map_err(Refusal::Rate),
                Err(Unavailable) => match shared.fallback("rate") {
                    OnRedisFailure::Allow => return Ok(()),
                    OnRedisFailure::Deny => return Err(Refusal::Unavailable),
                    OnRedisFailure::Local => {
                        return self.local_rate(state, shared.share_rate(rate))
                    }
                },
            }
        }
        self.local_rate(state, rate)
    }

    fn local_rate(&self, state: &TenantState, rate: RateLimit) -> Result<(), Refusal> {
        self.tenants
            .take_rate(state, Some(rate))
            .map_err(Refusal::Rate)
    }

    /// Whether this replica alone already holds the tenant's `max_concurrent` (a check that
    /// takes nothing, made before the body is read).
    pub fn has_room(&self, state: &TenantState, max_concurrent: Option<u32>) -> bool {
        self.tenants.has_room(state, max_concurrent)
    }

    // === A tenant's requests in flight ===

    pub async fn take_slot(
        &self,
        id: &str,
        state: &Arc<TenantState>,
        max_concurrent: Option<u32>,
    ) -> Result<Admission, Refusal> {
        let (Some(shared), Some(max)) = (&self.shared, max_concurrent) else {
            let slot =
                TenantLimits::take_slot(state, max_concurrent).ok_or(Refusal::Concurrency)?;
            return Ok(Admission {
                _slot: slot,
                _lease: None,
            });
        };
        let key = shared.key(id, "leases");
        let (lease, local_limit) = match shared.acquire(&key, max).await {
            Ok(Some(lease)) => (Some(lease), None),
            Ok(None) => return Err(Refusal::Concurrency),
            Err(Unavailable) => match shared.fallback("concurrency") {
                OnRedisFailure::Allow => (None, None),
                OnRedisFailure::Deny => return Err(Refusal::Unavailable),
                OnRedisFailure::Local => (None, Some(shared.share(max))),
            },
        };
        // Counted here too: this replica's share is what it enforces while Redis is away.
        let slot = TenantLimits::take_slot(state, local_limit).ok_or(Refusal::Concurrency)?;
        Ok(Admission {
            _slot: slot,
            _lease: lease,
        })
    }

    // === A cluster's cap ===

    /// A place under the cluster's cap, waiting up to `queue_timeout` for one.
    pub async fn take_cluster(
        &self,
        cluster: &Arc<ClusterState>,
        tenant: &str,
        max_concurrent: Option<u32>,
        queue_timeout: Duration,
    ) -> Result<Option<ClusterAdmission>, Refusal> {
        let Some(max) = max_concurrent else {
            return Ok(None);
        };
        let deadline = self.clock.elapsed() + queue_timeout;
        // A refused tenant counts as waiting for this long: longer than a queued request's
        // retries, and than a client's retry after a 429's Retry-After of 1 s.
        let window = (queue_timeout * 2).max(Duration::from_secs(1));
        loop {
            let woken = cluster.changed.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let cap = cluster.cap(max, &self.metrics);
            let mut poll = None;
            match self.try_cluster(cluster, tenant, cap, window).await? {
                Some(admission) => return Ok(Some(admission)),
                None if self.shared.as_ref().is_some_and(|s| s.available()) => {
                    poll = Some(SHARED_QUEUE_POLL);
                }
                None => {}
            }
            let now = self.clock.elapsed();
            if now >= deadline {
                return Err(Refusal::Cluster(cap));
            }
            let wait = poll.map_or(deadline - now, |p| p.min(deadline - now));
            let _ = tokio::time::timeout(wait, woken).await;
        }
    }

    async fn try_cluster(
        &self,
        cluster: &Arc<ClusterState>,
        tenant: &str,
        cap: u32,
        window: Duration,
    ) -> Result<Option<ClusterAdmission>, Refusal> {
        let now = self.clock.elapsed();
        if let Some(shared) = &self.shared {
            match shared
                .acquire_cluster(&cluster.tag, tenant, cap, window)
                .await
            {
                Ok((_, Some(lease))) => {
                    return Ok(Some(ClusterAdmission {
                        _local: cluster.count(tenant),
                        _lease: Some(lease),
                    }))
                }
                Ok((_, None)) => return Ok(None),
                Err(Unavailable) => match shared.fallback("cluster") {
                    OnRedisFailure::Allow => {
                        return Ok(Some(ClusterAdmission {
                            _local: cluster.count(tenant),
                            _lease: None,
                        }))
                    }
                    OnRedisFailure::Deny => return Err(Refusal::Unavailable),
                    OnRedisFailure::Local => {
                        let share = shared.share(cap);
                        return Ok(cluster.try_local(tenant, share, now, window).map(|local| {
                            ClusterAdmission {
                                _local: local,
                                _lease: None,
                            }
                        }));
                    }
                },
            }
        }
        Ok(cluster
            .try_local(tenant, cap, now, window)
            .map(|local| ClusterAdmission {
                _local: local,
                _lease: None,
            }))
    }

    /// The cluster answered: a 429 lowers its cap, a success raises it back.
    pub fn cluster_answered(
        &self,
        cluster: &ClusterState,
        max: Option<u32>,
        status: http::StatusCode,
    ) {
        let Some(max) = max else {
            return;
        };
        let throttled = status == http::StatusCode::TOO_MANY_REQUESTS;
        if throttled || status.is_success() {
            cluster.adapt(max, throttled, self.clock.elapsed(), &self.metrics);
        }
    }
}

/// One cluster's requests in flight in this replica, by tenant, and its adaptive cap.
pub struct ClusterState {
    name: String,
    label: Label,
    /// `{…}` hash tag of the cluster's Redis keys.
    tag: String,
    counts: Mutex<LocalCounts>,
    /// Told when a place frees up, so queued requests try again.
    changed: Notify,
    aimd: Mutex<Aimd>,
}

#[derive(Default)]
struct LocalCounts {
    total: u32,
    by_tenant: HashMap<String, u32>,
    /// Tenants turned away recently, and until when they count as waiting.
    waiting: HashMap<String, Duration>,
}

/// `None`: at `max_concurrent`; `Some(cap)`: lowered after a 429.
#[derive(Default)]
struct Aimd {
    lowered: Option<f64>,
    last_decrease: Option<Duration>,
}

impl ClusterState {
    fn new(name: &str) -> ClusterState {
        ClusterState {
            name: name.to_owned(),
            label: Label::from(name),
            tag: format!("cluster:{}", name.replace(['{', '}'], "_")),
            counts: Mutex::default(),
            changed: Notify::new(),
            aimd: Mutex::default(),
        }
    }

    /// The cap now: `max`, or less after the cluster throttled.
    pub fn cap(&self, max: u32, metrics: &Metrics) -> u32 {
        let aimd = self.aimd.lock().unwrap_or_else(|e| e.into_inner());
        let cap = aimd.lowered.map_or(max, |c| (c as u32).clamp(1, max));
        metrics.cluster_cap(&self.label, cap);
        cap
    }

    fn adapt(&self, max: u32, throttled: bool, now: Duration, metrics: &Metrics) {
        let mut aimd = self.aimd.lock().unwrap_or_else(|e| e.into_inner());
        let before = aimd.lowered.map_or(max, |c| (c as u32).clamp(1, max));
        if throttled {
            let spaced = aimd
                .last_decrease
                .is_none_or(|at| now.saturating_sub(at) >= DECREASE_SPACING);
            if !spaced {
                return;
            }
            let current = aimd.lowered.unwrap_or(f64::from(max)).min(f64::from(max));
            aimd.lowered = Some((current / 2.0).floor().max(1.0));
            aimd.last_decrease = Some(now);
        } else if let Some(current) = aimd.lowered {
            let raised = current + 1.0 / current;
            aimd.lowered = (raised < f64::from(max)).then_some(raised);
        } else {
            return;
        }
        let after = aimd.lowered.map_or(max, |c| (c as u32).clamp(1, max));
        drop(aimd);
        if after != before {
            let why = if throttled {
                "the cluster answered 429"
            } else {
                "the cluster answers again"
            };
            tracing::info!(cluster = %self.name, cap = after, max_concurrent = max, "cluster cap: {why}");
            metrics.cluster_cap(&self.label, after);
            if after > before {
                self.changed.notify_waiters();
            }
        }
    }

    /// Counts a request admitted elsewhere (by Redis).
    fn count(self: &Arc<Self>, tenant: &str) -> ClusterCount {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.admit(tenant);
        ClusterCount {
            cluster: self.clone(),
            tenant: tenant.to_owned(),
        }
    }

    /// The rule of cluster_acquire.lua, in this replica: full → refused; another tenant waiting
    /// and this one at or above its share → refused; otherwise admitted.
    fn try_local(
        self: &Arc<Self>,
        tenant: &str,
        cap: u32,
        now: Duration,
        window: Duration,
    ) -> Option<ClusterCount> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.waiting.retain(|_, until| *until > now);
        let mine = counts.by_tenant.get(tenant).copied().unwrap_or(0);
        let mut active = counts.by_tenant.len() as u32;
        let mut others_waiting = false;
        for waiter in counts.waiting.keys() {
            if waiter != tenant {
                others_waiting = true;
                if !counts.by_tenant.contains_key(waiter) {
                    active += 1;
                }
            }
        }
        if mine == 0 {
            active += 1;
        }
        let admit = counts.total < cap && !(others_waiting && mine * active >= cap);
        if !admit {
            counts.waiting.insert(tenant.to_owned(), now + window);
            return None;
        }
        counts.admit(tenant);
        Some(ClusterCount {
            cluster: self.clone(),
            tenant: tenant.to_owned(),
        })
    }

    fn release(&self, tenant: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_tenant.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                counts.by_tenant.remove(tenant);
            }
        }
        drop(counts);
        self.changed.notify_waiters();
    }
}

impl LocalCounts {
    fn admit(&mut self, tenant: &str) {
        self.total += 1;
        *self.by_tenant.entry(tenant.to_owned()).or_insert(0) += 1;
    }
}

/// A request counted among its cluster's in this replica; uncounted when dropped.
pub struct ClusterCount {
    cluster: Arc<ClusterState>,
    tenant: String,
}

impl Drop for ClusterCount {
    fn drop(&mut self) {
        self.cluster.release(&self.tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn limiter() -> (Limiter, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        let limiter = Limiter::new(clock.clone(), None, Arc::new(Metrics::new()));
        (limiter, clock)
    }

    #[tokio::test]
    async fn the_cluster_cap_refuses_past_max_and_frees_on_drop() {
        let (limiter, _) = limiter();
        let cluster = limiter.cluster_state("main");
        let none = Duration::ZERO;
        let a = limiter
            .take_cluster(&cluster, "a", Some(2), none)
            .await
            .unwrap();
        let b = limiter
            .take_cluster(&cluster, "a", Some(2), none)
            .await
            .unwrap();
        assert!(a.is_some() && b.is_some());
        let refused = limiter.take_cluster(&cluster, "a", Some(2), none).await;
        assert_eq!(refused.err(), Some(Refusal::Cluster(2)));
        drop(a);
        assert!(limiter
            .take_cluster(&cluster, "a", Some(2), none)
            .await
            .unwrap()
            .is_some());
        assert!(limiter
            .take_cluster(&cluster, "a", None, none)
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn a_tenant_over_its_share_yields_freed_places_to_a_waiting_one() {
        let (limiter, _) = limiter();
        let cluster = limiter.cluster_state("main");
        let none = Duration::ZERO;
        let mut flood = Vec::new();
        for _ in 0..4 {
            flood.push(
                limiter
                    .take_cluster(&cluster, "flood", Some(4), none)
                    .await
                    .unwrap(),
            );
        }
        // The steady tenant is turned away (the cap is full) and now counts as waiting.
        assert!(limiter
            .take_cluster(&cluster, "steady", Some(4), none)
            .await
            .is_err());
        flood.pop();
        // The flooding tenant holds 3 of 4 with two tenants wanting the cluster: over its share.
        assert!(limiter
            .take_cluster(&cluster, "flood", Some(4), none)
            .await
            .is_err());
        let steady = limiter
            .take_cluster(&cluster, "steady", Some(4), none)
            .await;
        assert!(steady.unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_request_gets_the_place_freed_within_its_wait() {
        let (limiter, _) = limiter();
        let limiter = Arc::new(limiter);
        let cluster = limiter.cluster_state("main");
        let held = limiter
            .take_cluster(&cluster, "a", Some(1), Duration::ZERO)
            .await
            .unwrap();
        let waiter = {
            let (limiter, cluster) = (limiter.clone(), cluster.clone());
            tokio::spawn(async move {
                limiter
                    .take_cluster(&cluster, "b", Some(1), Duration::from_secs(5))
                    .await
                    .map(|p| p.is_some())
            })
        };
        tokio::task::yield_now().await;
        drop(held);
        assert_eq!(waiter.await.unwrap(), Ok(true));
    }

    #[test]
    fn a_throttled_cluster_halves_its_cap_and_climbs_back() {
        let (limiter, clock) = limiter();
        let cluster = limiter.cluster_state("main");
        let metrics = Metrics::new();
        let too_many = http::StatusCode::TOO_MANY_REQUESTS;
        limiter.cluster_answered(&cluster, Some(16), too_many);
        assert_eq!(cluster.cap(16, &metrics), 8);
        // A burst of 429s within DECREASE_SPACING is one signal.
        limiter.cluster_answered(&cluster, Some(16), too_many);
        assert_eq!(cluster.cap(16, &metrics), 8);
        clock.advance(DECREASE_SPACING);
        limiter.cluster_answered(&cluster, Some(16), too_many);
        assert_eq!(cluster.cap(16, &metrics), 4);
        // Additive increase: about `cap` successes per step.
        for _ in 0..4 {
            limiter.cluster_answered(&cluster, Some(16), http::StatusCode::OK);
        }
        assert_eq!(cluster.cap(16, &metrics), 4);
        limiter.cluster_answered(&cluster, Some(16), http::StatusCode::OK);
        assert_eq!(cluster.cap(16, &metrics), 5);
        for _ in 0..200 {
            limiter.cluster_answered(&cluster, Some(16), http::StatusCode::OK);
        }
        assert_eq!(cluster.cap(16, &metrics), 16);
        // A failure that is not throttling changes nothing.
        limiter.cluster_answered(&cluster, Some(16), http::StatusCode::BAD_GATEWAY);
        assert_eq!(cluster.cap(16, &metrics), 16);
    }
}
