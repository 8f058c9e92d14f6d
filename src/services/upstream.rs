//! A cluster's connection pools: one hyper-util pooled client per worker (so a request, its
//! upstream connection and its answer's bytes stay on one core), and one client that never
//! reuses a connection, for the single retry of a request a dead pooled connection swallowed.
//! Every connection is counted in `kqlgate_upstream_pool_connections` while it is open.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::Cluster;
use crate::endpoint::Endpoint;
use crate::services::metrics::{Label, Metrics, PoolConnection};

type Connector = Counting<HttpsConnector<HttpConnector>>;

/// hyper-util's pooled client, driven directly: this is the hot path, and a higher-level
/// client's URL re-parsing, redirect and timeout layers cost more than the proxy's own work.
pub type Pool = Client<Connector, Full<Bytes>>;

pub struct Upstream {
    pools: Vec<Pool>,
    fresh: Pool,
    /// The endpoint URIs, in [`Endpoint`] order.
    uris: [Uri; 3],
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl Upstream {
    pub fn new(
        cluster: &Cluster,
        workers: usize,
        metrics: &Arc<Metrics>,
        label: &Label,
    ) -> anyhow::Result<Upstream> {
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
        let connector = Counting {
            inner: connector,
            metrics: metrics.clone(),
            cluster: label.clone(),
        };
        // No redirects are followed: the legacy client never does, and Kusto never redirects a
        // query; a redirect here would be an attack or a mistake, passed back as it came.
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(cluster.pool_idle_timeout)
            .pool_max_idle_per_host(cluster.pool_max_idle);
        let pools = (0..workers.max(1))
            .map(|_| builder.build(connector.clone()))
            .collect();
        let fresh = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        let base = cluster.url.as_str().trim_end_matches('/');
        let uri = |endpoint: Endpoint| format!("{base}{}", endpoint.path()).parse::<Uri>();
        Ok(Upstream {
            pools,
            fresh,
            uris: [
                uri(Endpoint::QueryV1)?,
                uri(Endpoint::QueryV2)?,
                uri(Endpoint::Mgmt)?,
            ],
            timeout: cluster.timeout,
            connect_timeout: cluster.connect_timeout,
        })
    }

    /// Worker `worker`'s pool.
    pub fn pool(&self, worker: usize) -> &Pool {
        &self.pools[worker % self.pools.len()]
    }

    /// A client that opens a new connection for every request.
    pub fn fresh(&self) -> &Pool {
        &self.fresh
    }

    pub fn uri(&self, endpoint: Endpoint) -> &Uri {
        &self.uris[endpoint as usize]
    }
}

/// A connector whose connections are counted while open.
#[derive(Clone)]
pub struct Counting<C> {
    inner: C,
    metrics: Arc<Metrics>,
    cluster: Label,
}

impl<C> tower_service::Service<Uri> for Counting<C>
where
    C: tower_service::Service<Uri>,
    C::Future: Send + 'static,
{
    type Response = CountedIo<C::Response>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let (metrics, cluster) = (self.metrics.clone(), self.cluster.clone());
        Box::pin(async move {
            let io = connecting.await?;
            Ok(CountedIo {
                inner: io,
                _counted: metrics.pool_connection(&cluster),
            })
        })
    }
}

/// A connection to a cluster, uncounted when it closes.
pub struct CountedIo<I> {
    inner: I,
    _counted: PoolConnection,
}

impl<I: Connection> Connection for CountedIo<I> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

impl<I: Read + Unpin> Read for CountedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: Write + Unpin> Write for CountedIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}
