//! A small HTTP/1.1 client for requests made on a user's behalf (webhooks,
//! feeds), on top of [`super::connect`]: the target must pass the
//! [`OutboundPolicy`], https uses rustls with the webpki roots and SNI,
//! redirects are never followed (a 3xx is just a status), the response body is
//! cut at a size limit, and every failure is an [`OutboundError`] whose text
//! echoes nothing the peer sent.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;

use super::{connect, unbracket, OutboundError, OutboundPolicy};

/// Time and size limits of one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Resolving and connecting (a timeout here is `OutboundError::Connect`).
    pub connect_timeout: Duration,
    /// The whole request: connect, TLS, sending, the response head and body.
    pub total_timeout: Duration,
    /// Response body bytes kept; the rest is not read.
    pub max_response_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(15),
            max_response_bytes: 1 << 20,
        }
    }
}

/// What the target answered.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HeaderMap,
    /// At most `Limits::max_response_bytes`.
    pub body: Bytes,
    /// True when the body was cut at `Limits::max_response_bytes`.
    pub truncated: bool,
}

/// The value of `User-Agent`.
pub const USER_AGENT_VALUE: &str = concat!("mailbeacon/", env!("CARGO_PKG_VERSION"));

/// Headers the client sets itself; a caller may not send them.
const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

/// A parsed `http` or `https` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    tls: bool,
    /// Without IPv6 brackets.
    host: String,
    port: u16,
    /// The `Host` header: host and port as written.
    authority: String,
    /// Path and query (`/` when empty).
    path: String,
}

fn parse_url(url: &str) -> Result<Target, OutboundError> {
    let uri: Uri = url
        .trim()
        .parse()
        .map_err(|_| OutboundError::InvalidTarget("not a valid URL"))?;
    let tls = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("http") => false,
        Some("https") => true,
        Some(_) => {
            return Err(OutboundError::InvalidTarget(
                "only http and https URLs are allowed",
            ))
        }
        None => {
            return Err(OutboundError::InvalidTarget(
                "the URL must start with http:// or https://",
            ))
        }
    };
    let authority = uri
        .authority()
        .ok_or(OutboundError::InvalidTarget("the URL has no host"))?;
    if authority.as_str().contains('@') {
        return Err(OutboundError::InvalidTarget(
            "URLs with a user name or password are not allowed",
        ));
    }
    let host = unbracket(authority.host());
    if host.is_empty() {
        return Err(OutboundError::InvalidTarget("the URL has no host"));
    }
    // What follows the host: nothing, or `:port` (an empty port means the default).
    // Without userinfo (refused above) the host is a prefix of the authority, so
    // this slice is in bounds and on a character boundary.
    let after_host = &authority.as_str()[authority.host().len()..];
    let port = match after_host.strip_prefix(':').filter(|p| !p.is_empty()) {
        None if tls => 443,
        None => 80,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(OutboundError::InvalidTarget("the port is not valid")),
            Ok(p) => p,
        },
    };
    let path = match uri.path_and_query() {
        Some(pq) if !pq.as_str().is_empty() => pq.as_str().to_string(),
        _ => "/".to_string(),
    };
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    Ok(Target {
        tls,
        host: host.to_string(),
        port,
        authority: authority.as_str().to_string(),
        path,
    })
}

/// The client TLS configuration: webpki roots, ALPN http/1.1; built once.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, OutboundError> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    if let Some(c) = CONFIG.get() {
        return Ok(c.clone());
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|_| OutboundError::Tls("the TLS client could not be set up"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(CONFIG.get_or_init(|| Arc::new(config)).clone())
}

