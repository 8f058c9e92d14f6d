//! Stage: accept. The listener loop: HTTP/1.1 and HTTP/2 through hyper-util's auto builder (over
//! TLS with ALPN when `tls_cert` is set, else cleartext), a header read timeout against slow-loris
//! clients (the TLS handshake gets the same bound), and graceful shutdown — stop accepting, let
//! in-flight streams finish, give up after the grace period.
//!
//! Threads: `server.workers` event loops (one per CPU by default), each a single-threaded Tokio
//! runtime serving its connections to the end, with its own upstream connection pool — as
//! nginx's workers do. A request never changes thread, so no wake-up crosses cores; this cut CPU
//! per small request by about a sixth against Tokio's work-stealing scheduler
//! (benches/ANALYSIS.md). One acceptor hands each new connection to the worker with the fewest
//! open connections (workers racing for `accept` split them unevenly, and the busiest worker then
//! sets the latency). The calling thread is worker 0 and also runs the acceptor and the
//! background tasks (token refresh, JWKS, certificate reload, signals).

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_rustls::TlsAcceptor;

use crate::gateway::Gateway;
use crate::pipeline;

/// How often idle sign-in limiter state is forgotten.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

thread_local! {
    static WORKER_INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Which worker runs the current thread (0 outside the workers): picks the worker's own pool.
pub fn worker_index() -> usize {
    WORKER_INDEX.with(Cell::get)
}

/// A connection on its way from the acceptor to a worker.
type Handoff = (std::net::TcpStream, SocketAddr);

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
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let tls = match &gateway.server.tls {
        Some(files) => Some(crate::tls::acceptor(files)?),
        None => None,
    };
    let (stop, stopping) = watch::channel(false);
    let workers = gateway.server.workers.max(1);
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
    tokio::spawn(worker.clone().accept(listener, handoffs));

    shutdown.await;
    gateway.draining.store(true, Ordering::Relaxed);
    pruner.abort();
    let grace = gateway.server.shutdown_grace;
    tracing::info!(
        grace_seconds = grace.as_secs(),
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
            WORKER_INDEX.with(|cell| cell.set(index));
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
        loop {
            let (stream, client) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = stopped(&mut self.stopping) => break,
            };
            let _ = stream.set_nodelay(true);
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
                        .send((stream, client))
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
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.gateway.server.header_read_timeout)
            .keep_alive(true);
        builder.http2().timer(TokioTimer::new());
        let graceful = GracefulShutdown::new();
        loop {
            let (stream, client) = tokio::select! {
                handed = incoming.recv() => match handed {
                    Some(handed) => handed,
                    None => break,
                },
                () = stopped(&mut self.stopping) => break,
            };
            let open = OpenConnection {
                open: self.open.clone(),
                index,
            };
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%client, %error, "cannot serve a connection");
                    continue;
                }
            };
            let gateway = self.gateway.clone();
            let handshake_timeout = gateway.server.header_read_timeout;
            let service = service_fn(move |request| {
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(pipeline::handle(&gateway, request, client).await) }
            });
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let tls = self.tls.clone();
            tokio::spawn(async move {
                let _open = open;
                let served = match tls {
                    None => {
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(connection.into_owned()).await
                    }
                    Some(tls) => {
                        let handshake = tokio::time::timeout(handshake_timeout, tls.accept(stream));
                        let stream = match handshake.await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                tracing::debug!(%client, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%client, "TLS handshake timed out");
                                return;
                            }
                        };
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(connection.into_owned()).await
                    }
                };
                if let Err(error) = served {
                    tracing::debug!(%client, error = %error, "connection ended with an error");
                }
            });
        }
        tokio::select! {
            () = graceful.shutdown() => true,
            () = tokio::time::sleep(self.gateway.server.shutdown_grace) => false,
        }
    }
}

/// One open connection of a worker, uncounted when its task ends.
struct OpenConnection {
    open: Arc<[AtomicUsize]>,
    index: usize,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open[self.index].fetch_sub(1, Ordering::Relaxed);
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
