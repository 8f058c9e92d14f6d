//! The authenticator: turns `Authorization: Basic base64(tenant:key)` — or, with `[aad]`,
//! `Authorization: Bearer <AAD token>` (see `aad.rs`) — into a tenant of the current snapshot.
//!
//! argon2 is slow on purpose, so this service is built not to become a denial-of-service lever:
//! - a key that verified once is remembered by a keyed SHA-256 digest of the presented
//!   credential (never the plaintext), with the tenant id and the key hash it matched — so argon2
//!   runs once per key per process, and a reload that removes the key or the tenant ends it;
//! - failed checks are counted per client network (IPv4 /32, IPv6 /64 by default) and per
//!   tenant name (hashed into a fixed number of buckets, so random names cannot grow memory or
//!   reveal which tenants exist); past either budget, uncached checks get 429. A check that
//!   succeeds costs nothing, so a dashboard host signing in many tenants is never slowed;
//! - all uncached checks together are held to a global rate (`verify_global_per_second`), and at
//!   most `max_concurrent_verifications` run at once, on the blocking pool.
//!
//! Cached credentials skip every budget, so a flood of wrong keys cannot lock out a tenant's
//! working clients.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use argon2::password_hash::{PasswordHashString, PasswordVerifier, SaltString};
use argon2::{Argon2, PasswordHasher};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::header::AUTHORIZATION;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use tokio::sync::{OnceCell, Semaphore};

use crate::clock::Clock;
use crate::config::tenant::key_fingerprint;
use crate::config::{AadSettings, AuthSettings, OnRedisFailure, RateLimit};
use crate::error::{retry_after_secs, ProxyError};
use crate::services::aad::AadValidator;
use crate::services::limits::{Gcra, KeyedBudgets};
use crate::services::metrics::Metrics;
use crate::services::shared::{SharedLimits, Unavailable};
use crate::services::tenants::{Snapshot, TenantEntry};

/// How long a request waits for a free verification slot before it is told to come back.
const VERIFICATION_QUEUE_WAIT: Duration = Duration::from_secs(5);
/// Longer Authorization headers are refused unread.
const MAX_AUTHORIZATION_LEN: usize = 4096;
/// Buckets for per-name failure budgets: fixed memory whatever names are tried.
const NAME_BUCKETS: u64 = 4096;

type CredentialDigest = [u8; 32];

/// Who is calling, as far as the audit log is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A Basic caller, and which of the tenant's keys it used ([`key_fingerprint`]).
    Basic { key_fingerprint: String },
    /// A Bearer caller: the token's object id and application id.
    Aad {
        oid: Option<String>,
        appid: Option<String>,
    },
}

/// An authenticated request: its tenant (in the request's snapshot) and principal.
pub struct Caller {
    pub tenant: Arc<TenantEntry>,
    pub principal: Principal,
}

/// A key that verified: whose it is, and which of its hashes it matched.
#[derive(Clone)]
struct Verified {
    tenant: Arc<str>,
    key_hash: Arc<str>,
}

/// A client address reduced to the network it is budgeted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Network(u128, bool);

pub struct Authenticator {
    settings: AuthSettings,
    clock: Arc<dyn Clock>,
    /// Verified against for unknown tenants, so they cost the same time as a wrong key. Made on
    /// first use, once even under a burst of unknown names (an async cell).
    decoy_hash: OnceCell<Arc<[PasswordHashString]>>,
    /// Cost parameters of the first configured key at start, which the decoy copies.
    decoy_params: argon2::Params,
    /// Random per process: the digests are useless outside it.
    digest_key: [u8; 32],
    verified: RwLock<HashMap<CredentialDigest, Verified>>,
    /// Checks in progress, by credential digest, so concurrent requests share one.
    pending: RwLock<HashMap<CredentialDigest, Arc<OnceCell<Option<Verified>>>>>,
    verification_slots: Semaphore,
    failures_by_network: KeyedBudgets<Network>,
    failures_by_name: KeyedBudgets<u64>,
    uncached_checks: Gcra,
    /// With the Redis backend: the budgets and the ceiling are shared by every replica.
    shared: Option<Arc<SharedLimits>>,
    /// Validates Bearer callers; `None` without an `[aad]` section.
    aad: Option<Arc<AadValidator>>,
    metrics: Arc<Metrics>,
}

