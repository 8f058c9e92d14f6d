//! `[clusters.NAME]`: where queries go, how kqlgate signs in there (`credential.rs`), and how
//! it talks to it.

use std::time::Duration;

use serde::Deserialize;

use super::credential::{CredentialKind, CredentialSection, UpstreamCredential};
use super::{problem, ConfigError, Environment};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub url: String,
    // The credential keys (see `credential::CredentialSection`), flat as the contract has them;
    // serde cannot combine `flatten` with `deny_unknown_fields`, so they are listed here too.
    #[serde(default)]
    pub auth: CredentialKind,
    pub token_env: Option<String>,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<std::path::PathBuf>,
    pub authority_host: Option<String>,
    pub scope: Option<String>,
    pub federated_token_file: Option<std::path::PathBuf>,
    pub imds_endpoint: Option<String>,
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
    #[serde(default = "default_connect_timeout_seconds")]
    pub connect_timeout_seconds: u64,
    /// Idle keep-alive connections kept to the cluster by each worker.
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle: usize,
    /// An idle pooled connection is closed after this long; keep it below the cluster's own
    /// idle timeout (Azure's load balancer: 4 minutes).
    #[serde(default = "default_pool_idle_timeout_seconds")]
    pub pool_idle_timeout_seconds: u64,
    /// Force the request properties that keep a query inside its database.
    #[serde(default = "default_true")]
    pub enforce_request_properties: bool,
    /// Prefix queries with Kusto's own `restrict access to (…)` statement.
    #[serde(default)]
    pub restrict_statement: bool,
    /// Requests in flight to this cluster across all tenants (and, with the Redis backend,
    /// all replicas); absent: no cap.
    pub max_concurrent: Option<u32>,
    /// How long a request waits for a place under `max_concurrent`; 0: refused at once.
    #[serde(default)]
    pub queue_timeout_ms: u64,
}

fn default_true() -> bool {
    true
}
fn default_timeout_seconds() -> u64 {
    300
}
fn default_connect_timeout_seconds() -> u64 {
    10
}
fn default_pool_max_idle() -> usize {
    64
}
fn default_pool_idle_timeout_seconds() -> u64 {
    90
}

#[derive(Debug, PartialEq)]
pub struct Cluster {
    pub name: String,
    pub url: reqwest::Url,
    pub credential: UpstreamCredential,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub pool_max_idle: usize,
    pub pool_idle_timeout: Duration,
    pub enforce_request_properties: bool,
    pub restrict_statement: bool,
    pub max_concurrent: Option<u32>,
    pub queue_timeout: Duration,
}

impl ClusterSection {
    pub fn validate(self, name: String, env: &dyn Environment) -> Result<Cluster, ConfigError> {
        let path = format!("clusters.{name}");
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| problem(format!("{path}.url"), format!("{:?}: {e}", self.url)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(problem(
                format!("{path}.url"),
                "must be an http:// or https:// URL with a host",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(problem(
                format!("{path}.url"),
                "must not carry credentials; use auth = \"bearer-env\"",
            ));
        }
        let credential_keys = CredentialSection {
            auth: self.auth,
            token_env: self.token_env,
            tenant_id: self.tenant_id,
            client_id: self.client_id,
            client_secret_env: self.client_secret_env,
            client_secret_file: self.client_secret_file,
            authority_host: self.authority_host,
            scope: self.scope,
            federated_token_file: self.federated_token_file,
            imds_endpoint: self.imds_endpoint,
        };
        let credential = credential_keys.validate(&path, &url, env)?;
        let positive = |key: &str, value: u64| {
            if value == 0 {
                Err(problem(format!("{path}.{key}"), "must be at least 1"))
            } else {
                Ok(Duration::from_secs(value))
            }
        };
        Ok(Cluster {
            timeout: positive("timeout_seconds", self.timeout_seconds)?,
            connect_timeout: positive("connect_timeout_seconds", self.connect_timeout_seconds)?,
            pool_idle_timeout: positive(
                "pool_idle_timeout_seconds",
                self.pool_idle_timeout_seconds,
            )?,
            name,
            url,
            credential,
            pool_max_idle: self.pool_max_idle,
            enforce_request_properties: self.enforce_request_properties,
            restrict_statement: self.restrict_statement,
            max_concurrent: match self.max_concurrent {
                Some(0) => {
                    return Err(problem(
                        format!("{path}.max_concurrent"),
                        "must be at least 1 (leave it out for no cap)",
                    ))
                }
                cap => cap,
            },
            queue_timeout: Duration::from_millis(self.queue_timeout_ms),
        })
    }
}
