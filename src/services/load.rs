//! How loaded the process is — client connections, requests in flight, resident memory — and
//! whether to shed new work: past `shed_at_percent` of any limit, new requests get 503 with
//! `Retry-After` instead of every request slowing down (Envoy's overload manager is the model),
//! and past `max_connections` new connections are closed at once.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::ServerSettings;

/// Connections kept free for the upstream pools, the log and the config file.
const RESERVED_FILES: u64 = 64;
/// How often resident memory is sampled.
const MEMORY_SAMPLE: Duration = Duration::from_millis(250);

pub struct Load {
    pub max_connections: usize,
    max_in_flight: usize,
    memory_limit: u64,
    shed_at_percent: u8,
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    resident: AtomicU64,
}

/// Why a request was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    Connections,
    InFlight,
    Memory,
}

impl Shed {
    pub fn name(self) -> &'static str {
        match self {
            Shed::Connections => "connections",
            Shed::InFlight => "in_flight",
            Shed::Memory => "memory",
        }
    }
}

impl Load {
    /// `open_files`: the process's open-file limit, from which `max_connections = 0` is derived
    /// (each client connection may need an upstream one too).
    pub fn new(settings: &ServerSettings, open_files: u64) -> Load {
        let derived = (open_files.saturating_sub(RESERVED_FILES) / 2).max(16) as usize;
        let memory_limit = match settings.memory_limit_bytes {
            0 => cgroup_memory_limit().unwrap_or(0),
            n => n,
        };
        Load {
            max_connections: match settings.max_connections {
                0 => derived,
                n => n,
            },
            max_in_flight: settings.max_in_flight,
            memory_limit,
            shed_at_percent: settings.shed_at_percent,
            connections: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            resident: AtomicU64::new(0),
        }
    }

    /// A new connection, or `None` when the budget is spent.
    pub fn connection(self: &Arc<Load>) -> Option<Counted> {
        self.connections
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max_connections).then_some(n + 1)
            })
            .ok()?;
        Some(Counted {
            load: self.clone(),
            counter: Counter::Connections,
        })
    }

    pub fn request(self: &Arc<Load>) -> Counted {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Counted {
            load: self.clone(),
            counter: Counter::InFlight,
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn resident_bytes(&self) -> u64 {
        self.resident.load(Ordering::Relaxed)
    }

    /// Which limit, if any, is near enough to shed a new request.
    pub fn shed(&self) -> Option<Shed> {
        let near = |used: u64, limit: u64| {
            limit > 0 && used * 100 >= limit * u64::from(self.shed_at_percent)
        };
        if near(self.connections() as u64, self.max_connections as u64) {
            Some(Shed::Connections)
        } else if near(self.in_flight() as u64, self.max_in_flight as u64) {
            Some(Shed::InFlight)
        } else if near(self.resident_bytes(), self.memory_limit) {
            Some(Shed::Memory)
        } else {
            None
        }
    }

    /// Samples resident memory in the background (only when there is a limit to compare with).
    pub fn watch_memory(self: &Arc<Load>) {
        if self.memory_limit == 0 {
            return;
        }
        let load = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(MEMORY_SAMPLE);
            loop {
                ticker.tick().await;
                let Some(load) = load.upgrade() else { return };
                if let Some(bytes) = resident_bytes() {
                    load.resident.store(bytes, Ordering::Relaxed);
                }
            }
        });
    }
}

enum Counter {
    Connections,
    InFlight,
}

/// One connection or request, uncounted when dropped.
pub struct Counted {
    load: Arc<Load>,
    counter: Counter,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let counter = match self.counter {
            Counter::Connections => &self.load.connections,
            Counter::InFlight => &self.load.in_flight,
        };
        counter.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Raises the open-file limit to its hard limit and returns the limit now in force.
pub fn raise_open_file_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        limit.rlim_cur
    }
}

/// The process's resident memory (`/proc/self/statm`, in pages).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// The memory limit of the cgroup the process runs in (v2, then v1), if it has one.
fn cgroup_memory_limit() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let limit = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))?;
    // "max", or v1's "no limit" (a number near 2^63).
    limit.trim().parse::<u64>().ok().filter(|&n| n < 1 << 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> ServerSettings {
        toml::from_str::<crate::config::server::ServerSection>(text)
            .unwrap()
            .validate()
            .unwrap()
    }

    #[test]
    fn connections_are_budgeted_and_derived_from_the_file_limit() {
        let load = Arc::new(Load::new(&settings(""), 1024));
        assert_eq!(load.max_connections, 480);
        let load = Arc::new(Load::new(&settings("max_connections = 2"), 1024));
        let first = load.connection().unwrap();
        let _second = load.connection().unwrap();
        assert!(load.connection().is_none());
        drop(first);
        assert!(load.connection().is_some());
    }

    #[test]
    fn load_is_shed_near_a_limit() {
        let load = Arc::new(Load::new(
            &settings("max_in_flight = 10\nshed_at_percent = 80\nmax_connections = 1000"),
            1 << 20,
        ));
        let held: Vec<_> = (0..7).map(|_| load.request()).collect();
        assert_eq!(load.shed(), None);
        let eighth = load.request();
        assert_eq!(load.shed(), Some(Shed::InFlight));
        drop((held, eighth));
        assert_eq!(load.shed(), None);
    }
}