/// The credentials of a Basic `Authorization` header: the decoded `tenant:key` text, kept as one
/// buffer so a cache hit costs one allocation. The key never leaves this module.
struct BasicCredentials {
    decoded: String,
    colon: usize,
}

impl BasicCredentials {
    fn tenant_id(&self) -> &str {
        &self.decoded[..self.colon]
    }

    fn key(&self) -> &str {
        &self.decoded[self.colon + 1..]
    }
}

impl Authenticator {
    /// With `aad`, starts its key refresh: must then run inside the Tokio runtime.
    pub fn new(
        settings: &AuthSettings,
        first_key: Option<&PasswordHashString>,
        aad: Option<&AadSettings>,
        clock: Arc<dyn Clock>,
        shared: Option<Arc<SharedLimits>>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Authenticator> {
        let mut failures = RateLimit {
            per_second: f64::from(settings.verify_per_minute) / 60.0,
            burst: settings.verify_burst,
        };
        // With Redis, the local budgets are used only while it is away: this replica's share.
        if let Some(shared) = &shared {
            failures = shared.share_rate(failures);
        }
        let mut digest_key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut digest_key);
        Ok(Authenticator {
            settings: settings.clone(),
            clock,
            decoy_hash: OnceCell::new(),
            decoy_params: first_key
                .and_then(|h| argon2::Params::try_from(&h.password_hash()).ok())
                .unwrap_or_default(),
            digest_key,
            verified: RwLock::new(HashMap::new()),
            pending: RwLock::new(HashMap::new()),
            verification_slots: Semaphore::new(settings.max_concurrent_verifications),
            failures_by_network: KeyedBudgets::new(failures),
            failures_by_name: KeyedBudgets::new(failures),
            uncached_checks: Gcra::default(),
            shared,
            aad: aad
                .map(|aad| AadValidator::start(aad.clone(), metrics.clone()))
                .transpose()?,
            metrics,
        })
    }

    /// The caller of a request, in the request's `snapshot`.
    pub async fn authenticate(
        &self,
        snapshot: &Snapshot,
        headers: &HeaderMap,
        client: IpAddr,
    ) -> Result<Caller, ProxyError> {
        let value = headers.get(AUTHORIZATION).ok_or(ProxyError::Unauthorized)?;
        if let Some(token) = bearer_token(value) {
            return self.authenticate_bearer(snapshot, token).await;
        }
        let credentials = parse_basic(value).ok_or(ProxyError::Unauthorized)?;
        let digest = self.digest(&credentials);
        let cached = self.read_cache().get(&digest).cloned();
        if let Some(verified) = cached {
            if let Some(caller) = still_valid(snapshot, &verified) {
                return Ok(caller);
            }
            // The key or its tenant is gone from the table: forget it, check it afresh.
            self.lock(&self.verified).remove(&digest);
        }
        // Single flight: a client that opens many connections at once with a new key costs one
        // verification, not one per connection.
        let check = self.pending_check(digest);
        let outcome = check
            .get_or_try_init(|| self.check_uncached(snapshot, credentials, client))
            .await
            .cloned();
        // Cache first, then forget the pending check, so no request falls between the two.
        if let Ok(Some(verified)) = &outcome {
            self.lock(&self.verified).insert(digest, verified.clone());
        }
        self.lock(&self.pending).remove(&digest);
        let verified = outcome?.ok_or(ProxyError::Unauthorized)?;
        still_valid(snapshot, &verified).ok_or(ProxyError::Unauthorized)
    }

    async fn authenticate_bearer(
        &self,
        snapshot: &Snapshot,
        token: &str,
    ) -> Result<Caller, ProxyError> {
        let Some(aad) = &self.aad else {
            return Err(ProxyError::Unauthorized);
        };
        let claims = aad.validate(token).await.map_err(|reason| {
            tracing::debug!(reason, "bearer token refused");
            ProxyError::Unauthorized
        })?;
        let tenant = snapshot.tenant_for_claims(&claims).ok_or_else(|| {
            tracing::debug!("bearer token refused: principal maps to no tenant");
            ProxyError::Unauthorized
        })?;
        Ok(Caller {
            tenant,
            principal: Principal::Aad {
                oid: claims.oid,
                appid: claims.appid.or(claims.azp),
            },
        })
    }

