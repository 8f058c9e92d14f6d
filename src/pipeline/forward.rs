//! Stage: forward. One pooled keep-alive client per cluster; each request is rebuilt from an
//! allow-list of headers, so nothing the client sent reaches the cluster unless it is named here.
//! In particular the client's `Authorization` never does: the cluster sees the proxy's own
//! credential, and learns which tenant is asking from `x-ms-user`/`x-ms-app` values the tenant
//! cannot forge.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Sleep;

use crate::config::Cluster;
use crate::error::ProxyError;
use crate::headers;
use crate::pipeline::route::Endpoint;
use crate::pipeline::BoxError;

/// What the guard does for requests to one cluster.
#[derive(Debug, Clone, Copy)]
pub struct ClusterPolicy {
    pub enforce_request_properties: bool,
    pub restrict_statement: bool,
}

/// The cluster's answer: its status and headers, and a body that ends with an error if the
/// request's deadline passes while it is still streaming.
pub type Answer = Response<DeadlineBody<Incoming>>;

/// Idle pooled connections are closed after this long (the figure reqwest and browsers use).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

pub struct Upstream {
    pub policy: ClusterPolicy,
    /// hyper-util's pooled client, driven directly: this is the hot path, and a higher-level
    /// client's URL re-parsing, redirect and timeout layers cost more than the proxy's own work.
    /// One per worker (see server.rs), so a request and its upstream connection share a thread.
    clients: Vec<Client<HttpsConnector<HttpConnector>, Full<Bytes>>>,
    /// The three endpoint URIs, in [`Endpoint`] order.
    uris: [Uri; 3],
    timeout: Duration,
    connect_timeout: Duration,
}

/// What the client sent that is passed on, besides the rewritten body.
const FORWARDED_HEADERS: [http::HeaderName; 4] = [
    ACCEPT,
    CONTENT_TYPE,
    headers::CLIENT_VERSION,
    headers::KUSTO_VERSION,
];

impl Upstream {
    pub fn new(cluster: &Cluster, workers: usize) -> anyhow::Result<Upstream> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(cluster.connect_timeout));
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(Duration::from_secs(30)));
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)?
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(tcp);
        // No redirects are followed: the legacy client never does, and Kusto never redirects a
        // query; a redirect here would be an attack or a mistake, passed back as it came.
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(cluster.pool_max_idle);
        let clients = (0..workers.max(1))
            .map(|_| builder.build(connector.clone()))
            .collect();
        let base = cluster.url.as_str().trim_end_matches('/');
        let uri = |endpoint: Endpoint| format!("{base}{}", endpoint.path()).parse::<Uri>();
        Ok(Upstream {
            policy: ClusterPolicy {
                enforce_request_properties: cluster.enforce_request_properties,
                restrict_statement: cluster.restrict_statement,
            },
            clients,
            uris: [
                uri(Endpoint::QueryV1)?,
                uri(Endpoint::QueryV2)?,
                uri(Endpoint::Mgmt)?,
            ],
            timeout: cluster.timeout,
            connect_timeout: cluster.connect_timeout,
        })
    }

    pub async fn send(
        &self,
        endpoint: Endpoint,
        client_headers: &HeaderMap,
        body: Bytes,
        tenant_id: &str,
        request_id: &str,
        authorization: Option<HeaderValue>,
    ) -> Result<Answer, ProxyError> {
        let mut request = Request::post(self.uris[endpoint as usize].clone())
            .body(Full::new(body))
            .map_err(|_| ProxyError::Internal)?;
        let request_headers = request.headers_mut();
        request_headers.reserve(12);
        for name in FORWARDED_HEADERS {
            if let Some(value) = client_headers.get(&name) {
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
        request_headers.insert(headers::CLIENT_REQUEST_ID, header_value(request_id)?);
        request_headers.insert(headers::USER, header_value(tenant_id)?);
        request_headers.insert(
            headers::APP,
            header_value(&format!("kqlgate;tenant={tenant_id}"))?,
        );
        if let Some(authorization) = authorization {
            request_headers.insert(AUTHORIZATION, authorization);
        }

        // `timeout_seconds` covers the whole exchange, the streamed answer included: one timer
        // waits for the answer's head, then travels with its body.
        let mut deadline = Box::pin(tokio::time::sleep(self.timeout));
        let client = &self.clients[crate::server::worker_index() % self.clients.len()];
        let answer = tokio::select! {
            biased;
            answer = client.request(request) => answer.map_err(|error| self.failure(&error))?,
            () = deadline.as_mut() => return Err(self.timed_out()),
        };
        Ok(answer.map(|inner| DeadlineBody { inner, deadline }))
    }

    fn timed_out(&self) -> ProxyError {
        tracing::warn!(
            timeout_seconds = self.timeout.as_secs(),
            "upstream request timed out"
        );
        ProxyError::GatewayTimeout(format!(
            "the cluster did not answer within the proxy's limit ({} s)",
            self.timeout.as_secs()
        ))
    }

    fn failure(&self, error: &hyper_util::client::legacy::Error) -> ProxyError {
        // The detail (addresses, OS errors) is for the operator's log, not for the tenant.
        tracing::warn!(error = %error_chain(error), "upstream request failed");
        if is_timeout(error) {
            // The connect timeout: as nginx does, a cluster that does not accept in time is 504.
            ProxyError::GatewayTimeout(format!(
                "the cluster did not accept a connection within the proxy's limit ({} s)",
                self.connect_timeout.as_secs()
            ))
        } else if error.is_connect() {
            ProxyError::BadGateway("the cluster could not be reached".into())
        } else {
            ProxyError::BadGateway("the connection to the cluster failed".into())
        }
    }
}

fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        source = cause.source();
    }
    false
}

/// A response body that fails once its deadline has passed, so a stream cannot outlive
/// `timeout_seconds`. The failure makes hyper abort the client's connection, as for any broken
/// upstream stream. The timer is only polled (registered) while the upstream has nothing ready.
pub struct DeadlineBody<B> {
    inner: B,
    // Boxed so the body stays `Unpin` (hyper's bodies are moved about freely).
    deadline: Pin<Box<Sleep>>,
}

/// The error a body yields when its deadline passes mid-stream.
#[derive(Debug, thiserror::Error)]
#[error("the answer did not finish within the proxy's limit")]
pub struct StreamTimedOut;

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
    HeaderValue::from_str(value).map_err(|_| ProxyError::Internal)
}

/// An error and its causes on one line, e.g. "error sending request: connection refused".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
