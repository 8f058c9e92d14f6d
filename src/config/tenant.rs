//! `[[tenants]]`: who may sign in, to which database, with which limits and role.

use argon2::password_hash::{PasswordHash, PasswordHashString};
use serde::Deserialize;

use super::aad::Principal;
use super::cluster::Cluster;
use super::credential::{CredentialSection, UpstreamCredential};
use super::{problem, ConfigError, Environment};
use crate::kql::Role;

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

#[derive(Debug)]
pub struct Tenant {
    pub id: String,
    pub key_hashes: Vec<PasswordHashString>,
    pub aad_principals: Vec<Principal>,
    /// The tenant's own identity at the cluster; `None`: the cluster's.
    pub upstream: Option<UpstreamCredential>,
    /// The name of its `[clusters.NAME]`.
    pub cluster: String,
    /// The database GUID, as configured; the name forwarded to the cluster.
    pub database: String,
    /// Lower-cased names (GUID and aliases) that all mean [`Tenant::database`].
    pub database_names: Vec<String>,
    pub rate: Option<RateLimit>,
    pub max_concurrent: Option<u32>,
    pub role: Role,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl Tenant {
    /// Whether `phc` (a key hash as configured) is one of this tenant's keys.
    pub fn has_key_hash(&self, phc: &str) -> bool {
        self.key_hashes.iter().any(|hash| hash.as_str() == phc)
    }

    /// A tenant for unit tests: `contoso`, its database `1111…` with the alias `Samples`, a
    /// viewer on cluster `main`, with no keys and no limits.
    pub fn example() -> Tenant {
        Tenant {
            id: "contoso".into(),
            key_hashes: vec![],
            aad_principals: vec![],
            upstream: None,
            cluster: "main".into(),
            database: "11111111-1111-1111-1111-111111111111".into(),
            database_names: vec![
                "11111111-1111-1111-1111-111111111111".into(),
                "samples".into(),
            ],
            rate: None,
            max_concurrent: None,
            role: Role::Viewer,
        }
    }
}

/// Tenant ids travel in `x-ms-user`/`x-ms-app` headers and as the Basic username, so they are
/// restricted to characters that are safe in all three.
pub fn is_valid_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The part of a key's PHC string an operator recognises it by: the first characters of its
/// hash, as `kqlgate tenant revoke-key --hash-prefix` takes them and the audit log shows them.
pub fn key_fingerprint(phc: &str) -> &str {
    let hash = phc.rsplit('$').next().unwrap_or("");
    hash.get(..10).unwrap_or(hash)
}

impl TenantSection {
    pub fn validate(
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
            .find(|c| c.name == self.cluster)
            .ok_or_else(|| {
                problem(
                    format!("{path}.cluster"),
                    format!("unknown cluster {:?}", self.cluster),
                )
            })?;
        let upstream = match self.upstream {
            None => None,
            Some(section) => {
                Some(section.validate(&format!("{path}.upstream"), &cluster.url, env)?)
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
        let rate = validate_rate(path, self.rate_per_second, self.burst)?;
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
            cluster: self.cluster,
            database: self.database,
            database_names,
            rate,
            max_concurrent: self.max_concurrent,
            role: match self.role {
                RoleName::Viewer => Role::Viewer,
                RoleName::Admin => Role::Admin,
            },
        })
    }
}

fn validate_rate(
    path: &str,
    per_second: Option<f64>,
    burst: Option<u32>,
) -> Result<Option<RateLimit>, ConfigError> {
    let Some(per_second) = per_second else {
        return match burst {
            None => Ok(None),
            Some(_) => Err(problem(
                format!("{path}.burst"),
                "needs rate_per_second as well",
            )),
        };
    };
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
    Ok(Some(RateLimit { per_second, burst }))
}

/// Keys are stored only as argon2id PHC strings (what `kqlgate key hash` prints).
pub fn parse_key_hash(phc: &str) -> Result<PasswordHashString, String> {
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
