//! The one log line per request: tenant, route, database, status, upstream status, bytes out,
//! duration, client request id, and whether the answer was delivered whole.
//!
//! The line is written when the response body ends — or is abandoned — because only then are
//! the bytes and the duration known. The record rides inside the response body for that, and so
//! does the tenant's concurrency [`Slot`]: a streamed answer counts as in flight until its last
//! byte. A request whose client leaves before the answer's head (the cluster may still be
//! running its query) is logged too, when the pipeline is dropped: status 499, `client_gone`.
//! Nothing secret is in the record: no key, token, header or query text.

use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};

use crate::error::error_chain;
use crate::pipeline::{BoxError, ProxyBody};
use crate::services::limits::Slot;
use crate::services::load::Counted;

/// The status logged for a request whose client went away before its answer began (nginx's).
const CLIENT_CLOSED: u16 = 499;

pub struct Record {
    started: Instant,
    pub method: http::Method,
    pub path: String,
    pub client_request_id: String,
    pub tenant: Option<String>,
    pub database: Option<String>,
    pub upstream_status: Option<u16>,
    /// The error code, when kqlgate itself answered with an error.
    pub error_code: Option<&'static str>,
    slot: Option<Slot>,
    counted: Option<Counted>,
}

/// A request's record until its response exists; dropped unattached, it logs `client_gone`.
pub struct AccessLog {
    record: Option<Record>,
}

impl AccessLog {
    pub fn start<B>(request: &http::Request<B>) -> AccessLog {
        AccessLog {
            record: Some(Record {
                started: Instant::now(),
                method: request.method().clone(),
                path: request.uri().path().chars().take(200).collect(),
                client_request_id: crate::headers::client_request_id(request.headers()),
                tenant: None,
                database: None,
                upstream_status: None,
                error_code: None,
                slot: None,
                counted: None,
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
    pub fn hold(&mut self, slot: Slot) {
        self.slot = Some(slot);
    }

    /// Keeps the request counted in kqlgate's load until the answer's last byte.
    pub fn hold_counted(&mut self, counted: Counted) {
        self.counted = Some(counted);
    }

    fn write(self, status: u16, bytes_out: u64, outcome: &'static str) {
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
            duration_ms = self.started.elapsed().as_millis() as u64,
            client_request_id = %self.client_request_id,
            outcome,
            "request"
        );
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
                }
                // hyper stops polling a body that reports its end or has sent its declared
                // length, so the end may be now.
                if self.inner.is_end_stream() || Some(self.bytes_out) == self.expected_len {
                    self.finish("complete");
                }
            }
            Poll::Ready(Some(Err(error))) => {
                tracing::warn!(error = %error_chain(error.as_ref()), "upstream stream broke; aborting the client connection");
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
