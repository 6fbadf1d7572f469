//! The `mailbeacon` binary: parses the command line, then serves or manages keys.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser as _;
use mailbeacon::config::{Cli, Command, Config, KeysAction};
use mailbeacon::deliver::Mailer;
use mailbeacon::ids::{now_ms, random_id};
use mailbeacon::recorder::Recorder;
use mailbeacon::state::App;
use mailbeacon::store::{embedded::Embedded, AuditEntry, Backend, OrgSettings, Role, Store, User};
use mailbeacon::tls::Tls;
use mailbeacon::{auth, keyring, server};

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
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))
            .and_then(|rt| rt.block_on(serve(config))),
        Command::Keys { action } => keys(&config, action),
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

fn keys(config: &Config, action: KeysAction) -> Result<(), String> {
    let dir = &config.data_dir;
    if !keyring::path(dir).exists() {
        return Err(format!(
            "no key ring in {} (start the server once to create it)",
            dir.display()
        ));
    }
    match action {
        KeysAction::Rotate => {
            let id = keyring::rotate(dir)?;
            println!("signing key {id} is now current; older keys keep verifying");
        }
        KeysAction::List => {
            for k in keyring::list(dir)? {
                let mark = if k.current { " (current)" } else { "" };
                println!("{}\t{}{}", k.id, k.created, mark);
            }
        }
    }
    Ok(())
}

async fn serve(config: Config) -> Result<(), String> {
    if config.redis_url.is_some() || !config.redis_cluster.is_empty() {
        return Err(
            "the Redis backend is not part of this build yet; unset MAILBEACON_REDIS_URL / MAILBEACON_REDIS_CLUSTER to use the embedded store"
                .into(),
        );
    }
    let (keys, created) = keyring::load_or_create(&config.data_dir)?;
    if created {
        tracing::info!(dir = %config.data_dir.display(), "created a new signing key ring");
    }
    let embedded = Embedded::open(&config.data_dir).map_err(|e| e.to_string())?;
    let store = Store::new(Backend::Embedded(embedded), keys.sealer);
    bootstrap_admin(&config, &store).await?;
    let settings = match store.settings().await.map_err(|e| e.to_string())? {
        Some(s) => s,
        None => {
            let s = OrgSettings {
                email_engagement: true,
                auto_capture: true,
                retention_days: config.default_retention_days,
            };
            store.put_settings(s).await.map_err(|e| e.to_string())?;
            s
        }
    };
    let mailer = match &config.smtp_url {
        Some(u) => Some(Mailer::from_url(u)?),
        None => None,
    };
    let tls = match &config.tls {
        Some((cert, key)) => Some(Arc::new(Tls::new(cert, key)?)),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let (recorder, recorder_task) = Recorder::start(store.clone());
    tracing::info!(
        listen = %config.listen,
        store = store.kind(),
        data_dir = %config.data_dir.display(),
        public_url = %config.public_url,
        smtp = config.smtp_url.is_some(),
        tls = tls.is_some(),
        "mailbeacon is serving"
    );
    let app = Arc::new(App::new(
        config,
        store.clone(),
        recorder,
        mailer,
        keys.signing,
        settings,
    ));
    let background = [
        tokio::spawn(sweeper(app.clone())),
        tokio::spawn(reloader(app.clone(), tls.clone())),
    ];
    server::run(listener, app.clone(), tls, shutdown_signal()).await;
    for task in background {
        task.abort();
    }
    drop(app);
    // The recorder ends once every handle is gone; every answered event is
    // already committed, so waiting is only for a batch in flight.
    let _ = tokio::time::timeout(Duration::from_secs(5), recorder_task).await;
    store.close().await.map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

/// On an empty deployment without `MAILBEACON_ADMIN_TOKEN`, creates an admin and
/// prints its token once.
async fn bootstrap_admin(config: &Config, store: &Store) -> Result<(), String> {
    if config.admin_token.is_some() || store.user_count().await.map_err(|e| e.to_string())? > 0 {
        return Ok(());
    }
    let token = auth::new_token();
    let admin = User {
        id: random_id(),
        email: "admin".into(),
        role: Role::Admin,
        created_ms: now_ms(),
    };
    store
        .create_user(admin, auth::hash_token(&token))
        .await
        .map_err(|e| e.to_string())?;
    println!("MAILBEACON_ADMIN_TOKEN={token}");
    eprintln!(
        "mailbeacon: created the first admin. Its bearer token is printed above, once; keep it safe."
    );
    Ok(())
}

async fn sweeper(app: Arc<App>) {
    let mut tick = tokio::time::interval(app.config.sweep_interval);
    loop {
        tick.tick().await;
        let now = now_ms();
        let retention_ms = u64::from(app.settings().retention_days) * 86_400_000;
        match app.store.sweep(now, now.saturating_sub(retention_ms)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(emails = n, "retention removed expired emails"),
            Err(e) => tracing::error!(error = %e, "retention sweep failed"),
        }
    }
}

/// Picks up a rotated key ring and a renewed TLS certificate: every 2 s if the
/// files changed, and at once on SIGHUP.
async fn reloader(app: Arc<App>, tls: Option<Arc<Tls>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let forced = match hup.as_mut() {
            Some(h) => tokio::select! {
                _ = tick.tick() => false,
                _ = h.recv() => true,
            },
            None => {
                tick.tick().await;
                false
            }
        };
        #[cfg(not(unix))]
        let forced = {
            tick.tick().await;
            false
        };
        if let Some(t) = &tls {
            t.reload_if_changed(forced);
        }
        if app.reload_keys_if_changed() {
            let entry = AuditEntry {
                seq: 0,
                at_ms: now_ms(),
                actor: u64::MAX,
                action: "keys.rotate".into(),
                subject: None,
                detail: format!("current signing key {}", app.keys().current_id()),
            };
            if let Err(e) = app.store.audit(entry).await {
                tracing::error!(error = %e, "could not write the audit log");
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
