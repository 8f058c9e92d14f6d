//! Hardening: no connection, body, flood or upstream race can exhaust kqlgate or lose a
//! request's record. Each test is one finding of issue 10, against the real binary.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::upstream::TestUpstream;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "contoso-key-0123456789";

fn contoso() -> TenantSpec {
    TenantSpec::new("contoso", KEY, CONTOSO_DB)
}

/// A config with `server` lines under `[server]` and `top` lines above it.
fn with_server(upstream: &str, server: &str, top: &str, tenants: &[TenantSpec]) -> String {
    let listen = "listen = \"127.0.0.1:0\"";
    config(upstream, "", top, tenants).replacen(listen, &format!("{listen}\n{server}"), 1)
}

/// Reads until the peer closes (or `limit` passes); how long that took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    closed_by(stream, Instant::now(), limit).await
}

/// Reads until the peer closes (or `limit` after `since` passes); when, counted from `since`.
async fn closed_by(stream: &mut TcpStream, since: Instant, limit: Duration) -> Option<Duration> {
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((since + limit).into(), stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(since.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// An HTTP/1.1 request as bytes.
fn http1(method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: kqlgate\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Reads one HTTP/1 response (head and a Content-Length body) off `stream`.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 65536];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .expect("an answer in time")
            .expect("the connection stays readable");
        assert!(
            n > 0,
            "the connection closed before a whole answer: {:?}",
            String::from_utf8_lossy(&bytes)
        );
        bytes.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if bytes.len() >= end + 4 + length {
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                return (status, head.to_owned());
            }
        }
    }
}

/// A silent connection, a partial HTTP/2 preface, an HTTP/2 connection that sent only its
/// SETTINGS, and an idle HTTP/1 keep-alive connection are all closed at their deadline, and
/// hundreds of silent ones are closed together.
#[tokio::test]
async fn every_connection_state_has_a_deadline() {
    let upstream = TestUpstream::start().await;
    let server = "header_read_timeout_seconds = 1\nkeepalive_timeout_seconds = 2\nhttp2_idle_timeout_seconds = 2";
    let gate = Kqlgate::start(&with_server(&upstream.url(), server, "", &[contoso()]));
    let limit = Duration::from_secs(5);
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(gate.addr).await.unwrap());
    }
    let mut partial = TcpStream::connect(gate.addr).await.unwrap();
    partial.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut settings_only = TcpStream::connect(gate.addr).await.unwrap();
    settings_only
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut keep_alive = TcpStream::connect(gate.addr).await.unwrap();
    keep_alive
        .write_all(&http1("GET", "/healthz", &[], b""))
        .await
        .unwrap();
    assert_eq!(read_response(&mut keep_alive).await.0, 200);
    let answered = Instant::now();

    // Closed at the header deadline (1 s), not before, and not much after.
    let on_time =
        |at: Duration| at >= Duration::from_millis(900) && at < Duration::from_millis(2500);
    for (name, stream) in [
        ("partial preface", &mut partial),
        ("h2 settings only", &mut settings_only),
    ] {
        let at = closed_by(stream, opened, limit)
            .await
            .unwrap_or_else(|| panic!("{name} still open"));
        assert!(on_time(at), "{name} closed at {at:?}");
    }
    for stream in &mut silent {
        let at = closed_by(stream, opened, limit)
            .await
            .expect("a silent connection is still open");
        assert!(on_time(at), "a silent connection closed at {at:?}");
    }
    // The keep-alive deadline (2 s) counts from the answer.
    let at = closed_by(&mut keep_alive, answered, limit)
        .await
        .expect("keep-alive still open");
    assert!(
        at >= Duration::from_millis(1800) && at < Duration::from_millis(3500),
        "keep-alive closed at {at:?}"
    );
}

