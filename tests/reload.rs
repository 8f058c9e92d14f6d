//! The live tenant table: reloads that add, remove, re-key and re-limit tenants while the server
//! runs (in-process, with a hand-driven clock for the limiters), and the sign-in budget.

mod common;

use std::time::Duration;

use common::inprocess::Gate;
use common::upstream::TestUpstream;
use common::*;

const SETTLE: Duration = Duration::from_secs(10);

fn tenant_toml(id: &str, key: &str, database: &str, extra: &str) -> String {
    let hash = kqlgate::keys::hash_key(key).unwrap();
    format!(
        "\n[[tenants]]\nid = \"{id}\"\nkey_hashes = [\"{hash}\"]\ncluster = \"main\"\ndatabase = \"{database}\"\n{extra}\n"
    )
}

fn head(upstream: &TestUpstream, top: &str) -> String {
    format!(
        "{top}\n[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n[clusters.main]\nurl = \"{}\"\nenforce_request_properties = false\n",
        upstream.url()
    )
}

async fn status(gate: &Gate, tenant: &str, key: &str, csl: &str) -> u16 {
    client()
        .post(gate.url("/v1/rest/query"))
        .header("authorization", basic(tenant, key))
        .body(serde_json::json!({ "csl": csl }).to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Writes `text` and waits until the server has taken it.
fn reload(gate: &Gate, text: &str) {
    let before = gate.config_lines("config reloaded");
    gate.write_config(text);
    assert!(
        gate.wait_for_config_lines("config reloaded", before + 1, SETTLE),
        "no reload was logged:\n{}",
        gate.log()
    );
}

#[tokio::test]
async fn a_tenants_rate_bucket_and_in_flight_count_carry_over_a_reload() {
    let upstream = TestUpstream::start().await;
    let contoso = tenant_toml(
        "contoso",
        "k1",
        CONTOSO_DB,
        "rate_per_second = 1.0\nburst = 2",
    );
    let fabrikam = tenant_toml("fabrikam", "k2", FABRIKAM_DB, "max_concurrent = 1");
    let gate = Gate::start(&format!("{}{contoso}{fabrikam}", head(&upstream, "")));
    assert_eq!(status(&gate, "contoso", "k1", "print 1").await, 200);
    assert_eq!(status(&gate, "contoso", "k1", "print 1").await, 200);
    assert_eq!(status(&gate, "contoso", "k1", "print 1").await, 429);
    // fabrikam holds its one slot with a stream the upstream keeps open.
    let held = client()
        .post(gate.url("/v1/rest/query"))
        .header("authorization", basic("fabrikam", "k2"))
        .body(r#"{"csl":"gated 200000"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 200);
    assert_eq!(status(&gate, "fabrikam", "k2", "print 1").await, 429);

    // A faster rate for contoso; fabrikam's limit unchanged; a new tenant to see the reload.
    let faster = tenant_toml(
        "contoso",
        "k1",
        CONTOSO_DB,
        "rate_per_second = 2.0\nburst = 2",
    );
    let newcomer = tenant_toml("newcomer", "k3", FABRIKAM_DB, "");
    reload(
        &gate,
        &format!("{}{faster}{fabrikam}{newcomer}", head(&upstream, "")),
    );
    assert_eq!(status(&gate, "newcomer", "k3", "print 1").await, 200);
    // No reset: the bucket is as empty as before; the new rate refills it from now on.
    assert_eq!(status(&gate, "contoso", "k1", "print 1").await, 429);
    gate.clock.advance(Duration::from_millis(500));
    assert_eq!(status(&gate, "contoso", "k1", "print 1").await, 200);
    assert_eq!(status(&gate, "contoso", "k1", "print 1").await, 429);
    // The stream that started before the reload still holds fabrikam's slot, then ends.
    assert_eq!(status(&gate, "fabrikam", "k2", "print 1").await, 429);
    upstream.release();
    assert_eq!(held.bytes().await.unwrap().len(), 200000);
    assert_eq!(status(&gate, "fabrikam", "k2", "print 1").await, 200);
}

#[tokio::test]
async fn a_bad_config_is_refused_and_the_old_one_keeps_serving() {
    let upstream = TestUpstream::start().await;
    let contoso = tenant_toml("contoso", "k1", CONTOSO_DB, "");
    let good = format!("{}{contoso}", head(&upstream, ""));
    let gate = Gate::start(&good);
    let refusals = gate.config_lines("config not reloaded");
    gate.write_config(&good.replace("cluster = \"main\"", "cluster = \"nowhere\""));
    assert!(
        gate.wait_for_config_lines("config not reloaded", refusals + 1, SETTLE),
        "no refusal was logged:\n{}",
        gate.log()
    );
    assert!(gate
        .log()
        .lines()
        .any(|l| l.contains("config not reloaded") && l.contains("tenants[0].cluster")));
    assert_eq!(status(&gate, "contoso", "k1", "print 1").await, 200);
    let ready = client().get(gate.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    // Mended, it is taken.
    let fabrikam = tenant_toml("fabrikam", "k2", FABRIKAM_DB, "");
    reload(&gate, &format!("{good}{fabrikam}"));
    assert_eq!(status(&gate, "fabrikam", "k2", "print 1").await, 200);
}

/// Kubernetes mounts a ConfigMap as `kqlgate.toml -> ..data/kqlgate.toml`, `..data -> ..<ts>`,
/// and updates it by pointing `..data` at a new directory in one rename.
#[tokio::test]
async fn a_configmap_symlink_swap_triggers_a_reload() {
    use std::os::unix::fs::symlink;
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let version = |name: &str, text: &str| {
        let versioned = dir.path().join(name);
        std::fs::create_dir(&versioned).unwrap();
        std::fs::write(versioned.join("kqlgate.toml"), text).unwrap();
    };
    let contoso = tenant_toml("contoso", "k1", CONTOSO_DB, "");
    let first = format!("{}{contoso}", head(&upstream, ""));
    version("..2026_12_01_00_00_00.1", &first);
    symlink("..2026_12_01_00_00_00.1", dir.path().join("..data")).unwrap();
    let path = dir.path().join("kqlgate.toml");
    symlink("..data/kqlgate.toml", &path).unwrap();
    let gate = Gate::start_at(dir, path);
    assert_eq!(status(&gate, "fabrikam", "k2", "print 1").await, 401);

    let fabrikam = tenant_toml("fabrikam", "k2", FABRIKAM_DB, "");
    let before = gate.config_lines("config reloaded");
    let second = gate.dir().join("..2026_12_01_00_05_00.2");
    std::fs::create_dir(&second).unwrap();
    std::fs::write(second.join("kqlgate.toml"), format!("{first}{fabrikam}")).unwrap();
    symlink("..2026_12_01_00_05_00.2", gate.dir().join("..data_tmp")).unwrap();
    std::fs::rename(gate.dir().join("..data_tmp"), gate.dir().join("..data")).unwrap();
    assert!(gate.wait_for_config_lines("config reloaded", before + 1, SETTLE));
    assert_eq!(status(&gate, "fabrikam", "k2", "print 1").await, 200);
}

#[tokio::test]
async fn removed_tenants_and_keys_are_refused_and_rotated_keys_work_from_the_next_request() {
    let upstream = TestUpstream::start().await;
    let old_hash = kqlgate::keys::hash_key("old").unwrap();
    let new_hash = kqlgate::keys::hash_key("new").unwrap();
    let with_keys = |hashes: &str| {
        format!(
            "\n[[tenants]]\nid = \"contoso\"\nkey_hashes = [{hashes}]\ncluster = \"main\"\ndatabase = \"{CONTOSO_DB}\"\n"
        )
    };
    let fabrikam = tenant_toml("fabrikam", "k2", FABRIKAM_DB, "");
    let base = head(&upstream, "");
    let gate = Gate::start(&format!(
        "{base}{}{fabrikam}",
        with_keys(&format!("\"{old_hash}\""))
    ));
    assert_eq!(status(&gate, "contoso", "old", "print 1").await, 200);
    assert_eq!(status(&gate, "fabrikam", "k2", "print 1").await, 200);
    // Rotate: both keys.
    reload(
        &gate,
        &format!(
            "{base}{}{fabrikam}",
            with_keys(&format!("\"{old_hash}\", \"{new_hash}\""))
        ),
    );
    assert_eq!(status(&gate, "contoso", "new", "print 1").await, 200);
    assert_eq!(status(&gate, "contoso", "old", "print 1").await, 200);
    // Revoke the old key and remove fabrikam.
    reload(
        &gate,
        &format!("{base}{}", with_keys(&format!("\"{new_hash}\""))),
    );
    assert_eq!(status(&gate, "contoso", "old", "print 1").await, 401);
    assert_eq!(status(&gate, "fabrikam", "k2", "print 1").await, 401);
    assert_eq!(status(&gate, "contoso", "new", "print 1").await, 200);
}

#[tokio::test]
async fn fifty_tenants_first_sign_ins_from_one_address_all_pass() {
    let upstream = TestUpstream::start().await;
    let mut text = head(&upstream, "");
    for i in 0..50 {
        text.push_str(&tenant_toml(
            &format!("t{i}"),
            &format!("key-{i}"),
            CONTOSO_DB,
            "",
        ));
    }
    let gate = Gate::start(&text);
    // Three wrong keys first, as the issue's dashboard host saw.
    for _ in 0..3 {
        assert_eq!(status(&gate, "t0", "wrong", "print 1").await, 401);
    }
    let requests = (0..50).map(|i| {
        let gate = &gate;
        async move { status(gate, &format!("t{i}"), &format!("key-{i}"), "print 1").await }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
}

#[tokio::test]
async fn a_hundred_wrong_keys_are_slowed_and_a_cached_key_still_works() {
    let upstream = TestUpstream::start().await;
    let text = format!(
        "{}{}",
        head(&upstream, ""),
        tenant_toml("contoso", "right", CONTOSO_DB, "")
    );
    let gate = Gate::start(&text);
    assert_eq!(status(&gate, "contoso", "right", "print 1").await, 200);
    let mut statuses = Vec::new();
    for i in 0..100 {
        statuses.push(status(&gate, "contoso", &format!("wrong-{i}"), "print 1").await);
    }
    // The default budget: 10 failures, then 429 (the clock stands still, nothing refills).
    assert_eq!(
        statuses.iter().filter(|&&s| s == 401).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|&&s| s == 429).count(), 90);
    assert_eq!(status(&gate, "contoso", "right", "print 1").await, 200);
    // Refilled at 30 a minute: two seconds give one more check.
    gate.clock.advance(Duration::from_secs(2));
    assert_eq!(
        status(&gate, "contoso", "wrong-again", "print 1").await,
        401
    );
    assert_eq!(
        status(&gate, "contoso", "wrong-again-2", "print 1").await,
        429
    );
}