    fn pending_check(&self, digest: CredentialDigest) -> Arc<OnceCell<Option<Verified>>> {
        self.lock(&self.pending).entry(digest).or_default().clone()
    }

    /// Runs argon2 if the budgets allow: the tenant and hash the key matched, if any.
    async fn check_uncached(
        &self,
        snapshot: &Snapshot,
        credentials: BasicCredentials,
        client: IpAddr,
    ) -> Result<Option<Verified>, ProxyError> {
        let network = self.network(client);
        let name = credentials.tenant_id();
        self.budgets_left(network, name).await?;
        self.take_uncached_check().await?;
        let tenant = snapshot.tenant(credentials.tenant_id());
        let hashes: Arc<[PasswordHashString]> = match tenant {
            Some(tenant) => tenant.config.key_hashes.clone().into(),
            None => self.decoy().await?,
        };
        let matched = self.verify(credentials.key().to_owned(), hashes).await?;
        let verified = match (tenant, matched) {
            (Some(tenant), Some(key_hash)) => Some(Verified {
                tenant: tenant.config.id.as_str().into(),
                key_hash: key_hash.into(),
            }),
            _ => None,
        };
        if verified.is_none() {
            self.metrics.signin_failure(tenant.map(|t| &t.label));
            self.spend_budgets(network, name).await;
        }
        Ok(verified)
    }

