//! The audit log: one JSON record per query (and per refused query) to a sink of its own
//! (`[audit] path`, a file or stderr), apart from the diagnostic log. Written through a
//! background writer, as the access log is, so a slow disk never stalls a request; the queue
//! blocks rather than drops when full, so no record is lost. No record holds a key, a token or
//! a header; the query text only with `include_query_text = true` (always its hash).

use std::io::Write;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

use crate::config::{AuditSettings, AuditSink};
use crate::services::auth::Principal;
use crate::services::cost::QueryCost;

/// Records waiting for the writer thread before a request waits for room.
const QUEUE_RECORDS: usize = 8 * 1024;

pub struct Audit {
    writer: NonBlocking,
    pub include_query_text: bool,
}

impl Audit {
    /// Opens the sink; the guard flushes what is queued when dropped (at the end of `run`).
    pub fn open(settings: &AuditSettings) -> anyhow::Result<(Audit, WorkerGuard)> {
        let sink: Box<dyn Write + Send> = match &settings.sink {
            AuditSink::Stderr => Box::new(std::io::stderr()),
            AuditSink::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        anyhow::anyhow!("cannot open the audit log {}: {e}", path.display())
                    })?,
            ),
        };
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(false)
            .buffered_lines_limit(QUEUE_RECORDS)
            .finish(std::io::BufWriter::with_capacity(64 * 1024, sink));
        Ok((
            Audit {
                writer,
                include_query_text: settings.include_query_text,
            },
            guard,
        ))
    }

    pub fn write(&self, record: &AuditRecord) {
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            Err(error) => {
                tracing::error!(%error, "cannot write an audit record");
                return;
            }
        };
        line.push(b'\n');
        if let Err(error) = self.writer.clone().write_all(&line) {
            tracing::error!(%error, "cannot write an audit record");
        }
    }
}

/// The hash an audit record names a query by (SHA-256 of its text, the first 16 bytes in hex):
/// the same text always gives the same hash, the hash never gives the text.
pub fn query_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// One line of the audit log.
#[derive(Serialize)]
pub struct AuditRecord<'a> {
    pub time: String,
    pub tenant: Option<&'a str>,
    pub principal: Option<PrincipalRecord<'a>>,
    pub client_address: String,
    pub route: &'a str,
    pub database: Option<&'a str>,
    pub client_request_id: &'a str,
    pub activity_id: Option<&'a str>,
    pub status: u16,
    pub outcome: &'static str,
    pub refusal_reason: Option<&'static str>,
    /// For guard refusals: the construct, by its catalogue name.
    pub refused_construct: Option<&'static str>,
    pub duration_ms: u64,
    pub bytes_out: u64,
    pub query_hash: Option<&'a str>,
    pub query_text: Option<&'a str>,
    pub cost: Option<&'a QueryCost>,
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PrincipalRecord<'a> {
    Basic {
        key_fingerprint: &'a str,
    },
    Aad {
        oid: Option<&'a str>,
        appid: Option<&'a str>,
    },
}

impl<'a> From<&'a Principal> for PrincipalRecord<'a> {
    fn from(principal: &'a Principal) -> PrincipalRecord<'a> {
        match principal {
            Principal::Basic { key_fingerprint } => PrincipalRecord::Basic { key_fingerprint },
            Principal::Aad { oid, appid } => PrincipalRecord::Aad {
                oid: oid.as_deref(),
                appid: appid.as_deref(),
            },
        }
    }
}
