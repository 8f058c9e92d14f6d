//! `[server]`: the listener, its deadlines and budgets, workers, reload.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{problem, ConfigError};

/// More event loops than this would only add context switches on any machine kqlgate runs on.
const MAX_WORKERS: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Applies to the decoded body, so a small gzip bomb cannot expand past it.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Time to send the first bytes and the request headers (slow-loris guard).
    #[serde(default = "default_10")]
    pub header_read_timeout_seconds: u64,
    #[serde(default = "default_10")]
    pub tls_handshake_timeout_seconds: u64,
    /// An HTTP/1 connection with no request in flight is closed after this long.
    #[serde(default = "default_keepalive_timeout_seconds")]
    pub keepalive_timeout_seconds: u64,
    /// An HTTP/2 connection with no open stream is closed after this long.
    #[serde(default = "default_http2_idle_timeout_seconds")]
    pub http2_idle_timeout_seconds: u64,
    /// HTTP/2 PING interval on connections with open streams; 0 = no pings.
    #[serde(default = "default_http2_keepalive_interval_seconds")]
    pub http2_keepalive_interval_seconds: u64,
    /// How long a PING may go unanswered before the connection is closed.
    #[serde(default = "default_http2_keepalive_timeout_seconds")]
    pub http2_keepalive_timeout_seconds: u64,
    /// The whole request body must arrive within this (408 beyond)…
    #[serde(default = "default_body_read_timeout_seconds")]
    pub body_read_timeout_seconds: u64,
    /// …and at no less than this average rate once a second has passed.
    #[serde(default = "default_body_min_bytes_per_second")]
    pub body_min_bytes_per_second: u64,
    /// Client connections at once; past it new ones are closed at once. 0 = derived from the
    /// open-file limit.
    #[serde(default)]
    pub max_connections: usize,
    /// Requests in flight across all tenants; past `shed_at_percent` of it, 503. 0 = no limit.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Resident memory the process may use; past `shed_at_percent` of it, 503. 0 = the cgroup's
    /// memory limit if there is one, else no limit.
    #[serde(default)]
    pub memory_limit_bytes: u64,
    /// Share of a limit at which new requests are shed with 503 and `Retry-After`.
    #[serde(default = "default_shed_at_percent")]
    pub shed_at_percent: u8,
    /// How long in-flight streams may run on after SIGTERM/SIGINT.
    #[serde(default = "default_shutdown_grace_seconds")]
    pub shutdown_grace_seconds: u64,
    /// PEM certificate chain and key: serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Threads serving connections, each with its own event loop; 0 = one per CPU available.
    #[serde(default)]
    pub workers: usize,
    /// Reload when the config file changes (its directory is watched, for ConfigMap swaps).
    #[serde(default = "default_true")]
    pub watch_config: bool,
    /// Where `serve` writes its process id, for `kqlgate reload`.
    pub pid_file: Option<PathBuf>,
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
fn default_10() -> u64 {
    10
}
fn default_keepalive_timeout_seconds() -> u64 {
    75
}
fn default_http2_idle_timeout_seconds() -> u64 {
    300
}
fn default_http2_keepalive_interval_seconds() -> u64 {
    30
}
fn default_http2_keepalive_timeout_seconds() -> u64 {
    20
}
fn default_body_read_timeout_seconds() -> u64 {
    30
}
fn default_body_min_bytes_per_second() -> u64 {
    1024
}
fn default_max_in_flight() -> usize {
    4096
}
fn default_shed_at_percent() -> u8 {
    95
}
fn default_shutdown_grace_seconds() -> u64 {
    30
}

