//! Tenants' limits: a request rate (GCRA, a token bucket kept as one number) and a number of
//! requests in flight, with state keyed by tenant id so a reload changes a limit without
//! resetting it. Also the keyed budgets the authenticator spends on failed sign-ins.
//!
//! GCRA is written here (a dozen lines) because governor, the crate this used before, cannot
//! change a quota in place: a new quota meant a new, full bucket — a reset on every reload.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Clock;
use crate::config::RateLimit;

/// The generic cell rate algorithm: the bucket is the theoretical arrival time (TAT) of the
/// next request, in nanoseconds of the clock; one request moves it one emission interval on.
/// The interval the TAT was counted in is kept beside it, so a changed rate rescales what is
/// not yet refilled: the bucket keeps its fill level, and the new rate applies from now on.
#[derive(Default)]
pub struct Gcra {
    state: Mutex<Bucket>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Bucket {
    tat: u64,
    /// 0: never used.
    interval: u64,
}

/// `Err(wait)`: refused, and how long until a token is back.
pub type Decision = Result<(), Duration>;

fn interval(rate: RateLimit) -> u64 {
    ((1e9 / rate.per_second) as u64).max(1)
}

/// The bucket counted in `rate`'s interval from `now` on: what was not yet refilled is
/// rescaled from the interval it was counted in.
fn rescale(bucket: Bucket, now: u64, rate: RateLimit) -> Bucket {
    let interval = interval(rate);
    if bucket.interval == 0 || bucket.interval == interval || bucket.tat <= now {
        return Bucket { interval, ..bucket };
    }
    let debt = u128::from(bucket.tat - now) * u128::from(interval) / u128::from(bucket.interval);
    Bucket {
        tat: now.saturating_add(u64::try_from(debt).unwrap_or(u64::MAX)),
        interval,
    }
}

/// The bucket after a request at `now` is allowed, or how long it has to wait.
fn decide(bucket: Bucket, now: u64, rate: RateLimit) -> Result<Bucket, Duration> {
    let Bucket { tat, interval } = rescale(bucket, now, rate);
    let tolerance = interval.saturating_mul(u64::from(rate.burst));
    let next = tat.max(now).saturating_add(interval);
    if next - now > tolerance {
        Err(Duration::from_nanos(next - now - tolerance))
    } else {
        Ok(Bucket {
            tat: next,
            interval,
        })
    }
}

impl Gcra {
    /// Takes one token at `now`.
    pub fn take(&self, now: Duration, rate: RateLimit) -> Decision {
        let now = now.as_nanos() as u64;
        let mut bucket = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // The rescale stands whatever the decision: it belongs to the moment the rate changed.
        *bucket = rescale(*bucket, now, rate);
        *bucket = decide(*bucket, now, rate)?;
        Ok(())
    }

    /// Whether a token is left at `now`, without taking it.
    pub fn peek(&self, now: Duration, rate: RateLimit) -> Decision {
        let bucket = *self.state.lock().unwrap_or_else(|e| e.into_inner());
        decide(bucket, now.as_nanos() as u64, rate).map(|_| ())
    }
}

/// One tenant's limiter state; the limits themselves come from the tenant's current config.
#[derive(Default)]
pub struct TenantState {
    rate: Gcra,
    in_flight: AtomicU32,
}

impl TenantState {
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A request's place among its tenant's requests in flight, given back when dropped.
pub struct Slot {
    state: Arc<TenantState>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every tenant's limiter state, by tenant id, outliving config reloads.
pub struct TenantLimits {
    clock: Arc<dyn Clock>,
    states: Mutex<HashMap<String, Arc<TenantState>>>,
}

impl TenantLimits {
    pub fn new(clock: Arc<dyn Clock>) -> TenantLimits {
        TenantLimits {
            clock,
            states: Mutex::new(HashMap::new()),
        }
    }

    /// The state of tenant `id`: the one it had, or a fresh one for a new tenant.
    pub fn state_for(&self, id: &str) -> Arc<TenantState> {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        states.entry(id.to_owned()).or_default().clone()
    }

    /// Forgets tenants that are gone (their in-flight requests keep their own reference).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        states.retain(|id, _| keep(id));
    }

    pub fn take_rate(&self, state: &TenantState, rate: Option<RateLimit>) -> Decision {
        match rate {
            None => Ok(()),
            Some(rate) => state.rate.take(self.clock.elapsed(), rate),
        }
    }

    /// Whether one more request would fit, without taking its place.
    pub fn has_room(&self, state: &TenantState, max_concurrent: Option<u32>) -> bool {
        max_concurrent.is_none_or(|max| state.in_flight() < max)
    }

