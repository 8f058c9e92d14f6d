//! Integration tests: the real kqlgate binary in front of the purpose-built test upstream.

mod common;

use std::time::Duration;

use common::upstream::{gzip, pattern, TestUpstream, CHUNK};
use common::*;
use futures_util::StreamExt;

const CONTOSO_KEY: &str = "contoso-key-0123456789";
const FABRIKAM_KEY: &str = "fabrikam-key-0123456789";

fn contoso() -> TenantSpec {
    TenantSpec::new("contoso", CONTOSO_KEY, CONTOSO_DB).with("aliases = [\"Samples\"]")
}

fn fabrikam() -> TenantSpec {
    TenantSpec::new("fabrikam", FABRIKAM_KEY, FABRIKAM_DB)
}

async fn setup(cluster_extra: &str, tenants: &[TenantSpec]) -> (TestUpstream, Kqlgate) {
    setup_with_server("", cluster_extra, tenants).await
}

/// Like `setup`, with `server_extra` added to the `[server]` section.
async fn setup_with_server(
    server_extra: &str,
    cluster_extra: &str,
    tenants: &[TenantSpec],
) -> (TestUpstream, Kqlgate) {
    let upstream = TestUpstream::start().await;
    let listen = "listen = \"127.0.0.1:0\"";
    let text = config(&upstream.url(), cluster_extra, "", tenants).replacen(
        listen,
        &format!("{listen}\n{server_extra}"),
        1,
    );
    let gate = Kqlgate::start(&text);
    (upstream, gate)
}

// === Forwarding ===

/// The cluster sees the tenant's GUID, the proxy's identity headers and nothing of the client's
/// credentials or hop-by-hop headers; csl and properties arrive byte for byte.
#[tokio::test]
async fn forwarded_request_is_rewritten_and_scrubbed() {
    let (upstream, gate) = setup("", &[contoso()]).await;
    let body = r#"{"db":"samples","csl":"T | take 1","properties":"{\"Options\":{\"servertimeout\":\"00:01:00\"}}"}"#;
    let response = client()
        .post(gate.url("/v2/rest/query"))
        .header("authorization", contoso().basic())
        .header("content-type", "application/json; charset=utf-8")
        .header("x-ms-client-request-id", "KPC.execute;42")
        .header("x-ms-user", "someone-else")
        .header("x-ms-app", "kqlgate;tenant=fabrikam")
        .header("x-ms-client-version", "Kusto.Python.Client:6.0.4")
        .header("x-ms-version", "2024-12-12")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "1")
        .header("x-evil", "1")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-ms-client-request-id"],
        "KPC.execute;42"
    );
    assert_eq!(
        response.headers()["x-ms-activity-id"],
        "upstream-activity-1"
    );

    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.path, "/v2/rest/query");
    assert_eq!(seen.body["db"], CONTOSO_DB);
    assert_eq!(seen.body["csl"], "T | take 1");
    let properties: serde_json::Value = serde_json::from_str(
        seen.body["properties"]
            .as_str()
            .expect("string-form properties must stay a string"),
    )
    .unwrap();
    let options = &properties["Options"];
    assert_eq!(options["servertimeout"], "00:01:00");
    assert_eq!(options["request_description"], "kqlgate;tenant=contoso");
    assert_eq!(options["request_readonly"], true);
    let h = &seen.headers;
    assert_eq!(h["x-ms-user"], "contoso");
    assert_eq!(h["x-ms-app"], "kqlgate;tenant=contoso");
    assert_eq!(h["x-ms-client-request-id"], "KPC.execute;42");
    assert_eq!(h["x-ms-client-version"], "Kusto.Python.Client:6.0.4");
    assert_eq!(h["x-ms-version"], "2024-12-12");
    assert_eq!(h["accept-encoding"], "gzip");
    assert_eq!(h["host"], upstream.addr.to_string());
    for absent in ["authorization", "proxy-authorization", "x-hop", "x-evil"] {
        assert!(!h.contains_key(absent), "{absent} was forwarded");
    }
}