/// A failed handshake in fixed words (rustls errors can carry names from the
/// peer's certificate, so their text is never used).
fn tls_failure(e: &std::io::Error) -> OutboundError {
    use rustls::{CertificateError as C, Error as E};
    let why = match e.get_ref().and_then(|i| i.downcast_ref::<E>()) {
        Some(E::InvalidCertificate(C::UnknownIssuer)) => {
            "the certificate is not signed by a trusted authority"
        }
        Some(E::InvalidCertificate(C::Expired | C::ExpiredContext { .. })) => {
            "the certificate has expired"
        }
        Some(E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. })) => {
            "the certificate is not valid yet"
        }
        Some(E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. })) => {
            "the certificate is not valid for this host name"
        }
        Some(E::InvalidCertificate(_)) => "the certificate is not valid",
        Some(E::AlertReceived(_)) => "the server refused the handshake",
        Some(E::PeerIncompatible(_)) => "no TLS version or cipher suite in common",
        Some(E::InvalidMessage(_) | E::InappropriateMessage { .. }) => {
            "the server does not speak TLS"
        }
        Some(_) => "the handshake failed",
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the connection closed during the handshake"
        }
        None => "the handshake failed",
    };
    OutboundError::Tls(why)
}

/// Sends one request to `url` for a user and reads the answer. `Host`,
/// `User-Agent: mailbeacon/<version>` and (with a body, unless `headers` has
/// one) `Content-Type: application/json` are set; `headers` are added (a
/// `Content-Type` or `User-Agent` there replaces the default; hop-by-hop
/// headers and `Host` are refused). Redirects are not followed. A body over
/// `limits.max_response_bytes` is cut, not an error.
pub async fn request(
    policy: &OutboundPolicy,
    method: Method,
    url: &str,
    headers: &[(&str, String)],
    body: Option<Bytes>,
    limits: Limits,
) -> Result<HttpResponse, OutboundError> {
    let target = parse_url(url)?;
    let req = build_request(&target, method, headers, body)?;
    match tokio::time::timeout(limits.total_timeout, send(policy, &target, req, &limits)).await {
        Ok(result) => result,
        Err(_) => Err(OutboundError::Timeout),
    }
}

fn build_request(
    target: &Target,
    method: Method,
    headers: &[(&str, String)],
    body: Option<Bytes>,
) -> Result<Request<Full<Bytes>>, OutboundError> {
    let bad_header = OutboundError::InvalidRequest("a request header name or value is not valid");
    let mut map = HeaderMap::new();
    map.insert(
        HOST,
        HeaderValue::from_str(&target.authority).map_err(|_| bad_header)?,
    );
    map.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    if body.is_some() {
        map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    let mut replaced = Vec::new();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad_header)?;
        if RESERVED.contains(&name.as_str()) {
            return Err(OutboundError::InvalidRequest(
                "request headers may not set Host, Content-Length, Transfer-Encoding, \
                 Connection, Keep-Alive, TE, Trailer or Upgrade",
            ));
        }
        let value = HeaderValue::from_str(value).map_err(|_| bad_header)?;
        // The caller's first Content-Type / User-Agent replaces the default.
        if (name == CONTENT_TYPE || name == USER_AGENT) && !replaced.contains(&name) {
            map.remove(&name);
            replaced.push(name.clone());
        }
        map.append(name, value);
    }
    let path: Uri = target
        .path
        .parse()
        .map_err(|_| OutboundError::InvalidTarget("not a valid URL path"))?;
    let mut req = Request::new(Full::new(body.unwrap_or_default()));
    *req.method_mut() = method;
    *req.uri_mut() = path;
    *req.headers_mut() = map;
    Ok(req)
}

async fn send(
    policy: &OutboundPolicy,
    target: &Target,
    req: Request<Full<Bytes>>,
    limits: &Limits,
) -> Result<HttpResponse, OutboundError> {
    let (tcp, _addr) = connect(policy, &target.host, target.port, limits.connect_timeout).await?;
    if !target.tls {
        return exchange(tcp, req, limits.max_response_bytes).await;
    }
    let name = rustls::pki_types::ServerName::try_from(target.host.clone())
        .map_err(|_| OutboundError::InvalidTarget("the host is not a valid TLS server name"))?;
    let connector = tokio_rustls::TlsConnector::from(tls_config()?);
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| tls_failure(&e))?;
    exchange(tls, req, limits.max_response_bytes).await
}

