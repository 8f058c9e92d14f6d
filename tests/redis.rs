//! Limits shared by several replicas of the real binary through a real Redis, and the cluster
//! cap: accuracy of a shared rate, a shared concurrency limit and its recovery from a killed
//! replica, Redis stopped, frozen and delayed, fair shares under a cluster cap, and a cap that
//! falls and recovers when the cluster throttles.
//!
//! The machine's Redis (127.0.0.1:6379) is used under a key prefix of each test's own and never
//! flushed or stopped; tests that stop, freeze or delay Redis start a redis-server of their own.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::{delaying_proxy, unique_prefix, OwnRedis, SHARED_REDIS};
use common::upstream::TestUpstream;
use common::{client, Kqlgate, TenantSpec, CONTOSO_DB, FABRIKAM_DB};

fn limits(url: &str, prefix: &str, extra: &str) -> String {
    format!("[limits]\nbackend = \"redis\"\nredis_url = \"{url}\"\nkey_prefix = \"{prefix}\"\n{extra}\n")
}

async fn send(gate: &Kqlgate, tenant: &TenantSpec, csl: &str) -> u16 {
    client()
        .post(gate.url("/v1/rest/query"))
        .header("authorization", tenant.basic())
        .header("content-type", "application/json")
        .body(serde_json::json!({"db": tenant.database, "csl": csl}).to_string())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// The key is verified once per replica and then cached: a first query on each replica, so
/// no measurement includes a verification. (It takes a rate token; callers allow for it.)
async fn warm(gates: &[&Kqlgate], tenant: &TenantSpec) {
    for gate in gates {
        assert_eq!(send(gate, tenant, "print 1").await, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_share_one_rate() {
    let upstream = TestUpstream::start().await;
    let prefix = unique_prefix("rate");
    let tenant = TenantSpec::new("contoso", "rate-key", CONTOSO_DB)
        .with("rate_per_second = 20.0\nburst = 20");
    let config = common::config(
        &upstream.url(),
        "",
        &limits(SHARED_REDIS, &prefix, ""),
        std::slice::from_ref(&tenant),
    );
    let gates: Vec<Kqlgate> = (0..3).map(|_| Kqlgate::start(&config)).collect();
    warm(&gates.iter().collect::<Vec<_>>(), &tenant).await;
    // The three tokens the warm-up took come back before the measurement.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let accepted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let gates = Arc::new(gates);
    let tenant = Arc::new(tenant);
    // 100 requests/s for 10 s, round robin over the replicas.
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut tasks = Vec::new();
    for n in 0..1000usize {
        tick.tick().await;
        let (gates, tenant) = (gates.clone(), tenant.clone());
        let (accepted, refused) = (accepted.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            match send(&gates[n % 3], &tenant, "print 1").await {
                200 => accepted.fetch_add(1, Ordering::SeqCst),
                429 => refused.fetch_add(1, Ordering::SeqCst),
                other => panic!("unexpected status {other}"),
            };
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let accepted = accepted.load(Ordering::SeqCst);
    let refused = refused.load(Ordering::SeqCst);
    eprintln!("shared rate 20/s burst 20, 100 requests/s over 3 replicas for 10 s: accepted {accepted}, refused {refused} (allowed: 220)");
    assert_eq!(accepted + refused, 1000);
    assert!(
        (198..=242).contains(&accepted),
        "accepted {accepted}, allowed 220 ± 10 %"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrency_limit_holds_across_replicas_and_a_killed_replica_gives_its_slots_back() {
    let upstream = TestUpstream::start().await;
    let prefix = unique_prefix("leases");
    let tenant = TenantSpec::new("contoso", "lease-key", CONTOSO_DB).with("max_concurrent = 4");
    let config = common::config(
        &upstream.url(),
        "",
        &limits(SHARED_REDIS, &prefix, "lease_seconds = 3"),
        std::slice::from_ref(&tenant),
    );
    let mut gates: Vec<Kqlgate> = (0..3).map(|_| Kqlgate::start(&config)).collect();
    warm(&gates.iter().collect::<Vec<_>>(), &tenant).await;
    let gates_ref = &gates;
    let tenant_ref = &tenant;
    // 30 slow requests at once, spread over the replicas.
    let statuses = futures_util::future::join_all(
        (0..30).map(|n| async move { send(&gates_ref[n % 3], tenant_ref, "sleep 400").await }),
    )
    .await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    eprintln!(
        "30 slow requests over 3 replicas, max_concurrent 4: {ok} answered, upstream saw at most {} at once",
        upstream.max_in_flight()
    );
    assert!(
        upstream.max_in_flight() <= 4,
        "{}",
        upstream.max_in_flight()
    );
    assert!(ok >= 4, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );

    // Replica 0 holds 2 slots and replica 1 holds 2 (answers held open at the upstream).
    let mut held = Vec::new();
    for replica in [0, 0, 1, 1] {
        let response = client()
            .post(gates[replica].url("/v1/rest/query"))
            .header("authorization", tenant.basic())
            .body(serde_json::json!({"db": CONTOSO_DB, "csl": "gated 300000"}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        held.push(response);
    }
    assert_eq!(
        send(&gates[2], &tenant, "print 1").await,
        429,
        "all 4 slots are held"
    );
    gates[0].signal("KILL");
    let killed_at = Instant::now();
    gates[0].wait_exit(Duration::from_secs(5));
    let recovered = loop {
        if send(&gates[2], &tenant, "print 1").await == 200 {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(6),
            "the killed replica's slots did not come back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "slots of a replica killed with SIGKILL came back after {recovered:?} (lease_seconds = 3)"
    );
    assert!(recovered <= Duration::from_millis(3500), "{recovered:?}");
    for _ in 0..4 {
        upstream.release();
    }
    drop(held);
    gates.remove(0);
}

/// Status and latency of `count` requests sent one after another.
async fn burst(gate: &Kqlgate, tenant: &TenantSpec, count: usize) -> (Vec<u16>, Duration) {
    let mut statuses = Vec::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..count {
        let started = Instant::now();
        statuses.push(send(gate, tenant, "print 1").await);
        slowest = slowest.max(started.elapsed());
    }
    (statuses, slowest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_redis_each_mode_decides_at_once_and_recovers_without_a_restart() {
    let upstream = TestUpstream::start().await;
    let mut redis = OwnRedis::start();
    let prefix = unique_prefix("failure");
    let tenant = TenantSpec::new("contoso", "failure-key", CONTOSO_DB)
        .with("rate_per_second = 0.001\nburst = 6");
    let gate = |mode: &str| {
        let extra = format!("on_redis_failure = \"{mode}\"\nreplicas_hint = 2\ntimeout_ms = 20");
        Kqlgate::start(&common::config(
            &upstream.url(),
            "",
            &limits(&redis.url(), &prefix.replace("failure", mode), &extra),
            std::slice::from_ref(&tenant),
        ))
    };
    let (local, allow, deny) = (gate("local"), gate("allow"), gate("deny"));
    warm(&[&local, &allow, &deny], &tenant).await;
    // Redis answering: the burst of 6 (one taken by the warm-up), then refused.
    let (statuses, _) = burst(&local, &tenant, 6).await;
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);

    for (what, frozen) in [("frozen", true), ("stopped", false)] {
        if frozen {
            redis.freeze(true);
        } else {
            redis.freeze(false);
            redis.stop();
        }
        // local: this replica's share, 6 ÷ 2 = 3 (its own bucket was never used).
        let (local_statuses, local_slowest) = burst(&local, &tenant, 4).await;
        let (allow_statuses, allow_slowest) = burst(&allow, &tenant, 8).await;
        let (deny_statuses, deny_slowest) = burst(&deny, &tenant, 3).await;
        eprintln!(
            "redis {what}: local {local_statuses:?} slowest {local_slowest:?}; allow slowest {allow_slowest:?}; deny {deny_statuses:?} slowest {deny_slowest:?}"
        );
        if frozen {
            assert_eq!(local_statuses[..3], [200, 200, 200], "{local_statuses:?}");
            assert_eq!(local_statuses[3], 429);
        } else {
            assert!(
                local_statuses.iter().all(|s| *s == 429),
                "the local share is spent: {local_statuses:?}"
            );
        }
        assert!(
            allow_statuses.iter().all(|s| *s == 200),
            "{allow_statuses:?}"
        );
        assert!(deny_statuses.iter().all(|s| *s == 503), "{deny_statuses:?}");
        // No decision waits past timeout_ms (20) by more than a margin for a debug build.
        for slowest in [local_slowest, allow_slowest, deny_slowest] {
            assert!(
                slowest < Duration::from_millis(20 + 40),
                "{what}: {slowest:?}"
            );
        }
    }
    for gate in [&local, &allow, &deny] {
        let log = gate.log_when_it_has("redis unavailable", Duration::from_secs(2));
        assert!(log.contains("redis unavailable"), "{log}");
    }

    redis.resume();
    let back = Instant::now();
    loop {
        if send(&deny, &tenant, "print 1").await == 200 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "deny mode did not recover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "redis back: decisions shared again after {:?}",
        back.elapsed()
    );
    for gate in [&local, &allow, &deny] {
        let log = gate.log_when_it_has("redis answers again", Duration::from_secs(3));
        assert!(log.contains("redis answers again"), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_redis_adds_its_round_trips_to_each_request() {
    let upstream = TestUpstream::start().await;
    let redis = OwnRedis::start();
    let delay = Duration::from_millis(5);
    let proxy = delaying_proxy(format!("127.0.0.1:{}", redis.port).parse().unwrap(), delay).await;
    let tenant = TenantSpec::new("contoso", "delay-key", CONTOSO_DB)
        .with("rate_per_second = 100000.0\nburst = 100000\nmax_concurrent = 100");
    let start = |url: String| {
        Kqlgate::start(&common::config(
            &upstream.url(),
            "",
            &limits(&url, &unique_prefix("delay"), "timeout_ms = 200"),
            std::slice::from_ref(&tenant),
        ))
    };
    let direct = start(redis.url());
    let delayed = start(format!("redis://{proxy}/0"));
    warm(&[&direct, &delayed], &tenant).await;
    let median = |mut samples: Vec<Duration>| {
        samples.sort();
        samples[samples.len() / 2]
    };
    let mut direct_samples = Vec::new();
    let mut delayed_samples = Vec::new();
    for _ in 0..40 {
        for (gate, samples) in [
            (&direct, &mut direct_samples),
            (&delayed, &mut delayed_samples),
        ] {
            let started = Instant::now();
            assert_eq!(send(gate, &tenant, "print 1").await, 200);
            samples.push(started.elapsed());
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    let (direct_median, delayed_median) = (median(direct_samples), median(delayed_samples));
    let added = delayed_median.saturating_sub(direct_median);
    eprintln!(
        "redis behind a proxy adding {delay:?} each way: median request {delayed_median:?} vs {direct_median:?} direct, added {added:?} (2 decisions: rate, lease)"
    );
    // Two round trips (rate, lease) of 2 × 5 ms each.
    assert!(added >= Duration::from_millis(18), "{added:?}");
    assert!(added < Duration::from_millis(80), "{added:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_a_cluster_cap_a_steady_tenant_keeps_its_share_against_a_flood() {
    let upstream = TestUpstream::start().await;
    let flood = TenantSpec::new("flood", "flood-key", CONTOSO_DB);
    let steady = TenantSpec::new("steady", "steady-key", FABRIKAM_DB);
    let config = common::config(
        &upstream.url(),
        "max_concurrent = 4\nqueue_timeout_ms = 1000",
        &limits(SHARED_REDIS, &unique_prefix("fair"), ""),
        &[flood, steady],
    );
    let gates = Arc::new([Kqlgate::start(&config), Kqlgate::start(&config)]);
    let flood = Arc::new(TenantSpec::new("flood", "flood-key", CONTOSO_DB));
    let steady = TenantSpec::new("steady", "steady-key", FABRIKAM_DB);
    warm(&[&gates[0], &gates[1]], &flood).await;
    warm(&[&gates[0], &gates[1]], &steady).await;
    let until = Instant::now() + Duration::from_secs(5);
    let flood_counts = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let mut flooders = Vec::new();
    for n in 0..12 {
        let (gates, flood, counts) = (gates.clone(), flood.clone(), flood_counts.clone());
        flooders.push(tokio::spawn(async move {
            while Instant::now() < until {
                let ok = send(&gates[n % 2], &flood, "sleep 150").await == 200;
                counts[usize::from(!ok)].fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut steady_ok, mut steady_refused, mut steady_slowest) = (0, 0, Duration::ZERO);
    let mut n = 0;
    while Instant::now() < until {
        let started = Instant::now();
        match send(&gates[n % 2], &steady, "sleep 150").await {
            200 => steady_ok += 1,
            _ => steady_refused += 1,
        }
        steady_slowest = steady_slowest.max(started.elapsed());
        n += 1;
    }
    for flooder in flooders {
        flooder.await.unwrap();
    }
    let (flood_ok, flood_refused) = (
        flood_counts[0].load(Ordering::SeqCst),
        flood_counts[1].load(Ordering::SeqCst),
    );
    eprintln!(
        "cluster cap 4 over 2 replicas: steady {steady_ok} answered, {steady_refused} refused, slowest {steady_slowest:?}; flood {flood_ok} answered, {flood_refused} refused; upstream at most {} at once",
        upstream.max_in_flight()
    );
    assert!(
        upstream.max_in_flight() <= 4,
        "{}",
        upstream.max_in_flight()
    );
    assert!(flood_refused > 0, "the flood never met the cap");
    assert!(
        steady_refused * 10 <= steady_ok,
        "steady: {steady_ok} answered, {steady_refused} refused"
    );
    assert!(steady_ok >= 10, "steady: {steady_ok}");
}

/// The cap over time, from the log's "cluster cap" lines.
fn cap_changes(gate: &Kqlgate) -> Vec<u64> {
    gate.log()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| {
            event["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("cluster cap"))
        })
        .filter_map(|event| event["cap"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_throttling_cluster_lowers_the_cap_which_then_recovers() {
    let upstream = TestUpstream::start().await;
    let tenant = TenantSpec::new("contoso", "aimd-key", CONTOSO_DB);
    let gate = Kqlgate::start(&common::config(
        &upstream.url(),
        "max_concurrent = 16",
        "",
        std::slice::from_ref(&tenant),
    ));
    warm(&[&gate], &tenant).await;
    let gate = Arc::new(gate);
    let tenant = Arc::new(tenant);
    upstream.throttle_for(Duration::from_secs(5));
    let started = Instant::now();
    let mut timeline = Vec::new();
    let statuses = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (gate, tenant, statuses) = (gate.clone(), tenant.clone(), statuses.clone());
        workers.push(tokio::spawn(async move {
            while started.elapsed() < Duration::from_secs(9) {
                let status = send(&gate, &tenant, "sleep 20").await;
                statuses.lock().unwrap().push(status);
                if status == 429 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }
    let mut lowest = u64::MAX;
    while started.elapsed() < Duration::from_secs(9) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cap = cap_changes(&gate).last().copied().unwrap_or(16);
        lowest = lowest.min(cap);
        timeline.push((started.elapsed().as_millis() / 100 * 100, cap));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let throttled = statuses
        .lock()
        .unwrap()
        .iter()
        .filter(|s| **s == 429)
        .count();
    eprintln!("cluster cap over time (ms, cap) while the cluster answers 429 for 5 s: {timeline:?}; {throttled} answers of 429 reached the client");
    assert!(lowest <= 2, "the cap did not fall: {timeline:?}");
    assert_eq!(
        timeline.last().unwrap().1,
        16,
        "the cap did not recover: {timeline:?}"
    );
    assert!(throttled > 0);
    // The client is told when to come back.
    upstream.throttle_for(Duration::from_secs(1));
    let response = client()
        .post(gate.url("/v1/rest/query"))
        .header("authorization", tenant.basic())
        .body(serde_json::json!({"db": CONTOSO_DB, "csl": "print 1"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sign_in_failure_budget_is_shared_by_the_replicas() {
    let upstream = TestUpstream::start().await;
    let tenant = TenantSpec::new("contoso", "right-key", CONTOSO_DB);
    let top = format!(
        "{}\n[auth]\nverify_burst = 3\nverify_per_minute = 1\n",
        limits(SHARED_REDIS, &unique_prefix("signin"), "")
    );
    let config = common::config(&upstream.url(), "", &top, std::slice::from_ref(&tenant));
    let gates = [Kqlgate::start(&config), Kqlgate::start(&config)];
    let wrong = TenantSpec::new("contoso", "wrong-key", CONTOSO_DB);
    // Three failures spread over two replicas spend the one budget of this network…
    let mut statuses = Vec::new();
    for n in 0..3 {
        statuses.push(send(&gates[n % 2], &wrong, "print 1").await);
    }
    assert_eq!(statuses, [401, 401, 401]);
    // …so both replicas now refuse an uncached check; alone, each would still have budget.
    for gate in &gates {
        assert_eq!(send(gate, &wrong, "print 1").await, 429);
        assert_eq!(
            send(gate, &tenant, "print 1").await,
            429,
            "not verified yet: refused too"
        );
    }
}
