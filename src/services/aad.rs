//! Bearer callers: AAD access tokens, validated against the signing keys their issuer publishes.
//! The snapshot of the tenant table maps a valid token's principal to a tenant
//! (`Snapshot::tenant_for_claims`).
//!
//! - Discovery documents are followed as published: their `issuer` and `jwks_uri` are used, not
//!   rebuilt from a URL template. Keys are refreshed on schedule, and again when a token names an
//!   unknown `kid` — at most once per `jwks_min_refetch_seconds`, so a flood of bogus `kid`s
//!   cannot hammer the IdP.
//! - Only RS*, PS* and ES* signatures with a key of the matching type are accepted: `alg: none`,
//!   HMAC with the public key as secret, or an algorithm that does not fit the key are refused.
//! - `aud` must be one of kqlgate's audiences, `iss` one of the allowed issuers, `exp`/`nbf`
//!   hold within the leeway, and (when `[aad] tenants` is set) `tid` must be listed.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::credential::check_login_url;
use crate::config::AadSettings;
use crate::services::metrics::Metrics;

/// Why a token was refused: for the operator's debug log, never for the caller.
pub type Refusal = &'static str;

const ACCEPTED_ALGORITHMS: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

pub struct AadValidator {
    settings: AadSettings,
    http: reqwest::Client,
    keys: RwLock<HashMap<String, SigningKey>>,
    /// When keys were last fetched because of an unknown `kid`; also makes such fetches single.
    last_refetch: tokio::sync::Mutex<Option<Instant>>,
    metrics: Arc<Metrics>,
}

struct SigningKey {
    key: DecodingKey,
    rsa: bool,
    /// The `alg` the JWK pins, if any.
    alg: Option<Algorithm>,
    /// The issuers whose tokens this key may sign.
    issuers: Vec<String>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// What a valid token says about its caller.
#[derive(Debug, Deserialize)]
pub struct TokenClaims {
    pub tid: Option<String>,
    pub oid: Option<String>,
    pub appid: Option<String>,
    pub azp: Option<String>,
}

impl AadValidator {
    /// Starts the key refresh in the background; must run inside the Tokio runtime.
    pub fn start(
        settings: AadSettings,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<AadValidator>> {
        let validator = Arc::new(AadValidator {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            settings,
            keys: RwLock::new(HashMap::new()),
            last_refetch: tokio::sync::Mutex::new(None),
            metrics,
        });
        tokio::spawn(refresh_periodically(Arc::downgrade(&validator)));
        Ok(validator)
    }

    /// The claims of a valid token.
    pub async fn validate(&self, token: &str) -> Result<TokenClaims, Refusal> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "not a JWT")?;
        if !ACCEPTED_ALGORITHMS.contains(&header.alg) {
            return Err("signature algorithm not accepted");
        }
        let kid = header.kid.ok_or("no kid")?;
        if !self.has_key(&kid) {
            self.refetch_for_unknown_kid().await;
        }
        let claims = {
            let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
            let key = keys.get(&kid).ok_or("unknown kid")?;
            let rsa_alg = !matches!(header.alg, Algorithm::ES256 | Algorithm::ES384);
            if key.rsa != rsa_alg || key.alg.is_some_and(|alg| alg != header.alg) {
                return Err("algorithm does not fit the key");
            }
            let mut validation = Validation::new(header.alg);
            validation.set_audience(&self.settings.audiences);
            validation.set_issuer(&key.issuers);
            validation.set_required_spec_claims(&["exp", "iss", "aud"]);
            validation.leeway = self.settings.leeway.as_secs();
            validation.validate_nbf = true;
            jsonwebtoken::decode::<TokenClaims>(token, &key.key, &validation)
                .map_err(|_| "signature, audience, issuer or lifetime invalid")?
                .claims
        };
        if !self.settings.tenants.is_empty() {
            let listed = claims.tid.as_deref().is_some_and(|tid| {
                self.settings
                    .tenants
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(tid))
            });
            if !listed {
                return Err("tenant not allowed");
            }
        }
        Ok(claims)
    }

    fn has_key(&self, kid: &str) -> bool {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(kid)
    }

    async fn refetch_for_unknown_kid(&self) {
        let mut last = self.last_refetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.settings.jwks_min_refetch) {
            return;
        }
        *last = Some(Instant::now());
        self.refresh().await;
    }

    /// Fetches every discovery document and its keys; keeps the old keys of a document that
    /// cannot be fetched.
    async fn refresh(&self) {
        let mut fresh = HashMap::new();
        let mut complete = true;
        for url in &self.settings.discovery_urls {
            match self.fetch_document_keys(url).await {
                Ok(keys) => fresh.extend(keys),
                Err(error) => {
                    complete = false;
                    tracing::warn!(document = %url, %error, "cannot load AAD signing keys");
                }
            }
        }
        self.metrics.jwks_refresh(complete);
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        if complete {
            *keys = fresh;
        } else {
            keys.extend(fresh);
        }
        tracing::debug!(keys = keys.len(), "AAD signing keys loaded");
    }

    async fn fetch_document_keys(
        &self,
        url: &reqwest::Url,
    ) -> Result<HashMap<String, SigningKey>, String> {
        let document: Discovery = self.get_json(url.as_str()).await?;
        let issuers = if self.settings.issuers.is_empty() {
            if document.issuer.contains('{') {
                return Err(format!(
                    "its issuer {:?} is a template; list the accepted issuers in [aad] issuers",
                    document.issuer
                ));
            }
            vec![document.issuer]
        } else {
            self.settings.issuers.clone()
        };
        let jwks_uri = check_login_url(&document.jwks_uri)?;
        let set: JwkSet = self.get_json(jwks_uri.as_str()).await?;
        let mut keys = HashMap::new();
        for jwk in set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            if matches!(jwk.common.public_key_use, Some(ref u) if *u != jsonwebtoken::jwk::PublicKeyUse::Signature)
            {
                continue;
            }
            let rsa = match jwk.algorithm {
                AlgorithmParameters::RSA(_) => true,
                AlgorithmParameters::EllipticCurve(_) => false,
                _ => continue, // symmetric or OKP keys never sign AAD tokens
            };
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            keys.insert(
                kid,
                SigningKey {
                    key,
                    rsa,
                    alg,
                    issuers: issuers.clone(),
                },
            );
        }
        Ok(keys)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| crate::error::error_chain(&e))?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        response
            .json()
            .await
            .map_err(|e| format!("{url}: unreadable JSON: {e}"))
    }
}

async fn refresh_periodically(validator: std::sync::Weak<AadValidator>) {
    loop {
        let Some(current) = validator.upgrade() else {
            return;
        };
        current.refresh().await;
        let loaded = !current
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        // Until keys load, try again soon; afterwards on the configured schedule.
        let wait = if loaded {
            current.settings.jwks_refresh
        } else {
            current.settings.jwks_min_refetch
        };
        drop(current);
        tokio::time::sleep(wait).await;
    }
}