/// Past `max_connections` (derived from a low file limit) new connections are closed at once —
/// never accepted into a hang, never "too many open files" — and once the idle ones reach
/// their deadline a normal request works again.
#[tokio::test]
async fn a_connection_budget_refuses_promptly_and_recovers() {
    let upstream = TestUpstream::start().await;
    let text = with_server(
        &upstream.url(),
        "header_read_timeout_seconds = 2",
        "",
        &[contoso()],
    );
    // 200 files: (200 - 64) / 2 = 68 connections.
    let gate = Kqlgate::start_with_file_limit(&text, 200);
    let mut held = Vec::new();
    for _ in 0..68 {
        held.push(TcpStream::connect(gate.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..20 {
        let mut refused = TcpStream::connect(gate.addr).await.unwrap();
        let took = closed_within(&mut refused, Duration::from_secs(1)).await;
        assert!(
            took.is_some_and(|t| t < Duration::from_millis(500)),
            "not refused promptly: {took:?}"
        );
    }
    assert!(
        !gate.log().contains("Too many open files"),
        "{}",
        gate.log()
    );
    // The idle ones reach their header deadline; then there is room again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let response = query(&gate, &contoso(), r#"{"csl":"print 1"}"#).await;
    assert_eq!(response.status(), 200);
    drop(held);
}

/// A body that stalls after one byte ends with 408 in the envelope, and holds none of its
/// tenant's slots while it stalls.
#[tokio::test]
async fn a_stalled_body_gets_408_and_holds_no_slot() {
    let upstream = TestUpstream::start().await;
    let tenant = contoso().with("max_concurrent = 1");
    let text = with_server(
        &upstream.url(),
        "body_read_timeout_seconds = 3",
        "",
        &[tenant],
    );
    let gate = Kqlgate::start(&text);
    let mut stalled = TcpStream::connect(gate.addr).await.unwrap();
    let request = http1(
        "POST",
        "/v1/rest/query",
        &[("authorization", contoso().basic())],
        br#"{"csl":"print 1"}"#,
    );
    // Everything but the body's last bytes.
    stalled
        .write_all(&request[..request.len() - 10])
        .await
        .unwrap();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let meanwhile = query(&gate, &contoso(), r#"{"csl":"print 1"}"#).await;
    assert_eq!(meanwhile.status(), 200, "the stalled upload holds no slot");
    let (status, head) = read_response(&mut stalled).await;
    assert_eq!(status, 408, "{head}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let log = gate.log_when_it_has("\"status\":408", Duration::from_secs(5));
    assert!(log.contains("RequestTimeout"), "{log}");
}

/// A client that leaves before the answer's head still gets its one log line, `client_gone`,
/// with its request id — over HTTP/1 and HTTP/2. (A runtime of several threads, so the HTTP/2
/// client's connection task sends its reset while the test waits for the log.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_before_the_head_is_logged() {
    let upstream = TestUpstream::start().await;
    let gate = Kqlgate::start(&config(&upstream.url(), "", "", &[contoso()]));
    let mut h1 = TcpStream::connect(gate.addr).await.unwrap();
    h1.write_all(&http1(
        "POST",
        "/v1/rest/query",
        &[
            ("authorization", contoso().basic()),
            ("x-ms-client-request-id", "gone-over-http1".into()),
        ],
        br#"{"csl":"sleep 1500"}"#,
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(h1);
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let gone = h2
        .post(gate.url("/v1/rest/query"))
        .header("authorization", contoso().basic())
        .header("x-ms-client-request-id", "gone-over-http2")
        .body(r#"{"csl":"sleep 1500"}"#)
        .send();
    assert!(tokio::time::timeout(Duration::from_millis(300), gone)
        .await
        .is_err());
    for id in ["gone-over-http1", "gone-over-http2"] {
        let log = gate.log_when_it_has(id, Duration::from_secs(5));
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(id)).collect();
        assert_eq!(lines.len(), 1, "{log}");
        assert!(
            lines[0].contains("\"outcome\":\"client_gone\"") && lines[0].contains("\"status\":499"),
            "{}",
            lines[0]
        );
    }
}

/// Random tenant names with wrong keys from fifty addresses: the argon2 checks (answered 401)
/// stay within the global ceiling; the rest get 429, and a cached key keeps working.
#[tokio::test]
async fn a_wrong_key_spray_from_many_addresses_is_bounded() {
    let upstream = TestUpstream::start().await;
    let top = "[auth]\nverify_global_per_second = 5\nverify_global_burst = 10\nverify_burst = 1000";
    let gate = Kqlgate::start(&config(&upstream.url(), "", top, &[contoso()]));
    assert_eq!(
        query(&gate, &contoso(), r#"{"csl":"print 1"}"#)
            .await
            .status(),
        200
    );
    let cpu_before = gate.cpu_time();
    let started = Instant::now();
    let mut checked = 0;
    let mut throttled = 0;
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(2) {
        let sprays = (10..60u8).map(|host| {
            let url = gate.url("/v1/rest/query");
            async move {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)))
                    .build()
                    .unwrap();
                client
                    .post(url)
                    .header(
                        "authorization",
                        basic(&format!("name-{round}-{host}"), "wrong"),
                    )
                    .body("{}")
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        });
        for status in futures_util::future::join_all(sprays).await {
            match status {
                401 => checked += 1,
                429 => throttled += 1,
                other => panic!("unexpected {other}"),
            }
        }
        round += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    let ceiling = 10.0 + 5.0 * seconds + 1.0;
    assert!(
        f64::from(checked) <= ceiling,
        "{checked} checks in {seconds:.1} s (ceiling {ceiling:.0})"
    );
    assert!(throttled > 0);
    eprintln!(
        "spray: {} requests, {checked} argon2 checks, {throttled} × 429 in {seconds:.1} s, kqlgate CPU {:?}",
        checked + throttled,
        gate.cpu_time() - cpu_before
    );
    assert_eq!(
        query(&gate, &contoso(), r#"{"csl":"print 1"}"#)
            .await
            .status(),
        200
    );
}

/// 1 MB of `(` and 1 MB of names, forty at once: refused by the guard's limits, and the
/// process's peak memory stays far below what forty token lists of that size would take.
#[tokio::test]
async fn pathological_query_texts_cost_bounded_memory() {
    let upstream = TestUpstream::start().await;
    let text = with_server(
        &upstream.url(),
        "max_body_bytes = 2097152",
        "",
        &[contoso()],
    );
    let gate = Kqlgate::start(&text);
    assert_eq!(
        query(&gate, &contoso(), r#"{"csl":"print 1"}"#)
            .await
            .status(),
        200
    );
    let before = gate.peak_rss_kib();
    let parens = serde_json::json!({ "csl": "(".repeat(1 << 20) }).to_string();
    let names = serde_json::json!({ "csl": "a ".repeat(1 << 19) }).to_string();
    let requests = (0..40).map(|i| {
        let body = if i % 2 == 0 {
            parens.clone()
        } else {
            names.clone()
        };
        let gate = &gate;
        async move { query(gate, &contoso(), &body).await }
    });
    for response in futures_util::future::join_all(requests).await {
        assert_eq!(response.status(), 403);
        let body = error_body(response).await;
        let message = body["error"]["@message"].as_str().unwrap().to_owned();
        assert!(message.contains("kqlgate's limit for a query"), "{message}");
    }
    let grown = gate.peak_rss_kib() - before;
    eprintln!(
        "40 pathological 1 MB texts: peak RSS grew {} MiB",
        grown / 1024
    );
    assert!(grown < 128 * 1024, "peak RSS grew {grown} KiB");
}

/// A cluster that closes each connection right after answering (without saying so): kqlgate
/// reuses a pooled connection the cluster is closing, and retries those read-only requests on
/// a fresh connection instead of answering 502.
#[tokio::test]
async fn a_cluster_that_closes_idle_connections_costs_no_502() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 8192];
                while !String::from_utf8_lossy(&request).contains("\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let body = r#"{"Tables":[]}"#;
                let answer = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                let _ = stream.write_all(answer.as_bytes()).await;
                // Keep-alive by the book, but the connection is closed a moment later.
                tokio::time::sleep(Duration::from_millis(2)).await;
            });
        }
    });
    let gate = Kqlgate::start(&config(&format!("http://{address}"), "", "", &[contoso()]));
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..200 {
        let status = query(&gate, &contoso(), r#"{"csl":"print 1"}"#)
            .await
            .status()
            .as_u16();
        *statuses.entry(status).or_insert(0) += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        statuses.get(&200),
        Some(&200),
        "{statuses:?}\n{}",
        gate.log()
    );
}

/// A transfer coding other than chunked is refused, not ignored.
#[tokio::test]
async fn transfer_codings_other_than_chunked_are_refused() {
    let upstream = TestUpstream::start().await;
    let gate = Kqlgate::start(&config(&upstream.url(), "", "", &[contoso()]));
    let mut stream = TcpStream::connect(gate.addr).await.unwrap();
    let body = br#"{"csl":"print 1"}"#;
    let head = format!(
        "POST /v1/rest/query HTTP/1.1\r\nhost: k\r\nauthorization: {}\r\ntransfer-encoding: gzip, chunked\r\n\r\n{:x}\r\n",
        contoso().basic(),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    stream.write_all(b"\r\n0\r\n\r\n").await.unwrap();
    let (status, _) = read_response(&mut stream).await;
    assert_eq!(status, 400);
    assert!(upstream.requests().is_empty());
}

/// A 401 and a 429 answered before a 300 KB body was read: the next request on the same
/// connection is answered. A body too large to drain gets `Connection: close` instead.
#[tokio::test]
async fn early_refusals_leave_the_connection_usable() {
    let upstream = TestUpstream::start().await;
    let throttled = || {
        TenantSpec::new("throttled", "t-key-0123456789", FABRIKAM_DB)
            .with("rate_per_second = 0.001\nburst = 1")
    };
    let gate = Kqlgate::start(&config(&upstream.url(), "", "", &[contoso(), throttled()]));
    let spend_the_burst = query(&gate, &throttled(), r#"{"csl":"print 1"}"#).await;
    assert_eq!(spend_the_burst.status(), 200);
    let padding = "x".repeat(300 * 1024);
    let big = format!(r#"{{"csl":"print 1","pad":"{padding}"}}"#);
    let second = http1(
        "POST",
        "/v1/rest/query",
        &[("authorization", contoso().basic())],
        br#"{"csl":"print 1"}"#,
    );
    for (credentials, expected) in [(basic("contoso", "wrong"), 401), (throttled().basic(), 429)] {
        let mut stream = TcpStream::connect(gate.addr).await.unwrap();
        let first = http1(
            "POST",
            "/v1/rest/query",
            &[("authorization", credentials)],
            big.as_bytes(),
        );
        stream.write_all(&first).await.unwrap();
        let (status, head) = read_response(&mut stream).await;
        assert_eq!(status, expected, "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "300 KB is drained: {head}"
        );
        stream.write_all(&second).await.unwrap();
        assert_eq!(
            read_response(&mut stream).await.0,
            200,
            "second request after a {expected}"
        );
    }
    // 3 MB: over the body limit (413, unread) and over what is drained: Connection: close,
    // and the client reads its answer while it is still sending.
    let stream = TcpStream::connect(gate.addr).await.unwrap();
    let huge = vec![b'x'; 3 * 1024 * 1024];
    let request = http1(
        "POST",
        "/v1/rest/query",
        &[("authorization", contoso().basic())],
        &huge,
    );
    let (mut read_half, mut write_half) = stream.into_split();
    let writer = tokio::spawn(async move { write_half.write_all(&request).await });
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 65536];
    while !String::from_utf8_lossy(&bytes).contains("\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(10), read_half.read(&mut buffer));
        let n = read.await.expect("an answer in time").expect("readable");
        assert!(n > 0, "closed without an answer");
        bytes.extend_from_slice(&buffer[..n]);
    }
    let head = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 413"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    writer.abort();
}
