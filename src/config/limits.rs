//! `[limits]`: where the tenants' limits are kept — in each replica (`local`, the default) or in
//! Redis, shared by every replica (`redis`) — and what happens when Redis cannot answer.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::credential::Secret;
use super::{problem, ConfigError, Environment};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Local,
    Redis,
}

/// What a decision does when Redis does not answer within `timeout_ms`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRedisFailure {
    /// Each replica enforces its share of every limit: limit ÷ `replicas_hint`.
    #[default]
    Local,
    /// Admit without limits until Redis is back.
    Allow,
    /// Refuse (503) what needs a decision until Redis is back.
    Deny,
}

impl OnRedisFailure {
    pub fn name(self) -> &'static str {
        match self {
            OnRedisFailure::Local => "local",
            OnRedisFailure::Allow => "allow",
            OnRedisFailure::Deny => "deny",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    #[serde(default)]
    pub backend: Backend,
    #[serde(default = "default_redis_url")]
    pub redis_url: String,
    pub redis_password_env: Option<String>,
    pub redis_password_file: Option<PathBuf>,
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub on_redis_failure: OnRedisFailure,
    #[serde(default = "default_replicas_hint")]
    pub replicas_hint: u32,
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u64,
}

impl Default for LimitsSection {
    fn default() -> LimitsSection {
        LimitsSection {
            backend: Backend::Local,
            redis_url: default_redis_url(),
            redis_password_env: None,
            redis_password_file: None,
            key_prefix: default_key_prefix(),
            timeout_ms: default_timeout_ms(),
            on_redis_failure: OnRedisFailure::Local,
            replicas_hint: default_replicas_hint(),
            lease_seconds: default_lease_seconds(),
        }
    }
}

fn default_redis_url() -> String {
    "redis://127.0.0.1:6379/0".into()
}
fn default_key_prefix() -> String {
    "kqlgate:".into()
}
fn default_timeout_ms() -> u64 {
    20
}
fn default_replicas_hint() -> u32 {
    1
}
fn default_lease_seconds() -> u64 {
    30
}

#[derive(Debug, Clone, PartialEq)]
pub struct LimitsSettings {
    /// `None`: the local backend.
    pub redis: Option<RedisSettings>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedisSettings {
    /// Without credentials: the password comes from `password`.
    pub url: String,
    pub password: Option<Secret>,
    pub key_prefix: String,
    /// The longest a request waits for one decision.
    pub timeout: Duration,
    pub on_failure: OnRedisFailure,
    pub replicas_hint: u32,
    /// How long a replica's concurrency slot outlives the replica.
    pub lease: Duration,
}

impl LimitsSection {
    pub fn validate(self, env: &dyn Environment) -> Result<LimitsSettings, ConfigError> {
        if self.backend == Backend::Local {
            return Ok(LimitsSettings { redis: None });
        }
        let url = url::Url::parse(&self.redis_url).map_err(|e| {
            problem(
                "limits.redis_url",
                format!("{:?} is not a URL: {e}", self.redis_url),
            )
        })?;
        if !matches!(url.scheme(), "redis" | "rediss") || url.host_str().is_none() {
            return Err(problem(
                "limits.redis_url",
                "must be redis://host:port/db or rediss://host:port/db (TLS)",
            ));
        }
        if url.password().is_some() {
            return Err(problem(
                "limits.redis_url",
                "must not carry a password; use redis_password_env or redis_password_file",
            ));
        }
        let password = match (&self.redis_password_env, &self.redis_password_file) {
            (Some(_), Some(_)) => {
                return Err(problem(
                    "limits.redis_password_env",
                    "give redis_password_env or redis_password_file, not both",
                ))
            }
            (Some(name), None) => Some(Secret::new(env.var(name).ok_or_else(|| {
                problem(
                    "limits.redis_password_env",
                    format!("environment variable {name} is not set"),
                )
            })?)),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    problem(
                        "limits.redis_password_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                Some(Secret::new(text.trim_end_matches(['\r', '\n']).to_owned()))
            }
            (None, None) => None,
        };
        if self.timeout_ms == 0 {
            return Err(problem("limits.timeout_ms", "must be at least 1"));
        }
        if self.replicas_hint == 0 {
            return Err(problem("limits.replicas_hint", "must be at least 1"));
        }
        if self.lease_seconds == 0 {
            return Err(problem("limits.lease_seconds", "must be at least 1"));
        }
        if self.key_prefix.contains(['{', '}']) {
            return Err(problem(
                "limits.key_prefix",
                "must not hold { or }: kqlgate adds the hash tags",
            ));
        }
        Ok(LimitsSettings {
            redis: Some(RedisSettings {
                url: self.redis_url,
                password,
                key_prefix: self.key_prefix,
                timeout: Duration::from_millis(self.timeout_ms),
                on_failure: self.on_redis_failure,
                replicas_hint: self.replicas_hint,
                lease: Duration::from_secs(self.lease_seconds),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<LimitsSettings, ConfigError> {
        let section: LimitsSection = toml::from_str(text).unwrap();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        section.validate(&env)
    }

    #[test]
    fn local_is_the_default_and_redis_takes_its_defaults() {
        assert_eq!(parse("", &[]).unwrap().redis, None);
        let redis = parse("backend = \"redis\"", &[]).unwrap().redis.unwrap();
        assert_eq!(redis.url, "redis://127.0.0.1:6379/0");
        assert_eq!(redis.key_prefix, "kqlgate:");
        assert_eq!(redis.timeout, Duration::from_millis(20));
        assert_eq!(redis.on_failure, OnRedisFailure::Local);
        assert_eq!(redis.lease, Duration::from_secs(30));
        assert_eq!(redis.replicas_hint, 1);
    }

    #[test]
    fn the_password_never_comes_from_the_toml() {
        let error = parse(
            "backend = \"redis\"\nredis_url = \"redis://:hunter2@127.0.0.1:6379\"",
            &[],
        )
        .unwrap_err();
        assert_eq!(error.path, "limits.redis_url");
        assert!(!error.message.contains("hunter2"));
        let redis = parse(
            "backend = \"redis\"\nredis_password_env = \"REDIS_PW\"",
            &[("REDIS_PW", "s3cret")],
        )
        .unwrap()
        .redis
        .unwrap();
        assert_eq!(redis.password.unwrap().expose(), "s3cret");
        let missing = parse("backend = \"redis\"\nredis_password_env = \"NOPE\"", &[]);
        assert_eq!(missing.unwrap_err().path, "limits.redis_password_env");
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        for (text, key) in [
            ("redis_url = \"http://x\"", "limits.redis_url"),
            ("timeout_ms = 0", "limits.timeout_ms"),
            ("replicas_hint = 0", "limits.replicas_hint"),
            ("lease_seconds = 0", "limits.lease_seconds"),
            ("key_prefix = \"a{b}\"", "limits.key_prefix"),
        ] {
            let error = parse(&format!("backend = \"redis\"\n{text}"), &[]).unwrap_err();
            assert_eq!(error.path, key, "{text}");
        }
    }
}
