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
//! - `cost <v1|v2> <bytes> [gzip] [progressive] [cut] [sparse]`  a Kusto answer in the documented
//!   shape whose primary table holds about `<bytes>` of rows, ending with the cost report
//!   ([`cost_answer`]): gzip-encoded, in progressive frames, cut off before the report, or with a
//!   report missing most fields;
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
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    /// Until then every query is answered 429, as a throttling Kusto does.
    throttled_until: Arc<Mutex<Option<std::time::Instant>>>,
}

/// Counts a request in flight at the upstream until its answer's headers are out (or, for
/// `sleep`, until it has slept: the time a query runs).
struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
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
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            throttled_until: Arc::default(),
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

    /// The most requests the upstream was answering at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn reset_max_in_flight(&self) {
        self.max_in_flight
            .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Answers every query 429 (`QueryThrottledException`) for `period` from now.
    pub fn throttle_for(&self, period: Duration) {
        *self.throttled_until.lock().unwrap() = Some(std::time::Instant::now() + period);
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
        let now_in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight
            .fetch_max(now_in_flight, Ordering::SeqCst);
        let _counted = InFlightGuard(self.in_flight.clone());
        let throttled = self
            .throttled_until
            .lock()
            .unwrap()
            .is_some_and(|until| std::time::Instant::now() < until);
        if throttled {
            let envelope = serde_json::json!({"error": {"code": "LimitsExceeded",
                "message": "Request is throttled", "@type": "Kusto.DataNode.Exceptions.QueryThrottledException",
                "@message": "The query was throttled: too many concurrent requests", "@permanent": false}});
            return full(
                StatusCode::TOO_MANY_REQUESTS,
                envelope.to_string().into_bytes(),
            );
        }
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
            "cost" => {
                let spec = CostSpec::parse(&csl);
                let gzip = spec.gzip && accepts_gzip;
                cost_response(spec, gzip)
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

/// What a `cost …` query asks of the answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct CostSpec {
    pub v1: bool,
    pub bytes: usize,
    pub gzip: bool,
    pub progressive: bool,
    pub cut: bool,
    pub sparse: bool,
}

impl CostSpec {
    pub fn parse(csl: &str) -> CostSpec {
        let words: Vec<&str> = csl.split_whitespace().collect();
        let has = |word: &str| words.contains(&word);
        CostSpec {
            v1: has("v1"),
            bytes: words.get(2).and_then(|w| w.parse().ok()).unwrap_or(0),
            gzip: has("gzip"),
            progressive: has("progressive"),
            cut: has("cut"),
            sparse: has("sparse"),
        }
    }
}

/// The figures every `cost` answer reports (the `sparse` one only `ExecutionTime`).
pub const COST_EXECUTION_SECONDS: f64 = 2.0312500;
pub const COST_CPU_SECONDS: f64 = 7.25;
pub const COST_MEMORY_PEAK: u64 = 52_428_800;
pub const COST_HOT_HIT: u64 = 3_145_728;
pub const COST_HOT_MISS: u64 = 8192;
pub const COST_COLD_HIT: u64 = 131_072;
pub const COST_COLD_MISS: u64 = 1024;
pub const COST_ROWS: u64 = 77;
pub const COST_RESULT_BYTES: u64 = 4321;

fn cost_payload(sparse: bool) -> String {
    if sparse {
        return serde_json::json!({"ExecutionTime": COST_EXECUTION_SECONDS}).to_string();
    }
    serde_json::json!({
        "ExecutionTime": COST_EXECUTION_SECONDS,
        "resource_usage": {
            "cache": {"shards": {
                "hot": {"hitbytes": COST_HOT_HIT, "missbytes": COST_HOT_MISS, "retrievebytes": COST_HOT_MISS},
                "cold": {"hitbytes": COST_COLD_HIT, "missbytes": COST_COLD_MISS, "retrievebytes": COST_COLD_MISS},
                "bypassbytes": 0}},
            "cpu": {"user": "00:00:07", "kernel": "00:00:00.2500000", "total cpu": "00:00:07.2500000"},
            "memory": {"peak_per_node": COST_MEMORY_PEAK},
            "network": {"inter_cluster_total_bytes": 0, "cross_cluster_total_bytes": 0}
        },
        "input_dataset_statistics": {"extents": {"total": 4, "scanned": 4}},
        "dataset_statistics": [{"table_row_count": COST_ROWS, "table_size": COST_RESULT_BYTES}]
    })
    .to_string()
}

const ROW: &str = r#"[1,"Zürich","say \"hi\" [{"],"#;

/// The answer in three parts: what precedes the rows, the rows (`bytes` of them, in CHUNK
/// pieces, made on demand), and the rest, which holds the report (or nothing when `cut`).
pub fn cost_answer(spec: CostSpec) -> (Vec<u8>, usize, Vec<u8>) {
    let report = cost_payload(spec.sparse);
    let report = serde_json::to_string(&report).unwrap();
    let columns = r#"[{"ColumnName":"Id","ColumnType":"long"},{"ColumnName":"City","ColumnType":"string"},{"ColumnName":"Note","ColumnType":"string"}]"#;
    let (head, tail) = if spec.v1 {
        let head = r#"{"Tables":[{"TableName":"Table_0","Columns":[{"ColumnName":"Id","DataType":"Int64","ColumnType":"long"},{"ColumnName":"City","DataType":"String","ColumnType":"string"},{"ColumnName":"Note","DataType":"String","ColumnType":"string"}],"Rows":["#.to_owned();
        let status = |severity: u8, name: &str, text: &str| {
            format!(
                r#"["2026-11-30T10:00:00Z",{severity},"{name}",0,{text},1,"{g}","{g}","{g}","kqlgate;t;1"]"#,
                g = "6f1c3b0e-8d2a-4e57-b9a4-2c7d1e5f0a38"
            )
        };
        let tail = format!(
            r#"[0,"end",""]]}},{{"TableName":"Table_1","Columns":[{{"ColumnName":"Timestamp","DataType":"DateTime","ColumnType":"datetime"}},{{"ColumnName":"Severity","DataType":"Int32","ColumnType":"int"}},{{"ColumnName":"SeverityName","DataType":"String","ColumnType":"string"}},{{"ColumnName":"StatusCode","DataType":"Int32","ColumnType":"int"}},{{"ColumnName":"StatusDescription","DataType":"String","ColumnType":"string"}},{{"ColumnName":"Count","DataType":"Int32","ColumnType":"int"}},{{"ColumnName":"RequestId","DataType":"Guid","ColumnType":"guid"}},{{"ColumnName":"ActivityId","DataType":"Guid","ColumnType":"guid"}},{{"ColumnName":"SubActivityId","DataType":"Guid","ColumnType":"guid"}},{{"ColumnName":"ClientActivityId","DataType":"String","ColumnType":"string"}}],"Rows":[{},{}]}},{{"TableName":"Table_2","Columns":[{{"ColumnName":"Ordinal","DataType":"Int64","ColumnType":"long"}},{{"ColumnName":"Kind","DataType":"String","ColumnType":"string"}},{{"ColumnName":"Name","DataType":"String","ColumnType":"string"}},{{"ColumnName":"Id","DataType":"String","ColumnType":"string"}},{{"ColumnName":"PrettyName","DataType":"String","ColumnType":"string"}}],"Rows":[[0,"QueryResult","PrimaryResult","x",""],[1,"QueryStatus","QueryStatus","y",""]]}}]}}"#,
            status(4, "Info", "\"Query completed successfully\""),
            status(6, "Stats", &report),
        );
        (head, tail)
    } else {
        let qci_columns = r#"[{"ColumnName":"Timestamp","ColumnType":"datetime"},{"ColumnName":"ClientRequestId","ColumnType":"string"},{"ColumnName":"ActivityId","ColumnType":"guid"},{"ColumnName":"SubActivityId","ColumnType":"guid"},{"ColumnName":"ParentActivityId","ColumnType":"guid"},{"ColumnName":"Level","ColumnType":"int"},{"ColumnName":"LevelName","ColumnType":"string"},{"ColumnName":"StatusCode","ColumnType":"int"},{"ColumnName":"StatusCodeName","ColumnType":"string"},{"ColumnName":"EventType","ColumnType":"int"},{"ColumnName":"EventTypeName","ColumnType":"string"},{"ColumnName":"Payload","ColumnType":"string"}]"#;
        let qci_rows = format!(
            r#"["2026-11-30T10:00:00Z","kqlgate;t;1","{g}","{g}","{g}",4,"Info",0,"S_OK (0)",4,"QueryInfo","{{\"Count\":1,\"Text\":\"Query completed successfully\"}}"],["2026-11-30T10:00:00Z","kqlgate;t;1","{g}","{g}","{g}",6,"Stats",0,"S_OK (0)",0,"QueryResourceConsumption",{report}]"#,
            g = "6f1c3b0e-8d2a-4e57-b9a4-2c7d1e5f0a38"
        );
        let dataset_header = format!(
            r#"[{{"FrameType":"DataSetHeader","IsProgressive":{},"Version":"v2.0"}}"#,
            spec.progressive
        );
        if spec.progressive {
            let head = format!(
                "{dataset_header}\n,{{\"FrameType\":\"TableHeader\",\"TableId\":1,\"TableKind\":\"PrimaryResult\",\"TableName\":\"PrimaryResult\",\"Columns\":{columns}}}\n,{{\"FrameType\":\"TableFragment\",\"TableFragmentType\":\"DataAppend\",\"TableId\":1,\"Rows\":["
            );
            let tail = format!(
                "[0,\"end\",\"\"]]}}\n,{{\"FrameType\":\"TableProgress\",\"TableId\":1,\"TableProgress\":100.0}}\n,{{\"FrameType\":\"TableCompletion\",\"TableId\":1,\"RowCount\":1}}\n,{{\"FrameType\":\"TableHeader\",\"TableId\":2,\"TableKind\":\"QueryCompletionInformation\",\"TableName\":\"QueryCompletionInformation\",\"Columns\":{qci_columns}}}\n,{{\"FrameType\":\"TableFragment\",\"TableFragmentType\":\"DataAppend\",\"TableId\":2,\"Rows\":[{qci_rows}]}}\n,{{\"FrameType\":\"TableCompletion\",\"TableId\":2,\"RowCount\":2}}\n,{{\"FrameType\":\"DataSetCompletion\",\"HasErrors\":false,\"Cancelled\":false}}\n]\n"
            );
            (head, tail)
        } else {
            let head = format!(
                r#"{dataset_header},{{"FrameType":"DataTable","TableId":1,"TableKind":"PrimaryResult","TableName":"PrimaryResult","Columns":{columns},"Rows":["#
            );
            let tail = format!(
                r#"[0,"end",""]]}},{{"FrameType":"DataTable","TableId":2,"TableKind":"QueryCompletionInformation","TableName":"QueryCompletionInformation","Columns":{qci_columns},"Rows":[{qci_rows}]}},{{"FrameType":"DataSetCompletion","HasErrors":false,"Cancelled":false}}]"#
            );
            (head, tail)
        }
    };
    let tail = if spec.cut {
        Vec::new()
    } else {
        tail.into_bytes()
    };
    (head.into_bytes(), spec.bytes, tail)
}

/// One CHUNK of whole rows (the last piece of the rows may be shorter).
fn row_chunk() -> Bytes {
    let rows: String = ROW.repeat(CHUNK / ROW.len());
    Bytes::from(rows)
}

/// The whole answer in memory, as the client must receive it (decoded), for small sizes.
pub fn cost_body(spec: CostSpec) -> Vec<u8> {
    let (head, rows, tail) = cost_answer(spec);
    let chunk = row_chunk();
    let mut body = head;
    let mut left = rows;
    while left > 0 {
        let piece = chunk.len().min(left);
        body.extend_from_slice(&chunk[..piece]);
        left -= piece;
    }
    body.extend(tail);
    body
}

fn cost_response(spec: CostSpec, gzip: bool) -> Response<UpBody> {
    let (head, rows, tail) = cost_answer(spec);
    let chunk = row_chunk();
    let cut = spec.cut;
    // (phase, rows left, encoder): phase 0 head, 1 rows, 2 tail, 3 end.
    type Encoder = flate2::write::GzEncoder<Vec<u8>>;
    let encoder = gzip.then(|| Encoder::new(Vec::new(), flate2::Compression::fast()));
    let state = (0u8, rows, encoder, Bytes::from(head), Bytes::from(tail));
    let pieces = stream::unfold(state, move |(phase, left, mut encoder, head, tail)| {
        let chunk = chunk.clone();
        async move {
            let (plain, next) = match phase {
                0 => (head.clone(), (1, left)),
                1 if left > 0 => {
                    let piece = chunk.len().min(left);
                    (chunk.slice(..piece), (1, left - piece))
                }
                1 => (tail.clone(), (2, 0)),
                2 if cut => {
                    // Later than the bytes before it, so they reach the proxy before the break.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let error = std::io::Error::other("cut off before the cost report");
                    return Some((Err(error), (3, 0, encoder, head, tail)));
                }
                2 => match encoder.take() {
                    Some(encoder) => {
                        let rest = encoder.finish().unwrap();
                        return Some((
                            Ok(Frame::data(Bytes::from(rest))),
                            (3, 0, None, head, tail),
                        ));
                    }
                    None => return None,
                },
                _ => return None,
            };
            let out = match encoder.as_mut() {
                Some(encoder) => {
                    encoder.write_all(&plain).unwrap();
                    encoder.flush().unwrap();
                    Bytes::from(std::mem::take(encoder.get_mut()))
                }
                None => plain,
            };
            Some((Ok(Frame::data(out)), (next.0, next.1, encoder, head, tail)))
        }
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(pieces)));
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        "application/json; charset=utf-8".parse().unwrap(),
    );
    headers.insert("x-ms-activity-id", "upstream-activity-1".parse().unwrap());
    if gzip {
        headers.insert("content-encoding", "gzip".parse().unwrap());
    }
    response
}
