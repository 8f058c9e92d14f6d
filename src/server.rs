//! Stage: accept. The listener loop and every connection's life: HTTP/1.1 and HTTP/2 through
//! hyper-util's auto builder (over TLS with ALPN when `tls_cert` is set, else cleartext), a
//! deadline in every state a connection can sit in, a connection budget, and graceful shutdown.
//!
//! Deadlines (`[server]`), enforced by one watchdog per connection:
//! - TLS handshake: `tls_handshake_timeout_seconds`;
//! - accepted (or handshaken) but no complete request yet — silent, a partial HTTP/2 preface, an
//!   HTTP/2 connection that sent only SETTINGS, slow headers: `header_read_timeout_seconds`;
//! - HTTP/1 keep-alive with no request in flight: `keepalive_timeout_seconds`, and once bytes of
//!   a next request arrive, `header_read_timeout_seconds` for the rest of its headers;
//! - HTTP/2 with no open stream: `http2_idle_timeout_seconds` (and PINGs while streams run).
//!
//! A connection past its deadline is shut down gracefully, then dropped if it will not go.
//!
//! Threads: `server.workers` event loops (one per CPU by default), each a single-threaded Tokio
//! runtime serving its connections to the end, with its own upstream connection pool — as
//! nginx's workers do. One acceptor hands each new connection to the worker with the fewest
//! open connections. The calling thread is worker 0 and also runs the acceptor and the
//! background tasks (token refresh, JWKS, certificate reload, signals, reload).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::config::ServerSettings;
use crate::gateway::Gateway;
use crate::pipeline::{self, BoxError, ProxyBody};
use crate::services::load::Counted;
use crate::tls::TlsFiles;

/// How often idle sign-in budget state is forgotten.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// How long a connection asked to close gracefully may take before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// TCP keepalive on client sockets: a vanished client's connection (and what it holds) is
/// found dead after about `IDLE + COUNT × INTERVAL`.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_COUNT: u32 = 6;

/// A connection on its way from the acceptor to a worker.
type Handoff = (std::net::TcpStream, SocketAddr, Counted);

/// What every worker needs to serve connections.
#[derive(Clone)]
struct Worker {
    gateway: Arc<Gateway>,
    tls: Option<TlsAcceptor>,
    /// Becomes `true` when the server shuts down.
    stopping: watch::Receiver<bool>,
    /// Open connections per worker, which the acceptor balances.
    open: Arc<[AtomicUsize]>,
}

pub async fn serve(
    listener: std::net::TcpListener,
    gateway: Arc<Gateway>,
    tls: Option<TlsFiles>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let tls = match &tls {
        Some(files) => Some(crate::tls::acceptor(files)?),
        None => None,
    };
    let (stop, stopping) = watch::channel(false);
    let workers = gateway.server().workers.max(1);
    let worker = Worker {
        gateway: gateway.clone(),
        tls,
        stopping,
        open: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
    };
    let (mut handoffs, mut finished) = (Vec::new(), Vec::new());
    for index in 0..workers {
        let (handoff, incoming) = mpsc::unbounded_channel();
        handoffs.push(handoff);
        finished.push(if index == 0 {
            let (done, drained) = oneshot::channel();
            let own = worker.clone();
            tokio::spawn(async move { done.send(own.run(0, incoming).await) });
            drained
        } else {
            start_worker(index, incoming, worker.clone())?
        });
    }
    let pruner = tokio::spawn(prune_periodically(gateway.clone()));
    gateway.load.watch_memory();
    tokio::spawn(worker.clone().accept(listener, handoffs));

    shutdown.await;
    gateway.draining.store(true, Ordering::Relaxed);
    pruner.abort();
    let grace = gateway.server().shutdown_grace;
    tracing::info!(
        grace_seconds = grace.as_secs(),
        connections = gateway.load.connections(),
        "shutting down: no new connections, draining in-flight requests"
    );
    let _ = stop.send(true);
    let mut drained = true;
    for worker in finished {
        drained &= worker.await.unwrap_or(false);
    }
    if drained {
        tracing::info!("all connections drained");
    } else {
        tracing::warn!("grace period over; closing the remaining connections");
    }
    Ok(())
}

/// Runs worker `index` on a thread of its own; the receiver says whether it drained in time.
fn start_worker(
    index: usize,
    incoming: mpsc::UnboundedReceiver<Handoff>,
    worker: Worker,
) -> anyhow::Result<oneshot::Receiver<bool>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a worker's runtime")?;
    let (done, drained) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("kqlgate-worker-{index}"))
        .spawn(move || {
            let _ = done.send(runtime.block_on(worker.run(index, incoming)));
        })
        .context("cannot start a worker thread")?;
    Ok(drained)
}