impl Default for ServerSection {
    fn default() -> Self {
        toml::from_str("").expect("every [server] key has a default")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub header_read_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub http2_idle_timeout: Duration,
    /// `None`: no pings.
    pub http2_keepalive: Option<(Duration, Duration)>,
    pub body_read_timeout: Duration,
    pub body_min_bytes_per_second: u64,
    /// 0: derived from the open-file limit at start.
    pub max_connections: usize,
    /// 0: no limit.
    pub max_in_flight: usize,
    /// 0: the cgroup's limit, if any.
    pub memory_limit_bytes: u64,
    pub shed_at_percent: u8,
    pub shutdown_grace: Duration,
    /// Certificate chain and key files (PEM), when serving HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// At least 1: `workers = 0` is resolved to the CPUs available at load.
    pub workers: usize,
    pub watch_config: bool,
    pub pid_file: Option<PathBuf>,
}

fn at_least_one(key: &str, value: u64) -> Result<Duration, ConfigError> {
    if value == 0 {
        return Err(problem(format!("server.{key}"), "must be at least 1"));
    }
    Ok(Duration::from_secs(value))
}

impl ServerSection {
    pub fn validate(self) -> Result<ServerSettings, ConfigError> {
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
            .ok()
            .filter(|&n| n < u32::MAX as usize)
            .ok_or_else(|| problem("server.max_body_bytes", "must be less than 4 GiB"))?;
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
        if !(1..=100).contains(&self.shed_at_percent) {
            return Err(problem("server.shed_at_percent", "must be 1 to 100"));
        }
        let tls = match (self.tls_cert, self.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((cert, key)),
            (Some(_), None) => return Err(problem("server.tls_key", "required with tls_cert")),
            (None, Some(_)) => return Err(problem("server.tls_cert", "required with tls_key")),
        };
        let http2_keepalive = match self.http2_keepalive_interval_seconds {
            0 => None,
            interval => Some((
                Duration::from_secs(interval),
                at_least_one(
                    "http2_keepalive_timeout_seconds",
                    self.http2_keepalive_timeout_seconds,
                )?,
            )),
        };
        Ok(ServerSettings {
            listen,
            max_body_bytes,
            header_read_timeout: at_least_one(
                "header_read_timeout_seconds",
                self.header_read_timeout_seconds,
            )?,
            tls_handshake_timeout: at_least_one(
                "tls_handshake_timeout_seconds",
                self.tls_handshake_timeout_seconds,
            )?,
            keepalive_timeout: at_least_one(
                "keepalive_timeout_seconds",
                self.keepalive_timeout_seconds,
            )?,
            http2_idle_timeout: at_least_one(
                "http2_idle_timeout_seconds",
                self.http2_idle_timeout_seconds,
            )?,
            http2_keepalive,
            body_read_timeout: at_least_one(
                "body_read_timeout_seconds",
                self.body_read_timeout_seconds,
            )?,
            body_min_bytes_per_second: self.body_min_bytes_per_second,
            max_connections: self.max_connections,
            max_in_flight: self.max_in_flight,
            memory_limit_bytes: self.memory_limit_bytes,
            shed_at_percent: self.shed_at_percent,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_seconds),
            tls,
            workers,
            watch_config: self.watch_config,
            pid_file: self.pid_file,
        })
    }
}

impl ServerSettings {
    /// The settings a running process cannot change, named for the "restart needed" log line.
    pub fn fixed_differences(&self, new: &ServerSettings) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut check = |name, differs: bool| {
            if differs {
                changed.push(name);
            }
        };
        check("server.listen", self.listen != new.listen);
        check("server.workers", self.workers != new.workers);
        check("server.tls_cert", self.tls != new.tls);
        check(
            "server.max_connections",
            self.max_connections != new.max_connections,
        );
        check("server.pid_file", self.pid_file != new.pid_file);
        check("server.watch_config", self.watch_config != new.watch_config);
        // Load shedding and the drain read these once, at start.
        check(
            "server.max_in_flight",
            self.max_in_flight != new.max_in_flight,
        );
        check(
            "server.memory_limit_bytes",
            self.memory_limit_bytes != new.memory_limit_bytes,
        );
        check(
            "server.shed_at_percent",
            self.shed_at_percent != new.shed_at_percent,
        );
        check(
            "server.shutdown_grace_seconds",
            self.shutdown_grace != new.shutdown_grace,
        );
        changed
    }
}
