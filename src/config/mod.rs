//! Configuration: `kqlgate.toml` → [`FileConfig`] (the file's shape, exactly as written) →
//! [`Config`] (validated, typed, ready to serve). Validation happens once, at load, and every
//! problem is reported with the key path it concerns (`tenants[2].cluster: …`), so `kqlgate check`
//! and `kqlgate serve` refuse a bad file the same way.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHashString};
use serde::Deserialize;

pub mod aad;
pub mod credential;

pub use aad::{AadSettings, Principal};
pub use credential::{CredentialKind, CredentialSection, Secret, UpstreamCredential};

// === The file's shape ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterSection>,
    #[serde(default)]
    pub tenants: Vec<TenantSection>,
    pub aad: Option<aad::AadSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Applies to the decoded body, so a small gzip bomb cannot expand past it.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    #[serde(default = "default_header_read_timeout_seconds")]
    pub header_read_timeout_seconds: u64,
    /// How long in-flight streams may run on after SIGTERM/SIGINT.
    #[serde(default = "default_shutdown_grace_seconds")]
    pub shutdown_grace_seconds: u64,
    /// PEM certificate chain and key: serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Threads serving connections, each with its own event loop; 0 = one per CPU available.
    #[serde(default)]
    pub workers: usize,
}

/// Limits that keep argon2 (expensive on purpose) from becoming a denial-of-service lever.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// argon2 verifications running at once; more wait (briefly) for a slot.
    #[serde(default = "default_max_concurrent_verifications")]
    pub max_concurrent_verifications: usize,
    /// Uncached key verifications allowed per client address and per tenant id, as a burst…
    #[serde(default = "default_verify_burst")]
    pub verify_burst: u32,
    /// …refilled at this many per minute.
    #[serde(default = "default_verify_per_minute")]
    pub verify_per_minute: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub url: String,
    // The credential keys (see `credential::CredentialSection`), flat as the contract has them.
    #[serde(default)]
    pub auth: CredentialKind,
    pub token_env: Option<String>,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub authority_host: Option<String>,
    pub scope: Option<String>,
    pub federated_token_file: Option<PathBuf>,
    pub imds_endpoint: Option<String>,
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
    #[serde(default = "default_connect_timeout_seconds")]
    pub connect_timeout_seconds: u64,
    /// Idle keep-alive connections kept to the cluster by each worker.
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle: usize,
    /// Force the request properties that keep a query inside its database.
    #[serde(default = "default_true")]
    pub enforce_request_properties: bool,
    /// Prefix queries with Kusto's own `restrict access to (…)` statement.
    #[serde(default)]
    pub restrict_statement: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSection {
    pub id: String,
    #[serde(default)]
    pub key_hashes: Vec<String>,
    /// AAD callers that act as this tenant: `app:<appid>`, `oid:<object id>`, `tid:<tenant id>`.
    #[serde(default)]
    pub aad_principals: Vec<String>,
    /// The tenant's own identity at the cluster, instead of the cluster's.
    pub upstream: Option<CredentialSection>,
    pub cluster: String,
    pub database: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub rate_per_second: Option<f64>,
    pub burst: Option<u32>,
    pub max_concurrent: Option<u32>,
    #[serde(default)]
    pub role: RoleName,
}

/// What a tenant may do with control commands (see `kql::command_policy`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    #[default]
    Viewer,
    Admin,
}

fn default_true() -> bool {
    true
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_max_body_bytes() -> u64 {
    1024 * 1024
}
fn default_header_read_timeout_seconds() -> u64 {
    10
}
fn default_shutdown_grace_seconds() -> u64 {
    30
}
fn default_max_concurrent_verifications() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
fn default_verify_burst() -> u32 {
    10
}
fn default_verify_per_minute() -> u32 {
    30
}
fn default_timeout_seconds() -> u64 {
    300
}
/// More event loops than this would only add context switches on any machine kqlgate runs on.
const MAX_WORKERS: usize = 256;

fn default_connect_timeout_seconds() -> u64 {
    10
}
fn default_pool_max_idle() -> usize {
    64
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: default_listen(),
            max_body_bytes: default_max_body_bytes(),
            header_read_timeout_seconds: default_header_read_timeout_seconds(),
            shutdown_grace_seconds: default_shutdown_grace_seconds(),
            tls_cert: None,
            tls_key: None,
            workers: 0,
        }
    }
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            max_concurrent_verifications: default_max_concurrent_verifications(),
            verify_burst: default_verify_burst(),
            verify_per_minute: default_verify_per_minute(),
        }
    }
}