/// One request/response on `io`, driving the connection in this task (nothing
/// outlives the call or its timeout).
async fn exchange<IO>(
    io: IO,
    req: Request<Full<Bytes>>,
    max_body: usize,
) -> Result<HttpResponse, OutboundError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|_| OutboundError::Protocol)?;
    let work = async move {
        let res = sender
            .send_request(req)
            .await
            .map_err(|_| OutboundError::Protocol)?;
        let status = res.status().as_u16();
        let (parts, mut body) = res.into_parts();
        let mut buf = BytesMut::new();
        let mut truncated = false;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| OutboundError::Protocol)?;
            if let Ok(data) = frame.into_data() {
                let room = max_body - buf.len();
                if data.len() > room {
                    buf.extend_from_slice(&data[..room]);
                    truncated = true;
                    break;
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(HttpResponse {
            status,
            headers: parts.headers,
            body: buf.freeze(),
            truncated,
        })
    };
    let mut conn = std::pin::pin!(conn);
    let mut work = std::pin::pin!(work);
    tokio::select! {
        result = &mut work => result,
        done = &mut conn => match done {
            // The connection finished; what it delivered is still readable.
            Ok(()) => work.await,
            Err(_) => Err(OutboundError::Protocol),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::oneshot;

    const SECRET: &str = "hunter2-s3cr3t";

    fn loopback() -> OutboundPolicy {
        OutboundPolicy::parse("127.0.0.0/8").expect("valid")
    }

    fn limits() -> Limits {
        Limits {
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(10),
            max_response_bytes: 64 * 1024,
        }
    }

    /// Reads one request head and its Content-Length body.
    async fn read_request(s: &mut TcpStream) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse::<usize>().expect("length"))
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return buf;
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return buf,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// A server on 127.0.0.1 that takes one connection, reads one request,
    /// writes `answer` and closes; the request it read comes back on the channel.
    async fn serve_once(answer: Vec<u8>) -> (u16, oneshot::Receiver<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let req = read_request(&mut s).await;
            let _ = s.write_all(&answer).await;
            let _ = s.shutdown().await;
            let _ = tx.send(req);
        });
        (port, rx)
    }

    async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                drop(s);
            }
        });
        (port, count)
    }

    #[test]
    fn urls() {
        let t = parse_url("https://example.com/hook?a=1").expect("valid");
        assert_eq!(
            t,
            Target {
                tls: true,
                host: "example.com".into(),
                port: 443,
                authority: "example.com".into(),
                path: "/hook?a=1".into(),
            }
        );
        let t = parse_url("http://[::1]:8080").expect("valid");
        assert_eq!((t.tls, t.host.as_str(), t.port), (false, "::1", 8080));
        assert_eq!((t.authority.as_str(), t.path.as_str()), ("[::1]:8080", "/"));
        assert_eq!(parse_url("HTTP://example.com").expect("valid").port, 80);
        for bad in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "gopher://127.0.0.1:6379/_INFO",
            "example.com/hook",
            "/hook",
            "http://user:pass@example.com/",
            "http://user@example.com/",
            "http://example.com:0/",
            "http://example.com:99999/",
            "http://[::1]:65536/",
            "http://example.com:8x/",
            "http:///path",
            "",
            "http://exa mple.com/",
        ] {
            let e = parse_url(bad).expect_err(bad);
            assert!(matches!(e, OutboundError::InvalidTarget(_)), "{bad}: {e:?}");
        }
    }

    #[tokio::test]
    async fn post_gets_status_and_body() {
        let (port, got) =
            serve_once(b"HTTP/1.1 201 Created\r\nContent-Length: 7\r\n\r\ncreated".to_vec()).await;
        let res = request(
            &loopback(),
            Method::POST,
            &format!("http://127.0.0.1:{port}/hook?x=1"),
            &[("X-Signature", "abc".to_string())],
            Some(Bytes::from_static(b"{\"a\":1}")),
            limits(),
        )
        .await
        .expect("request");
        assert_eq!(res.status, 201);
        assert_eq!(&res.body[..], b"created");
        assert!(!res.truncated);
        let req = String::from_utf8(got.await.expect("request seen")).expect("utf-8");
        let lower = req.to_ascii_lowercase();
        assert!(req.starts_with("POST /hook?x=1 HTTP/1.1\r\n"), "{req}");
        assert!(
            lower.contains(&format!("\r\nhost: 127.0.0.1:{port}\r\n")),
            "{req}"
        );
        assert!(
            lower.contains(&format!(
                "\r\nuser-agent: mailbeacon/{}\r\n",
                env!("CARGO_PKG_VERSION")
            )),
            "{req}"
        );
        assert!(
            lower.contains("\r\ncontent-type: application/json\r\n"),
            "{req}"
        );
        assert!(lower.contains("\r\nx-signature: abc\r\n"), "{req}");
        assert!(lower.contains("\r\ncontent-length: 7\r\n"), "{req}");
        assert!(req.ends_with("\r\n\r\n{\"a\":1}"), "{req}");
    }

    #[tokio::test]
    async fn caller_headers_replace_defaults_and_reserved_are_refused() {
        let (port, got) = serve_once(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()).await;
        let res = request(
            &loopback(),
            Method::GET,
            &format!("http://localhost:{port}/feed.xml"),
            &[("Content-Type", "application/xml".to_string())],
            Some(Bytes::from_static(b"<x/>")),
            limits(),
        )
        .await
        .expect("request");
        assert_eq!((res.status, res.body.len()), (204, 0));
        let req = String::from_utf8(got.await.expect("seen"))
            .expect("utf-8")
            .to_ascii_lowercase();
        assert!(req.starts_with("get /feed.xml http/1.1\r\n"), "{req}");
        assert!(
            req.contains("\r\ncontent-type: application/xml\r\n"),
            "{req}"
        );
        assert!(!req.contains("application/json"), "{req}");
        assert!(
            req.contains(&format!("\r\nhost: localhost:{port}\r\n")),
            "{req}"
        );

        for name in ["Host", "Transfer-Encoding", "connection", "Content-Length"] {
            let e = request(
                &loopback(),
                Method::GET,
                "http://127.0.0.1:9/",
                &[(name, "x".to_string())],
                None,
                limits(),
            )
            .await
            .expect_err(name);
            assert!(
                matches!(e, OutboundError::InvalidRequest(_)),
                "{name}: {e:?}"
            );
        }
        let e = request(
            &loopback(),
            Method::GET,
            "http://127.0.0.1:9/",
            &[("X-Bad", "a\r\nInjected: yes".to_string())],
            None,
            limits(),
        )
        .await
        .expect_err("header injection");
        assert!(matches!(e, OutboundError::InvalidRequest(_)), "{e:?}");
    }

    #[tokio::test]
    async fn refused_targets_are_never_connected() {
        let (port, accepted) = counting_listener().await;
        for host in [
            "127.0.0.1",
            "localhost",
            "2130706433",
            "0x7f000001",
            "[::ffff:127.0.0.1]",
            "169.254.169.254",
        ] {
            for scheme in ["http", "https"] {
                let url = format!("{scheme}://{host}:{port}/latest/meta-data/");
                let e = request(
                    &OutboundPolicy::default(),
                    Method::GET,
                    &url,
                    &[],
                    None,
                    limits(),
                )
                .await
                .expect_err(&url);
                assert_eq!(e, OutboundError::NotAllowed, "{url}");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (elsewhere, accepted) = counting_listener().await;
        let answer = format!(
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{elsewhere}/\r\nContent-Length: 0\r\n\r\n"
        );
        let (port, _got) = serve_once(answer.into_bytes()).await;
        let res = request(
            &loopback(),
            Method::GET,
            &format!("http://127.0.0.1:{port}/"),
            &[],
            None,
            limits(),
        )
        .await
        .expect("request");
        assert_eq!(res.status, 302);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_banner_with_a_secret_is_not_echoed() {
        let mut banner = format!("SSH-2.0-OpenSSH_9.6 {SECRET}\r\n").into_bytes();
        banner.extend_from_slice(b"\x00\x01\x02garbage\xff\r\n\r\n");
        let (port, _got) = serve_once(banner).await;
        let e = request(
            &loopback(),
            Method::GET,
            &format!("http://127.0.0.1:{port}/"),
            &[],
            None,
            limits(),
        )
        .await
        .expect_err("not HTTP");
        assert_eq!(e, OutboundError::Protocol);
        let text = e.to_string();
        assert!(!text.contains(SECRET) && !text.contains("SSH"), "{text}");
    }

    #[tokio::test]
    async fn https_to_plain_tcp_is_a_tls_error_that_echoes_nothing() {
        let answer = format!("HTTP/1.1 400 Bad Request\r\nContent-Length: 14\r\n\r\n{SECRET}");
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            // The ClientHello, or its start; then an HTTP error, as a plain server would.
            let _ = s.read(&mut [0u8; 4096]).await;
            let _ = s.write_all(answer.as_bytes()).await;
            let _ = s.shutdown().await;
        });
        let e = request(
            &loopback(),
            Method::GET,
            &format!("https://127.0.0.1:{port}/"),
            &[],
            None,
            limits(),
        )
        .await
        .expect_err("not TLS");
        assert!(matches!(e, OutboundError::Tls(_)), "{e:?}");
        let text = e.to_string();
        assert!(!text.contains(SECRET) && !text.contains("400"), "{text}");
    }

    #[tokio::test]
    async fn a_large_body_is_cut() {
        let mut answer = b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n".to_vec();
        answer.extend(std::iter::repeat_n(b'x', 200_000));
        let (port, _got) = serve_once(answer).await;
        let res = request(
            &loopback(),
            Method::GET,
            &format!("http://127.0.0.1:{port}/"),
            &[],
            None,
            Limits {
                max_response_bytes: 1000,
                ..limits()
            },
        )
        .await
        .expect("request");
        assert_eq!(
            (res.status, res.body.len(), res.truncated),
            (200, 1000, true)
        );
        assert!(res.body.iter().all(|b| *b == b'x'));
    }

    #[tokio::test]
    async fn an_endless_body_is_cut_without_reading_it_all() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            read_request(&mut s).await;
            let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
            if s.write_all(head).await.is_err() {
                return;
            }
            let chunk = format!("1000\r\n{}\r\n", "y".repeat(0x1000));
            // Until the client hangs up.
            while s.write_all(chunk.as_bytes()).await.is_ok() {}
        });
        let res = request(
            &loopback(),
            Method::GET,
            &format!("http://127.0.0.1:{port}/"),
            &[],
            None,
            Limits {
                max_response_bytes: 10_000,
                ..limits()
            },
        )
        .await
        .expect("request");
        assert_eq!(
            (res.status, res.body.len(), res.truncated),
            (200, 10_000, true)
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            read_request(&mut s).await;
            // Holds the connection open, answering nothing, until the test ends.
            let _ = done_rx.await;
        });
        let e = request(
            &loopback(),
            Method::GET,
            &format!("http://127.0.0.1:{port}/"),
            &[],
            None,
            Limits {
                total_timeout: Duration::from_millis(300),
                ..limits()
            },
        )
        .await
        .expect_err("silent");
        assert_eq!(e, OutboundError::Timeout);
        drop(done_tx);
    }
}
