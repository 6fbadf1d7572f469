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
//! by the API handlers.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::state::App;

/// How long shutdown waits for in-flight requests.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

pub async fn run(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(connection(stream, peer, app.clone(), stop_rx.clone(), done_tx.clone()));
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
    mut stop: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
) {
    let _ = stream.set_nodelay(true);
    let started = Instant::now();
    let last_request = Arc::new(AtomicU64::new(0));
    let idle = app.config.idle_timeout;
    let service = {
        let last_request = last_request.clone();
        let app = app.clone();
        service_fn(move |req| {
            last_request.store(started.elapsed().as_secs(), Ordering::Relaxed);
            crate::http::handle(app.clone(), peer, req)
        })
    };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(app.config.header_read_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
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
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep(idle / 2), if !closing => {
                let since = started.elapsed().as_secs() - last_request.load(Ordering::Relaxed);
                if since >= idle.as_secs() {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}
