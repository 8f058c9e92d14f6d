//! A fast Kusto-like upstream for load tests (`scripts/bench`): answers every POST with a body
//! of the size the query asks for, so the proxy, not the engine, is what gets measured.
//!
//! ```text
//! cargo run --release --example bench_upstream -- 127.0.0.1:31500
//! ```
//!
//! The `csl` chooses the answer: `bytes <N>` (N bytes, Content-Length, the default is 1 KiB),
//! `stream <N>` (N bytes in 64 KiB chunks, chunked encoding), `gzip-stream <N>` (the same,
//! gzip-encoded on the fly when the request accepts gzip). `GET /stats` returns the number of
//! TCP connections accepted so far, so a benchmark can count how many the proxy opened.

use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

const CHUNK: usize = 64 * 1024;

type Body = BoxBody<Bytes, Infallible>;

#[tokio::main]
async fn main() {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:31500".into());
    let listener = tokio::net::TcpListener::bind(&address).await.unwrap();
    eprintln!(
        "bench_upstream listening on {}",
        listener.local_addr().unwrap()
    );
    let connections = Arc::new(AtomicU64::new(0));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        connections.fetch_add(1, Ordering::Relaxed);
        let connections = connections.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let connections = connections.clone();
                async move { Ok::<_, Infallible>(answer(request, &connections).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(request: Request<Incoming>, connections: &AtomicU64) -> Response<Body> {
    if request.uri().path() == "/stats" {
        let stats = format!(
            "{{\"connections\":{}}}",
            connections.load(Ordering::Relaxed)
        );
        return Response::new(Full::new(Bytes::from(stats)).boxed());
    }
    let accepts_gzip = request
        .headers()
        .get("accept-encoding")
        .is_some_and(|v| v.to_str().unwrap_or("").contains("gzip"));
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let csl = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["csl"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut words = csl.split_whitespace();
    let verb = words.next().unwrap_or("bytes");
    let size: usize = words.next().and_then(|w| w.parse().ok()).unwrap_or(1024);
    let mut response = match verb {
        "stream" => Response::new(chunks(size, false)),
        "gzip-stream" if accepts_gzip => {
            let mut response = Response::new(chunks(size, true));
            response
                .headers_mut()
                .insert("content-encoding", "gzip".parse().unwrap());
            response
        }
        "gzip-stream" => Response::new(chunks(size, false)),
        _ => Response::new(Full::new(Bytes::from(v1_table(size))).boxed()),
    };
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        "application/json; charset=utf-8".parse().unwrap(),
    );
    headers.insert("x-ms-activity-id", "bench-activity".parse().unwrap());
    response
}

/// A v1-shaped JSON document of about `size` bytes.
fn v1_table(size: usize) -> Vec<u8> {
    let head = br#"{"Tables":[{"TableName":"Table_0","Columns":[{"ColumnName":"s","DataType":"String","ColumnType":"string"}],"Rows":[[""#;
    let tail = br#""]]}]}"#;
    let mut out = Vec::with_capacity(size.max(head.len() + tail.len()));
    out.extend_from_slice(head);
    out.resize(size.saturating_sub(tail.len()).max(head.len()), b'x');
    out.extend_from_slice(tail);
    out
}

/// `total` bytes of rows in 64 KiB chunks; with `gzip`, each chunk is its own gzip member
/// (a valid multi-member gzip stream), compressed once and reused, so the upstream stays cheap.
fn chunks(total: usize, gzip: bool) -> Body {
    let plain = Bytes::from(
        (0..CHUNK)
            .map(|i| b"[\"row\",12345,\"2026-11-22T00:00:00Z\"],"[i % 37])
            .collect::<Vec<u8>>(),
    );
    let piece = if gzip {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&plain).unwrap();
        Bytes::from(encoder.finish().unwrap())
    } else {
        plain
    };
    let count = total.div_ceil(CHUNK);
    let frames = futures_util::stream::iter(
        (0..count).map(move |_| Ok::<_, Infallible>(Frame::data(piece.clone()))),
    );
    BodyExt::boxed(StreamBody::new(frames))
}
