//! A request's record, and what is written from it when its answer ends: the one access-log
//! line (tenant, route, database, status, upstream status, bytes out, duration, client request
//! id, outcome), the request's metrics, and its audit record with the cost Kusto reported.
//!
//! The record is written when the response body ends — or is abandoned — because only then are
//! the bytes, the duration and the cost known. It rides inside the response body for that, and
//! so does the tenant's concurrency [`Slot`]: a streamed answer counts as in flight until its
//! last byte. A request whose client leaves before the answer's head (the cluster may still be
//! running its query) is written too, when the pipeline is dropped: status 499, `client_gone`.
//! Nothing secret is in the record: no key, token or header, the query text only when the audit
//! log asks for it.

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ProxyBody};
use crate::endpoint::Endpoint;
use crate::error::{error_chain, StreamTimedOut};
use crate::services::audit::{Audit, AuditRecord, PrincipalRecord};
use crate::services::auth::Principal;
use crate::services::cost::{CostWatcher, Format, QueryCost};
use crate::services::limiter::{Admission, ClusterAdmission};
use crate::services::load::Counted;
use crate::services::metrics::{Finished, InFlight, Label, Metrics};

/// The status logged for a request whose client went away before its answer began (nginx's).
const CLIENT_CLOSED: u16 = 499;

/// Where a record goes besides the access log.
#[derive(Clone)]
pub struct Sinks {
    pub metrics: Arc<Metrics>,
    pub audit: Option<Arc<Audit>>,
}

pub struct Record {
    started: Instant,
    sinks: Sinks,
    pub method: http::Method,
    pub path: String,
    pub endpoint: Option<Endpoint>,
    pub client: SocketAddr,
    pub client_request_id: String,
    pub tenant: Option<Label>,
    pub principal: Option<Principal>,
    pub database: Option<String>,
    pub cluster: Option<Label>,
    pub upstream_status: Option<u16>,
    pub activity_id: Option<String>,
    pub first_byte: Option<Duration>,
    /// How the exchange with the cluster failed, when it did (`metrics::UPSTREAM_ERRORS`).
    pub upstream_error: Option<&'static str>,
    /// The error code, when kqlgate itself answered with an error.
    pub error_code: Option<&'static str>,
    /// kqlgate's own refusal (`metrics::REFUSAL_REASONS`).
    pub refusal: Option<&'static str>,
    pub guard_construct: Option<&'static str>,
    pub query_hash: Option<String>,
    pub query_text: Option<String>,
    cost_watcher: Option<CostWatcher>,
    cost: Option<QueryCost>,
    slot: Option<Admission>,
    cluster_place: Option<ClusterAdmission>,
    counted: Option<Counted>,
    in_flight: Option<InFlight>,
}

/// A request's record until its response exists; dropped unattached, it logs `client_gone`.
pub struct AccessLog {
    record: Option<Record>,
}

impl AccessLog {
    pub fn start<B>(request: &http::Request<B>, client: SocketAddr, sinks: Sinks) -> AccessLog {
        AccessLog {
            record: Some(Record {
                started: Instant::now(),
                sinks,
                method: request.method().clone(),
                path: request.uri().path().chars().take(200).collect(),
                endpoint: None,
                client,
                client_request_id: crate::headers::client_request_id(request.headers()),
                tenant: None,
                principal: None,
                database: None,
                cluster: None,
                upstream_status: None,
                activity_id: None,
                first_byte: None,
                upstream_error: None,
                error_code: None,
                refusal: None,
                guard_construct: None,
                query_hash: None,
                query_text: None,
                cost_watcher: None,
                cost: None,
                slot: None,
                cluster_place: None,
                counted: None,
                in_flight: None,
            }),
        }
    }

    /// Hands the record to the response body, which writes it when it is done.
    pub fn attach(mut self, response: Response<ProxyBody>) -> Response<ProxyBody> {
        let record = self.record.take();
        let status = response.status().as_u16();
        let expected_len = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        response.map(|inner| {
            http_body_util::BodyExt::boxed_unsync(LoggedBody {
                inner,
                bytes_out: 0,
                expected_len,
                status,
                record,
            })
        })
    }
}

impl Deref for AccessLog {
    type Target = Record;

    fn deref(&self) -> &Record {
        // `attach` takes the record and the log with it: while the log exists, so does the record.
        self.record
            .as_ref()
            .expect("the record is present until attach")
    }
}

impl DerefMut for AccessLog {
    fn deref_mut(&mut self) -> &mut Record {
        self.record
            .as_mut()
            .expect("the record is present until attach")
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            record.write(CLIENT_CLOSED, 0, "client_gone");
        }
    }
}

impl Record {
    /// Keeps the tenant's concurrency slot until the answer's last byte.
    pub fn hold(&mut self, slot: Admission) {
        self.slot = Some(slot);
    }

