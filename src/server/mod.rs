//! The accept loop, per-connection limits and graceful shutdown.
//!
//! Shutdown is a value passed in (as in mini-redis): when `shutdown` resolves, the
//! loop stops accepting, tells every connection to finish its in-flight request
//! and close, and waits for them (at most `DRAIN_LIMIT`). Each connection holds a
//! clone of `done_tx`; when the last one is dropped, `done_rx` reports that all
//! connections have ended.
//!
//! Limits: request headers must arrive within `header_read_timeout`; a keep-alive
//! connection with no new request for `idle_timeout` is closed; bodies are limited
//! by the API handlers (size, `body_read_timeout`, the shared byte budget). At
//! most `max_connections` connections are served at once: past it the loop
//! stops accepting until one ends, so further clients wait in the kernel's
//! listen backlog (and are refused by the kernel once it is full) instead of
//! costing memory here.
//!
//! A connection's socket is closed the way nginx's `lingering_close` does it
//! ([`linger`]), so an answer sent before the request body arrived reaches a
//! client that is still sending the body.
//!
//! [`serve_metrics`] serves `/metrics` alone on `metrics_listen`.

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::state::App;
use crate::tls::Tls;

mod linger;

/// How long shutdown waits for in-flight requests.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves. With `tls`, every connection is HTTPS
/// (HTTP/2 or HTTP/1.1 by ALPN); without, plain HTTP/1.1.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let slots = Arc::new(Semaphore::new(app.config.max_connections));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(s) => s,
                // Never closed: `slots` lives as long as this loop.
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let (app, tls, stop, done) = (app.clone(), tls.clone(), stop_rx.clone(), done_tx.clone());
                    tokio::spawn(async move {
                        connection(stream, peer, app, tls, stop, done).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    // E.g. too many open files: log, breathe, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = stop_tx.send(true);
    drop(done_tx);
    if tokio::time::timeout(DRAIN_LIMIT, done_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish in time; closing them");
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Arc<App>,
    tls: Option<Arc<Tls>>,
    stop: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
) {
    let _ = stream.set_nodelay(true);
    // Hyper gets the wrapper; the stream comes back through `back` once hyper
    // drops it, for a lingering close (see `linger`).
    let (stream, back) = linger::wrap(stream);
    let started = Instant::now();
    let last_request = Arc::new(AtomicU64::new(0));
    let service = {
        let last_request = last_request.clone();
        let app = app.clone();
        service_fn(move |req| {
            last_request.store(started.elapsed().as_secs(), Ordering::Relaxed);
            crate::http::handle(app.clone(), peer, req)
        })
    };
    let idle = Idle {
        started,
        last_request,
        limit: app.config.idle_timeout,
    };
    match tls {
        None => {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(app.config.header_read_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            drive(conn, |c| c.graceful_shutdown(), stop, idle, peer).await;
        }
        Some(tls) => {
            let stream =
                match tokio::time::timeout(HANDSHAKE_LIMIT, tls.acceptor().accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, %peer, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(app.config.header_read_timeout)
                .keep_alive(true);
            builder.http2().timer(TokioTimer::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            drive(conn, |c| c.graceful_shutdown(), stop, idle, peer).await;
        }
    }
    // Every path above has dropped the wrapper (and with it hyper's connection).
    if let Ok(stream) = back.await {
        linger::linger(stream).await;
    }
}

/// When the connection last started a request, and how long it may idle.
struct Idle {
    started: Instant,
    last_request: Arc<AtomicU64>,
    limit: Duration,
}

/// Runs a connection to its end, asking it to finish gracefully on shutdown or
/// after `idle.limit` without a new request.
async fn drive<F, E>(
    mut conn: Pin<&mut F>,
    graceful: impl Fn(Pin<&mut F>),
    mut stop: watch::Receiver<bool>,
    idle: Idle,
    peer: SocketAddr,
) where
    F: Future<Output = Result<(), E>>,
    E: Display,
{
    let mut closing = false;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                break;
            }
            _ = stop.changed(), if !closing => {
                graceful(conn.as_mut());
                closing = true;
            }
            _ = tokio::time::sleep(idle.limit / 2), if !closing => {
                let since = idle.started.elapsed().as_secs() - idle.last_request.load(Ordering::Relaxed);
                if since >= idle.limit.as_secs() {
                    graceful(conn.as_mut());
                    closing = true;
                }
            }
        }
    }
}

/// Serves `GET /metrics` (and nothing else) on `listener` until the task is
/// dropped: the operator's own address, kept off the public listener.
pub async fn serve_metrics(listener: TcpListener, app: Arc<App>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(crate::http::metrics_only(&app, &req)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
        });
    }
}
