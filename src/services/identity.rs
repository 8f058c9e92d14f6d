//! The proxy's own identities at the cluster. A static credential is a header value; an AAD
//! identity is a token cached and refreshed in the background, ahead of its expiry.
//!
//! - One [`TokenProvider`] per identity (identities with the same cache key share it), and only
//!   its background task ever asks the token endpoint: concurrent requests never cause more than
//!   one token request per identity (single flight by construction).
//! - A failing token endpoint is retried with exponential backoff while the current token lasts;
//!   once no valid token exists, requests fail fast with 502 and an envelope that says the
//!   cluster credential is unavailable — never with the secret or the endpoint's answer.
//! - The exchanges are hand-written here (three small HTTP calls) because the Azure identity
//!   crates bring their own HTTP stack and runtime assumptions; reqwest is already ours.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use http::HeaderValue;
use serde::Deserialize;
use tokio::sync::watch;

use crate::config::credential::{AadFlow, AadIdentity, SecretSource, UpstreamCredential};
use crate::error::ProxyError;
use crate::services::metrics::{Label, Metrics};

/// How long a request waits for an identity's very first token before failing.
const FIRST_TOKEN_WAIT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Refresh this long before expiry at most (azure.identity uses 5 minutes).
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(300);
const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What a request presents to the cluster.
#[derive(Clone)]
pub enum Credential {
    None,
    Static(HeaderValue),
    Aad(Arc<TokenProvider>),
}

impl Credential {
    pub async fn authorization(&self) -> Result<Option<HeaderValue>, ProxyError> {
        match self {
            Credential::None => Ok(None),
            Credential::Static(value) => Ok(Some(value.clone())),
            Credential::Aad(provider) => provider.authorization().await.map(Some),
        }
    }
}

/// Builds credentials, sharing one token provider per distinct AAD identity.
pub struct Identities {
    http: reqwest::Client,
    providers: HashMap<String, Arc<TokenProvider>>,
    metrics: Arc<Metrics>,
}

impl Identities {
    pub fn new(metrics: Arc<Metrics>) -> anyhow::Result<Identities> {
        let http = reqwest::Client::builder()
            .timeout(TOKEN_REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Identities {
            http,
            providers: HashMap::new(),
            metrics,
        })
    }

    /// Lets go of identities no credential uses any more (their refresh task then ends).
    pub fn forget_unused(&mut self) {
        self.providers
            .retain(|_, provider| Arc::strong_count(provider) > 1);
    }

    /// Must run inside the Tokio runtime: AAD identities start their refresh task here.
    pub fn credential(&mut self, upstream: &UpstreamCredential) -> anyhow::Result<Credential> {
        Ok(match upstream {
            UpstreamCredential::None => Credential::None,
            UpstreamCredential::Bearer(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))?;
                value.set_sensitive(true);
                Credential::Static(value)
            }
            UpstreamCredential::Aad(identity) => {
                let provider = self
                    .providers
                    .entry(identity.cache_key())
                    .or_insert_with(|| {
                        TokenProvider::start(
                            identity.clone(),
                            self.http.clone(),
                            self.metrics.clone(),
                        )
                    });
                Credential::Aad(provider.clone())
            }
        })
    }
}

#[derive(Clone)]
enum TokenState {
    /// The first token request has not finished yet.
    Starting,
    Ready {
        header: HeaderValue,
        expires_at: Instant,
        /// Accept the token only while this much of it is left.
        skew: Duration,
    },
    /// No valid token, and the last request failed.
    Unavailable,
}

pub struct TokenProvider {
    identity: AadIdentity,
    http: reqwest::Client,
    state: watch::Sender<TokenState>,
    metrics: Arc<Metrics>,
    /// The identity as a metrics label: its flow and client id (no secret).
    label: Label,
}

struct Token {
    header: HeaderValue,
    lifetime: Duration,
}

