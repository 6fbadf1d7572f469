//! The `mailbeacon` binary: caps malloc arenas, starts logging, parses the command
//! line and dispatches: `serve` (the default; `mailbeacon::serve`), `keys`
//! (`mailbeacon::keys_cmd`), `migrate` (`mailbeacon::migrate`) and `addin manifest`
//! (`mailbeacon::addin::manifest`). Everything that serves lives in the library,
//! so a test can start it in-process.

use std::process::ExitCode;

use clap::Parser as _;
use mailbeacon::config::{AddinAction, Cli, Command, Config};
use mailbeacon::{keys_cmd, migrate, serve};

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let config = match Config::resolve(&cli.opts) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!(
                "mailbeacon: the configuration has {} problem(s):",
                problems.len()
            );
            for p in problems {
                eprintln!("  - {p}");
            }
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_json);
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => runtime().and_then(|rt| rt.block_on(serve::serve(config))),
        Command::Keys { action } => {
            runtime().and_then(|rt| rt.block_on(keys_cmd::run(&config, action)))
        }
        Command::Migrate { from, to } => {
            runtime().and_then(|rt| rt.block_on(migrate::run(&config, from, to)))
        }
        Command::Addin { action } => addin(&config, action),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mailbeacon: {e}");
            ExitCode::FAILURE
        }
    }
}

/// glibc gives threads that allocate their own malloc arenas (up to 8 per core), and
/// each arena keeps what was freed in it. Under pixel or click load the runtime
/// thread, the blocking pool (group commits) and the indexer all allocate per event,
/// and resident memory grew to 65-75 MiB; with two arenas it stays near 40 MiB at
/// the same throughput (measured with `loadtest`; design target ≤ 64 MiB). Must run
/// before any thread starts. `MALLOC_ARENA_MAX` in the environment still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before any other
        // thread exists, so nothing allocates concurrently.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn addin(config: &Config, action: AddinAction) -> Result<(), String> {
    let AddinAction::Manifest { out, id } = action;
    let out = out.unwrap_or_else(|| "mailbeacon-addin".into());
    let files = mailbeacon::addin::manifest::write(&config.public_url, id.as_deref(), &out)?;
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}
