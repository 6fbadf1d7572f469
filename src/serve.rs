//! Serving: everything `mailbeacon serve` does between a resolved `Config` and
//! the end of the process. Opens the store (embedded, or Redis when
//! `MAILBEACON_REDIS_URL` / `MAILBEACON_REDIS_CLUSTER` is set, with the key ring
//! shared there), creates the first admin on an empty deployment, builds the
//! `App`, starts the background tasks (retention sweeper; key-ring and TLS
//! certificate reloader; settings refresher; the outbox and reminder workers),
//! serves until the shutdown future completes, lets the workers finish the
//! copies in hand, then drains the recorder and closes the store.
//!
//! `serve` stops on SIGINT or SIGTERM; `serve_until` and `serve_on` take their own
//! shutdown future (and `serve_on` an already bound listener), so a test can run
//! a whole server in-process, as `server::run(listener, …, shutdown)` does for
//! one accept loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::deliver::Mailer;
use crate::ids::{now_ms, random_id};
use crate::keyring;
use crate::model::{AuditEntry, OrgSettings, Role, User};
use crate::recorder::Recorder;
use crate::state::App;
use crate::store::{self, Opened, Store};
use crate::tls::Tls;
use crate::{auth, server};

/// Serves `config.listen` until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> Result<(), String> {
    serve_until(config, shutdown_signal()).await
}

/// Serves `config.listen` until `shutdown` completes. The address is bound once
/// the store is open, as `serve` does.
pub async fn serve_until(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    run(config, None, shutdown).await
}

/// Serves on `listener` (already bound, e.g. to port 0 by a test that then reads
/// its address) until `shutdown` completes; `config.listen` is not used.
pub async fn serve_on(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    run(config, Some(listener), shutdown).await
}

async fn run(
    config: Config,
    listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let Opened {
        store,
        signing,
        shared_ring,
    } = store::open(&config).await?;
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
    let listener = match listener {
        Some(l) => l,
        None => TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?,
    };
    let realtime = crate::realtime::start(store.clone(), &config, config.sse_heartbeat);
    let (recorder, recorder_task) =
        Recorder::start_with(store.clone(), Some(realtime.hits.clone()));
    tracing::info!(
        listen = %listener.local_addr().unwrap_or(config.listen),
        store = store.kind(),
        data_dir = %config.data_dir.display(),
        public_url = %config.public_url,
        smtp = config.smtp_url.is_some(),
        tls = tls.is_some(),
        "mailbeacon is serving"
    );
    let mut app = App::new(config, store.clone(), recorder, mailer, signing, settings);
    app.realtime = realtime.emitter.clone();
    let app = Arc::new(app);
    let mut background = vec![
        tokio::spawn(sweeper(app.clone())),
        tokio::spawn(reloader(app.clone(), tls.clone(), shared_ring)),
        tokio::spawn(settings_refresher(app.clone(), settings)),
        tokio::spawn(crate::replies::supervise(app.clone())),
    ];
    if let Some(addr) = app.config.metrics_listen {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (metrics_listen): {e}"))?;
        background.push(tokio::spawn(server::serve_metrics(l, app.clone())));
    }
    if let Some(feed) = app.news.clone() {
        // Outside insights: read the news feed now and every `insights_feed_secs`.
        background.push(tokio::spawn(feed.run(std::future::pending())));
    }
    // The outbox and reminder workers: told to stop after the server stops,
    // they finish the copies in hand (SMTP commands time out after 30 s).
    let (stop_workers, workers_stop) = tokio::sync::watch::channel(false);
    let workers = crate::outbox::start(app.clone(), workers_stop);
    // Live streams end as shutdown begins, so connections can drain.
    let stop_realtime = realtime.stop_signal();
    let shutdown = async move {
        shutdown.await;
        let _ = stop_realtime.send(true);
    };
    server::run(listener, app.clone(), tls, shutdown).await;
    let _ = stop_workers.send(true);
    for w in workers {
        if tokio::time::timeout(Duration::from_secs(45), w)
            .await
            .is_err()
        {
            tracing::warn!("an outbox worker did not finish in time; its copies are sent again after their lease");
        }
    }
    for task in background {
        task.abort();
    }
    drop(app);
    // The recorder ends once every handle is gone; every answered event is
    // already committed, so waiting is only for a batch in flight.
    let _ = tokio::time::timeout(Duration::from_secs(5), recorder_task).await;
    realtime.finish().await;
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
        disabled: false,
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

/// Picks up a rotated key ring (from the data directory's file, or from Redis
/// when the ring is shared there) and a renewed TLS certificate: every 2 s, and
/// at once on SIGHUP. A rotation is written to the audit log.
async fn reloader(app: Arc<App>, tls: Option<Arc<Tls>>, mut shared: Option<String>) {
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
        let rotated = match shared.as_mut() {
            None => app.reload_keys_if_changed(),
            Some(last) => reload_shared_keys(&app, last).await,
        };
        if rotated {
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

/// With Redis: picks up a key rotation made by any process. Returns true if and
/// only if a new ring is now in use.
async fn reload_shared_keys(app: &App, last: &mut String) -> bool {
    if !app.store.shares_keyring() {
        return false;
    }
    match app.store.keyring().await {
        Ok(Some(json)) if json != *last => match keyring::from_json(&json) {
            Ok(keys) => {
                tracing::info!(current_key = keys.signing.current_id(), "key ring reloaded");
                app.set_keys(keys);
                *last = json;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "the shared key ring cannot be loaded; keeping the old one");
                false
            }
        },
        Ok(_) => false,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the shared key ring");
            false
        }
    }
}

/// Settings are cached in memory for the hot path; another process (sharing the
/// store) may change them. Every 2 s, a stored value that changed since the last
/// look replaces the cache.
async fn settings_refresher(app: Arc<App>, mut last: OrgSettings) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        match app.store.settings().await {
            Ok(Some(s)) if s != last => {
                last = s;
                if s != app.settings() {
                    tracing::info!(?s, "organization settings changed elsewhere; applied");
                    app.set_settings(s);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "cannot refresh the settings"),
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::config::Opts;

    /// A whole server, started in-process on a port of its own, answers and
    /// stops when told to, leaving a key ring behind in its data directory.
    #[tokio::test]
    async fn serves_in_process_until_told_to_stop() {
        let dir = std::env::temp_dir().join(format!("mb-serve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = Config::resolve(&Opts {
            data_dir: Some(dir.clone()),
            ..Opts::default()
        })
        .expect("valid configuration");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = serve_on(config, listener, async {
            let _ = stopped.await;
        });
        let client = async {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = String::new();
            c.read_to_string(&mut answer).await.unwrap();
            let _ = stop.send(());
            answer
        };
        let (served, answer) = tokio::join!(server, client);
        assert_eq!(served, Ok(()));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("\"ok\""), "{answer}");
        assert!(keyring::path(&dir).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