    /// Keeps the request's place under its cluster's cap until the answer's last byte.
    pub fn hold_cluster(&mut self, place: Option<ClusterAdmission>) {
        self.cluster_place = place;
    }

    /// Keeps the request counted in kqlgate's load until the answer's last byte.
    pub fn hold_counted(&mut self, counted: Counted) {
        self.counted = Some(counted);
    }

    /// The request's tenant, counted in its in-flight gauge until the answer's last byte.
    pub fn set_tenant(&mut self, tenant: &Label) {
        self.in_flight = self.sinks.metrics.in_flight(tenant);
        self.tenant = Some(tenant.clone());
    }

    /// Whether the audit log wants the query's text, not only its hash.
    pub fn wants_query_text(&self) -> bool {
        self.sinks
            .audit
            .as_ref()
            .is_some_and(|a| a.include_query_text)
    }

    pub fn audited(&self) -> bool {
        self.sinks.audit.is_some()
    }

    /// Reads the cost report from the answer as it streams (`gzip`: as the client gets it).
    pub fn watch_cost(&mut self, format: Format, gzip: bool) {
        self.cost_watcher = Some(CostWatcher::new(format, gzip));
    }

    fn write(mut self, status: u16, bytes_out: u64, outcome: &'static str) {
        let duration = self.started.elapsed();
        if let Some(watcher) = self.cost_watcher.take() {
            self.cost = watcher.finish();
        }
        tracing::info!(
            target: "kqlgate::access",
            method = %self.method,
            route = %self.path,
            tenant = self.tenant.as_deref().unwrap_or("-"),
            database = self.database.as_deref().unwrap_or("-"),
            status,
            upstream_status = self.upstream_status.unwrap_or(0),
            error = self.error_code.unwrap_or("-"),
            bytes_out,
            duration_ms = duration.as_millis() as u64,
            client_request_id = %self.client_request_id,
            outcome,
            "request"
        );
        if self.endpoint.is_none() {
            return; // health, readiness, metadata, unknown paths: no metrics or audit of queries
        }
        if let Some(audit) = &self.sinks.audit {
            audit.write(&self.audit_record(status, bytes_out, outcome, duration));
        }
        let finished = Finished {
            tenant: self.tenant.take(),
            endpoint: self.endpoint,
            status,
            duration,
            bytes_out,
            refusal: self.refusal,
            guard_construct: self.guard_construct,
            cluster: self.cluster.take(),
            first_byte: self.first_byte,
            upstream_status: self.upstream_status,
            upstream_error: self.upstream_error,
            cost: self.cost.take(),
        };
        self.sinks.metrics.request(&finished);
    }

    fn audit_record(
        &self,
        status: u16,
        bytes_out: u64,
        outcome: &'static str,
        duration: Duration,
    ) -> AuditRecord<'_> {
        AuditRecord {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            tenant: self.tenant.as_deref(),
            principal: self.principal.as_ref().map(PrincipalRecord::from),
            client_address: self.client.to_string(),
            route: &self.path,
            database: self.database.as_deref(),
            client_request_id: &self.client_request_id,
            activity_id: self.activity_id.as_deref(),
            status,
            outcome,
            refusal_reason: self.refusal,
            refused_construct: self.guard_construct,
            duration_ms: duration.as_millis() as u64,
            bytes_out,
            query_hash: self.query_hash.as_deref(),
            query_text: self.query_text.as_deref(),
            cost: self.cost.as_ref(),
        }
    }
}

struct LoggedBody {
    inner: ProxyBody,
    bytes_out: u64,
    /// From `Content-Length`: hyper stops polling once that many bytes are out.
    expected_len: Option<u64>,
    status: u16,
    record: Option<Record>,
}

impl LoggedBody {
    fn finish(&mut self, outcome: &'static str) {
        if let Some(record) = self.record.take() {
            record.write(self.status, self.bytes_out, outcome);
        }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes_out += data.len() as u64;
                    if let Some(watcher) =
                        self.record.as_mut().and_then(|r| r.cost_watcher.as_mut())
                    {
                        watcher.feed(data);
                    }
                }
                // hyper stops polling a body that reports its end or has sent its declared
                // length, so the end may be now.
                if self.inner.is_end_stream() || Some(self.bytes_out) == self.expected_len {
                    self.finish("complete");
                }
            }
            Poll::Ready(Some(Err(error))) => {
                tracing::warn!(error = %error_chain(error.as_ref()), "upstream stream broke; aborting the client connection");
                let kind = if error.is::<StreamTimedOut>() {
                    "timeout"
                } else {
                    "reset"
                };
                if let Some(record) = self.record.as_mut() {
                    record.upstream_error = Some(kind);
                }
                self.finish("aborted");
            }
            Poll::Ready(None) => self.finish("complete"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        // Dropped before its end: the client went away (or the server is shutting down).
        self.finish("client_gone");
    }
}
