//! The `kqlgate` command: argument parsing, logging set-up and exit codes. The work is in the
//! library (`kqlgate::run`).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kqlgate::config::Config;

mod cli;
use cli::{summary, tenant};

// Per-request work is allocation-heavy (headers, JSON, tokens); mimalloc's thread-local free
// lists cost about half of glibc malloc's time here (see benches/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "kqlgate",
    version,
    about = "A streaming, multi-tenant query proxy for Azure Data Explorer (Kusto)"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve requests (the default).
    Serve(ServeArgs),
    /// Validate a config file, print a summary; exit 2 if it is invalid.
    Check(ConfigArg),
    /// Make or hash API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Tell the running kqlgate to reload its config (SIGHUP to the process in `pid_file`).
    Reload(ConfigArg),
    /// Add, re-key, revoke and remove tenants in the config file (the running process reloads).
    Tenant(TenantArgs),
}

#[derive(Args)]
struct TenantArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[command(subcommand)]
    command: TenantCommand,
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Add a tenant with a new key; prints the key once, and the grant to run on the cluster.
    Add {
        id: String,
        /// The tenant's database GUID.
        #[arg(long)]
        database: String,
        /// Its `[clusters.NAME]` (default: the only one).
        #[arg(long)]
        cluster: Option<String>,
        /// Another name clients may send in `db`; may be repeated.
        #[arg(long = "alias")]
        aliases: Vec<String>,
        #[arg(long, value_enum, default_value_t = RoleArg::Viewer)]
        role: RoleArg,
    },
    /// Add a key to a tenant (prints it once); the old ones keep working until revoked.
    RotateKey { id: String },
    /// Remove keys of a tenant.
    RevokeKey {
        id: String,
        /// Every key but the newest.
        #[arg(
            long,
            conflicts_with = "hash_prefix",
            required_unless_present = "hash_prefix"
        )]
        older_than_newest: bool,
        /// The key whose hash (as in `key_hashes`, or its fingerprint in the audit log) starts so.
        #[arg(long)]
        hash_prefix: Option<String>,
    },
    /// Remove a tenant.
    Remove { id: String },
    /// List the tenants: ids, databases, limits, key counts (never hashes).
    List,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Viewer,
    Admin,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Print a new random API key (line 1) and its argon2id PHC hash (line 2).
    New,
    /// Read one key from stdin and print its argon2id PHC hash.
    Hash,
}

#[derive(Args)]
struct ConfigArg {
    /// Config file [default: $KQLGATE_CONFIG, then config/kqlgate.toml]
    #[arg(
        long,
        global = true,
        env = "KQLGATE_CONFIG",
        default_value = "config/kqlgate.toml",
        hide_env_values = true
    )]
    config: PathBuf,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

/// Lines waiting for the writer thread before a request that logs waits for room. The queue's
/// slots are allocated up front: tracing-appender's default of 128,000 kept ~1.4 MiB resident.
const LOG_QUEUE_LINES: usize = 8 * 1024;
/// The log writer's buffer; a batch larger than this is written in several pieces.
const LOG_BUFFER_BYTES: usize = 64 * 1024;

/// Exit code for an invalid config, shared by `check` and `serve`.
const EXIT_INVALID_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve(cli.serve));
    if !matches!(command, Command::Serve(_)) {
        // A one-shot command piped into `head` ends quietly, as Unix tools do, instead of
        // panicking on the closed pipe (Rust ignores SIGPIPE; `serve` must, for its sockets).
        // SAFETY: restores the default action of one signal before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match command {
        Command::Serve(args) => serve(args),
        Command::Check(args) => check(&args),
        Command::Key(KeyCommand::New) => key_new(),
        Command::Key(KeyCommand::Hash) => key_hash(),
        Command::Reload(args) => reload(&args),
        Command::Tenant(args) => tenant_command(args),
    }
}

fn load(args: &ConfigArg) -> Result<Config, ExitCode> {
    kqlgate::check_config(&args.config).map_err(|error| {
        eprintln!("kqlgate: invalid config {}: {error}", args.config.display());
        ExitCode::from(EXIT_INVALID_CONFIG)
    })
}

