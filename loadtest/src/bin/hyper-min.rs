//! Copied from `../shared/bench/anchors/hyper-min/src/main.rs` (the anchors' "framework
//! ceiling"), unchanged but for this paragraph, so the load test can run the same bare
//! hyper server side by side with mailbeacon. Built with the workspace's release profile.
//!
//! Minimal hyper 1.x server: any GET -> 43-byte transparent GIF (HTTP/1.1, keep-alive).
//! No token check, no Redis, no logging: this is the "framework ceiling".
//!
//! usage: hyper-min <mode> <port> [threads]
//!   mode = current   one current_thread runtime (1 OS thread)
//!          multi     multi_thread runtime, <threads> workers (default 2), one listener
//!          reuseport <threads> OS threads, each with its own current_thread runtime and
//!                    its own SO_REUSEPORT listener (nginx-like worker model)
//! Binds 127.0.0.1 only.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};

static GIF: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

async fn pixel(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return Ok(r);
    }
    let mut r = Response::new(Full::new(Bytes::from_static(&GIF)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache, must-revalidate"),
    );
    Ok(r)
}

async fn serve(listener: TcpListener) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let io = TokioIo::new(stream);
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(io, service_fn(pixel))
                .await;
        });
    }
}

fn listener(addr: SocketAddr, reuseport: bool) -> TcpListener {
    let s = TcpSocket::new_v4().expect("socket");
    s.set_reuseaddr(true).expect("reuseaddr");
    if reuseport {
        s.set_reuseport(true).expect("reuseport");
    }
    s.bind(addr).expect("bind");
    s.listen(4096).expect("listen")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("current");
    let port: u16 = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(8090);
    let threads: usize = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(2);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    match mode {
        "current" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async { serve(listener(addr, false)).await });
        }
        "multi" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async { serve(listener(addr, false)).await });
        }
        "reuseport" => {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    std::thread::spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .unwrap();
                        rt.block_on(async { serve(listener(addr, true)).await });
                    })
                })
                .collect();
            for h in handles {
                let _ = h.join();
            }
        }
        other => {
            eprintln!("unknown mode {other}; use current|multi|reuseport");
            std::process::exit(2);
        }
    }
}
