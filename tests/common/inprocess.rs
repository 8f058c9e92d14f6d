//! The server in-process (`kqlgate::run_on`) on a thread of its own, with a hand-driven clock
//! for the limiters and sign-in budgets, its config in a file it watches, and its log lines
//! captured — for tests of limits, budgets and reloads that should advance time, not sleep.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kqlgate::clock::ManualClock;

/// Log lines of every in-process server of this test binary (a subscriber is process-wide).
static LOG: OnceLock<Arc<Mutex<String>>> = OnceLock::new();

struct Capture(Arc<Mutex<String>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap()
            .push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> Arc<Mutex<String>> {
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Capture(sink.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        log
    })
    .clone()
}

pub struct Gate {
    pub addr: SocketAddr,
    pub clock: Arc<ManualClock>,
    pub path: PathBuf,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Gate {
    /// Starts a server on `config` (its `listen` is ignored: a free port is used).
    pub fn start(config: &str) -> Gate {
        capture_logs();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kqlgate.toml");
        std::fs::write(&path, config).unwrap();
        Gate::start_at(dir, path)
    }

    /// Starts a server on the config file `path`, inside `dir`.
    pub fn start_at(dir: tempfile::TempDir, path: PathBuf) -> Gate {
        capture_logs();
        let config = kqlgate::check_config(&path).expect("the test's config is valid");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let clock = Arc::new(ManualClock::default());
        let options = kqlgate::Options {
            config_path: Some(path.clone()),
            clock: clock.clone(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime
                .block_on(kqlgate::run_on(listener, config, options, async {
                    let _ = stopped.await;
                }))
                .unwrap();
        });
        let gate = Gate {
            addr,
            clock,
            path,
            dir,
            stop: Some(stop),
            thread: Some(thread),
        };
        // Serving, and watching its config, once it says it listens.
        let listening = format!("\"address\":\"{addr}\"");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !gate
            .log()
            .lines()
            .any(|l| l.contains("kqlgate listening") && l.contains(&listening))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        gate
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Replaces the config file in one step, as an editor or `kqlgate tenant` does.
    pub fn write_config(&self, text: &str) {
        let temporary = self.dir.path().join(".next.toml");
        std::fs::write(&temporary, text).unwrap();
        std::fs::rename(&temporary, &self.path).unwrap();
    }

    /// Everything in-process servers logged so far.
    pub fn log(&self) -> String {
        capture_logs().lock().unwrap().clone()
    }

    /// Log lines about this server's config file that contain `needle`.
    pub fn config_lines(&self, needle: &str) -> usize {
        let file = self.path.display().to_string();
        self.log()
            .lines()
            .filter(|line| line.contains(&file) && line.contains(needle))
            .count()
    }

    /// Waits (up to `limit`) until `count` log lines about this server's config hold `needle`.
    pub fn wait_for_config_lines(&self, needle: &str, count: usize, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if self.config_lines(needle) >= count {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