impl Worker {
    /// Accepts until the server stops, handing each connection to the least busy worker.
    async fn accept(
        mut self,
        listener: TcpListener,
        handoffs: Vec<mpsc::UnboundedSender<Handoff>>,
    ) {
        let load = self.gateway.load.clone();
        loop {
            let (stream, client) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors, usually: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = stopped(&mut self.stopping) => break,
            };
            // Past the budget a connection is closed at once: a prompt refusal, never a hang,
            // and the process keeps the descriptors it needs for the connections it serves.
            let Some(counted) = load.connection() else {
                tracing::debug!(%client, "connection refused: max_connections reached");
                self.gateway.metrics.connection_refused();
                continue;
            };
            prepare(&stream);
            let least_busy = (0..handoffs.len())
                .min_by_key(|&index| self.open[index].load(Ordering::Relaxed))
                .unwrap_or(0);
            // Counted here, so the next accept already sees it; the worker uncounts it.
            self.open[least_busy].fetch_add(1, Ordering::Relaxed);
            let handed = stream
                .into_std()
                .map_err(|error| error.to_string())
                .and_then(|stream| {
                    handoffs[least_busy]
                        .send((stream, client, counted))
                        .map_err(|_| "the worker has stopped".to_owned())
                });
            if let Err(error) = handed {
                self.open[least_busy].fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(%client, %error, "connection dropped before a worker took it");
            }
        }
        // Dropping the listener here refuses new connections while the workers drain.
    }

    /// Serves the connections handed to worker `index` until the server stops, then drains
    /// them; returns whether they all finished within the grace period.
    async fn run(mut self, index: usize, mut incoming: mpsc::UnboundedReceiver<Handoff>) -> bool {
        let connections = TaskTracker::new();
        loop {
            let (stream, client, counted) = tokio::select! {
                handed = incoming.recv() => match handed {
                    Some(handed) => handed,
                    None => break,
                },
                () = stopped(&mut self.stopping) => break,
            };
            self.gateway.metrics.connection_opened();
            let open = OpenConnection {
                open: self.open.clone(),
                index,
                _counted: counted,
                metrics: self.gateway.metrics.clone(),
            };
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%client, %error, "cannot serve a connection");
                    continue;
                }
            };
            let worker = self.clone();
            connections.spawn(async move {
                let _open = open;
                worker.connection(stream, client, index).await;
            });
        }
        connections.close();
        tokio::select! {
            () = connections.wait() => true,
            () = tokio::time::sleep(self.gateway.server().shutdown_grace) => false,
        }
    }

    /// One connection, from the TLS handshake to its close.
    async fn connection(mut self, stream: TcpStream, client: SocketAddr, worker: usize) {
        let settings = self.gateway.snapshot().server.clone();
        match self.tls.clone() {
            None => self.serve(stream, client, worker, &settings).await,
            Some(tls) => {
                let handshake =
                    tokio::time::timeout(settings.tls_handshake_timeout, tls.accept(stream));
                match handshake.await {
                    Ok(Ok(stream)) => self.serve(stream, client, worker, &settings).await,
                    Ok(Err(error)) => tracing::debug!(%client, %error, "TLS handshake failed"),
                    Err(_) => {
                        tracing::debug!(%client, "TLS handshake timed out");
                        self.gateway.metrics.connection_closed("tls_handshake");
                    }
                }
            }
        }
    }

    async fn serve<I>(
        &mut self,
        io: I,
        client: SocketAddr,
        worker: usize,
        settings: &ServerSettings,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            inner: io,
            activity: activity.clone(),
        });
        let gateway = self.gateway.clone();
        let on_request = activity.clone();
        let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let gateway = gateway.clone();
            let active = on_request.begin(request.version() == http::Version::HTTP_2);
            async move {
                let response = pipeline::handle(&gateway, request, client, worker).await;
                Ok::<_, Infallible>(response.map(|body| InFlight {
                    body,
                    _active: active,
                }))
            }
        });
        let builder = builder(settings);
        let connection = builder.serve_connection(io, service);
        let mut connection = std::pin::pin!(connection);
        let mut close_by: Option<Instant> = None;
        let served = loop {
            let overdue = async move {
                match close_by {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                served = connection.as_mut() => break served,
                () = overdue => {
                    tracing::debug!(%client, "connection did not close in time; dropping it");
                    return;
                }
                (deadline, reason) = activity.expired(settings), if close_by.is_none() => {
                    tracing::debug!(%client, reason, "closing connection");
                    self.gateway.metrics.connection_closed(deadline);
                    if !activity.served.load(Ordering::Relaxed) {
                        return; // nothing was ever asked on it: nothing to finish politely
                    }
                    connection.as_mut().graceful_shutdown();
                    close_by = Some(Instant::now() + CLOSE_GRACE);
                }
                () = stopped(&mut self.stopping), if close_by.is_none() => {
                    // Shutdown: in-flight answers finish, within the worker's grace period.
                    connection.as_mut().graceful_shutdown();
                    close_by = Some(Instant::now() + self.gateway.server().shutdown_grace);
                }
            }
        };
        if let Err(error) = served {
            tracing::debug!(%client, error = %error, "connection ended with an error");
        }
    }
}

