//! The state every request shares: the current [`Snapshot`] of the tenant table (swapped whole on
//! reload) and the long-lived services beside it — the authenticator, the tenants' limiter
//! state, the cluster identities.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::access_log::Sinks;
use crate::clock::Clock;
use crate::config::{
    AadSettings, AdminSettings, AuditSettings, AuthSettings, Config, LimitsSettings, ServerSettings,
};
use crate::services::audit::Audit;
use crate::services::auth::Authenticator;
use crate::services::identity::Identities;
use crate::services::limiter::Limiter;
use crate::services::load::Load;
use crate::services::metrics::Metrics;
use crate::services::shared::SharedLimits;
use crate::services::tenants::{Reuse, Snapshot};

pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    pub authenticator: Authenticator,
    pub limits: Limiter,
    /// Connections, requests in flight, memory: what load shedding looks at.
    pub load: Arc<Load>,
    pub metrics: Arc<Metrics>,
    audit: Option<Arc<Audit>>,
    identities: Mutex<Identities>,
    /// `[server]`, `[auth]` and `[aad]` as they were at start: what a reload cannot change.
    started: Started,
    /// Set on shutdown, so `/readyz` tells load balancers to stop sending traffic.
    pub draining: AtomicBool,
    /// The body of `GET /v1/rest/auth/metadata`, when AAD callers are configured.
    pub aad_metadata: Option<String>,
}

struct Started {
    server: ServerSettings,
    auth: AuthSettings,
    aad: Option<AadSettings>,
    limits: LimitsSettings,
    admin: Option<AdminSettings>,
    audit: Option<AuditSettings>,
}

/// What a reload changed, for its log line.
#[derive(Debug, Default)]
pub struct Reloaded {
    pub tenants: usize,
    pub added: usize,
    pub removed: usize,
    /// Keys whose new value waits for a restart.
    pub restart_needed: Vec<&'static str>,
}

impl Gateway {
    /// Must run inside the Tokio runtime: AAD identities start refreshing their tokens here.
    /// `open_files` is the process's open-file limit, which bounds its connections.
    pub fn new(
        config: Config,
        clock: Arc<dyn Clock>,
        open_files: u64,
        audit: Option<Audit>,
    ) -> anyhow::Result<Gateway> {
        let metrics = Arc::new(match config.admin {
            Some(_) => Metrics::new(),
            None => Metrics::unread(),
        });
        let shared = config
            .limits
            .redis
            .clone()
            .map(|redis| SharedLimits::start(redis, metrics.clone()))
            .transpose()?;
        let first_key = config.tenants.iter().find_map(|t| t.key_hashes.first());
        let authenticator = Authenticator::new(
            &config.auth,
            first_key,
            config.aad.as_ref(),
            clock.clone(),
            shared.clone(),
            metrics.clone(),
        )?;
        if shared.is_none() {
            metrics.limits_backend_started(); // the local backend always answers
        }
        let limits = Limiter::new(clock.clone(), shared, metrics.clone());
        let load = Arc::new(Load::new(&config.server, open_files));
        let mut identities = Identities::new(metrics.clone())?;
        let started = Started {
            server: config.server.clone(),
            auth: config.auth.clone(),
            aad: config.aad.clone(),
            limits: config.limits.clone(),
            admin: config.admin.clone(),
            audit: config.audit.clone(),
        };
        let aad_metadata = config.aad.as_ref().map(|aad| aad.metadata().to_string());
        let workers = config.server.workers;
        let snapshot = Snapshot::build(
            config,
            Reuse {
                previous: None,
                identities: &mut identities,
                limits: &limits,
                metrics: &metrics,
                workers,
            },
        )?;
        Ok(Gateway {
            snapshot: ArcSwap::from_pointee(snapshot),
            authenticator,
            limits,
            load,
            metrics,
            audit: audit.map(Arc::new),
            identities: Mutex::new(identities),
            started,
            draining: AtomicBool::new(false),
            aad_metadata,
        })
    }

    /// The table as it is now; a request keeps this one to its end.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Where requests' records go besides the access log.
    pub fn sinks(&self) -> Sinks {
        Sinks {
            metrics: self.metrics.clone(),
            audit: self.audit.clone(),
        }
    }

    /// `[server]` as it was at start.
    pub fn server(&self) -> &ServerSettings {
        &self.started.server
    }

    /// Swaps in the table of a new, validated `config`. Tenants keep their limiter state and
    /// their verified keys (unless a key was removed); clusters whose settings did not change
    /// keep their pools. Keys a running process cannot change keep their old values.
    pub fn reload(&self, mut config: Config) -> anyhow::Result<Reloaded> {
        let mut restart_needed = self.started.server.fixed_differences(&config.server);
        keep_fixed(&self.started.server, &mut config.server);
        if config.auth != self.started.auth {
            restart_needed.push("auth");
        }
        if config.aad != self.started.aad {
            restart_needed.push("aad");
        }
        if config.limits != self.started.limits {
            restart_needed.push("limits");
        }
        if config.admin != self.started.admin {
            restart_needed.push("admin");
        }
        if config.audit != self.started.audit {
            restart_needed.push("audit");
        }
        let previous = self.snapshot();
        let snapshot = {
            let mut identities = self.identities.lock().unwrap_or_else(|e| e.into_inner());
            let snapshot = Snapshot::build(
                config,
                Reuse {
                    previous: Some(&previous),
                    identities: &mut identities,
                    limits: &self.limits,
                    metrics: &self.metrics,
                    workers: self.started.server.workers,
                },
            )?;
            identities.forget_unused();
            snapshot
        };
        let added = snapshot
            .tenants()
            .filter(|t| previous.tenant(&t.config.id).is_none())
            .count();
        let removed_tenants: Vec<&str> = previous
            .tenants()
            .map(|t| t.config.id.as_str())
            .filter(|id| snapshot.tenant(id).is_none())
            .collect();
        let removed = removed_tenants.len();
        for id in removed_tenants {
            self.metrics.forget_tenant(id);
        }
        for cluster in previous.clusters() {
            if !snapshot
                .clusters()
                .any(|c| c.config.name == cluster.config.name)
            {
                self.metrics.forget_cluster(&cluster.config.name);
            }
        }
        let tenants = snapshot.tenants().count();
        let snapshot = Arc::new(snapshot);
        self.snapshot.store(snapshot.clone());
        self.limits.retain(
            |id| snapshot.tenant(id).is_some(),
            |name| snapshot.clusters().any(|c| c.config.name == name),
        );
        self.authenticator.forget_missing(&snapshot);
        Ok(Reloaded {
            tenants,
            added,
            removed,
            restart_needed,
        })
    }

    pub fn prune(&self) {
        self.authenticator.prune();
    }
}

/// The new `[server]` with the values a running process cannot change taken from `running`.
fn keep_fixed(running: &ServerSettings, new: &mut ServerSettings) {
    new.listen = running.listen;
    new.workers = running.workers;
    new.tls = running.tls.clone();
    new.max_connections = running.max_connections;
    new.pid_file = running.pid_file.clone();
    new.watch_config = running.watch_config;
    new.max_in_flight = running.max_in_flight;
    new.memory_limit_bytes = running.memory_limit_bytes;
    new.shed_at_percent = running.shed_at_percent;
    new.shutdown_grace = running.shutdown_grace;
}
