//! A purpose-built Kusto-like upstream for what a real engine cannot do: multi-hundred-MB
//! streams held open on command, failures injected mid-stream, gzip answers, slow answers, and
//! counting TCP connections. It records every request it receives, so tests can assert on what
//! the cluster actually saw.
//!
//! Behaviour is chosen by the request's `csl` (kqlgate forwards it verbatim):
//! - `stream <bytes>`          200, `<bytes>` of body in 64 KiB chunks, chunked encoding;
//! - `gated <bytes>`           like stream, but after the first chunk waits for `release()`;
//! - `die <bytes>`             sends `<bytes>`, then breaks the connection;
//! - `gzip <bytes>`            the `pattern(<bytes>)` body, gzip-encoded, when the request accepts gzip;
//! - `status <code>`           that status with a Kusto error envelope;
//! - `sleep <ms>`              waits before answering;
//! - anything else             200 with a small v1 table.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::sync::Semaphore;

pub const CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
}

#[derive(Clone)]
pub struct TestUpstream {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    gate: Arc<Semaphore>,
}

type UpBody = BoxBody<Bytes, std::io::Error>;

/// Deterministic, compressible but not trivial content.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| b"{\"Rows\":[[1,\"abc\"]]},"[i % 21] ^ ((i / 4096) as u8 & 1))
        .collect()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

impl TestUpstream {
    pub async fn start() -> TestUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = TestUpstream {
            addr: listener.local_addr().unwrap(),
            connections: Arc::default(),
            requests: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
        };
        super::serve(
            listener,
            upstream.clone(),
            |server: TestUpstream, request| Box::pin(async move { server.answer(request).await }),
            |server| {
                server.connections.fetch_add(1, Ordering::SeqCst);
            },
        );
        upstream
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Lets one `gated` stream continue past its first chunk.
    pub fn release(&self) {
        self.gate.add_permits(1);
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<UpBody> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let accepts_gzip = parts
            .headers
            .get("accept-encoding")
            .is_some_and(|v| v.to_str().unwrap_or("").contains("gzip"));
        self.requests.lock().unwrap().push(Recorded {
            path: parts.uri.path().to_owned(),
            headers: parts.headers,
            body: json.clone(),
        });
        let csl = json["csl"].as_str().unwrap_or("").to_owned();
        let mut words = csl.split_whitespace();
        let verb = words.next().unwrap_or("");
        let arg: usize = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        match verb {
            "stream" => streamed(arg, None, false),
            "gated" => streamed(arg, Some(self.gate.clone()), false),
            "die" => streamed(arg, None, true),
            "gzip" if accepts_gzip => {
                let mut response = full(StatusCode::OK, gzip(&pattern(arg)));
                response
                    .headers_mut()
                    .insert("content-encoding", "gzip".parse().unwrap());
                response
            }
            "gzip" => full(StatusCode::OK, pattern(arg)),
            "status" => {
                let status = StatusCode::from_u16(arg as u16).unwrap();
                let envelope = serde_json::json!({"error": {"code": "General_BadRequest",
                    "message": "upstream says no", "@message": "semantic error from the cluster",
                    "@permanent": true}});
                full(status, envelope.to_string().into_bytes())
            }
            "sleep" => {
                tokio::time::sleep(Duration::from_millis(arg as u64)).await;
                full(StatusCode::OK, b"{\"Tables\":[]}".to_vec())
            }
            _ => full(
                StatusCode::OK,
                br#"{"Tables":[{"TableName":"Table_0","Columns":[{"ColumnName":"x","DataType":"Int64","ColumnType":"long"}],"Rows":[[1]]}]}"#.to_vec(),
            ),
        }
    }
}

fn full(status: StatusCode, body: Vec<u8>) -> Response<UpBody> {
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        "application/json; charset=utf-8".parse().unwrap(),
    );
    headers.insert("x-ms-activity-id", "upstream-activity-1".parse().unwrap());
    response
}

/// `total` bytes of `pattern` in CHUNK pieces, without a Content-Length (chunked encoding).
fn streamed(total: usize, gate: Option<Arc<Semaphore>>, die: bool) -> Response<UpBody> {
    let template = Bytes::from(pattern(CHUNK));
    let state = (0usize, gate, false);
    let chunks = stream::unfold(state, move |(sent, gate, finished)| {
        let template = template.clone();
        async move {
            if finished {
                return None;
            }
            if sent >= total {
                return if die {
                    let error = std::io::Error::other("injected upstream failure");
                    Some((Err(error), (sent, gate, true)))
                } else {
                    None
                };
            }
            if sent == CHUNK {
                if let Some(gate) = &gate {
                    gate.acquire().await.unwrap().forget();
                }
            }
            let len = CHUNK.min(total - sent);
            Some((
                Ok(Frame::data(template.slice(..len))),
                (sent + len, gate, false),
            ))
        }
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
    response
        .headers_mut()
        .insert("x-ms-activity-id", "upstream-activity-1".parse().unwrap());
    response
}