    /// Refuses a check when the failure budget of the client's network or of the tenant name
    /// is spent — in Redis with the shared backend, so an attacker's budget does not multiply
    /// by the replicas.
    async fn budgets_left(&self, network: Network, name: &str) -> Result<(), ProxyError> {
        let spent = |wait| {
            self.metrics.signin_refused("failure_budget");
            ProxyError::TooManyRequests {
                reason: "too many failed sign-in attempts from this network or for this tenant"
                    .into(),
                retry_after_secs: retry_after_secs(wait),
            }
        };
        if let Some(shared) = &self.shared {
            let rate = self.failure_rate();
            let mut worst: Option<Duration> = None;
            for key in [network_key(shared, network), name_key(shared, name)] {
                match shared
                    .gcra(&key, rate.per_second, rate.burst, 0, false)
                    .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(wait)) => worst = worst.max(Some(wait)),
                    Err(Unavailable) => match shared.fallback("signin") {
                        OnRedisFailure::Allow => return Ok(()),
                        OnRedisFailure::Deny => {
                            self.metrics.signin_refused("limits_unavailable");
                            return Err(ProxyError::limits_unavailable());
                        }
                        // The local budgets hold this replica's share.
                        OnRedisFailure::Local => {
                            return self
                                .local_budget_wait(network, name)
                                .map_or(Ok(()), |w| Err(spent(w)))
                        }
                    },
                }
            }
            return worst.map_or(Ok(()), |wait| Err(spent(wait)));
        }
        self.local_budget_wait(network, name)
            .map_or(Ok(()), |wait| Err(spent(wait)))
    }

    /// How long until both local failure budgets have a unit again, if either is spent.
    fn local_budget_wait(&self, network: Network, name: &str) -> Option<Duration> {
        let now = self.clock.elapsed();
        let budgets = [
            self.failures_by_network.peek(network, now),
            self.failures_by_name.peek(self.name_bucket(name), now),
        ];
        budgets.into_iter().filter_map(Result::err).max()
    }

    /// Spends a unit of both failure budgets.
    async fn spend_budgets(&self, network: Network, name: &str) {
        if let Some(shared) = &self.shared {
            let rate = self.failure_rate();
            let mut reached = true;
            for key in [network_key(shared, network), name_key(shared, name)] {
                if shared
                    .gcra(&key, rate.per_second, rate.burst, 1, true)
                    .await
                    .is_err()
                {
                    reached = false;
                }
            }
            if reached {
                return;
            }
        }
        let now = self.clock.elapsed();
        self.failures_by_network.spend(network, now);
        self.failures_by_name.spend(self.name_bucket(name), now);
    }

    /// One unit of the global ceiling on key checks (argon2 work), shared with Redis.
    async fn take_uncached_check(&self) -> Result<(), ProxyError> {
        let global = RateLimit {
            per_second: f64::from(self.settings.verify_global_per_second),
            burst: self.settings.verify_global_burst,
        };
        let decision = match &self.shared {
            Some(shared) => {
                let key = shared.key("signin", "checks");
                match shared
                    .gcra(&key, global.per_second, global.burst, 1, false)
                    .await
                {
                    Ok(decision) => decision,
                    Err(Unavailable) => match shared.fallback("signin_ceiling") {
                        OnRedisFailure::Allow => Ok(()),
                        OnRedisFailure::Deny => {
                            self.metrics.signin_refused("limits_unavailable");
                            return Err(ProxyError::limits_unavailable());
                        }
                        OnRedisFailure::Local => self
                            .uncached_checks
                            .take(self.clock.elapsed(), shared.share_rate(global)),
                    },
                }
            }
            None => self.uncached_checks.take(self.clock.elapsed(), global),
        };
        decision.map_err(|wait| {
            self.metrics.signin_refused("global_ceiling");
            ProxyError::TooManyRequests {
                reason: "too many sign-ins are being checked right now".into(),
                retry_after_secs: retry_after_secs(wait),
            }
        })
    }

    fn failure_rate(&self) -> RateLimit {
        RateLimit {
            per_second: f64::from(self.settings.verify_per_minute) / 60.0,
            burst: self.settings.verify_burst,
        }
    }

    /// Forgets idle budget state; called periodically so the maps stay small.
    pub fn prune(&self) {
        let now = self.clock.elapsed();
        self.failures_by_network.prune(now);
        self.failures_by_name.prune(now);
    }

    /// Forgets verified keys the new table no longer holds (called after a reload).
    pub fn forget_missing(&self, snapshot: &Snapshot) {
        self.lock(&self.verified)
            .retain(|_, verified| still_valid(snapshot, verified).is_some());
    }

    fn digest(&self, credentials: &BasicCredentials) -> CredentialDigest {
        let mut hasher = Sha256::new();
        hasher.update(self.digest_key);
        hasher.update(credentials.tenant_id().as_bytes());
        hasher.update([0u8]);
        hasher.update(credentials.key().as_bytes());
        hasher.finalize().into()
    }

    fn name_bucket(&self, tenant_id: &str) -> u64 {
        let digest = Sha256::new()
            .chain_update(self.digest_key)
            .chain_update(tenant_id.as_bytes())
            .finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first) % NAME_BUCKETS
    }

    /// The client's network: its address with only the configured prefix kept.
    fn network(&self, client: IpAddr) -> Network {
        let keep = |bits: u32, prefix: u8| -> u128 {
            let drop = bits - u32::from(prefix);
            if drop >= 128 {
                0
            } else {
                u128::MAX << drop
            }
        };
        match client {
            IpAddr::V4(v4) => Network(
                u128::from(u32::from(v4)) & keep(32, self.settings.ipv4_prefix_bits),
                false,
            ),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.network(IpAddr::V4(v4)),
                None => Network(
                    u128::from(v6) & keep(128, self.settings.ipv6_prefix_bits),
                    true,
                ),
            },
        }
    }

    async fn decoy(&self) -> Result<Arc<[PasswordHashString]>, ProxyError> {
        let decoy = self
            .decoy_hash
            .get_or_try_init(|| async {
                let params = self.decoy_params.clone();
                tokio::task::spawn_blocking(move || Arc::from(vec![decoy_hash(params)]))
                    .await
                    .map_err(ProxyError::internal)
            })
            .await?;
        Ok(decoy.clone())
    }

    /// The hash `key` matches, if any. Every hash is tried, so a tenant's key count, not which
    /// key matched, sets the time.
    async fn verify(
        &self,
        key: String,
        hashes: Arc<[PasswordHashString]>,
    ) -> Result<Option<String>, ProxyError> {
        let _slot =
            tokio::time::timeout(VERIFICATION_QUEUE_WAIT, self.verification_slots.acquire())
                .await
                .map_err(|_| {
                    self.metrics.signin_refused("busy");
                    ProxyError::ServiceUnavailable(
                        "too many credential checks are in progress; retry shortly".into(),
                    )
                })?
                .map_err(ProxyError::internal)?;
        tokio::task::spawn_blocking(move || {
            hashes.iter().fold(None, |matched, hash| {
                let ok = Argon2::default()
                    .verify_password(key.as_bytes(), &hash.password_hash())
                    .is_ok();
                matched.or(ok.then(|| hash.as_str().to_owned()))
            })
        })
        .await
        .map_err(ProxyError::internal)
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, HashMap<CredentialDigest, Verified>> {
        // A poisoned lock only means a panic elsewhere mid-insert; the map itself is intact.
        self.verified.read().unwrap_or_else(|e| e.into_inner())
    }

    fn lock<'a, T>(&self, map: &'a RwLock<T>) -> std::sync::RwLockWriteGuard<'a, T> {
        map.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The caller a verified key stands for, if its tenant still holds that key.
