//! Fuzz target `router`: the whole HTTP router (`http::handle`) in process,
//! against an `App` on a temporary embedded store, with an arbitrary method,
//! path, bearer token, content type and (usually JSON) body. No socket: each
//! request travels over an in-memory `tokio::io::duplex` pipe through hyper's
//! own HTTP/1 client and server, so the router gets the real
//! `Request<Incoming>` it gets in production.
//!
//! Input layout: byte 0 the method, byte 1 the credentials (none, an admin's
//! token, a user's token, a wrong token, another scheme), byte 2 the content
//! type, then the path up to the first newline, then the body.
//!
//! Invariant: bad input never gets a 5xx other than 503.
//!
//! The world (store, users, runtime) is rebuilt every [`FRESH_EVERY`]
//! executions: inputs create users, emails and contacts, and listing all of
//! them (`GET /api/v1/users` pages in memory) made every execution slower as
//! the store grew (1,800 → 335 executions/s within 20 minutes).
//!
//! Left out, because they reach out to the network by design: `PUT
//! /api/v1/mailbox` (connects to the IMAP server), `POST /api/v1/webhooks`
//! (resolves the URL's host) and the live stream `/api/v1/events` (never
//! ends).
#![no_main]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use mailbeacon::config::{Config, Opts};
use mailbeacon::model::{OrgSettings, Role, User};
use mailbeacon::recorder::Recorder;
use mailbeacon::state::App;
use mailbeacon::{auth, http, store};

const ADMIN_TOKEN: &str = "mb_fuzz_admin_token_0123456789abcdef";
const USER_TOKEN: &str = "mb_fuzz_user_token_0123456789abcdef";

/// Executions per world (see the module docs).
const FRESH_EVERY: u64 = 50_000;

struct World {
    /// Always `Some` until the world is dropped.
    rt: Option<tokio::runtime::Runtime>,
    app: Arc<App>,
    dir: std::path::PathBuf,
    runs: u64,
}

impl Drop for World {
    fn drop(&mut self) {
        // Not waiting for the store's blocking tasks to notice: the next world
        // has its own directory.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_millis(100));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

thread_local! {
    static WORLD: RefCell<Option<World>> = const { RefCell::new(None) };
}

/// Runs `f` in the current world, first replacing it if it is due.
fn with_world<T>(f: impl FnOnce(&World) -> T) -> T {
    WORLD.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|w| w.runs >= FRESH_EVERY) {
            // The old world goes first: its store and tasks stop with it.
            *slot = None;
            *slot = Some(new_world());
        }
        let w = slot.as_mut().expect("a world was just made");
        w.runs += 1;
        f(w)
    })
}

fn new_world() -> World {
    static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        // On tmpfs where there is one: the store's fsync per commit is then
        // cheap, and the fuzzer spends its time in the router, not the disk.
        let base = match std::path::Path::new("/dev/shm") {
            p if p.is_dir() => p.to_path_buf(),
            _ => std::env::temp_dir(),
        };
        let dir = base.join(format!(
            "mailbeacon-fuzz-router-{}-{generation}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary data directory");
        let config = Config::resolve(&Opts {
            data_dir: Some(dir.clone()),
            public_url: Some("https://track.example.com".into()),
            ..Opts::default()
        })
        .expect("a valid configuration");
        let app = rt.block_on(async {
            let opened = store::open(&config)
                .await
                .expect("the embedded store opens");
            let store = opened.store;
            for (id, email, role, token) in [
                (1, "admin@example.com", Role::Admin, ADMIN_TOKEN),
                (2, "user@example.com", Role::User, USER_TOKEN),
            ] {
                let user = User {
                    id,
                    email: email.into(),
                    role,
                    created_ms: 1_700_000_000_000,
                    disabled: false,
                };
                store
                    .create_user(user, auth::hash_token(token))
                    .await
                    .expect("the user is created");
            }
            let settings = OrgSettings {
                email_engagement: true,
                auto_capture: true,
                retention_days: config.default_retention_days,
            };
            store
                .put_settings(settings)
                .await
                .expect("settings are stored");
            let (recorder, _task) = Recorder::start(store.clone());
            Arc::new(App::new(
                config,
                store,
                recorder,
                None,
                opened.signing,
                settings,
            ))
        });
        World {
            rt: Some(rt),
            app,
            dir,
            runs: 0,
        }
    }
}

const METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "FUZZ",
];
const CONTENT_TYPES: [Option<&str>; 4] = [
    Some("application/json"),
    None,
    Some("text/plain"),
    Some("message/rfc822"),
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let method = Method::from_bytes(METHODS[data[0] as usize % METHODS.len()].as_bytes())
        .expect("a valid method");
    let auth = match data[1] % 5 {
        0 => None,
        1 => Some(format!("Bearer {ADMIN_TOKEN}")),
        2 => Some(format!("Bearer {USER_TOKEN}")),
        3 => Some("Bearer mb_wrong".to_string()),
        _ => Some("Basic YWRtaW46YWRtaW4=".to_string()),
    };
    let content_type = CONTENT_TYPES[data[2] as usize % CONTENT_TYPES.len()];
    let rest = &data[3..];
    let (path, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(path) = std::str::from_utf8(path) else {
        return;
    };
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let trimmed = path.split('?').next().unwrap_or("").trim_end_matches('/');
    if trimmed.starts_with("/api/v1/events")
        || (method == Method::PUT && trimmed == "/api/v1/mailbox")
        || (method == Method::POST && trimmed == "/api/v1/webhooks")
    {
        return;
    }
    let mut req = Request::builder()
        .method(method)
        .uri(&path)
        .header("host", "track.example.com");
    if let Some(a) = &auth {
        req = req.header("authorization", a);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let Ok(req) = req.body(Full::new(Bytes::copy_from_slice(body))) else {
        return; // not a valid URI: hyper's client would not send it
    };

    let status = with_world(|w| {
        let rt = w.rt.as_ref().expect("a live world has its runtime");
        rt.block_on(async {
            let (client_io, server_io) = tokio::io::duplex(64 * 1024);
            let app = w.app.clone();
            let peer: SocketAddr = "203.0.113.7:40000".parse().expect("an address");
            let server = tokio::spawn(async move {
                let svc = service_fn(move |req| http::handle(app.clone(), peer, req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(server_io), svc)
                    .await;
            });
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client_io))
                .await
                .expect("the in-memory handshake");
            let client = tokio::spawn(conn);
            let answer = tokio::time::timeout(Duration::from_secs(20), sender.send_request(req))
                .await
                .expect("the router answers within 20 s");
            drop(sender);
            let status = answer.map(|r| r.status());
            client.abort();
            let _ = server.await;
            status
        })
    });
    // A request hyper's own client sends can still be one the server refuses
    // (that is hyper's business, not the router's); any answer is checked.
    if let Ok(status) = status {
        assert!(
            status.as_u16() < 500 || status.as_u16() == 503,
            "the router answered {status} to bad input"
        );
    }
});
