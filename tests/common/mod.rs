//! Test harness: starts the real `kqlgate` binary on a config written for the test, reads its
//! JSON log from stderr, and stops it on drop.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod fake_aad;
pub mod inprocess;
pub mod redis;
pub mod upstream;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use base64::Engine;

pub const CONTOSO_DB: &str = "11111111-1111-1111-1111-111111111111";
pub const FABRIKAM_DB: &str = "22222222-2222-2222-2222-222222222222";

/// Serves `answer` on `listener` (HTTP/1.1 and HTTP/2), one task per connection, until the
/// test ends. Shared by the purpose-built upstream and AAD.
pub fn serve<S, F, B>(
    listener: tokio::net::TcpListener,
    state: S,
    answer: F,
    on_accept: impl Fn(&S) + Send + 'static,
) where
    S: Clone + Send + Sync + 'static,
    F: Fn(
            S,
            http::Request<hyper::body::Incoming>,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = http::Response<B>> + Send>>
        + Copy
        + Send
        + Sync
        + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            on_accept(&state);
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let state = state.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(state, request).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kqlgate"))
}

/// A tenant for a test config. Keys are hashed with the library's own `hash_key`.
pub struct TenantSpec {
    pub id: &'static str,
    pub key: &'static str,
    pub database: &'static str,
    pub extra: &'static str,
}

impl TenantSpec {
    pub fn new(id: &'static str, key: &'static str, database: &'static str) -> TenantSpec {
        TenantSpec {
            id,
            key,
            database,
            extra: "",
        }
    }

    pub fn with(mut self, extra: &'static str) -> TenantSpec {
        self.extra = extra;
        self
    }

    pub fn basic(&self) -> String {
        basic(self.id, self.key)
    }
}

pub fn basic(user: &str, key: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{key}"));
    format!("Basic {encoded}")
}

pub fn config(
    cluster_url: &str,
    cluster_extra: &str,
    top_extra: &str,
    tenants: &[TenantSpec],
) -> String {
    let mut text = format!(
        "{top_extra}\n[server]\nlisten = \"127.0.0.1:0\"\n\n[clusters.main]\nurl = \"{cluster_url}\"\n{cluster_extra}\n"
    );
    for tenant in tenants {
        let hash = kqlgate::keys::hash_key(tenant.key).unwrap();
        text.push_str(&format!(
            "\n[[tenants]]\nid = \"{}\"\nkey_hashes = [\"{hash}\"]\ncluster = \"main\"\ndatabase = \"{}\"\n{}\n",
            tenant.id, tenant.database, tenant.extra
        ));
    }
    text
}

pub struct Kqlgate {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Kqlgate {
    pub fn start(config: &str) -> Kqlgate {
        Kqlgate::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Kqlgate {
        Kqlgate::start_with(config, env, None)
    }

    /// Starts the binary with the open-file limit (soft and hard) set to `open_files`.
    pub fn start_with_file_limit(config: &str, open_files: u64) -> Kqlgate {
        Kqlgate::start_with(config, &[], Some(open_files))
    }

    fn start_with(config: &str, env: &[(&str, &str)], open_files: Option<u64>) -> Kqlgate {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kqlgate.toml");
        std::fs::write(&path, config).unwrap();
        let mut command = Command::new(binary());
        command
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&path)
            .env_remove("KQLGATE_CONFIG")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        if let Some(limit) = open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
            unsafe {
                command.pre_exec(move || {
                    let rlimit = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().expect("kqlgate binary starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Logged before the address is handed over, so `log()` after `start` has the line.
                {
                    let mut log = sink.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
                    if event["message"] == "kqlgate listening" {
                        let _ = address_tx.send(event["address"].as_str().unwrap().to_owned());
                    }
                }
            }
        });
        let address = match address_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                panic!("kqlgate did not start; its log:\n{}", log.lock().unwrap());
            }
        };
        Kqlgate {
            child,
            addr: address.parse().unwrap(),
            log,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The log once it holds `needle`, or as it is after `limit` (lines reach it from a reader
    /// thread, which may still be catching up after the process has exited).
    pub fn log_when_it_has(&self, needle: &str, limit: Duration) -> String {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let log = self.log();
            if log.contains(needle) || std::time::Instant::now() >= deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The access-log events once `ready` holds for them, or as they are after `limit` (the log
    /// is written by a background thread, so a line may come a moment after its answer).
    pub fn access_events_when(
        &self,
        ready: impl Fn(&[serde_json::Value]) -> bool,
        limit: Duration,
    ) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let events = self.access_events();
            if ready(&events) || std::time::Instant::now() >= deadline {
                return events;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The access-log events written so far.
    pub fn access_events(&self) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|event| event["target"] == "kqlgate::access")
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time the process has used so far (user + system).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // The fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf reads a constant of the system.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / per_second)
    }

    /// Peak resident memory of the process so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Kqlgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that sends exactly what the test says: no automatic decompression, no retries.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// POSTs `body` to /v1/rest/query with the tenant's Basic credentials.
pub async fn query(gate: &Kqlgate, tenant: &TenantSpec, body: &str) -> reqwest::Response {
    client()
        .post(gate.url("/v1/rest/query"))
        .header("authorization", tenant.basic())
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

pub async fn error_body(response: reqwest::Response) -> serde_json::Value {
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"]["code"].is_string(),
        "not a Kusto envelope: {body}"
    );
    body
}