fn still_valid(snapshot: &Snapshot, verified: &Verified) -> Option<Caller> {
    let tenant = snapshot.tenant(&verified.tenant)?;
    tenant
        .config
        .has_key_hash(&verified.key_hash)
        .then(|| Caller {
            tenant: tenant.clone(),
            principal: Principal::Basic {
                key_fingerprint: key_fingerprint(&verified.key_hash).to_owned(),
            },
        })
}

/// The Redis key of a network's failure budget.
fn network_key(shared: &SharedLimits, network: Network) -> String {
    let family = if network.1 { "v6" } else { "v4" };
    shared.key("signin", &format!("net:{family}:{:032x}", network.0))
}

/// The Redis key of a tenant name's failure budget: a digest, so a caller's text never
/// becomes a key.
fn name_key(shared: &SharedLimits, name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    shared.key(
        "signin",
        &format!("name:{:016x}", u64::from_be_bytes(first)),
    )
}

/// A hash with the same cost parameters as the first configured key, so an unknown tenant
/// takes as long to refuse as a wrong key.
fn decoy_hash(params: argon2::Params) -> PasswordHashString {
    let hasher = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    let decoy_key = crate::keys::new_key();
    hasher
        .hash_password(decoy_key.as_bytes(), &salt)
        .expect("hashing a fresh key with validated parameters cannot fail")
        .serialize()
}

