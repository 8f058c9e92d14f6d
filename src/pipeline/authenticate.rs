//! Stage: authenticate. Turns `Authorization: Basic base64(tenant:key)` — or, with `[aad]`,
//! `Authorization: Bearer <AAD token>` (see `crate::aad`) — into a tenant, before anything else
//! about the request is read.
//!
//! argon2 is slow on purpose, so this stage is built not to become a denial-of-service lever:
//! - a key that verified once is remembered by a keyed SHA-256 digest of the presented
//!   credential (never the plaintext), so argon2 runs once per key per process;
//! - uncached verifications are rate-limited per client address and per tenant name (hashed into
//!   a fixed number of buckets, so random names cannot grow memory or reveal which tenants
//!   exist), and are refused with 429 once either budget is spent;
//! - at most `max_concurrent_verifications` run at once, on the blocking pool.
//!
//! Cached credentials skip the limits, so an attacker hammering a tenant's name with wrong keys
//! cannot lock out that tenant's working clients.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use argon2::password_hash::{PasswordHashString, PasswordVerifier, SaltString};
use argon2::{Argon2, PasswordHasher};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::header::AUTHORIZATION;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use tokio::sync::{OnceCell, Semaphore};

use crate::aad::AadValidator;
use crate::config::{AadSettings, AuthSettings, Tenant};
use crate::error::ProxyError;

/// How long a request waits for a free verification slot before it is told to come back.
const VERIFICATION_QUEUE_WAIT: Duration = Duration::from_secs(5);
/// Longer Authorization headers are refused unread.
const MAX_AUTHORIZATION_LEN: usize = 4096;
/// Buckets for per-name attempt limits: fixed memory whatever names are tried.
const NAME_BUCKETS: u64 = 4096;

type CredentialDigest = [u8; 32];