// === The validated configuration ===

#[derive(Debug)]
pub struct Config {
    pub server: ServerSettings,
    pub auth: AuthSettings,
    pub clusters: Vec<Cluster>,
    pub tenants: Vec<Tenant>,
    pub aad: Option<AadSettings>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
    pub tls: Option<TlsFiles>,
    /// At least 1: `workers = 0` is resolved to the CPUs available at load.
    pub workers: usize,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub max_concurrent_verifications: usize,
    pub verify_burst: u32,
    pub verify_per_minute: u32,
}

#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    pub url: reqwest::Url,
    pub credential: UpstreamCredential,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub pool_max_idle: usize,
    pub enforce_request_properties: bool,
    pub restrict_statement: bool,
}

#[derive(Debug)]
pub struct Tenant {
    pub id: String,
    pub key_hashes: Vec<PasswordHashString>,
    pub aad_principals: Vec<Principal>,
    /// The tenant's own identity at the cluster; `None`: the cluster's.
    pub upstream: Option<UpstreamCredential>,
    /// Index into [`Config::clusters`].
    pub cluster: usize,
    /// The database GUID, as configured; the name forwarded to the cluster.
    pub database: String,
    /// Lower-cased names (GUID and aliases) that all mean [`Tenant::database`].
    pub database_names: Vec<String>,
    pub rate: Option<RateLimit>,
    pub max_concurrent: Option<u32>,
    pub role: crate::kql::Role,
}

#[cfg(test)]
impl Tenant {
    /// A tenant for unit tests: `contoso`, its database `1111…` with the alias `Samples`, a
    /// viewer, with no keys and no limits.
    pub fn example() -> Tenant {
        Tenant {
            id: "contoso".into(),
            key_hashes: vec![],
            aad_principals: vec![],
            upstream: None,
            cluster: 0,
            database: "11111111-1111-1111-1111-111111111111".into(),
            database_names: vec![
                "11111111-1111-1111-1111-111111111111".into(),
                "samples".into(),
            ],
            rate: None,
            max_concurrent: None,
            role: crate::kql::Role::Viewer,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// One problem in the file, with the key path it concerns.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

fn problem(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.into(),
    }
}

/// Where environment variables come from; a map in tests, the process environment otherwise.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Environment for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| problem("", format!("cannot read {}: {e}", path.display())))?;
        Config::parse(&text, &ProcessEnvironment)
    }

    pub fn parse(text: &str, env: &dyn Environment) -> Result<Config, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        let file: FileConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // toml's message carries line, column and a snippet; keep only its first sentence
            // when the path already says where.
            problem(
                if path == "." { String::new() } else { path },
                inner.message(),
            )
        })?;
        file.validate(env)
    }
}

impl FileConfig {
    fn validate(self, env: &dyn Environment) -> Result<Config, ConfigError> {
        let server = self.server.validate()?;
        let auth = self.auth.validate()?;
        if self.clusters.is_empty() {
            return Err(problem(
                "clusters",
                "at least one [clusters.NAME] is required",
            ));
        }
        let mut clusters = Vec::with_capacity(self.clusters.len());
        for (name, section) in self.clusters {
            clusters.push(section.validate(name, env)?);
        }
        if self.tenants.is_empty() {
            return Err(problem(
                "tenants",
                "at least one [[tenants]] entry is required",
            ));
        }
        let mut tenants = Vec::with_capacity(self.tenants.len());
        let mut seen_ids = HashMap::with_capacity(self.tenants.len());
        for (index, section) in self.tenants.into_iter().enumerate() {
            let path = format!("tenants[{index}]");
            if let Some(first) = seen_ids.insert(section.id.clone(), index) {
                return Err(problem(
                    format!("{path}.id"),
                    format!(
                        "duplicate tenant id {:?} (also tenants[{first}].id)",
                        section.id
                    ),
                ));
            }
            tenants.push(section.validate(&path, &clusters, env)?);
        }
        let aad = self.aad.map(|section| section.validate(env)).transpose()?;
        check_principals(&tenants, aad.is_some())?;
        Ok(Config {
            server,
            auth,
            clusters,
            tenants,
            aad,
        })
    }
}