/// The token of `Authorization: Bearer <token>`.
fn bearer_token(value: &http::HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn parse_basic(value: &http::HeaderValue) -> Option<BasicCredentials> {
    let value = value.as_bytes();
    if value.len() > MAX_AUTHORIZATION_LEN {
        return None;
    }
    let (scheme, encoded) = std::str::from_utf8(value).ok()?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let colon = decoded.find(':')?;
    if colon == 0 || colon + 1 == decoded.len() {
        return None;
    }
    Some(BasicCredentials { decoded, colon })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use crate::clock::ManualClock;
    use crate::config::Config;
    use crate::services::identity::Identities;
    use crate::services::tenants::Reuse;

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// A config with `tenants` (id, keys) and `auth` lines.
    fn config(tenants: &[(&str, &[&str])], auth: &str) -> Config {
        let mut text = format!("[auth]\n{auth}\n[clusters.main]\nurl = \"http://127.0.0.1:1\"\n");
        for (i, (id, keys)) in tenants.iter().enumerate() {
            let hashes: Vec<String> = keys
                .iter()
                .map(|k| format!("\"{}\"", crate::keys::hash_key(k).unwrap()))
                .collect();
            text.push_str(&format!(
                "[[tenants]]\nid = \"{id}\"\nkey_hashes = [{}]\ncluster = \"main\"\ndatabase = \"00000000-0000-0000-0000-{i:012}\"\n",
                hashes.join(", ")
            ));
        }
        Config::parse(&text, &HashMap::new()).unwrap()
    }

    struct Setup {
        auth: Authenticator,
        snapshot: Snapshot,
        clock: Arc<ManualClock>,
    }

    fn setup(tenants: &[(&str, &[&str])], auth: &str) -> Setup {
        let config = config(tenants, auth);
        let clock = Arc::new(ManualClock::default());
        let first = config.tenants[0].key_hashes.first().cloned();
        let authenticator = Authenticator::new(
            &config.auth,
            first.as_ref(),
            None,
            clock.clone(),
            None,
            Arc::new(Metrics::new()),
        )
        .unwrap();
        Setup {
            auth: authenticator,
            snapshot: build(config),
            clock,
        }
    }

    fn build(config: Config) -> Snapshot {
        Snapshot::build(
            config,
            Reuse {
                previous: None,
                identities: &mut Identities::new(Arc::new(Metrics::new())).unwrap(),
                limits: &crate::services::limiter::Limiter::new(
                    Arc::new(ManualClock::default()),
                    None,
                    Arc::new(Metrics::new()),
                ),
                metrics: &Arc::new(Metrics::new()),
                workers: 1,
            },
        )
        .unwrap()
    }

    fn basic(user_and_key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("Basic {}", STANDARD.encode(user_and_key));
        headers.insert(AUTHORIZATION, value.parse().unwrap());
        headers
    }

    impl Setup {
        async fn sign_in(&self, credentials: &str, client: IpAddr) -> Result<String, ProxyError> {
            self.auth
                .authenticate(&self.snapshot, &basic(credentials), client)
                .await
                .map(|caller| caller.tenant.config.id.clone())
        }
    }

    #[tokio::test]
    async fn every_rotated_key_works_and_others_do_not() {
        let s = setup(
            &[("a", &["old", "new"]), ("b", &["bee"])],
            "verify_burst = 20",
        );
        assert_eq!(s.sign_in("a:old", CLIENT).await.unwrap(), "a");
        assert_eq!(s.sign_in("a:new", CLIENT).await.unwrap(), "a");
        assert_eq!(s.sign_in("b:bee", CLIENT).await.unwrap(), "b");
        for wrong in ["a:bee", "b:old", "c:old", "a:", ":old", "a:old:"] {
            assert!(
                matches!(
                    s.sign_in(wrong, CLIENT).await,
                    Err(ProxyError::Unauthorized)
                ),
                "{wrong}"
            );
        }
    }

    #[tokio::test]
    async fn the_principal_names_the_key_that_was_used() {
        let s = setup(&[("a", &["old", "new"])], "");
        let caller = s
            .auth
            .authenticate(&s.snapshot, &basic("a:new"), CLIENT)
            .await
            .unwrap();
        let new_hash = s.snapshot.tenant("a").unwrap().config.key_hashes[1]
            .as_str()
            .to_owned();
        assert_eq!(
            caller.principal,
            Principal::Basic {
                key_fingerprint: key_fingerprint(&new_hash).to_owned()
            }
        );
    }

    #[tokio::test]
    async fn malformed_headers_are_unauthorized_without_verifying() {
        let s = setup(
            &[("a", &["k"])],
            "verify_burst = 1\nverify_global_burst = 1",
        );
        let mut headers = HeaderMap::new();
        for value in ["Bearer abc", "Basic !!!", "Basic", "Basic YWJj"] {
            headers.insert(AUTHORIZATION, value.parse().unwrap());
            assert!(matches!(
                s.auth.authenticate(&s.snapshot, &headers, CLIENT).await,
                Err(ProxyError::Unauthorized)
            ));
        }
        // None of those spent a check: a real one still gets verified.
        assert_eq!(s.sign_in("a:k", CLIENT).await.unwrap(), "a");
    }

    #[tokio::test]
    async fn repeated_failures_are_throttled_but_cached_keys_still_work() {
        let s = setup(&[("a", &["k"])], "verify_burst = 3\nverify_per_minute = 1");
        assert_eq!(s.sign_in("a:k", CLIENT).await.unwrap(), "a");
        for _ in 0..3 {
            assert!(matches!(
                s.sign_in("a:wrong", CLIENT).await,
                Err(ProxyError::Unauthorized)
            ));
        }
        match s.sign_in("a:wrong", CLIENT).await {
            Err(ProxyError::TooManyRequests {
                retry_after_secs, ..
            }) => {
                assert!((55..=60).contains(&retry_after_secs), "{retry_after_secs}")
            }
            other => panic!("expected throttling, got {other:?}"),
        }
        // The already-verified key is served from the cache, untouched by the throttle.
        assert_eq!(s.sign_in("a:k", CLIENT).await.unwrap(), "a");
        // A minute later one more failure is allowed.
        s.clock.advance(Duration::from_secs(60));
        assert!(matches!(
            s.sign_in("a:wrong", CLIENT).await,
            Err(ProxyError::Unauthorized)
        ));
    }

    /// A dashboard host signing in many tenants is never slowed: successes cost nothing.
    #[tokio::test]
    async fn successful_first_sign_ins_spend_no_budget() {
        let ids: Vec<String> = (0..24).map(|i| format!("t{i}")).collect();
        let tenants: Vec<(&str, &[&str])> =
            ids.iter().map(|id| (id.as_str(), &["k"][..])).collect();
        let s = setup(&tenants, "verify_burst = 10");
        for _ in 0..3 {
            assert!(s.sign_in("t0:wrong", CLIENT).await.is_err());
        }
        for id in &ids {
            assert_eq!(s.sign_in(&format!("{id}:k"), CLIENT).await.unwrap(), *id);
        }
    }

    #[tokio::test]
    async fn addresses_of_one_ipv6_network_share_a_budget() {
        let s = setup(&[("a", &["k"])], "verify_burst = 2\nverify_per_minute = 1");
        let host = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, last));
        assert!(matches!(
            s.sign_in("x:1", host(1)).await,
            Err(ProxyError::Unauthorized)
        ));
        assert!(matches!(
            s.sign_in("y:1", host(2)).await,
            Err(ProxyError::Unauthorized)
        ));
        assert!(matches!(
            s.sign_in("z:1", host(3)).await,
            Err(ProxyError::TooManyRequests { .. })
        ));
        let elsewhere = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1));
        assert!(matches!(
            s.sign_in("w:1", elsewhere).await,
            Err(ProxyError::Unauthorized)
        ));
    }

    #[tokio::test]
    async fn uncached_checks_are_held_to_a_global_rate() {
        let s = setup(
            &[("a", &["k"])],
            "verify_global_per_second = 1\nverify_global_burst = 3\nverify_burst = 100",
        );
        let mut refused = 0;
        for i in 0..10u8 {
            let client = IpAddr::V4(Ipv4Addr::new(10, 0, 0, i));
            if let Err(ProxyError::TooManyRequests { .. }) =
                s.sign_in(&format!("n{i}:k"), client).await
            {
                refused += 1;
            }
        }
        assert_eq!(refused, 7);
        // Cached credentials are not checked again, so they pass the ceiling.
        s.clock.advance(Duration::from_secs(1));
        assert_eq!(s.sign_in("a:k", CLIENT).await.unwrap(), "a");
        assert_eq!(s.sign_in("a:k", CLIENT).await.unwrap(), "a");
    }

    #[tokio::test]
    async fn concurrent_first_requests_share_one_verification() {
        let s = Arc::new(setup(&[("a", &["k"])], "verify_global_burst = 1"));
        let requests: Vec<_> = (0..16)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.sign_in("a:k", CLIENT).await })
            })
            .collect();
        for request in requests {
            assert_eq!(request.await.unwrap().unwrap(), "a");
        }
    }

    #[tokio::test]
    async fn a_removed_key_or_tenant_stops_working_at_once() {
        let mut s = setup(&[("a", &["old", "new"]), ("b", &["bee"])], "");
        assert!(s.sign_in("a:old", CLIENT).await.is_ok());
        assert!(s.sign_in("b:bee", CLIENT).await.is_ok());
        // The new table keeps a's newer key only and drops b.
        let mut next = config(&[("a", &["x"])], "");
        next.tenants[0].key_hashes =
            vec![s.snapshot.tenant("a").unwrap().config.key_hashes[1].clone()];
        s.snapshot = build(next);
        s.auth.forget_missing(&s.snapshot);
        assert!(matches!(
            s.sign_in("a:old", CLIENT).await,
            Err(ProxyError::Unauthorized)
        ));
        assert!(matches!(
            s.sign_in("b:bee", CLIENT).await,
            Err(ProxyError::Unauthorized)
        ));
        assert_eq!(s.sign_in("a:new", CLIENT).await.unwrap(), "a");
    }
}