    /// A place among the tenant's requests in flight, if one is free. A limit lowered by a
    /// reload refuses new requests until enough running ones have ended; none is cut short.
    pub fn take_slot(state: &Arc<TenantState>, max_concurrent: Option<u32>) -> Option<Slot> {
        let max = max_concurrent.unwrap_or(u32::MAX);
        state
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Slot {
            state: state.clone(),
        })
    }
}

/// Budgets by key (client network, tenant-name bucket), each a GCRA bucket; fully refilled
/// buckets are forgotten by [`KeyedBudgets::prune`], so memory follows the recent senders.
pub struct KeyedBudgets<K> {
    rate: RateLimit,
    tats: Mutex<HashMap<K, u64>>,
}

impl<K: Hash + Eq + Copy> KeyedBudgets<K> {
    pub fn new(rate: RateLimit) -> KeyedBudgets<K> {
        KeyedBudgets {
            rate,
            tats: Mutex::new(HashMap::new()),
        }
    }

    pub fn peek(&self, key: K, now: Duration) -> Decision {
        let tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = Bucket {
            tat: tats.get(&key).copied().unwrap_or(0),
            interval: interval(self.rate),
        };
        decide(bucket, now.as_nanos() as u64, self.rate).map(|_| ())
    }

    /// Spends one unit, whether or not any was left (a failure happened either way).
    pub fn spend(&self, key: K, now: Duration) {
        let now = now.as_nanos() as u64;
        let mut tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        let tat = tats.entry(key).or_insert(0);
        *tat = (*tat).max(now).saturating_add(interval(self.rate));
    }

    pub fn prune(&self, now: Duration) {
        let now = now.as_nanos() as u64;
        let mut tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        tats.retain(|_, tat| *tat > now);
        tats.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn rate(per_second: f64, burst: u32) -> RateLimit {
        RateLimit { per_second, burst }
    }

    #[test]
    fn burst_then_refusal_then_refill() {
        let bucket = Gcra::default();
        let limit = rate(1.0, 3);
        let t0 = Duration::from_secs(100);
        for _ in 0..3 {
            bucket.take(t0, limit).unwrap();
        }
        assert_eq!(bucket.take(t0, limit), Err(Duration::from_secs(1)));
        assert_eq!(bucket.peek(t0, limit), Err(Duration::from_secs(1)));
        bucket.take(t0 + Duration::from_secs(1), limit).unwrap();
        assert!(bucket.take(t0 + Duration::from_secs(1), limit).is_err());
    }

    #[test]
    fn a_changed_rate_applies_at_once_without_refilling() {
        let bucket = Gcra::default();
        let t0 = Duration::from_secs(10);
        for _ in 0..5 {
            bucket.take(t0, rate(1.0, 5)).unwrap();
        }
        // Faster refill from now on, but the spent burst stays spent.
        assert_eq!(
            bucket.take(t0, rate(100.0, 5)),
            Err(Duration::from_millis(10))
        );
        bucket
            .take(t0 + Duration::from_millis(10), rate(100.0, 5))
            .unwrap();
        assert!(bucket
            .take(t0 + Duration::from_millis(10), rate(100.0, 5))
            .is_err());
        // And slower: what is left to refill takes ten times as long.
        assert_eq!(
            bucket.take(t0 + Duration::from_millis(10), rate(10.0, 5)),
            Err(Duration::from_millis(100))
        );
    }

    #[test]
    fn peek_takes_nothing() {
        let bucket = Gcra::default();
        for _ in 0..10 {
            bucket.peek(Duration::ZERO, rate(1.0, 1)).unwrap();
        }
        bucket.take(Duration::ZERO, rate(1.0, 1)).unwrap();
        assert!(bucket.peek(Duration::ZERO, rate(1.0, 1)).is_err());
    }

    #[test]
    fn state_carries_over_by_tenant_id() {
        let clock = Arc::new(ManualClock::default());
        let limits = TenantLimits::new(clock.clone());
        let first = limits.state_for("a");
        let _slot = TenantLimits::take_slot(&first, Some(2)).unwrap();
        limits.take_rate(&first, Some(rate(1.0, 1))).unwrap();
        let again = limits.state_for("a");
        assert_eq!(again.in_flight(), 1);
        assert!(limits.take_rate(&again, Some(rate(1.0, 1))).is_err());
        clock.advance(Duration::from_secs(1));
        limits.take_rate(&again, Some(rate(1.0, 1))).unwrap();
        limits.retain(|id| id != "a");
        assert_eq!(
            limits.state_for("a").in_flight(),
            0,
            "a removed tenant starts over"
        );
    }

    #[test]
    fn a_lowered_concurrency_limit_waits_for_running_requests() {
        let state = Arc::new(TenantState::default());
        let slots: Vec<_> = (0..3)
            .map(|_| TenantLimits::take_slot(&state, Some(3)).unwrap())
            .collect();
        assert!(TenantLimits::take_slot(&state, Some(1)).is_none());
        drop(slots);
        assert!(TenantLimits::take_slot(&state, Some(1)).is_some());
    }

    #[test]
    fn keyed_budgets_count_spending_and_forget_refilled_keys() {
        let budgets = KeyedBudgets::new(rate(1.0, 2));
        let now = Duration::from_secs(50);
        budgets.peek(1u8, now).unwrap();
        budgets.spend(1, now);
        budgets.spend(1, now);
        assert!(budgets.peek(1, now).is_err());
        budgets.peek(2, now).unwrap();
        budgets.prune(now + Duration::from_secs(3));
        assert!(budgets.tats.lock().unwrap().is_empty());
    }
}