/// Each AAD principal maps to one tenant, and only when `[aad]` can authenticate it.
fn check_principals(tenants: &[Tenant], aad_configured: bool) -> Result<(), ConfigError> {
    let mut owners: HashMap<&Principal, usize> = HashMap::new();
    for (index, tenant) in tenants.iter().enumerate() {
        if !tenant.aad_principals.is_empty() && !aad_configured {
            return Err(problem(
                format!("tenants[{index}].aad_principals"),
                "needs an [aad] section to authenticate Bearer callers",
            ));
        }
        for principal in &tenant.aad_principals {
            if let Some(first) = owners.insert(principal, index) {
                if first != index {
                    return Err(problem(
                        format!("tenants[{index}].aad_principals"),
                        format!(
                            "{principal:?} also maps to tenants[{first}]: a caller must map to one tenant"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

impl ServerSection {
    fn validate(self) -> Result<ServerSettings, ConfigError> {
        let listen = self.listen.parse().map_err(|_| {
            problem(
                "server.listen",
                format!("{:?} is not an address:port", self.listen),
            )
        })?;
        if self.max_body_bytes == 0 {
            return Err(problem("server.max_body_bytes", "must be at least 1"));
        }
        let max_body_bytes = usize::try_from(self.max_body_bytes)
            .map_err(|_| problem("server.max_body_bytes", "too large"))?;
        if self.header_read_timeout_seconds == 0 {
            return Err(problem(
                "server.header_read_timeout_seconds",
                "must be at least 1",
            ));
        }
        if self.workers > MAX_WORKERS {
            return Err(problem(
                "server.workers",
                format!("at most {MAX_WORKERS} (0 = one per CPU)"),
            ));
        }
        let workers = match self.workers {
            // available_parallelism honours CPU affinity and cgroup quotas (containers).
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let tls = match (self.tls_cert, self.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let files = TlsFiles { cert, key };
                crate::tls::check(&files)
                    .map_err(|e| problem("server.tls_cert", format!("{e:#}")))?;
                Some(files)
            }
            (Some(_), None) => return Err(problem("server.tls_key", "required with tls_cert")),
            (None, Some(_)) => return Err(problem("server.tls_cert", "required with tls_key")),
        };
        Ok(ServerSettings {
            listen,
            max_body_bytes,
            header_read_timeout: Duration::from_secs(self.header_read_timeout_seconds),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_seconds),
            tls,
            workers,
        })
    }
}

impl AuthSection {
    fn validate(self) -> Result<AuthSettings, ConfigError> {
        if self.max_concurrent_verifications == 0 {
            return Err(problem(
                "auth.max_concurrent_verifications",
                "must be at least 1",
            ));
        }
        if self.verify_burst == 0 {
            return Err(problem("auth.verify_burst", "must be at least 1"));
        }
        if self.verify_per_minute == 0 {
            return Err(problem("auth.verify_per_minute", "must be at least 1"));
        }
        Ok(AuthSettings {
            max_concurrent_verifications: self.max_concurrent_verifications,
            verify_burst: self.verify_burst,
            verify_per_minute: self.verify_per_minute,
        })
    }
}

impl ClusterSection {
    fn validate(self, name: String, env: &dyn Environment) -> Result<Cluster, ConfigError> {
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
        if self.timeout_seconds == 0 {
            return Err(problem(
                format!("{path}.timeout_seconds"),
                "must be at least 1",
            ));
        }
        if self.connect_timeout_seconds == 0 {
            return Err(problem(
                format!("{path}.connect_timeout_seconds"),
                "must be at least 1",
            ));
        }
        Ok(Cluster {
            name,
            url,
            credential,
            timeout: Duration::from_secs(self.timeout_seconds),
            connect_timeout: Duration::from_secs(self.connect_timeout_seconds),
            pool_max_idle: self.pool_max_idle,
            enforce_request_properties: self.enforce_request_properties,
            restrict_statement: self.restrict_statement,
        })
    }
}

/// Tenant ids travel in `x-ms-user`/`x-ms-app` headers and as the Basic username, so they are
/// restricted to characters that are safe in all three.
fn is_valid_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl TenantSection {
    fn validate(
        self,
        path: &str,
        clusters: &[Cluster],
        env: &dyn Environment,
    ) -> Result<Tenant, ConfigError> {
        if !is_valid_tenant_id(&self.id) {
            return Err(problem(
                format!("{path}.id"),
                format!(
                    "{:?} is not a valid tenant id (1-128 of A-Z a-z 0-9 - _ .)",
                    self.id
                ),
            ));
        }
        if self.key_hashes.is_empty() && self.aad_principals.is_empty() {
            return Err(problem(
                format!("{path}.key_hashes"),
                "a tenant needs key_hashes (make one with `kqlgate key new`), aad_principals, or both",
            ));
        }
        let mut aad_principals = Vec::with_capacity(self.aad_principals.len());
        for (index, text) in self.aad_principals.iter().enumerate() {
            aad_principals.push(
                Principal::parse(text)
                    .map_err(|m| problem(format!("{path}.aad_principals[{index}]"), m))?,
            );
        }
        let mut key_hashes = Vec::with_capacity(self.key_hashes.len());
        for (index, phc) in self.key_hashes.iter().enumerate() {
            key_hashes.push(
                parse_key_hash(phc)
                    .map_err(|message| problem(format!("{path}.key_hashes[{index}]"), message))?,
            );
        }
        let cluster = clusters
            .iter()
            .position(|c| c.name == self.cluster)
            .ok_or_else(|| {
                problem(
                    format!("{path}.cluster"),
                    format!("unknown cluster {:?}", self.cluster),
                )
            })?;
        let upstream = match self.upstream {
            None => None,
            Some(section) => {
                let url = &clusters[cluster].url;
                Some(section.validate(&format!("{path}.upstream"), url, env)?)
            }
        };
        if uuid::Uuid::parse_str(&self.database).is_err() {
            return Err(problem(
                format!("{path}.database"),
                format!("{:?} is not a database GUID", self.database),
            ));
        }
        let mut database_names = vec![self.database.to_ascii_lowercase()];
        for (index, alias) in self.aliases.iter().enumerate() {
            if alias.trim().is_empty() {
                return Err(problem(format!("{path}.aliases[{index}]"), "is empty"));
            }
            database_names.push(alias.to_lowercase());
        }
        let rate = match (self.rate_per_second, self.burst) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(problem(
                    format!("{path}.burst"),
                    "needs rate_per_second as well",
                ))
            }
            (Some(per_second), burst) => {
                if !(per_second.is_finite() && per_second > 0.0) {
                    return Err(problem(
                        format!("{path}.rate_per_second"),
                        "must be a number greater than 0",
                    ));
                }
                let burst = burst.unwrap_or_else(|| per_second.ceil().max(1.0) as u32);
                if burst == 0 {
                    return Err(problem(format!("{path}.burst"), "must be at least 1"));
                }
                Some(RateLimit { per_second, burst })
            }
        };
        if self.max_concurrent == Some(0) {
            return Err(problem(
                format!("{path}.max_concurrent"),
                "must be at least 1",
            ));
        }
        Ok(Tenant {
            id: self.id,
            key_hashes,
            aad_principals,
            upstream,
            cluster,
            database: self.database,
            database_names,
            rate,
            max_concurrent: self.max_concurrent,
            role: match self.role {
                RoleName::Viewer => crate::kql::Role::Viewer,
                RoleName::Admin => crate::kql::Role::Admin,
            },
        })
    }
}

/// Keys are stored only as argon2id PHC strings (what `kqlgate key hash` prints).
fn parse_key_hash(phc: &str) -> Result<PasswordHashString, String> {
    let parsed = PasswordHash::new(phc).map_err(|e| {
        format!("not an argon2id PHC string ($argon2id$v=19$m=…,t=…,p=…$salt$hash): {e}")
    })?;
    if parsed.algorithm != argon2::Algorithm::Argon2id.ident() {
        return Err(format!(
            "algorithm {} is not accepted; use argon2id",
            parsed.algorithm
        ));
    }
    if parsed.hash.is_none() {
        return Err("the PHC string has no hash part".into());
    }
    argon2::Params::try_from(&parsed).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    Ok(parsed.serialize())
}

impl Config {
    /// The one-screen summary `kqlgate check` prints.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "listen {} ({})\nmax_body_bytes {}\nworkers {}\n",
            self.server.listen,
            if self.server.tls.is_some() {
                "https"
            } else {
                "http"
            },
            self.server.max_body_bytes,
            self.server.workers,
        );
        match &self.aad {
            Some(aad) => out.push_str(&format!(
                "aad: audiences {:?}, {} discovery document(s)\n",
                aad.audiences,
                aad.discovery_urls.len()
            )),
            None => out.push_str("aad: off (Bearer callers get 401)\n"),
        }
        out.push_str(&format!("clusters ({}):\n", self.clusters.len()));
        for cluster in &self.clusters {
            let auth = cluster.credential.kind_name();
            out.push_str(&format!(
                "  {} {} auth={} timeout={}s enforce_request_properties={} restrict_statement={}\n",
                cluster.name,
                cluster.url,
                auth,
                cluster.timeout.as_secs(),
                cluster.enforce_request_properties,
                cluster.restrict_statement
            ));
        }
        out.push_str(&format!("tenants ({}):\n", self.tenants.len()));
        const SHOWN: usize = 20;
        for tenant in self.tenants.iter().take(SHOWN) {
            let rate = tenant.rate.map_or("unlimited".to_string(), |r| {
                format!("{}/s burst {}", r.per_second, r.burst)
            });
            let concurrency = tenant
                .max_concurrent
                .map_or("unlimited".to_string(), |n| n.to_string());
            out.push_str(&format!(
                "  {} -> {}/{} role={:?} keys={} aliases={} rate={} concurrent={}\n",
                tenant.id,
                self.clusters[tenant.cluster].name,
                tenant.database,
                tenant.role,
                tenant.key_hashes.len(),
                tenant.database_names.len() - 1,
                rate,
                concurrency
            ));
        }
        if self.tenants.len() > SHOWN {
            out.push_str(&format!("  … and {} more\n", self.tenants.len() - SHOWN));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A well-formed argon2id PHC string; these tests parse it but never verify a key against it.
    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Kq2AXUZo1kV0ZxV6pB0tRyZ8cJeV7oQOGZ4KxZr6m8o";

    fn config_with(tenant_extra: &str, cluster_extra: &str) -> String {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"

[clusters.main]
url = "http://127.0.0.1:31415"
{cluster_extra}

[[tenants]]
id = "contoso"
key_hashes = ["{HASH}"]
cluster = "main"
database = "11111111-1111-1111-1111-111111111111"
{tenant_extra}
"#
        )
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, &HashMap::new())
    }

    fn error_path(text: &str) -> String {
        parse(text).expect_err("config should be refused").path
    }

    #[test]
    fn minimal_config_loads_with_defaults() {
        let config = parse(&config_with("", "")).unwrap();
        assert_eq!(config.server.max_body_bytes, 1024 * 1024);
        assert_eq!(config.clusters[0].timeout, Duration::from_secs(300));
        let tenant = &config.tenants[0];
        assert!(tenant.rate.is_none() && tenant.max_concurrent.is_none());
        assert_eq!(
            tenant.database_names,
            vec!["11111111-1111-1111-1111-111111111111"]
        );
    }

    #[test]
    fn workers_default_to_the_cpus_and_are_bounded() {
        let config = parse(&config_with("", "")).unwrap();
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(config.server.workers, cpus);
        let with = |line: &str| {
            let listen = "listen = \"127.0.0.1:0\"";
            config_with("", "").replacen(listen, &format!("{listen}\n{line}"), 1)
        };
        assert_eq!(parse(&with("workers = 3")).unwrap().server.workers, 3);
        assert_eq!(error_path(&with("workers = 257")), "server.workers");
        assert_eq!(error_path(&with("workers = -1")), "server.workers");
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let error = parse(&config_with("colour = \"blue\"", "")).unwrap_err();
        assert_eq!(error.path, "tenants[0].colour");
        assert!(error.message.contains("unknown field"), "{error}");
        assert_eq!(
            error_path(&config_with("", "retries = 3")),
            "clusters.main.retries"
        );
    }

    #[test]
    fn duplicate_tenant_id_is_refused() {
        let text = format!(
            "{}\n[[tenants]]\nid = \"contoso\"\nkey_hashes = [\"{HASH}\"]\ncluster = \"main\"\ndatabase = \"22222222-2222-2222-2222-222222222222\"\n",
            config_with("", "")
        );
        let error = parse(&text).unwrap_err();
        assert_eq!(error.path, "tenants[1].id");
        assert!(error.message.contains("duplicate"));
    }

    #[test]
    fn unknown_cluster_is_refused() {
        let text = config_with("", "").replace("cluster = \"main\"", "cluster = \"nope\"");
        let error = parse(&text).unwrap_err();
        assert_eq!(error.path, "tenants[0].cluster");
        assert!(error.message.contains("nope"));
    }

    #[test]
    fn malformed_or_foreign_hashes_are_refused() {
        for bad in [
            "not-a-hash",
            "$argon2i$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Kq2AXUZo1kV0ZxV6pB0tRyZ8cJeV7oQOGZ4KxZr6m8o",
            "$2b$12$abcdefghijklmnopqrstuu",
        ] {
            let text = config_with("", "").replace(HASH, bad);
            assert_eq!(error_path(&text), "tenants[0].key_hashes[0]", "{bad}");
        }
    }

    #[test]
    fn database_must_be_a_guid() {
        let text = config_with("", "").replace("11111111-1111-1111-1111-111111111111", "Samples");
        assert_eq!(error_path(&text), "tenants[0].database");
    }

    #[test]
    fn tenant_ids_are_header_safe() {
        let text = config_with("", "").replace("id = \"contoso\"", "id = \"a:b\"");
        assert_eq!(error_path(&text), "tenants[0].id");
    }

    #[test]
    fn limits_are_checked() {
        assert_eq!(
            error_path(&config_with("rate_per_second = 0.0", "")),
            "tenants[0].rate_per_second"
        );
        assert_eq!(
            error_path(&config_with("burst = 3", "")),
            "tenants[0].burst"
        );
        assert_eq!(
            error_path(&config_with("max_concurrent = 0", "")),
            "tenants[0].max_concurrent"
        );
        let config = parse(&config_with("rate_per_second = 2.5", "")).unwrap();
        assert_eq!(config.tenants[0].rate.unwrap().burst, 3);
    }

    #[test]
    fn bearer_env_needs_its_variable() {
        let cluster = "auth = \"bearer-env\"\ntoken_env = \"KQLGATE_TEST_TOKEN\"";
        assert_eq!(
            error_path(&config_with("", cluster)),
            "clusters.main.token_env"
        );
        let env = HashMap::from([("KQLGATE_TEST_TOKEN".to_string(), "abc".to_string())]);
        let config = Config::parse(&config_with("", cluster), &env).unwrap();
        assert!(matches!(
            config.clusters[0].credential,
            UpstreamCredential::Bearer(_)
        ));
        assert!(
            !format!("{config:?}").contains("abc"),
            "secret leaked into Debug"
        );
    }

    #[test]
    fn role_and_guard_switches_have_safe_defaults() {
        let config = parse(&config_with("", "")).unwrap();
        assert_eq!(config.tenants[0].role, crate::kql::Role::Viewer);
        assert!(config.clusters[0].enforce_request_properties);
        assert!(!config.clusters[0].restrict_statement);
        let config = parse(&config_with(
            "role = \"admin\"",
            "enforce_request_properties = false\nrestrict_statement = true",
        ))
        .unwrap();
        assert_eq!(config.tenants[0].role, crate::kql::Role::Admin);
        assert!(!config.clusters[0].enforce_request_properties);
        assert!(config.clusters[0].restrict_statement);
        assert_eq!(
            error_path(&config_with("role = \"owner\"", "")),
            "tenants[0].role"
        );
    }

    #[test]
    fn aad_principals_map_to_one_tenant_and_need_an_aad_section() {
        let aad = "[aad]\nopenid_config_url = \"https://login.microsoftonline.com/t/v2.0/.well-known/openid-configuration\"\naudiences = [\"api://kqlgate\"]\n";
        let second = |principals: &str| {
            format!(
                "{aad}{}\n[[tenants]]\nid = \"fabrikam\"\ncluster = \"main\"\ndatabase = \"22222222-2222-2222-2222-222222222222\"\naad_principals = [{principals}]\n",
                config_with("aad_principals = [\"app:a1\"]", "")
            )
        };
        let config = parse(&second("\"oid:o1\"")).unwrap();
        assert!(
            config.tenants[1].key_hashes.is_empty(),
            "principals alone are enough"
        );
        let ambiguous = parse(&second("\"APP:a1\"".to_lowercase().as_str())).unwrap_err();
        assert_eq!(ambiguous.path, "tenants[1].aad_principals");
        let neither = parse(&second("")).unwrap_err();
        assert_eq!(neither.path, "tenants[1].key_hashes");
        let no_aad = parse(&config_with("aad_principals = [\"app:a1\"]", "")).unwrap_err();
        assert_eq!(no_aad.path, "tenants[0].aad_principals");
        let bad = parse(&format!(
            "{aad}{}",
            config_with("aad_principals = [\"upn:x\"]", "")
        ))
        .unwrap_err();
        assert_eq!(bad.path, "tenants[0].aad_principals[0]");
    }

    #[test]
    fn aliases_are_case_insensitive_names_of_the_database() {
        let config = parse(&config_with("aliases = [\"Samples\"]", "")).unwrap();
        assert_eq!(config.tenants[0].database_names[1], "samples");
    }
}
