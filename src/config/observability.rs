//! `[admin]` (the listener for `/metrics`, `/healthz`, `/readyz`) and `[audit]` (one JSON
//! record per query, with its cost, to a sink of its own).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{problem, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub listen: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    pub listen: SocketAddr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// A file (appended to) or `"stderr"`.
    pub path: String,
    /// Also record each query's text (off: only its hash).
    #[serde(default)]
    pub include_query_text: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    Stderr,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    pub sink: AuditSink,
    pub include_query_text: bool,
}

impl AdminSection {
    pub fn validate(self, public: SocketAddr) -> Result<AdminSettings, ConfigError> {
        let listen: SocketAddr = self.listen.parse().map_err(|_| {
            problem(
                "admin.listen",
                format!("{:?} is not an address:port", self.listen),
            )
        })?;
        if listen == public && listen.port() != 0 {
            return Err(problem(
                "admin.listen",
                "must not be the public listener (server.listen)",
            ));
        }
        Ok(AdminSettings { listen })
    }
}

impl AuditSection {
    pub fn validate(self) -> Result<AuditSettings, ConfigError> {
        let sink = match self.path.trim() {
            "" => return Err(problem("audit.path", "give a file or \"stderr\"")),
            "stderr" => AuditSink::Stderr,
            path => AuditSink::File(PathBuf::from(path)),
        };
        Ok(AuditSettings {
            sink,
            include_query_text: self.include_query_text,
        })
    }
}