pub struct Authenticator {
    tenant_ids: HashMap<String, usize>,
    key_hashes: Vec<Arc<[PasswordHashString]>>,
    /// Verified against for unknown tenants, so they cost the same time as a wrong key.
    /// Made on first use: computing it costs an argon2 run (and its memory) that a gateway
    /// nobody probes with unknown names never needs to spend. An async cell, so a burst of
    /// unknown names runs that argon2 once, not once per request.
    decoy_hash: OnceCell<Arc<[PasswordHashString]>>,
    /// Cost parameters of the first configured key, which the decoy copies.
    decoy_params: argon2::Params,
    /// Random per process: the digests are useless outside it.
    digest_key: [u8; 32],
    verified: RwLock<HashMap<CredentialDigest, usize>>,
    /// Checks in progress, by credential digest, so concurrent requests share one.
    pending: RwLock<HashMap<CredentialDigest, Arc<OnceCell<Option<usize>>>>>,
    verification_slots: Semaphore,
    attempts_by_address: DefaultKeyedRateLimiter<IpAddr>,
    attempts_by_name: DefaultKeyedRateLimiter<u64>,
    /// Validates Bearer callers; `None` without an `[aad]` section.
    aad: Option<Arc<AadValidator>>,
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
        tenants: &[Tenant],
        aad: Option<&AadSettings>,
    ) -> anyhow::Result<Authenticator> {
        let quota = Quota::per_minute(
            NonZeroU32::new(settings.verify_per_minute).expect("validated at load: >= 1"),
        )
        .allow_burst(NonZeroU32::new(settings.verify_burst).expect("validated at load: >= 1"));
        let mut digest_key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut digest_key);
        let aad = aad
            .map(|aad| AadValidator::start(aad.clone(), tenants))
            .transpose()?;
        Ok(Authenticator {
            tenant_ids: tenants
                .iter()
                .enumerate()
                .map(|(index, t)| (t.id.clone(), index))
                .collect(),
            key_hashes: tenants
                .iter()
                .map(|t| Arc::from(t.key_hashes.clone()))
                .collect(),
            decoy_hash: OnceCell::new(),
            decoy_params: tenants
                .iter()
                .find_map(|t| t.key_hashes.first())
                .and_then(|h| argon2::Params::try_from(&h.password_hash()).ok())
                .unwrap_or_default(),
            digest_key,
            verified: RwLock::new(HashMap::new()),
            pending: RwLock::new(HashMap::new()),
            verification_slots: Semaphore::new(settings.max_concurrent_verifications),
            attempts_by_address: RateLimiter::keyed(quota),
            attempts_by_name: RateLimiter::keyed(quota),
            aad,
        })
    }

    /// Returns the index of the tenant whose credentials the request carries.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        client: IpAddr,
    ) -> Result<usize, ProxyError> {
        let value = headers.get(AUTHORIZATION).ok_or(ProxyError::Unauthorized)?;
        if let Some(token) = bearer_token(value) {
            return self.authenticate_bearer(token).await;
        }
        let credentials = parse_basic(value).ok_or(ProxyError::Unauthorized)?;
        let digest = self.digest(&credentials);
        if let Some(&tenant) = self.read_cache().get(&digest) {
            return Ok(tenant);
        }
        // Single flight: a client that opens many connections at once with a new key costs one
        // verification (and one attempt), not one per connection.
        let check = self.pending_check(digest);
        let outcome = check
            .get_or_try_init(|| self.check_uncached(credentials, client))
            .await
            .copied();
        // Cache first, then forget the pending check, so no request falls between the two.
        if let Ok(Some(index)) = outcome {
            self.lock(&self.verified).insert(digest, index);
        }
        self.lock(&self.pending).remove(&digest);
        outcome?.ok_or(ProxyError::Unauthorized)
    }

    async fn authenticate_bearer(&self, token: &str) -> Result<usize, ProxyError> {
        let Some(aad) = &self.aad else {
            return Err(ProxyError::Unauthorized);
        };
        aad.validate(token).await.map_err(|reason| {
            tracing::debug!(reason, "bearer token refused");
            ProxyError::Unauthorized
        })
    }

    fn pending_check(&self, digest: CredentialDigest) -> Arc<OnceCell<Option<usize>>> {
        self.lock(&self.pending).entry(digest).or_default().clone()
    }

    /// Spends an attempt and runs argon2: the tenant index if the key is one of its keys.
    async fn check_uncached(
        &self,
        credentials: BasicCredentials,
        client: IpAddr,
    ) -> Result<Option<usize>, ProxyError> {
        self.spend_attempt(client, credentials.tenant_id())?;
        let tenant = self.tenant_ids.get(credentials.tenant_id()).copied();
        let hashes = match tenant {
            Some(index) => self.key_hashes[index].clone(),
            None => self.decoy().await?,
        };
        let matched = self.verify(credentials.key().to_owned(), hashes).await?;
        Ok(tenant.filter(|_| matched))
    }

    /// Forgets idle per-address limiter state; called periodically so the map stays small.
    pub fn prune(&self) {
        self.attempts_by_address.retain_recent();
        self.attempts_by_address.shrink_to_fit();
        self.attempts_by_name.retain_recent();
        self.attempts_by_name.shrink_to_fit();
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

    fn spend_attempt(&self, client: IpAddr, tenant_id: &str) -> Result<(), ProxyError> {
        let by_address = self.attempts_by_address.check_key(&client);
        let by_name = self
            .attempts_by_name
            .check_key(&self.name_bucket(tenant_id));
        let now = DefaultClock::default().now();
        let wait = [by_address.err(), by_name.err()]
            .into_iter()
            .flatten()
            .map(|refusal| refusal.wait_time_from(now))
            .max();
        match wait {
            None => Ok(()),
            Some(wait) => Err(ProxyError::TooManyRequests {
                reason: "too many sign-in attempts that were not already verified".into(),
                retry_after_secs: crate::pipeline::limit::whole_seconds(wait),
            }),
        }
    }

    async fn decoy(&self) -> Result<Arc<[PasswordHashString]>, ProxyError> {
        let decoy = self
            .decoy_hash
            .get_or_try_init(|| async {
                let params = self.decoy_params.clone();
                tokio::task::spawn_blocking(move || Arc::from(vec![decoy_hash(params)]))
                    .await
                    .map_err(|_| ProxyError::Internal)
            })
            .await?;
        Ok(decoy.clone())
    }

    async fn verify(
        &self,
        key: String,
        hashes: Arc<[PasswordHashString]>,
    ) -> Result<bool, ProxyError> {
        let _slot =
            tokio::time::timeout(VERIFICATION_QUEUE_WAIT, self.verification_slots.acquire())
                .await
                .map_err(|_| {
                    ProxyError::ServiceUnavailable(
                        "too many credential checks are in progress; retry shortly".into(),
                    )
                })?
                .map_err(|_| ProxyError::Internal)?;
        tokio::task::spawn_blocking(move || {
            // Every hash is tried, so a tenant's key count, not which key matched, sets the time.
            hashes.iter().fold(false, |matched, hash| {
                let ok = Argon2::default()
                    .verify_password(key.as_bytes(), &hash.password_hash())
                    .is_ok();
                matched | ok
            })
        })
        .await
        .map_err(|_| ProxyError::Internal)
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, HashMap<CredentialDigest, usize>> {
        // A poisoned lock only means a panic elsewhere mid-insert; the map itself is intact.
        self.verified.read().unwrap_or_else(|e| e.into_inner())
    }

    fn lock<'a, T>(&self, map: &'a RwLock<T>) -> std::sync::RwLockWriteGuard<'a, T> {
        map.write().unwrap_or_else(|e| e.into_inner())
    }
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
    use std::net::Ipv4Addr;

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn tenant(id: &str, keys: &[&str]) -> Tenant {
        let hash = |key: &&str| {
            let phc = crate::keys::hash_key(key).unwrap();
            argon2::password_hash::PasswordHash::new(&phc)
                .unwrap()
                .serialize()
        };
        Tenant {
            id: id.into(),
            key_hashes: keys.iter().map(hash).collect(),
            ..Tenant::example()
        }
    }

    fn settings(burst: u32) -> AuthSettings {
        AuthSettings {
            max_concurrent_verifications: 2,
            verify_burst: burst,
            verify_per_minute: 1,
        }
    }

    fn basic(user_and_key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("Basic {}", STANDARD.encode(user_and_key));
        headers.insert(AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[tokio::test]
    async fn every_rotated_key_works_and_others_do_not() {
        let auth = Authenticator::new(
            &settings(20),
            &[tenant("a", &["old", "new"]), tenant("b", &["bee"])],
            None,
        )
        .unwrap();
        assert_eq!(auth.authenticate(&basic("a:old"), CLIENT).await.unwrap(), 0);
        assert_eq!(auth.authenticate(&basic("a:new"), CLIENT).await.unwrap(), 0);
        assert_eq!(auth.authenticate(&basic("b:bee"), CLIENT).await.unwrap(), 1);
        for wrong in ["a:bee", "b:old", "c:old", "a:", ":old", "a:old:"] {
            assert!(
                matches!(
                    auth.authenticate(&basic(wrong), CLIENT).await,
                    Err(ProxyError::Unauthorized)
                ),
                "{wrong}"
            );
        }
    }

    #[tokio::test]
    async fn malformed_headers_are_unauthorized_without_verifying() {
        let auth = Authenticator::new(&settings(1), &[tenant("a", &["k"])], None).unwrap();
        let mut headers = HeaderMap::new();
        for value in ["Bearer abc", "Basic !!!", "Basic", "Basic YWJj"] {
            headers.insert(AUTHORIZATION, value.parse().unwrap());
            assert!(matches!(
                auth.authenticate(&headers, CLIENT).await,
                Err(ProxyError::Unauthorized)
            ));
        }
        // None of those spent the single attempt: a real one still gets verified.
        assert_eq!(auth.authenticate(&basic("a:k"), CLIENT).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn repeated_failures_are_throttled_but_cached_keys_still_work() {
        let auth = Authenticator::new(&settings(3), &[tenant("a", &["k"])], None).unwrap();
        assert_eq!(auth.authenticate(&basic("a:k"), CLIENT).await.unwrap(), 0);
        for _ in 0..2 {
            assert!(matches!(
                auth.authenticate(&basic("a:wrong"), CLIENT).await,
                Err(ProxyError::Unauthorized)
            ));
        }
        match auth.authenticate(&basic("a:wrong"), CLIENT).await {
            Err(ProxyError::TooManyRequests {
                retry_after_secs, ..
            }) => assert!(retry_after_secs >= 1),
            other => panic!("expected throttling, got {other:?}"),
        }
        // The already-verified key is served from the cache, untouched by the throttle.
        assert_eq!(auth.authenticate(&basic("a:k"), CLIENT).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn concurrent_first_requests_share_one_verification() {
        let auth =
            Arc::new(Authenticator::new(&settings(1), &[tenant("a", &["k"])], None).unwrap());
        let requests: Vec<_> = (0..16)
            .map(|_| {
                let auth = auth.clone();
                tokio::spawn(async move { auth.authenticate(&basic("a:k"), CLIENT).await })
            })
            .collect();
        for request in requests {
            assert_eq!(request.await.unwrap().unwrap(), 0);
        }
    }

    #[tokio::test]
    async fn a_verified_key_is_not_verified_again() {
        let auth = Authenticator::new(&settings(1), &[tenant("a", &["k"])], None).unwrap();
        assert_eq!(auth.authenticate(&basic("a:k"), CLIENT).await.unwrap(), 0);
        // The one attempt is spent; a second verification would be throttled.
        for _ in 0..5 {
            assert_eq!(auth.authenticate(&basic("a:k"), CLIENT).await.unwrap(), 0);
        }
    }
}
