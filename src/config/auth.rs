//! `[auth]`: the limits that keep argon2 (expensive on purpose) from becoming a denial-of-service
//! lever.

use serde::Deserialize;

use super::{problem, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// argon2 verifications running at once; more wait (briefly) for a slot.
    #[serde(default = "default_max_concurrent_verifications")]
    pub max_concurrent_verifications: usize,
    /// Failed key checks allowed per client address (group) and per tenant id, as a burst…
    #[serde(default = "default_verify_burst")]
    pub verify_burst: u32,
    /// …refilled at this many per minute.
    #[serde(default = "default_verify_per_minute")]
    pub verify_per_minute: u32,
    /// Uncached key checks per second across all addresses and names (0 = 10 per CPU)…
    #[serde(default)]
    pub verify_global_per_second: u32,
    /// …with this burst.
    #[serde(default = "default_verify_global_burst")]
    pub verify_global_burst: u32,
    /// Client addresses are budgeted by network: IPv4 by this prefix length…
    #[serde(default = "default_ipv4_prefix")]
    pub ipv4_prefix_bits: u8,
    /// …and IPv6 by this one (a /64 is one host's, or one site's).
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix_bits: u8,
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
fn default_verify_global_burst() -> u32 {
    64
}
fn default_ipv4_prefix() -> u8 {
    32
}
fn default_ipv6_prefix() -> u8 {
    64
}

impl Default for AuthSection {
    fn default() -> Self {
        toml::from_str("").expect("every [auth] key has a default")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    pub max_concurrent_verifications: usize,
    pub verify_burst: u32,
    pub verify_per_minute: u32,
    pub verify_global_per_second: u32,
    pub verify_global_burst: u32,
    pub ipv4_prefix_bits: u8,
    pub ipv6_prefix_bits: u8,
}

impl AuthSection {
    pub fn validate(self) -> Result<AuthSettings, ConfigError> {
        let positive = |key: &str, value: u64| {
            if value == 0 {
                Err(problem(format!("auth.{key}"), "must be at least 1"))
            } else {
                Ok(())
            }
        };
        positive(
            "max_concurrent_verifications",
            self.max_concurrent_verifications as u64,
        )?;
        positive("verify_burst", self.verify_burst.into())?;
        positive("verify_per_minute", self.verify_per_minute.into())?;
        positive("verify_global_burst", self.verify_global_burst.into())?;
        if !(1..=32).contains(&self.ipv4_prefix_bits) {
            return Err(problem("auth.ipv4_prefix_bits", "must be 1 to 32"));
        }
        if !(1..=128).contains(&self.ipv6_prefix_bits) {
            return Err(problem("auth.ipv6_prefix_bits", "must be 1 to 128"));
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        Ok(AuthSettings {
            max_concurrent_verifications: self.max_concurrent_verifications,
            verify_burst: self.verify_burst,
            verify_per_minute: self.verify_per_minute,
            verify_global_per_second: match self.verify_global_per_second {
                0 => 10 * cpus,
                n => n,
            },
            verify_global_burst: self.verify_global_burst,
            ipv4_prefix_bits: self.ipv4_prefix_bits,
            ipv6_prefix_bits: self.ipv6_prefix_bits,
        })
    }
}
