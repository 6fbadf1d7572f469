//! The `mailbeacon` binary: parses the command line, then serves or manages keys.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser as _;
use mailbeacon::config::{AddinAction, Cli, Command, Config, KeysAction};
use mailbeacon::deliver::Mailer;
use mailbeacon::ids::{now_ms, random_id};
use mailbeacon::recorder::Recorder;
use mailbeacon::state::App;
use mailbeacon::store::{embedded::Embedded, OrgSettings, Role, Store, User};
use mailbeacon::{auth, keyring, server};

fn main() -> ExitCode {
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

fn addin(config: &Config, action: AddinAction) -> Result<(), String> {
    let AddinAction::Manifest { out, id } = action;
    let out = out.unwrap_or_else(|| "mailbeacon-addin".into());
    let files = mailbeacon::addin_manifest::write(&config.public_url, id.as_deref(), &out)?;
    for f in files {
        println!("{}", f.display());
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
    let store = Store::Embedded(embedded);
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
        "mailbeacon is serving"
    );
    let app = Arc::new(App::new(
        config,
        store.clone(),
        recorder,
        mailer,
        keys,
        settings,
    ));
    let background = [
        tokio::spawn(sweeper(app.clone())),
        tokio::spawn(key_reloader(app.clone())),
    ];
    server::run(listener, app.clone(), shutdown_signal()).await;
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
        match app.store.sweep(now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(emails = n, "retention removed expired emails"),
            Err(e) => tracing::error!(error = %e, "retention sweep failed"),
        }
    }
}

async fn key_reloader(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        app.reload_keys_if_changed();
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