impl TokenProvider {
    pub fn start(
        identity: AadIdentity,
        http: reqwest::Client,
        metrics: Arc<Metrics>,
    ) -> Arc<TokenProvider> {
        let label = Label::from(format!(
            "{}:{}",
            flow_name(&identity.flow),
            identity.client_id.as_deref().unwrap_or("system-assigned")
        ));
        let provider = Arc::new(TokenProvider {
            identity,
            http,
            state: watch::Sender::new(TokenState::Starting),
            metrics,
            label,
        });
        tokio::spawn(refresh_loop(Arc::downgrade(&provider)));
        provider
    }

    pub async fn authorization(&self) -> Result<HeaderValue, ProxyError> {
        let mut state = self.state.subscribe();
        if matches!(*state.borrow(), TokenState::Starting) {
            let first = state.wait_for(|s| !matches!(s, TokenState::Starting));
            let _ = tokio::time::timeout(FIRST_TOKEN_WAIT, first).await;
        }
        let current = state.borrow().clone();
        match current {
            TokenState::Ready {
                header,
                expires_at,
                skew,
            } if Instant::now() + skew < expires_at => Ok(header),
            _ => Err(ProxyError::BadGateway(
                "the cluster credential is unavailable: kqlgate could not obtain a token for \
                 its identity at the cluster; retry later"
                    .into(),
            )),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} client {} in tenant {}",
            flow_name(&self.identity.flow),
            self.identity
                .client_id
                .as_deref()
                .unwrap_or("(system-assigned)"),
            if self.identity.tenant_id.is_empty() {
                "(implied)"
            } else {
                &self.identity.tenant_id
            }
        )
    }

    async fn fetch(&self) -> Result<Token, String> {
        let identity = &self.identity;
        let request = match &identity.flow {
            AadFlow::ClientSecret(source) => {
                let secret = match source {
                    SecretSource::Value(secret) => secret.expose().to_owned(),
                    SecretSource::File(path) => std::fs::read_to_string(path)
                        .map_err(|e| format!("cannot read the client secret file: {e}"))?
                        .trim()
                        .to_owned(),
                };
                self.token_endpoint_request(&[("client_secret", secret)])
            }
            AadFlow::WorkloadIdentity { token_file } => {
                let assertion = std::fs::read_to_string(token_file)
                    .map_err(|e| format!("cannot read the federated token file: {e}"))?;
                self.token_endpoint_request(&[
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
                    ),
                    ("client_assertion", assertion.trim().to_owned()),
                ])
            }
            AadFlow::ManagedIdentity { endpoint } => {
                let resource = identity.scope.trim_end_matches("/.default");
                let mut query = vec![("api-version", "2018-02-01"), ("resource", resource)];
                if let Some(client_id) = &identity.client_id {
                    query.push(("client_id", client_id));
                }
                self.http
                    .get(endpoint.clone())
                    .query(&query)
                    .header("Metadata", "true")
            }
        };
        let response = request
            .send()
            .await
            .map_err(|e| format!("token request failed: {}", crate::error::error_chain(&e)))?;
        let status = response.status();
        let body: TokenResponse = response.json().await.map_err(|e| {
            format!("token endpoint answered {status} with an unreadable body: {e}")
        })?;
        if !status.is_success() {
            // AAD's `error` and `error_description` carry no secret.
            return Err(format!(
                "token endpoint answered {status}: {} {}",
                body.error.unwrap_or_default(),
                body.error_description.unwrap_or_default()
            ));
        }
        let access_token = body
            .access_token
            .ok_or("token endpoint answered without an access_token")?;
        let lifetime = body
            .expires_in
            .and_then(|v| v.seconds())
            .or_else(|| {
                let expires_on = body.expires_on.and_then(|v| v.seconds())?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()?
                    .as_secs();
                expires_on.checked_sub(now)
            })
            .ok_or("token endpoint answered without expires_in")?;
        let mut header = HeaderValue::from_str(&format!("Bearer {access_token}"))
            .map_err(|_| "token endpoint answered with an unusable token")?;
        header.set_sensitive(true);
        // `expires_in` counts from when the endpoint answered, and the token's own `exp` is
        // rounded down to the second: count one second less, so no token is sent after it.
        let lifetime = Duration::from_secs(lifetime.saturating_sub(1).max(1));
        Ok(Token { header, lifetime })
    }

    fn token_endpoint_request(&self, credential: &[(&str, String)]) -> reqwest::RequestBuilder {
        let identity = &self.identity;
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            identity.authority, identity.tenant_id
        );
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", identity.client_id.clone().unwrap_or_default()),
            ("scope", identity.scope.clone()),
        ];
        form.extend(credential.iter().cloned());
        self.http.post(url).form(&form)
    }
}

