//! The one-screen summary `kqlgate check` prints, and the tenant list of `kqlgate tenant list`.

use std::fmt::Write;

use kqlgate::config::{Config, Tenant};

/// Tenants shown by `check`; `tenant list` shows them all.
const SHOWN: usize = 20;

pub fn summary(config: &Config) -> String {
    let server = &config.server;
    let mut out = format!(
        "listen {} ({})\nmax_body_bytes {}\nworkers {}\n",
        server.listen,
        if server.tls.is_some() {
            "https"
        } else {
            "http"
        },
        server.max_body_bytes,
        server.workers,
    );
    match &config.aad {
        Some(aad) => {
            let _ = writeln!(
                out,
                "aad: audiences {:?}, {} discovery document(s)",
                aad.audiences,
                aad.discovery_urls.len()
            );
        }
        None => out.push_str("aad: off (Bearer callers get 401)\n"),
    }
    let _ = writeln!(out, "clusters ({}):", config.clusters.len());
    for cluster in &config.clusters {
        let _ = writeln!(
            out,
            "  {} {} auth={} timeout={}s enforce_request_properties={} restrict_statement={} max_concurrent={} queue_timeout={}ms",
            cluster.name,
            cluster.url,
            cluster.credential.kind_name(),
            cluster.timeout.as_secs(),
            cluster.enforce_request_properties,
            cluster.restrict_statement,
            cluster
                .max_concurrent
                .map_or("unlimited".to_string(), |n| n.to_string()),
            cluster.queue_timeout.as_millis(),
        );
    }
    match &config.limits.redis {
        None => out.push_str(
            "limits: local (each replica its own)
",
        ),
        Some(redis) => {
            let _ = writeln!(
                out,
                "limits: redis {} key_prefix {:?} timeout {}ms on_redis_failure={} replicas_hint={} lease {}s",
                redis.url,
                redis.key_prefix,
                redis.timeout.as_millis(),
                redis.on_failure.name(),
                redis.replicas_hint,
                redis.lease.as_secs()
            );
        }
    }
    match &config.admin {
        Some(admin) => {
            let _ = writeln!(out, "admin: {} (/metrics, /healthz, /readyz)", admin.listen);
        }
        None => out.push_str(
            "admin: off (no metrics)
",
        ),
    }
    match &config.audit {
        Some(audit) => {
            let sink = match &audit.sink {
                kqlgate::config::AuditSink::Stderr => "stderr".to_string(),
                kqlgate::config::AuditSink::File(path) => path.display().to_string(),
            };
            let _ = writeln!(
                out,
                "audit: {sink} (query text {})",
                if audit.include_query_text {
                    "included"
                } else {
                    "hashed"
                }
            );
        }
        None => out.push_str(
            "audit: off
",
        ),
    }
    let _ = writeln!(out, "tenants ({}):", config.tenants.len());
    for tenant in config.tenants.iter().take(SHOWN) {
        out.push_str("  ");
        out.push_str(&tenant_line(tenant));
        out.push('\n');
    }
    if config.tenants.len() > SHOWN {
        let _ = writeln!(out, "  … and {} more", config.tenants.len() - SHOWN);
    }
    out
}

/// One tenant: id, cluster and database, role, key count (never the hashes), aliases, limits.
pub fn tenant_line(tenant: &Tenant) -> String {
    let rate = tenant.rate.map_or("unlimited".to_string(), |r| {
        format!("{}/s burst {}", r.per_second, r.burst)
    });
    let concurrency = tenant
        .max_concurrent
        .map_or("unlimited".to_string(), |n| n.to_string());
    format!(
        "{} -> {}/{} role={} keys={} aliases={} rate={} concurrent={}",
        tenant.id,
        tenant.cluster,
        tenant.database,
        format!("{:?}", tenant.role).to_lowercase(),
        tenant.key_hashes.len(),
        tenant.database_names.len() - 1,
        rate,
        concurrency
    )
}
