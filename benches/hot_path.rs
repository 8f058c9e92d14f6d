//! Micro benchmarks of the per-request hot path (`cargo bench`). Load tests that compare kqlgate
//! with nginx and a direct connection are separate (scripts/bench).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use kqlgate::pipeline::query::{QueryBody, Rewrite};

fn body_with_csl(csl_len: usize) -> Vec<u8> {
    let csl = "StormEvents | where State == 'TEXAS' | summarize count() by EventType | "
        .repeat(csl_len / 70 + 1);
    serde_json::to_vec(&serde_json::json!({
        "db": "Samples",
        "csl": &csl[..csl_len],
        "properties": "{\"Options\":{\"servertimeout\":\"00:04:00\"},\"Parameters\":{}}",
    }))
    .unwrap()
}

fn parse_and_rewrite(c: &mut Criterion) {
    for (name, size) in [("200 B", 200), ("50 KB", 50_000)] {
        let body = body_with_csl(size);
        c.bench_function(&format!("body parse + rewrite, {name} csl"), |b| {
            b.iter(|| {
                let query = QueryBody::parse(black_box(&body)).unwrap();
                black_box(
                    query.forwarded("11111111-1111-1111-1111-111111111111", &Rewrite::default()),
                )
            })
        });
    }
}

criterion_group!(benches, parse_and_rewrite);
criterion_main!(benches);
