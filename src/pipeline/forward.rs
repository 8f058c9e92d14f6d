//! Stage: forward. Rebuilds the request from an allow-list of headers, so nothing the client
//! sent reaches the cluster unless it is named here — in particular the client's `Authorization`
//! never does: the cluster sees the proxy's own credential, and learns which tenant is asking
//! from `x-ms-user`/`x-ms-app` values the tenant cannot forge — and sends it over the worker's
//! pool (`services::upstream`).
//!
//! A pooled connection the cluster closed while it sat idle can swallow a request: the cluster
//! closes, the request goes out on the dying connection, no answer comes. Such a request is sent
//! once more, on a fresh connection, when no byte of an answer arrived and it is read-only (a
//! query, or a viewer's command): Kusto runs those with `request_readonly`, so a second run can
//! change nothing. A request whose answer had begun, or one that may write, is never repeated.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::endpoint::Endpoint;
use crate::error::{error_chain, is_timeout, ProxyError, StreamTimedOut};
use crate::headers;
use crate::pipeline::BoxError;
use crate::services::upstream::{Pool, Upstream};

/// The cluster's answer: its status and headers, and a body that ends with an error if the
/// request's deadline passes while it is still streaming.
pub type Answer = Response<DeadlineBody<Incoming>>;

/// What the client sent that is passed on, besides the rewritten body.
const FORWARDED_HEADERS: [http::HeaderName; 4] = [
    ACCEPT,
    CONTENT_TYPE,
    headers::CLIENT_VERSION,
    headers::KUSTO_VERSION,
];

/// The request to send, as the earlier stages made it.
pub struct Outgoing<'a> {
    pub endpoint: Endpoint,
    pub client_headers: &'a HeaderMap,
    pub body: Bytes,
    pub tenant_id: &'a str,
    pub request_id: &'a str,
    pub authorization: Option<HeaderValue>,
    /// May be sent twice (see the module's comment).
    pub read_only: bool,
}

/// The cluster's answer's head, and whether it took a second attempt.
pub struct Sent {
    pub answer: Answer,
    pub retried: bool,
}

/// Why no answer came: the error for the client, and its kind for the metrics
/// (`connect`, `timeout` or `reset`).
pub struct Failed {
    pub kind: &'static str,
    pub error: ProxyError,
}

impl From<Failed> for ProxyError {
    fn from(failed: Failed) -> ProxyError {
        failed.error
    }
}

impl From<ProxyError> for Failed {
    fn from(error: ProxyError) -> Failed {
        Failed {
            kind: "reset",
            error,
        }
    }
}

/// Sends `outgoing` over `pool` (the calling worker's pool of `upstream`).
pub async fn send(
    upstream: &Upstream,
    pool: &Pool,
    outgoing: &Outgoing<'_>,
) -> Result<Sent, Failed> {
    // `timeout_seconds` covers the whole exchange, the streamed answer included: one timer
    // waits for the answer's head, then travels with its body.
    let mut deadline = Box::pin(tokio::time::sleep(upstream.timeout));
    let mut attempt = pool.request(request(upstream, outgoing)?);
    let mut retried = false;
    let answer = loop {
        let result = tokio::select! {
            biased;
            answer = &mut attempt => answer,
            () = deadline.as_mut() => {
                return Err(Failed { kind: "timeout", error: timed_out(upstream) })
            }
        };
        match result {
            Ok(answer) => break answer,
            Err(error) if !retried && outgoing.read_only && answer_never_began(&error) => {
                tracing::info!(
                    error = %error_chain(&error),
                    "pooled connection closed before an answer began; retrying on a new connection"
                );
                retried = true;
                attempt = upstream.fresh().request(request(upstream, outgoing)?);
            }
            Err(error) => return Err(failure(upstream, &error)),
        }
    };
    Ok(Sent {
        answer: answer.map(|inner| DeadlineBody { inner, deadline }),
        retried,
    })
}

