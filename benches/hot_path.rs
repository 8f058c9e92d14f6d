//! Micro benchmarks of the per-request hot path (`cargo bench`). The load test that compares
//! kqlgate with nginx and a direct connection is `scripts/bench`; results in benches/RESULTS.md.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use http::HeaderMap;
use http_body_util::Full;
use kqlgate::clock::SystemClock;
use kqlgate::config::Config;
use kqlgate::kql::{guard, Options, Role, Scope};
use kqlgate::pipeline::body::{self, BodyLimits};
use kqlgate::pipeline::query::{QueryBody, Rewrite};
use kqlgate::services::auth::Authenticator;
use kqlgate::services::identity::Identities;
use kqlgate::services::limiter::Limiter;
use kqlgate::services::metrics::Metrics;
use kqlgate::services::tenants::{Reuse, Snapshot};

const DATABASE: &str = "11111111-1111-1111-1111-111111111111";

/// A dashboard-like query of about `len` bytes.
fn csl(len: usize) -> String {
    let line = "StormEvents | where State == 'TEXAS' and StartTime > ago(7d) | summarize count() by EventType\n";
    let mut text = String::from("let since = ago(1d);\n");
    while text.len() < len {
        text.push_str(line);
    }
    text
}

fn body_with_csl(len: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "db": "Samples",
        "csl": csl(len),
        "properties": "{\"Options\":{\"servertimeout\":\"00:04:00\"},\"Parameters\":{}}",
    }))
    .unwrap()
}

/// A config with tenants `t0`…`t{count-1}`, all with the key `the-key`.
fn config(count: usize, extra: &str) -> Config {
    let hash = kqlgate::keys::hash_key("the-key").unwrap();
    let mut text = String::from("[clusters.main]\nurl = \"http://127.0.0.1:1\"\n");
    for i in 0..count {
        text.push_str(&format!(
            "[[tenants]]\nid = \"t{i}\"\nkey_hashes = [\"{hash}\"]\ncluster = \"main\"\ndatabase = \"{DATABASE}\"\n{extra}\n"
        ));
    }
    Config::parse(&text, &std::collections::HashMap::new()).unwrap()
}

fn limiter() -> Limiter {
    Limiter::new(SystemClock::shared(), None, Arc::new(Metrics::new()))
}

fn snapshot(config: Config, limits: &Limiter) -> Snapshot {
    Snapshot::build(
        config,
        Reuse {
            previous: None,
            identities: &mut Identities::new(Arc::new(Metrics::new())).unwrap(),
            limits,
            metrics: &Arc::new(Metrics::new()),
            workers: 1,
        },
    )
    .unwrap()
}

fn credential_check(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = config(1, "");
    let first_key = config.tenants[0].key_hashes[0].clone();
    let authenticator = Authenticator::new(
        &config.auth,
        Some(&first_key),
        None,
        SystemClock::shared(),
        None,
        Arc::new(Metrics::new()),
    )
    .unwrap();
    let snapshot = runtime.block_on(async { snapshot(config, &limiter()) });
    let mut headers = HeaderMap::new();
    let basic = base64::engine::general_purpose::STANDARD.encode("t0:the-key");
    headers.insert("authorization", format!("Basic {basic}").parse().unwrap());
    let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
    // The first call runs argon2 and fills the cache; the benchmark measures the hits.
    runtime
        .block_on(authenticator.authenticate(&snapshot, &headers, client))
        .unwrap();
    c.bench_function("credential check, cache hit", |b| {
        b.iter(|| {
            runtime
                .block_on(authenticator.authenticate(&snapshot, black_box(&headers), client))
                .unwrap()
        })
    });
}

fn parse_rewrite_and_guard(c: &mut Criterion) {
    let names = vec![DATABASE.to_string(), "samples".to_string()];
    let scope = Scope {
        database: DATABASE,
        database_names: &names,
    };
    for (name, size) in [("200 B", 200), ("50 KB", 50_000)] {
        let body = body_with_csl(size);
        c.bench_function(&format!("body parse + rewrite, {name} csl"), |b| {
            b.iter(|| {
                let query = QueryBody::parse(black_box(&body)).unwrap();
                black_box(query.forwarded(DATABASE, &Rewrite::default()))
            })
        });
        let text = csl(size);
        c.bench_function(&format!("guard, {name} csl"), |b| {
            b.iter(|| guard(black_box(&text), &scope, Role::Viewer, Options::default()).unwrap())
        });
    }
}

fn limiter_with_many_tenants(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let limits = limiter();
    let snapshot = snapshot(
        config(
            10_000,
            "rate_per_second = 1e9\nburst = 1000000\nmax_concurrent = 1000",
        ),
        &limits,
    );
    let tenants: Vec<_> = snapshot.tenants().cloned().collect();
    let mut next = 0usize;
    c.bench_function("per-tenant limiter, 10,000 tenants", |b| {
        b.iter(|| {
            next = (next + 7919) % tenants.len();
            let tenant = &tenants[next];
            let id = &tenant.config.id;
            runtime.block_on(async {
                limits
                    .take_rate(id, &tenant.limits, tenant.config.rate)
                    .await
                    .unwrap();
                black_box(
                    limits
                        .take_slot(id, &tenant.limits, tenant.config.max_concurrent)
                        .await
                        .unwrap(),
                )
            })
        })
    });
}

fn gzip_request_body(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let plain = body_with_csl(50_000);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&plain).unwrap();
    let compressed = Bytes::from(encoder.finish().unwrap());
    let mut headers = HeaderMap::new();
    headers.insert("content-encoding", "gzip".parse().unwrap());
    c.bench_function("gzip decode of a 50 KB request body", |b| {
        b.iter_batched(
            || Full::new(compressed.clone()),
            |request_body| {
                let limits = BodyLimits {
                    max_bytes: 1 << 20,
                    timeout: std::time::Duration::from_secs(30),
                    min_bytes_per_second: 1024,
                };
                runtime
                    .block_on(body::read(
                        request_body,
                        body::precheck(&headers, limits).unwrap(),
                        limits,
                    ))
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(
    benches,
    credential_check,
    parse_rewrite_and_guard,
    limiter_with_many_tenants,
    gzip_request_body
);
criterion_main!(benches);
