//! The cost Kusto reports per query reaches the audit log: read from the answer while it streams
//! through the real binary, without changing a byte of it, in every shape the test upstream
//! serves (v2, v1, gzip, progressive frames, a cut-off stream, a report missing fields, 1 GiB).

mod common;

use std::io::Read;
use std::time::Duration;

use common::upstream::{self, CostSpec, TestUpstream};
use common::{client, Kqlgate, TenantSpec, CONTOSO_DB};
use serde_json::Value;

const TENANT: &str = "contoso";
const KEY: &str = "cost-test-key";

struct Setup {
    gate: Kqlgate,
    tenant: TenantSpec,
    audit_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    _upstream: TestUpstream,
}

async fn setup() -> Setup {
    setup_with("").await
}

async fn setup_with(audit_extra: &str) -> Setup {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let tenant = TenantSpec::new(TENANT, KEY, CONTOSO_DB);
    let top = format!(
        "[audit]\npath = {:?}\n{audit_extra}\n",
        audit_path.to_str().unwrap()
    );
    let config = common::config(&upstream.url(), "", &top, std::slice::from_ref(&tenant));
    Setup {
        gate: Kqlgate::start(&config),
        tenant,
        audit_path,
        _dir: dir,
        _upstream: upstream,
    }
}

impl Setup {
    /// Sends `csl` over v1 or v2 and returns (status, body as received, decoded body).
    async fn send(&self, csl: &str, gzip: bool) -> (u16, Vec<u8>, Vec<u8>) {
        let spec = CostSpec::parse(csl);
        let path = if spec.v1 {
            "/v1/rest/query"
        } else {
            "/v2/rest/query"
        };
        let mut request = client()
            .post(self.gate.url(path))
            .header("authorization", self.tenant.basic())
            .header("content-type", "application/json")
            .body(serde_json::json!({"db": CONTOSO_DB, "csl": csl}).to_string());
        if gzip {
            request = request.header("accept-encoding", "gzip");
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let encoded = response
            .headers()
            .get("content-encoding")
            .is_some_and(|v| v == "gzip");
        let body = response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default();
        let decoded = if encoded {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        } else {
            body.clone()
        };
        (status, body, decoded)
    }

    /// The audit records once there are `count` of them.
    fn audit_records(&self, count: usize) -> Vec<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&self.audit_path).unwrap_or_default();
            let records: Vec<Value> = text
                .lines()
                .map(|line| serde_json::from_str(line).expect("each audit line is JSON"))
                .collect();
            if records.len() >= count || std::time::Instant::now() >= deadline {
                assert_eq!(records.len(), count, "audit log: {text}");
                return records;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn assert_full_cost(record: &Value) {
    let cost = &record["cost"];
    assert_eq!(
        cost["execution_seconds"],
        upstream::COST_EXECUTION_SECONDS,
        "{record}"
    );
    assert_eq!(cost["cpu_seconds"], upstream::COST_CPU_SECONDS, "{record}");
    assert_eq!(cost["memory_peak_bytes"], upstream::COST_MEMORY_PEAK);
    assert_eq!(cost["cache_hot_hit_bytes"], upstream::COST_HOT_HIT);
    assert_eq!(cost["cache_hot_miss_bytes"], upstream::COST_HOT_MISS);
    assert_eq!(cost["cache_cold_hit_bytes"], upstream::COST_COLD_HIT);
    assert_eq!(cost["cache_cold_miss_bytes"], upstream::COST_COLD_MISS);
    assert_eq!(cost["rows_returned"], upstream::COST_ROWS);
    assert_eq!(cost["result_bytes"], upstream::COST_RESULT_BYTES);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_shape_of_answer_reports_its_cost_and_passes_unchanged() {
    let setup = setup().await;
    let shapes = [
        ("cost v2 300000", false),
        ("cost v2 300000 progressive", false),
        ("cost v2 300000 gzip", true),
        ("cost v2 300000 gzip progressive", true),
        ("cost v1 300000", false),
        ("cost v1 300000 gzip", true),
    ];
    for (csl, gzip) in shapes {
        let (status, received, decoded) = setup.send(csl, gzip).await;
        assert_eq!(status, 200, "{csl}");
        assert_eq!(
            decoded,
            upstream::cost_body(CostSpec::parse(csl)),
            "{csl}: the answer changed on its way"
        );
        if gzip {
            assert_ne!(
                received, decoded,
                "{csl}: the answer should arrive gzip-encoded"
            );
        }
    }
    let records = setup.audit_records(shapes.len());
    let raw = std::fs::read_to_string(&setup.audit_path).unwrap();
    let authorization = setup.tenant.basic();
    let encoded_credentials = authorization.trim_start_matches("Basic ");
    for secret in [KEY, encoded_credentials, "cost v2", "cost v1"] {
        assert!(
            !raw.contains(secret),
            "the audit log holds {secret:?}: {raw}"
        );
    }
    for (record, (csl, _)) in records.iter().zip(shapes) {
        assert_eq!(record["tenant"], TENANT, "{csl}");
        assert_eq!(record["status"], 200, "{csl}");
        assert_full_cost(record);
        if !csl.contains("v1") {
            assert_eq!(record["cost"]["has_errors"], false, "{csl}: {record}");
            assert_eq!(record["cost"]["cancelled"], false, "{csl}: {record}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_cut_off_report_leaves_the_fields_empty() {
    let setup = setup().await;
    let (status, _, decoded) = setup.send("cost v2 70000 sparse", false).await;
    assert_eq!(status, 200);
    assert_eq!(
        decoded,
        upstream::cost_body(CostSpec::parse("cost v2 70000 sparse"))
    );
    // The stream breaks before its report: the client sees the break, the record no cost.
    let (status, received, _) = setup.send("cost v2 200000 cut", false).await;
    assert_eq!(status, 200);
    assert!(received.len() < 200_000 + 1000);
    let records = setup.audit_records(2);
    let sparse = &records[0]["cost"];
    assert_eq!(
        sparse["execution_seconds"],
        upstream::COST_EXECUTION_SECONDS
    );
    for field in [
        "cpu_seconds",
        "memory_peak_bytes",
        "cache_hot_hit_bytes",
        "rows_returned",
    ] {
        assert!(sparse[field].is_null(), "{field}: {sparse}");
    }
    assert!(
        records[1]["cost"].is_null(),
        "a cut-off answer has no cost: {}",
        records[1]
    );
    assert_ne!(records[1]["outcome"], records[0]["outcome"], "{records:?}");
}

/// A 1 GiB answer whose report is its last few KiB: found, and the proxy's memory does not grow
/// with the answer (peak RSS after 1 GiB within a few MiB of the peak after 32 MiB).
#[tokio::test(flavor = "multi_thread")]
async fn a_one_gib_answer_reports_its_cost_in_flat_memory() {
    let setup = setup().await;
    let mut sizes = Vec::new();
    for (csl, gzip) in [
        ("cost v2 33554432", false),
        ("cost v2 1073741824", false),
        ("cost v2 268435456 gzip", true),
    ] {
        let response = client()
            .post(setup.gate.url("/v2/rest/query"))
            .header("authorization", setup.tenant.basic())
            .header("content-type", "application/json")
            .header("accept-encoding", if gzip { "gzip" } else { "identity" })
            .body(serde_json::json!({"db": CONTOSO_DB, "csl": csl}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut received = 0usize;
        let mut response = response;
        while let Some(chunk) = response.chunk().await.unwrap() {
            received += chunk.len();
        }
        sizes.push((received, setup.gate.peak_rss_kib()));
    }
    let records = setup.audit_records(3);
    for record in &records {
        assert_full_cost(record);
    }
    assert!(sizes[1].0 > 1 << 30, "{sizes:?}");
    let growth_kib = sizes[2].1.saturating_sub(sizes[0].1);
    eprintln!(
        "received bytes and peak RSS (KiB) after each answer: {sizes:?}; growth {growth_kib} KiB"
    );
    assert!(
        growth_kib < 8 * 1024,
        "peak RSS grew by {growth_kib} KiB between a 32 MiB and a 1 GiB answer"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_query_text_is_recorded_only_when_asked() {
    let setup = setup_with("include_query_text = true").await;
    let (status, _, _) = setup.send("cost v2 1000", false).await;
    assert_eq!(status, 200);
    let records = setup.audit_records(1);
    assert_eq!(records[0]["query_text"], "cost v2 1000", "{}", records[0]);
    assert!(records[0]["query_hash"].is_string(), "{}", records[0]);
    let raw = std::fs::read_to_string(&setup.audit_path).unwrap();
    assert!(!raw.contains(KEY), "{raw}");
}