#[tokio::test]
async fn missing_request_id_is_generated_and_echoed() {
    let (upstream, gate) = setup("", &[contoso()]).await;
    let response = query(&gate, &contoso(), r#"{"csl":"print 1"}"#).await;
    assert_eq!(response.status(), 200);
    let echoed = response.headers()["x-ms-client-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(echoed.starts_with("kqlgate;"), "{echoed}");
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.headers["x-ms-client-request-id"], echoed.as_str());
    assert_eq!(
        seen.body["db"], CONTOSO_DB,
        "missing db means the tenant's own"
    );
}

#[tokio::test]
async fn bearer_env_credential_replaces_the_clients() {
    let upstream = TestUpstream::start().await;
    let cluster = "auth = \"bearer-env\"\ntoken_env = \"KQLGATE_TEST_CLUSTER_TOKEN\"";
    let gate = Kqlgate::start_with_env(
        &config(&upstream.url(), cluster, "", &[contoso()]),
        &[("KQLGATE_TEST_CLUSTER_TOKEN", "cluster-token-xyz")],
    );
    let response = query(&gate, &contoso(), r#"{"csl":"print 1"}"#).await;
    assert_eq!(response.status(), 200);
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.headers["authorization"], "Bearer cluster-token-xyz");
}

#[tokio::test]
async fn upstream_errors_pass_through_untouched() {
    let (_upstream, gate) = setup("", &[contoso()]).await;
    let response = query(&gate, &contoso(), r#"{"csl":"status 400"}"#).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["x-ms-activity-id"],
        "upstream-activity-1"
    );
    let body = error_body(response).await;
    assert_eq!(body["error"]["@message"], "semantic error from the cluster");
}

#[tokio::test]
async fn gzip_request_bodies_are_accepted() {
    let (upstream, gate) = setup("", &[contoso()]).await;
    let response = client()
        .post(gate.url("/v1/rest/mgmt"))
        .header("authorization", contoso().basic())
        .header("content-encoding", "gzip")
        .body(gzip(br#"{"db":"Samples","csl":".show tables"}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.path, "/v1/rest/mgmt");
    assert_eq!(seen.body["csl"], ".show tables");
    assert!(!seen.headers.contains_key("content-encoding"));
}

// === Refusals, in Kusto's envelope ===

#[tokio::test]
async fn another_tenants_database_is_forbidden_and_not_forwarded() {
    let (upstream, gate) = setup("", &[contoso(), fabrikam()]).await;
    for db in [FABRIKAM_DB, "Fabrikam", "NetDefaultDB"] {
        let response = query(&gate, &contoso(), &format!(r#"{{"db":"{db}","csl":"T"}}"#)).await;
        assert_eq!(response.status(), 403, "{db}");
        let body = error_body(response).await;
        assert_eq!(body["error"]["code"], "Forbidden");
        assert!(body["error"]["@message"]
            .as_str()
            .unwrap()
            .contains("is not accessible to tenant"));
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn bad_requests_say_what_is_wrong() {
    let (upstream, gate) = setup("", &[contoso()]).await;
    for body in [
        r#"{"db":"Samples"}"#,
        r#"{"csl":""}"#,
        r#"{"csl":5}"#,
        "not json",
        "[]",
    ] {
        let response = query(&gate, &contoso(), body).await;
        assert_eq!(response.status(), 400, "{body}");
        let envelope = error_body(response).await;
        assert_eq!(envelope["error"]["code"], "BadRequest");
        assert_eq!(envelope["error"]["@permanent"], true);
    }
    let missing = error_body(query(&gate, &contoso(), r#"{"db":"Samples"}"#).await).await;
    assert!(missing["error"]["@message"]
        .as_str()
        .unwrap()
        .contains("csl"));
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn credentials_come_before_everything_else() {
    let (upstream, gate) = setup("", &[contoso()]).await;
    let unknown = TenantSpec::new("nobody", CONTOSO_KEY, CONTOSO_DB);
    let wrong_key = TenantSpec::new("contoso", "wrong", CONTOSO_DB);
    let mut bodies = Vec::new();
    for tenant in [&unknown, &wrong_key] {
        let response = query(&gate, tenant, "this is not json").await;
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()["www-authenticate"],
            "Basic realm=\"kqlgate\""
        );
        let body = error_body(response).await;
        assert_eq!(body["error"]["code"], "Unauthorized");
        bodies.push(body["error"]["@message"].clone());
    }
    assert_eq!(
        bodies[0], bodies[1],
        "unknown tenant and wrong key must look alike"
    );
    let anonymous = client()
        .post(gate.url("/v1/rest/query"))
        .body(r#"{"csl":"print 1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn unknown_paths_and_methods_get_envelopes() {
    let (_upstream, gate) = setup("", &[contoso()]).await;
    let not_found = client()
        .post(gate.url("/v2/rest/mgmt"))
        .send()
        .await
        .unwrap();
    assert_eq!(not_found.status(), 404);
    assert_eq!(error_body(not_found).await["error"]["code"], "NotFound");
    let wrong_method = client()
        .get(gate.url("/v1/rest/query"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(
        error_body(wrong_method).await["error"]["code"],
        "MethodNotAllowed"
    );
    for path in ["/healthz", "/readyz"] {
        let response = client().get(gate.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn oversized_and_bomb_bodies_are_413() {
    let (upstream, gate) = setup_with_server("max_body_bytes = 4096", "", &[contoso()]).await;
    let big = format!(r#"{{"csl":"{}"}}"#, "x".repeat(5000));
    let response = query(&gate, &contoso(), &big).await;
    assert_eq!(response.status(), 413);
    assert_eq!(
        error_body(response).await["error"]["code"],
        "PayloadTooLarge"
    );
    // 400 KB of JSON that compresses to well under the 4 KiB limit.
    let bomb = gzip(format!(r#"{{"csl":"{}"}}"#, " ".repeat(400_000)).as_bytes());
    assert!(bomb.len() <= 4096, "{}", bomb.len());
    let response = client()
        .post(gate.url("/v1/rest/query"))
        .header("authorization", contoso().basic())
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert!(upstream.requests().is_empty());
}

// === Limits ===

#[tokio::test]
async fn rate_limit_refuses_at_once_with_retry_after_and_spares_other_tenants() {
    let strict = contoso().with("aliases = [\"Samples\"]\nrate_per_second = 0.01\nburst = 2");
    let (_upstream, gate) = setup("", &[strict, fabrikam()]).await;
    for _ in 0..2 {
        assert_eq!(
            query(&gate, &contoso(), r#"{"csl":"print 1"}"#)
                .await
                .status(),
            200
        );
    }
    let refused = query(&gate, &contoso(), r#"{"csl":"print 1"}"#).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body = error_body(refused).await;
    assert_eq!(body["error"]["code"], "TooManyRequests");
    assert_eq!(body["error"]["@permanent"], false);
    for _ in 0..5 {
        assert_eq!(
            query(&gate, &fabrikam(), r#"{"csl":"print 1"}"#)
                .await
                .status(),
            200
        );
    }
}

/// A streamed answer counts as in flight until its last byte.
#[tokio::test]
async fn concurrency_limit_counts_streams_until_they_end() {
    let limited = contoso().with("max_concurrent = 1");
    let (upstream, gate) = setup("", &[limited, fabrikam()]).await;
    let held = query(&gate, &contoso(), r#"{"csl":"gated 200000"}"#).await;
    assert_eq!(held.status(), 200);
    let refused = query(&gate, &contoso(), r#"{"csl":"print 1"}"#).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(
        query(&gate, &fabrikam(), r#"{"csl":"print 1"}"#)
            .await
            .status(),
        200
    );
    upstream.release();
    assert_eq!(held.bytes().await.unwrap().len(), 200_000);
    // The permit is released once the body is done; give the server a moment to drop it.
    let mut status = 0;
    for _ in 0..50 {
        status = query(&gate, &contoso(), r#"{"csl":"print 1"}"#)
            .await
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
}

#[tokio::test]
async fn wrong_key_floods_are_throttled_without_locking_out_verified_keys() {
    let upstream = TestUpstream::start().await;
    let top = "[auth]\nverify_burst = 3\nverify_per_minute = 1\n";
    let gate = Kqlgate::start(&config(&upstream.url(), "", top, &[contoso()]));
    assert_eq!(
        query(&gate, &contoso(), r#"{"csl":"print 1"}"#)
            .await
            .status(),
        200
    );
    let attacker = TenantSpec::new("contoso", "guess", CONTOSO_DB);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(query(&gate, &attacker, "{}").await.status().as_u16());
    }
    // Failed checks spend the budget of 3 (the successful one above spent nothing).
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429]);
    assert_eq!(
        query(&gate, &contoso(), r#"{"csl":"print 1"}"#)
            .await
            .status(),
        200
    );
}

// === Upstream failures ===

#[tokio::test]
async fn unreachable_cluster_is_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let gate = Kqlgate::start(&config(&url, "", "", &[contoso()]));
    let response = query(&gate, &contoso(), r#"{"csl":"print 1"}"#).await;
    assert_eq!(response.status(), 502);
    let body = error_body(response).await;
    assert_eq!(body["error"]["code"], "BadGateway");
    assert!(
        !body.to_string().contains(&url[7..]),
        "cluster address leaked: {body}"
    );
}

#[tokio::test]
async fn slow_cluster_is_504() {
    let (_upstream, gate) = setup("timeout_seconds = 1", &[contoso()]).await;
    let response = query(&gate, &contoso(), r#"{"csl":"sleep 3000"}"#).await;
    assert_eq!(response.status(), 504);
    assert_eq!(
        error_body(response).await["error"]["code"],
        "GatewayTimeout"
    );
}

#[tokio::test]
async fn upstream_dying_mid_stream_aborts_the_client_connection() {
    let (_upstream, gate) = setup("", &[contoso()]).await;
    let response = query(&gate, &contoso(), r#"{"csl":"die 1000000"}"#).await;
    assert_eq!(response.status(), 200);
    let mut received = 0;
    let mut stream = response.bytes_stream();
    let mut failed = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => received += bytes.len(),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(
        failed,
        "the stream ended cleanly after {received} bytes: truncation was hidden"
    );
    assert!(received <= 1_000_000);
    let events = gate.access_events_when(|e| !e.is_empty(), Duration::from_secs(5));
    assert_eq!(events.last().unwrap()["outcome"], "aborted");
}

// === Streaming, pooling, compression ===

/// The upstream holds its answer after the first chunk until the client has seen bytes: a
/// buffering proxy would deadlock here. Then 300 MB flow through with bounded proxy memory.
#[tokio::test]
async fn large_answers_stream_through_with_bounded_memory() {
    const TOTAL: usize = 300 * 1024 * 1024;
    let (upstream, gate) = setup("", &[contoso()]).await;
    let response = query(&gate, &contoso(), &format!(r#"{{"csl":"gated {TOTAL}"}}"#)).await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("first bytes must arrive while the upstream is still holding the rest")
        .unwrap()
        .unwrap();
    let mut received = first.len();
    upstream.release();
    while let Some(chunk) = stream.next().await {
        received += chunk.unwrap().len();
    }
    assert_eq!(received, TOTAL);
    let peak_mib = gate.peak_rss_kib() / 1024;
    eprintln!(
        "kqlgate peak RSS after streaming {} MiB: {peak_mib} MiB",
        TOTAL >> 20
    );
    assert!(
        peak_mib < 64,
        "peak RSS {peak_mib} MiB: the answer was buffered"
    );
}

#[tokio::test]
async fn hundred_sequential_requests_reuse_pooled_connections() {
    let (upstream, gate) = setup("", &[contoso()]).await;
    let client = client();
    for _ in 0..100 {
        let response = client
            .post(gate.url("/v1/rest/query"))
            .header("authorization", contoso().basic())
            .body(r#"{"csl":"print 1"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    assert!(
        upstream.connections() <= 3,
        "{} upstream connections",
        upstream.connections()
    );
}

#[tokio::test]
async fn gzip_passes_through_or_is_decoded_byte_for_byte() {
    const SIZE: usize = 3 * 1024 * 1024 + 17;
    let (_upstream, gate) = setup("", &[contoso()]).await;
    let body = format!(r#"{{"csl":"gzip {SIZE}"}}"#);
    let original = pattern(SIZE);

    let passed = client()
        .post(gate.url("/v1/rest/query"))
        .header("authorization", contoso().basic())
        .header("accept-encoding", "gzip, deflate")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(passed.headers()["content-encoding"], "gzip");
    let compressed = passed.bytes().await.unwrap();
    assert_eq!(
        &compressed[..],
        &gzip(&original)[..],
        "pass-through must not re-compress"
    );

    for accept in [None, Some("identity"), Some("gzip;q=0, deflate")] {
        let mut request = client()
            .post(gate.url("/v1/rest/query"))
            .header("authorization", contoso().basic())
            .body(body.clone());
        if let Some(accept) = accept {
            request = request.header("accept-encoding", accept);
        }
        let plain = request.send().await.unwrap();
        assert!(
            !plain.headers().contains_key("content-encoding"),
            "{accept:?}"
        );
        let decoded = plain.bytes().await.unwrap();
        assert_eq!(decoded.len(), SIZE, "{accept:?}");
        assert!(
            decoded[..] == original[..],
            "{accept:?}: decoded bytes differ"
        );
    }
    const { assert!(CHUNK < SIZE, "the answer must span several chunks") };
}

// === Operations ===

#[tokio::test]
async fn access_log_has_one_line_per_request_and_no_secrets() {
    let upstream = TestUpstream::start().await;
    let cluster = "auth = \"bearer-env\"\ntoken_env = \"KQLGATE_TEST_CLUSTER_TOKEN\"";
    let text = config(&upstream.url(), cluster, "", &[contoso()]);
    let gate = Kqlgate::start_with_env(
        &text,
        &[
            ("KQLGATE_TEST_CLUSTER_TOKEN", "cluster-token-secret-value"),
            ("RUST_LOG", "trace"),
        ],
    );
    let ok = client()
        .post(gate.url("/v1/rest/query"))
        .header("authorization", contoso().basic())
        .header("proxy-authorization", "Basic cHJveHktc2VjcmV0")
        .header("x-ms-client-request-id", "log-test-1")
        .body(r#"{"db":"Samples","csl":"print 1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    ok.bytes().await.unwrap();
    let wrong = TenantSpec::new("contoso", "wrong-key-secret", CONTOSO_DB);
    assert_eq!(query(&gate, &wrong, "{}").await.status(), 401);

    let events = gate.access_events_when(|e| e.len() >= 2, Duration::from_secs(5));
    assert_eq!(events.len(), 2, "{events:?}");
    let first = &events[0];
    assert_eq!(first["tenant"], "contoso");
    assert_eq!(first["route"], "/v1/rest/query");
    assert_eq!(first["database"], CONTOSO_DB);
    assert_eq!(first["status"], 200);
    assert_eq!(first["upstream_status"], 200);
    assert_eq!(first["client_request_id"], "log-test-1");
    assert_eq!(first["outcome"], "complete");
    assert!(first["bytes_out"].as_u64().unwrap() > 0);
    assert!(first["duration_ms"].is_u64());
    assert_eq!(events[1]["status"], 401);

    let log = gate.log();
    for secret in [
        CONTOSO_KEY,
        "wrong-key-secret",
        "cluster-token-secret-value",
        contoso().basic().trim_start_matches("Basic "),
        "cHJveHktc2VjcmV0",
    ] {
        assert!(
            !log.contains(secret),
            "secret {secret:?} reached the log:\n{log}"
        );
    }
}

#[tokio::test]
async fn shutdown_lets_in_flight_streams_finish_and_refuses_new_work() {
    let (upstream, mut gate) = setup("", &[contoso()]).await;
    let response = query(&gate, &contoso(), r#"{"csl":"gated 1000000"}"#).await;
    assert_eq!(response.status(), 200);
    gate.signal("TERM");
    let log = gate.log_when_it_has("shutting down", Duration::from_secs(5));
    assert!(
        log.contains("\"connections\":1"),
        "the stream is in flight at shutdown: {log}"
    );
    let refused = client().get(gate.url("/healthz")).send().await;
    assert!(
        refused.is_err(),
        "new connections must be refused while draining"
    );
    upstream.release();
    assert_eq!(response.bytes().await.unwrap().len(), 1_000_000);
    assert_eq!(gate.wait_exit(Duration::from_secs(10)), Some(0));
}

/// With several workers, streams held on different connections (and so, in all likelihood,
/// different workers) all run to the end after SIGTERM, and the process exits cleanly.
#[tokio::test]
async fn every_worker_drains_its_streams_on_shutdown() {
    const STREAMS: usize = 8;
    let (upstream, mut gate) = setup_with_server("workers = 4", "", &[contoso()]).await;
    assert!(gate.log().contains("\"workers\":4"), "{}", gate.log());
    let mut responses = Vec::new();
    for _ in 0..STREAMS {
        // A client each: its own connection, accepted by whichever worker is quickest.
        let response = query(&gate, &contoso(), r#"{"csl":"gated 300000"}"#).await;
        assert_eq!(response.status(), 200);
        responses.push(response);
    }
    gate.signal("TERM");
    // Released only once the server is draining, with every stream still in flight.
    let log = gate.log_when_it_has("shutting down", Duration::from_secs(5));
    let draining = log
        .lines()
        .find(|l| l.contains("shutting down"))
        .unwrap()
        .to_owned();
    let open: serde_json::Value = serde_json::from_str(&draining).unwrap();
    assert!(
        open["connections"].as_u64().unwrap() >= STREAMS as u64,
        "{draining}"
    );
    for _ in 0..STREAMS {
        upstream.release();
    }
    for response in responses {
        assert_eq!(response.bytes().await.unwrap().len(), 300_000);
    }
    assert_eq!(gate.wait_exit(Duration::from_secs(10)), Some(0));
    let log = gate.log_when_it_has("all connections drained", Duration::from_secs(5));
    assert!(log.contains("all connections drained"), "{log}");
}

/// `timeout_seconds` covers the streamed answer too: a stream still running at the deadline is
/// cut off (the client sees a broken transfer, never a complete-looking answer).
#[tokio::test]
async fn a_stream_outliving_the_timeout_is_cut_off() {
    let (_upstream, gate) = setup("timeout_seconds = 1", &[contoso()]).await;
    let started = std::time::Instant::now();
    let response = query(&gate, &contoso(), r#"{"csl":"gated 1000000"}"#).await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut received = 0;
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => received += bytes.len(),
                Err(_) => return true,
            }
        }
        false
    })
    .await
    .expect("the held stream was not cut off within 10 s");
    assert!(outcome, "the stream ended cleanly after {received} bytes");
    assert_eq!(received, CHUNK, "only the first chunk was ever sent");
    assert!(started.elapsed() >= Duration::from_millis(900));
    let events = gate.access_events_when(|e| !e.is_empty(), Duration::from_secs(5));
    assert_eq!(events.last().unwrap()["outcome"], "aborted");
}

/// A client that never finishes its headers is disconnected after the header read timeout.
#[tokio::test]
async fn slow_headers_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (upstream, gate) =
        setup_with_server("header_read_timeout_seconds = 1", "", &[contoso()]).await;
    let mut stream = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    stream
        .write_all(b"POST /v1/rest/query HTTP/1.1\r\nHost: kqlgate\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buffer = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buffer)).await;
    assert!(closed.is_ok(), "the connection was still open after 10 s");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "closed after {took:?}, not at the 1 s header deadline"
    );
    assert!(upstream.requests().is_empty());
}
