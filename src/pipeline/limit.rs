//! Stage: admit. Each tenant's request rate (a token bucket with a burst) and its number of
//! requests in flight. Over either limit a request is refused at once with 429 — never queued,
//! so one tenant's backlog cannot hold connections or memory that others need. Every tenant has
//! its own limiter and semaphore: nothing here is shared between tenants.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Tenant;
use crate::error::ProxyError;

pub struct TenantLimits {
    rate: Option<DefaultDirectRateLimiter>,
    in_flight: Option<Arc<Semaphore>>,
    max_concurrent: u32,
}

/// Held for as long as the request (including its streamed answer) is in flight.
pub struct Admission {
    _in_flight: Option<OwnedSemaphorePermit>,
}

impl TenantLimits {
    pub fn new(tenant: &Tenant) -> TenantLimits {
        let rate = tenant.rate.map(|rate| {
            let burst = NonZeroU32::new(rate.burst).expect("validated at load: burst >= 1");
            let quota = Quota::with_period(Duration::from_secs_f64(1.0 / rate.per_second))
                .expect("validated at load: rate > 0 gives a non-zero period")
                .allow_burst(burst);
            RateLimiter::direct(quota)
        });
        let max_concurrent = tenant.max_concurrent.unwrap_or(0);
        TenantLimits {
            rate,
            in_flight: tenant
                .max_concurrent
                .map(|n| Arc::new(Semaphore::new(n as usize))),
            max_concurrent,
        }
    }

    pub fn admit(&self) -> Result<Admission, ProxyError> {
        // Concurrency first: a request refused for concurrency should not also spend a token.
        let permit = match &self.in_flight {
            None => None,
            Some(semaphore) => Some(semaphore.clone().try_acquire_owned().map_err(|_| {
                ProxyError::TooManyRequests {
                    reason: format!(
                        "this tenant already has {} requests in flight, its limit",
                        self.max_concurrent
                    ),
                    retry_after_secs: 1,
                }
            })?),
        };
        if let Some(rate) = &self.rate {
            if let Err(refusal) = rate.check() {
                let wait = refusal.wait_time_from(DefaultClock::default().now());
                return Err(ProxyError::TooManyRequests {
                    reason: "this tenant's request rate limit is exceeded".into(),
                    retry_after_secs: whole_seconds(wait),
                });
            }
        }
        Ok(Admission { _in_flight: permit })
    }
}

/// `Retry-After` takes whole seconds; round up and never say 0.
pub fn whole_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateLimit;

    fn tenant(rate: Option<RateLimit>, max_concurrent: Option<u32>) -> Tenant {
        Tenant {
            rate,
            max_concurrent,
            ..Tenant::example()
        }
    }

    #[test]
    fn unlimited_tenant_is_always_admitted() {
        let limits = TenantLimits::new(&tenant(None, None));
        for _ in 0..10_000 {
            limits.admit().unwrap();
        }
    }

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let slow = RateLimit {
            per_second: 0.01,
            burst: 3,
        };
        let limits = TenantLimits::new(&tenant(Some(slow), None));
        for _ in 0..3 {
            limits.admit().unwrap();
        }
        match limits.admit() {
            Err(ProxyError::TooManyRequests {
                retry_after_secs, ..
            }) => assert!((90..=100).contains(&retry_after_secs), "{retry_after_secs}"),
            other => panic!("expected 429, got {:?}", other.err()),
        }
    }

    #[test]
    fn concurrency_is_released_when_the_admission_drops() {
        let limits = TenantLimits::new(&tenant(None, Some(2)));
        let first = limits.admit().unwrap();
        let _second = limits.admit().unwrap();
        assert!(matches!(
            limits.admit(),
            Err(ProxyError::TooManyRequests {
                retry_after_secs: 1,
                ..
            })
        ));
        drop(first);
        limits.admit().unwrap();
    }

    #[test]
    fn one_tenants_limit_does_not_touch_another() {
        let strict = TenantLimits::new(&tenant(
            Some(RateLimit {
                per_second: 0.01,
                burst: 1,
            }),
            Some(1),
        ));
        let other = TenantLimits::new(&tenant(None, Some(1)));
        let _held = strict.admit().unwrap();
        assert!(strict.admit().is_err());
        let _other_held = other.admit().unwrap();
    }

    #[test]
    fn retry_after_rounds_up_to_at_least_one() {
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(7)), 7);
    }
}