fn flow_name(flow: &AadFlow) -> &'static str {
    match flow {
        AadFlow::ClientSecret(_) => "client-secret",
        AadFlow::WorkloadIdentity { .. } => "workload-identity",
        AadFlow::ManagedIdentity { .. } => "managed-identity",
    }
}

/// When to refresh: ahead of expiry by a tenth of the lifetime, at most five minutes.
fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(MAX_REFRESH_MARGIN)
}

async fn refresh_loop(provider: Weak<TokenProvider>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some(current) = provider.upgrade() else {
            return; // the gateway that owned this identity is gone
        };
        let wait = match current.fetch().await {
            Ok(token) => {
                let margin = refresh_margin(token.lifetime);
                tracing::info!(
                    identity = %current.describe(),
                    lifetime_seconds = token.lifetime.as_secs(),
                    "cluster token acquired"
                );
                let expires_at = Instant::now() + token.lifetime;
                current
                    .metrics
                    .token_refresh(&current.label, Some(expires_at));
                current.state.send_replace(TokenState::Ready {
                    header: token.header,
                    expires_at,
                    skew: (token.lifetime / 20).min(Duration::from_secs(5)),
                });
                backoff = Duration::from_secs(1);
                (token.lifetime - margin).max(Duration::from_secs(1))
            }
            Err(error) => {
                tracing::warn!(identity = %current.describe(), %error, retry_in_seconds = backoff.as_secs(), "cluster token request failed");
                current.metrics.token_refresh(&current.label, None);
                current.state.send_modify(|state| {
                    let expired = match state {
                        TokenState::Ready { expires_at, .. } => *expires_at <= Instant::now(),
                        _ => true,
                    };
                    if expired {
                        *state = TokenState::Unavailable;
                    }
                });
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        drop(current);
        tokio::time::sleep(wait).await;
    }
}

/// The token endpoints' answer: AAD's (`expires_in` a number) or IMDS's (strings).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    expires_in: Option<NumberOrString>,
    expires_on: Option<NumberOrString>,
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrString {
    Number(u64),
    String(String),
}

impl NumberOrString {
    fn seconds(self) -> Option<u64> {
        match self {
            NumberOrString::Number(n) => Some(n),
            NumberOrString::String(s) => s.trim().parse().ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_comes_ahead_of_expiry() {
        assert_eq!(
            refresh_margin(Duration::from_secs(3600)),
            Duration::from_secs(300)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(10)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn token_responses_of_both_shapes_parse() {
        let aad: TokenResponse =
            serde_json::from_str(r#"{"token_type":"Bearer","expires_in":3599,"access_token":"x"}"#)
                .unwrap();
        assert_eq!(aad.expires_in.unwrap().seconds(), Some(3599));
        let imds: TokenResponse = serde_json::from_str(
            r#"{"access_token":"x","expires_in":"86399","expires_on":"1700000000","resource":"r"}"#,
        )
        .unwrap();
        assert_eq!(imds.expires_in.unwrap().seconds(), Some(86399));
    }
}