/// The connection settings of hyper's server, from `[server]`.
fn builder(settings: &ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Header and idle deadlines are the watchdog's (see the module's comment): hyper's own
    // header timer also runs while an HTTP/1 connection waits idle, which would cut keep-alive
    // short at the header deadline.
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    let mut http2 = builder.http2();
    http2.timer(TokioTimer::new());
    if let Some((interval, timeout)) = settings.http2_keepalive {
        http2
            .keep_alive_interval(interval)
            .keep_alive_timeout(timeout);
    }
    builder
}

/// Low-latency writes, and TCP keepalive so a vanished client is found.
fn prepare(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_COUNT);
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

/// What a connection is doing, for its watchdog: requests in flight, when it last went idle,
/// whether bytes arrived since.
struct Activity {
    epoch: Instant,
    active: AtomicUsize,
    /// Nanoseconds from `epoch` at which the connection last went idle (0: it never served a
    /// request; it is "idle" since it opened).
    idle_since: AtomicU64,
    /// Nanoseconds from `epoch` of the first byte read while idle; 0: none.
    read_while_idle: AtomicU64,
    served: AtomicBool,
    http2: AtomicBool,
    changed: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            active: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            read_while_idle: AtomicU64::new(0),
            served: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos().max(1) as u64
    }

    fn begin(self: &Arc<Activity>, http2: bool) -> Active {
        self.active.fetch_add(1, Ordering::SeqCst);
        self.served.store(true, Ordering::Relaxed);
        self.http2.store(http2, Ordering::Relaxed);
        self.read_while_idle.store(0, Ordering::Relaxed);
        self.changed.notify_one();
        Active {
            activity: self.clone(),
        }
    }

    fn read(&self) {
        if self.active.load(Ordering::Relaxed) == 0
            && self.read_while_idle.load(Ordering::Relaxed) == 0
        {
            self.read_while_idle.store(self.now(), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// When the connection's current state runs out, and which deadline that is (a metrics
    /// label and words for the log); `None` while a request is in flight.
    fn deadline(&self, settings: &ServerSettings) -> Option<(Instant, Deadline)> {
        if self.active.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let at = |nanos: u64, limit: Duration| self.epoch + Duration::from_nanos(nanos) + limit;
        let idle_since = self.idle_since.load(Ordering::Relaxed);
        Some(if !self.served.load(Ordering::Relaxed) {
            let reason = ("header_read", "no request within the header deadline");
            (at(0, settings.header_read_timeout), reason)
        } else if self.http2.load(Ordering::Relaxed) {
            let reason = ("http2_idle", "HTTP/2 idle timeout");
            (at(idle_since, settings.http2_idle_timeout), reason)
        } else {
            match self.read_while_idle.load(Ordering::Relaxed) {
                0 => (
                    at(idle_since, settings.keepalive_timeout),
                    ("keepalive", "keep-alive timeout"),
                ),
                first => (
                    at(first, settings.header_read_timeout),
                    ("header_read", "headers too slow"),
                ),
            }
        })
    }

    /// Resolves when the connection has sat too long in one state.
    async fn expired(&self, settings: &ServerSettings) -> Deadline {
        loop {
            let changed = self.changed.notified();
            match self.deadline(settings) {
                None => changed.await,
                Some((deadline, reason)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {
                            if self.deadline(settings).is_some_and(|(d, _)| d <= Instant::now()) {
                                return reason;
                            }
                        }
                        () = changed => {}
                    }
                }
            }
        }
    }
}

/// Which deadline closed a connection: a metrics label, and words for the log.
type Deadline = (&'static str, &'static str);

/// One request of a connection in flight; when the last ends, the connection is idle.
struct Active {
    activity: Arc<Activity>,
}

impl Drop for Active {
    fn drop(&mut self) {
        let activity = &self.activity;
        activity.idle_since.store(activity.now(), Ordering::SeqCst);
        activity.read_while_idle.store(0, Ordering::Relaxed);
        activity.active.fetch_sub(1, Ordering::SeqCst);
        activity.changed.notify_one();
    }
}

/// A response body that keeps its request counted as in flight on its connection.
struct InFlight {
    body: ProxyBody,
    _active: Active,
}

impl Body for InFlight {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection's I/O, telling its [`Activity`] when bytes arrive.
struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
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

/// One open connection of a worker, uncounted when its task ends.
struct OpenConnection {
    open: Arc<[AtomicUsize]>,
    index: usize,
    _counted: Counted,
    metrics: Arc<crate::services::metrics::Metrics>,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open[self.index].fetch_sub(1, Ordering::Relaxed);
        self.metrics.connection_ended();
    }
}

/// Resolves once the server stops (or can no longer tell this worker, which means the same).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stopping| *stopping).await;
}

async fn prune_periodically(gateway: Arc<Gateway>) {
    let mut ticker = tokio::time::interval(PRUNE_INTERVAL);
    loop {
        ticker.tick().await;
        gateway.prune();
    }
}