fn check(args: &ConfigArg) -> ExitCode {
    match load(args) {
        Ok(config) => {
            print!(
                "{} is valid\n{}",
                args.config.display(),
                summary::summary(&config)
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    // Held until the end of `serve`, so every buffered log line is written before exit.
    let _log_writer = init_logging(args.log_format);
    let config = match load(&args.config) {
        Ok(config) => config,
        Err(code) => return code,
    };
    release_freed_memory();
    let _pid_file = match config
        .server
        .pid_file
        .clone()
        .map(PidFile::write)
        .transpose()
    {
        Ok(pid_file) => pid_file,
        Err(error) => {
            eprintln!("kqlgate: {error}");
            return ExitCode::FAILURE;
        }
    };
    let options = kqlgate::Options {
        config_path: Some(args.config.config.clone()),
        ..Default::default()
    };
    // This thread becomes worker 0; server.rs starts the others, each with a runtime like this.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kqlgate: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(kqlgate::run(config, options, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// mimalloc's `arena_eager_commit` (`mi_option_arena_eager_commit` in mimalloc.h; the Rust
/// bindings do not name it). On by default on Linux, it leaves ~10 MiB of arena memory resident
/// in an idle proxy and lets streaming raise the peak by a few MiB more; off, pages are committed
/// as they are used: peak RSS after a 1 GiB answer 29–35 → 20 MiB, for 6–11 % more CPU per small
/// request (benches/ANALYSIS.md). `MIMALLOC_ARENA_EAGER_COMMIT=1` in the environment restores it.
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// The default must be set before mimalloc initialises (in an ELF constructor, before `main` and
/// before the first allocation reserves an arena); `.preinit_array` functions run before every
/// constructor.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".preinit_array"]
static SET_ALLOCATOR_DEFAULTS: extern "C" fn() = set_allocator_defaults;

#[cfg(target_os = "linux")]
extern "C" fn set_allocator_defaults() {
    // SAFETY: writes the default of one of mimalloc's options (a static table, no allocation);
    // mimalloc reads its options, environment included, when it initialises after this.
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

/// Parsing a large config (10,000 tenants) allocates several times what the loaded config
/// keeps; mimalloc would hold the freed pages until the next allocation burst. Give them back now.
fn release_freed_memory() {
    // SAFETY: mi_collect only walks mimalloc's own heaps; any thread may call it at any time.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Log lines are written by a background thread, so a slow stderr never stalls a request; the
/// queue blocks rather than drops when full, so no line is lost.
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The HTTP and TLS crates may print connection details at debug level; they stay at info
    // whatever RUST_LOG says, so no header (and so no credential) can reach the log.
    for directive in [
        "hyper=info",
        "hyper_util=info",
        "h2=info",
        "reqwest=info",
        "hyper_rustls=info",
        "rustls=info",
    ] {
        filter = filter.add_directive(directive.parse().expect("static directive"));
    }
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        // Buffered: the writer thread flushes after each batch it takes off the queue, so under
        // load many lines go out in one write(2) instead of one each.
        .finish(std::io::BufWriter::with_capacity(
            LOG_BUFFER_BYTES,
            std::io::stderr(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    guard
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop kqlgate with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
    }
}

/// The pid file `serve` writes, removed when it exits.
struct PidFile(PathBuf);

impl PidFile {
    fn write(path: PathBuf) -> Result<PidFile, String> {
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .map_err(|e| format!("cannot write the pid file {}: {e}", path.display()))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn reload(args: &ConfigArg) -> ExitCode {
    let config = match load(args) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let Some(pid_file) = &config.server.pid_file else {
        eprintln!(
            "kqlgate: {} names no [server] pid_file; send SIGHUP to the kqlgate process \
             yourself (kill -HUP <pid>), or rely on watch_config (on by default)",
            args.config.display()
        );
        return ExitCode::FAILURE;
    };
    match cli::send_hangup(pid_file) {
        Ok(pid) => {
            println!(
                "sent SIGHUP to kqlgate (pid {pid}): it reloads {}",
                args.config.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("kqlgate: {error}");
            ExitCode::FAILURE
        }
    }
}

fn tenant_command(args: TenantArgs) -> ExitCode {
    let path = &args.config.config;
    let outcome = match args.command {
        TenantCommand::List => tenant::list(path),
        TenantCommand::Add {
            id,
            database,
            cluster,
            aliases,
            role,
        } => tenant::apply(
            path,
            tenant::Change::Add {
                id,
                database,
                cluster,
                aliases,
                admin: matches!(role, RoleArg::Admin),
            },
        ),
        TenantCommand::RotateKey { id } => tenant::apply(path, tenant::Change::RotateKey { id }),
        TenantCommand::RevokeKey {
            id,
            older_than_newest,
            hash_prefix,
        } => tenant::apply(
            path,
            tenant::Change::RevokeKey {
                id,
                which: match (older_than_newest, hash_prefix) {
                    (_, Some(prefix)) => tenant::Revoke::HashPrefix(prefix),
                    _ => tenant::Revoke::OlderThanNewest,
                },
            },
        ),
        TenantCommand::Remove { id } => tenant::apply(path, tenant::Change::Remove { id }),
    };
    match outcome {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("kqlgate: {error}");
            ExitCode::from(EXIT_INVALID_CONFIG)
        }
    }
}

fn key_new() -> ExitCode {
    let key = kqlgate::keys::new_key();
    print_hash_of(&key, Some(&key))
}

fn key_hash() -> ExitCode {
    let mut line = String::new();
    if let Err(error) = std::io::stdin().lock().read_line(&mut line) {
        eprintln!("kqlgate: cannot read the key from stdin: {error}");
        return ExitCode::FAILURE;
    }
    let key = line.trim_end_matches(['\n', '\r']);
    if key.is_empty() {
        eprintln!("kqlgate: no key on stdin");
        return ExitCode::FAILURE;
    }
    print_hash_of(key, None)
}

fn print_hash_of(key: &str, print_key_first: Option<&str>) -> ExitCode {
    let hash = match kqlgate::keys::hash_key(key) {
        Ok(hash) => hash,
        Err(error) => {
            eprintln!("kqlgate: cannot hash the key: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let written = match print_key_first {
        Some(key) => writeln!(out, "{key}\n{hash}"),
        None => writeln!(out, "{hash}"),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
