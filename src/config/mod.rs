//! Configuration: `kqlgate.toml` → [`FileConfig`] (the file's shape, exactly as written) →
//! [`Config`] (validated, typed, ready to serve). Validation happens once, at load, and every
//! problem is reported with the key path it concerns (`tenants[2].cluster: …`), so
//! `kqlgate check`, `kqlgate serve` and a reload refuse a bad file the same way. One file per
//! section: `server`, `auth`, `cluster` (with `credential`), `tenant`, `aad`, `observability`
//! (`[admin]`, `[audit]`), `limits`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use serde::Deserialize;

pub mod aad;
pub mod auth;
pub mod cluster;
pub mod credential;
pub mod limits;
pub mod observability;
pub mod server;
pub mod tenant;

pub use aad::{AadSettings, Principal};
pub use auth::AuthSettings;
pub use cluster::Cluster;
pub use credential::{CredentialKind, CredentialSection, Secret, UpstreamCredential};
pub use limits::{LimitsSettings, OnRedisFailure, RedisSettings};
pub use observability::{AdminSettings, AuditSettings, AuditSink};
pub use server::ServerSettings;
pub use tenant::{RateLimit, Tenant};

// === The file's shape ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: server::ServerSection,
    #[serde(default)]
    pub auth: auth::AuthSection,
    #[serde(default)]
    pub clusters: BTreeMap<String, cluster::ClusterSection>,
    #[serde(default)]
    pub tenants: Vec<tenant::TenantSection>,
    pub aad: Option<aad::AadSection>,
    pub admin: Option<observability::AdminSection>,
    pub audit: Option<observability::AuditSection>,
    #[serde(default)]
    pub limits: limits::LimitsSection,
}

// === The validated configuration ===

#[derive(Debug)]
pub struct Config {
    pub server: ServerSettings,
    pub auth: AuthSettings,
    pub clusters: Vec<Cluster>,
    pub tenants: Vec<Tenant>,
    pub aad: Option<AadSettings>,
    pub admin: Option<AdminSettings>,
    pub audit: Option<AuditSettings>,
    pub limits: LimitsSettings,
}

impl Config {
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }
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

pub fn problem(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
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
        let admin = self
            .admin
            .map(|section| section.validate(server.listen))
            .transpose()?;
        let audit = self.audit.map(|section| section.validate()).transpose()?;
        let limits = self.limits.validate(env)?;
        Ok(Config {
            server,
            auth,
            clusters,
            tenants,
            aad,
            admin,
            audit,
            limits,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