fn request(upstream: &Upstream, outgoing: &Outgoing) -> Result<Request<Full<Bytes>>, ProxyError> {
    let mut request = Request::post(upstream.uri(outgoing.endpoint).clone())
        .body(Full::new(outgoing.body.clone()))
        .map_err(ProxyError::internal)?;
    let request_headers = request.headers_mut();
    request_headers.reserve(12);
    for name in FORWARDED_HEADERS {
        if let Some(value) = outgoing.client_headers.get(&name) {
            request_headers.insert(name, value.clone());
        }
    }
    request_headers
        .entry(ACCEPT)
        .or_insert(HeaderValue::from_static("application/json"));
    request_headers
        .entry(CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("application/json; charset=utf-8"));
    // The answer is passed through compressed or decoded on the fly; see respond.rs.
    request_headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
    request_headers.insert(
        headers::CLIENT_REQUEST_ID,
        header_value(outgoing.request_id)?,
    );
    request_headers.insert(headers::USER, header_value(outgoing.tenant_id)?);
    request_headers.insert(
        headers::APP,
        header_value(&format!("kqlgate;tenant={}", outgoing.tenant_id))?,
    );
    if let Some(authorization) = &outgoing.authorization {
        request_headers.insert(AUTHORIZATION, authorization.clone());
    }
    Ok(request)
}

/// The connection was closed under the request before any byte of an answer (`send` returns
/// at the answer's head, so every error here is before it): hyper saw the request cancelled or
/// the message end, or the socket was reset. A failure to connect is not this.
fn answer_never_began(error: &hyper_util::client::legacy::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    if error.is_connect() {
        return false;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            if hyper.is_incomplete_message() || hyper.is_canceled() {
                return true;
            }
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ConnectionReset | BrokenPipe | ConnectionAborted | UnexpectedEof
            );
        }
        source = cause.source();
    }
    false
}

fn timed_out(upstream: &Upstream) -> ProxyError {
    tracing::warn!(
        timeout_seconds = upstream.timeout.as_secs(),
        "upstream request timed out"
    );
    ProxyError::GatewayTimeout(format!(
        "the cluster did not answer within the proxy's limit ({} s)",
        upstream.timeout.as_secs()
    ))
}

fn failure(upstream: &Upstream, error: &hyper_util::client::legacy::Error) -> Failed {
    // The detail (addresses, OS errors) is for the operator's log, not for the tenant.
    tracing::warn!(error = %error_chain(error), "upstream request failed");
    if is_timeout(error) {
        // The connect timeout: as nginx does, a cluster that does not accept in time is 504.
        Failed {
            kind: "timeout",
            error: ProxyError::GatewayTimeout(format!(
                "the cluster did not accept a connection within the proxy's limit ({} s)",
                upstream.connect_timeout.as_secs()
            )),
        }
    } else if error.is_connect() {
        Failed {
            kind: "connect",
            error: ProxyError::BadGateway("the cluster could not be reached".into()),
        }
    } else {
        Failed {
            kind: "reset",
            error: ProxyError::BadGateway("the connection to the cluster failed".into()),
        }
    }
}

/// A response body that fails once its deadline has passed, so a stream cannot outlive
/// `timeout_seconds`. The failure makes hyper abort the client's connection, as for any broken
/// upstream stream. The timer is only polled (registered) while the upstream has nothing ready.
pub struct DeadlineBody<B> {
    inner: B,
    // Boxed so the body stays `Unpin` (hyper's bodies are moved about freely).
    deadline: Pin<Box<Sleep>>,
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        // Checked first too, so a stream the upstream always has ready (a slow client reading a
        // fast cluster) is cut off as well; `is_elapsed` reads a flag, not the clock.
        if this.deadline.is_elapsed() {
            return Poll::Ready(Some(Err(StreamTimedOut.into())));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(StreamTimedOut.into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn header_value(value: &str) -> Result<HeaderValue, ProxyError> {
    // Request ids are filtered and tenant ids validated at load, so this cannot fail in practice.
    HeaderValue::from_str(value).map_err(ProxyError::internal)
}
