//! The admin listener (`[admin] listen`), apart from the public one: `GET /metrics` (the
//! Prometheus text exposition), `/healthz` and `/readyz`. It serves only what an operator's
//! scraper and probes ask; everything else is a 404.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use crate::gateway::Gateway;

/// OpenMetrics, which Prometheus asks for first…
const OPEN_METRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// …and the classic text format, for everyone else.
const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds `address` and serves it in the background (on the calling runtime).
pub async fn start(address: SocketAddr, gateway: Arc<Gateway>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} (admin)"))?;
    tracing::info!(address = %listener.local_addr()?, "admin listening");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let gateway = gateway.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let gateway = gateway.clone();
                    async move { Ok::<_, Infallible>(answer(&gateway, &request)) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(())
}

fn answer<B>(gateway: &Gateway, request: &Request<B>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return document(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match request.uri().path() {
        "/metrics" if accepts_open_metrics(request) => {
            document(StatusCode::OK, OPEN_METRICS, gateway.metrics.encode())
        }
        "/metrics" => document(StatusCode::OK, CLASSIC, gateway.metrics.encode_classic()),
        "/healthz" => document(
            StatusCode::OK,
            "application/json",
            "{\"status\":\"alive\"}".into(),
        ),
        "/readyz" if gateway.draining.load(Ordering::Relaxed) => document(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            "{\"status\":\"draining\"}".into(),
        ),
        "/readyz" => document(
            StatusCode::OK,
            "application/json",
            "{\"status\":\"ready\"}".into(),
        ),
        _ => document(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn accepts_open_metrics<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

fn document(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
