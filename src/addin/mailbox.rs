//! The IMAP source for Auto Capture: connect to a user's mailbox, list the
//! emails exchanged with one address in the last days, fetch one by UID.
//!
//! Architecture invariant: **this module writes nothing anywhere.** What it
//! reads lives only in memory for the duration of one request; the API hands
//! listings straight back to the caller, and only an email the user explicitly
//! tracks goes to the store (through the same path as any tracked email).
//!
//! Plain IMAP, implicit TLS and STARTTLS (rustls with the webpki roots plus
//! the private CAs of `imap_ca_file`, see `trust_roots`; a certificate is always
//! verified, there is no way to turn that off), LOGIN or SASL XOAUTH2. Every
//! network step has a time limit. Messages are read with `BODY.PEEK` so
//! listing never marks anything as seen.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_imap::types::NameAttribute;
use async_imap::{Authenticator, Client, Session};
use futures_util::TryStreamExt as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::RootCertStore;

use crate::addin::activities;
use crate::model::{MailboxConfig, MailboxSecret, Participant};
use crate::outbound::{self, OutboundError, OutboundPolicy};

/// Time limit for each network step (connect, TLS, login, one command).
const STEP: Duration = Duration::from_secs(20);
/// Folders searched when the server does not mark its Sent folder.
const SENT_NAMES: [&str; 4] = ["Sent", "Sent Items", "Sent Messages", "INBOX.Sent"];
/// Most candidates fetched per folder (headers only), newest first.
const MAX_CANDIDATES: usize = 500;

/// Why a mailbox could not be used; `code` is the API error code.
#[derive(Debug)]
pub struct MailboxError {
    pub code: &'static str,
    pub message: String,
}

fn err(code: &'static str, message: impl Into<String>) -> MailboxError {
    MailboxError {
        code,
        message: message.into(),
    }
}

/// One email found in the mailbox (not stored anywhere).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Captured {
    pub folder: String,
    pub uid: u32,
    pub message_id: Option<String>,
    pub subject: Option<String>,
    pub from: Option<Participant>,
    pub to: Vec<Participant>,
    pub cc: Vec<Participant>,
    /// INTERNALDATE, milliseconds since the epoch.
    #[serde(skip)]
    pub at_ms: u64,
    pub size: Option<u32>,
}

/// A plain or TLS connection (one type so the IMAP session can hold either).
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Plain(_) => "Conn::Plain",
            Conn::Tls(_) => "Conn::Tls",
        })
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Runs one IMAP step with its time limit. The error never carries the
/// server's words (`_e` is dropped): what an IMAP server answers is the peer's
/// bytes, and a hostile "server" could be anything that talks, so only `what`
/// (our own fixed name of the step) is said.
async fn step<T, E>(
    what: &'static str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, MailboxError> {
    match tokio::time::timeout(STEP, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_e)) => Err(err(
            "mailbox_error",
            format!("{what}: the IMAP server refused the command or its answer is not valid IMAP"),
        )),
        Err(_) => Err(err(
            "mailbox_timeout",
            format!("{what}: no answer within {}s", STEP.as_secs()),
        )),
    }
}

/// The roots IMAP TLS trusts: the webpki (public) roots plus `extra`.
pub fn trust_roots(extra: &[CertificateDer<'static>]) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // Each was already added once when the configuration was checked
    // (`config::read_ca_file`), so none is skipped here.
    roots.add_parsable_certificates(extra.iter().cloned());
    Arc::new(roots)
}

/// A failed handshake, in fixed words a user can act on (never the
/// certificate's contents or anything else the peer sent).
fn handshake_failed(e: &std::io::Error) -> MailboxError {
    use rustls::CertificateError as C;
    let tls = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    let message = match tls {
        Some(rustls::Error::InvalidCertificate(C::UnknownIssuer)) => {
            "TLS handshake: the IMAP server's certificate is not signed by a trusted \
             authority (unknown issuer); a server with a private CA needs that CA in \
             the imap_ca_file setting"
        }
        Some(rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. })) => {
            "TLS handshake: the IMAP server's certificate has expired"
        }
        Some(rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        )) => "TLS handshake: the IMAP server's certificate is not valid for this host name",
        Some(rustls::Error::InvalidCertificate(_)) => {
            "TLS handshake: the IMAP server's certificate is not valid"
        }
        _ => "TLS handshake: the IMAP server did not complete a valid TLS handshake",
    };
    err("mailbox_error", message)
}

async fn tls(tcp: TcpStream, host: &str, roots: &Arc<RootCertStore>) -> Result<Conn, MailboxError> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|_| err("mailbox_error", "TLS set-up failed"))?
    .with_root_certificates(roots.clone())
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|_| {
        err(
            "invalid_mailbox",
            format!("{host:?} is not a valid TLS server name"),
        )
    })?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    match tokio::time::timeout(STEP, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => Ok(Conn::Tls(Box::new(s))),
        Ok(Err(e)) => Err(handshake_failed(&e)),
        Err(_) => Err(err(
            "mailbox_timeout",
            format!("TLS handshake: no answer within {}s", STEP.as_secs()),
        )),
    }
}

struct XOAuth2<'a> {
    user: &'a str,
    token: &'a str,
    sent: bool,
}

impl Authenticator for XOAuth2<'_> {
    type Response = String;
    /// The first challenge (empty) gets the credentials. A second one is the
    /// server's JSON error for a refused token, which the client must answer
    /// with an empty line so that the server ends the exchange with NO.
    fn process(&mut self, _challenge: &[u8]) -> String {
        if std::mem::replace(&mut self.sent, true) {
            return String::new();
        }
        format!("user={}\x01auth=Bearer {}\x01\x01", self.user, self.token)
    }
}

/// Where a mailbox may be reached and what its TLS trusts: the outbound
/// policy (public addresses, plus the operator's allow-list) and the roots
/// (see `trust_roots`). Built once from the configuration.
pub struct Reach<'a> {
    pub policy: &'a OutboundPolicy,
    pub roots: &'a Arc<RootCertStore>,
}

/// The TCP connection to a mailbox, through `outbound::connect`: resolved once,
/// every address checked by the policy (a refused target is never connected
/// to: `target_not_allowed`), and one fixed message for a closed, filtered or
/// unreachable port.
async fn open_tcp(cfg: &MailboxConfig, policy: &OutboundPolicy) -> Result<TcpStream, MailboxError> {
    match outbound::connect(policy, &cfg.host, cfg.port, STEP).await {
        Ok((tcp, _addr)) => Ok(tcp),
        Err(OutboundError::NotAllowed) => Err(err(
            "target_not_allowed",
            "the mailbox server is not at a public address; an operator can allow \
             such networks with --outbound-allow (MAILBEACON_OUTBOUND_ALLOW)",
        )),
        Err(OutboundError::InvalidTarget(why)) => Err(err(
            "invalid_mailbox",
            format!("the host is not valid: {why}"),
        )),
        Err(OutboundError::Resolve) => Err(err(
            "mailbox_unreachable",
            "cannot connect to the mailbox server: its host name does not resolve",
        )),
        Err(_) => Err(err(
            "mailbox_unreachable",
            "cannot connect to the mailbox server (connection refused, unreachable or timed out)",
        )),
    }
}

/// Connects and logs in (see `Reach`).
pub async fn connect(
    cfg: &MailboxConfig,
    reach: &Reach<'_>,
) -> Result<Session<Conn>, MailboxError> {
    let roots = reach.roots;
    let tcp = open_tcp(cfg, reach.policy).await?;
    let conn = match cfg.tls.as_str() {
        "tls" => tls(tcp, &cfg.host, roots).await?,
        "starttls" => {
            let mut c = Client::new(Conn::Plain(tcp));
            step("reading the greeting", c.read_response()).await?;
            step("STARTTLS", c.run_command_and_check_ok("STARTTLS", None)).await?;
            match c.into_inner() {
                Conn::Plain(tcp) => tls(tcp, &cfg.host, roots).await?,
                other => other,
            }
        }
        _ => Conn::Plain(tcp),
    };
    let mut client = Client::new(conn);
    if cfg.tls != "starttls" {
        step("reading the greeting", client.read_response()).await?;
    }
    let login = match &cfg.secret {
        MailboxSecret::Password(p) => {
            tokio::time::timeout(STEP, client.login(&cfg.username, p)).await
        }
        MailboxSecret::Xoauth2(t) => {
            let auth = XOAuth2 {
                user: &cfg.username,
                token: t,
                sent: false,
            };
            tokio::time::timeout(STEP, client.authenticate("XOAUTH2", auth)).await
        }
    };
    match login {
        Ok(Ok(s)) => Ok(s),
        // The server's own words are not passed on (see `step`).
        Ok(Err(_)) => Err(err(
            "mailbox_login_failed",
            "the IMAP server refused the login: check the username and the password or token",
        )),
        Err(_) => Err(err("mailbox_timeout", "login: no answer in time")),
    }
}

/// Logs in and out: checks that a configuration works.
pub async fn check(cfg: &MailboxConfig, reach: &Reach<'_>) -> Result<(), MailboxError> {
    let mut s = connect(cfg, reach).await?;
    let _ = tokio::time::timeout(STEP, s.logout()).await;
    Ok(())
}

/// The folders Auto Capture searches: INBOX and the Sent folder(s).
async fn folders(s: &mut Session<Conn>) -> Result<Vec<String>, MailboxError> {
    let names: Vec<_> = step("LIST", async {
        s.list(Some(""), Some("*"))
            .await?
            .try_collect::<Vec<_>>()
            .await
    })
    .await?;
    let mut out = vec!["INBOX".to_string()];
    let mut marked = false;
    for n in &names {
        if n.attributes().contains(&NameAttribute::Sent) && !out.iter().any(|o| o == n.name()) {
            out.push(n.name().to_string());
            marked = true;
        }
    }
    if !marked {
        for n in &names {
            if SENT_NAMES.contains(&n.name()) && !out.iter().any(|o| o == n.name()) {
                out.push(n.name().to_string());
            }
        }
    }
    Ok(out)
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// IMAP date for SEARCH SINCE (day granularity, UTC).
fn imap_date(ms: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (ms / 86_400_000) as i64;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{d}-{}-{y}", MONTHS[(m - 1) as usize])
}

/// Lists the emails exchanged with `contact` (normalized address) whose
/// INTERNALDATE is at or after `since_ms`, newest first, at most `limit`, for
/// which `keep` (given the Message-IDs found) answers true. Nothing is stored.
pub async fn list_with<F, Fut>(
    cfg: &MailboxConfig,
    reach: &Reach<'_>,
    contact: &str,
    since_ms: u64,
    limit: usize,
    keep: F,
) -> Result<Vec<Captured>, MailboxError>
where
    F: FnOnce(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<bool>, MailboxError>>,
{
    let mut s = connect(cfg, reach).await?;
    let mut found: Vec<Captured> = Vec::new();
    for folder in folders(&mut s).await? {
        // A folder that cannot be opened (e.g. no Sent folder) is skipped.
        if step("EXAMINE", s.examine(&folder)).await.is_err() {
            continue;
        }
        let q = quote(contact);
        let query = format!("SINCE {} OR OR FROM {q} TO {q} CC {q}", imap_date(since_ms));
        let mut uids: Vec<u32> = step("UID SEARCH", s.uid_search(&query))
            .await?
            .into_iter()
            .collect();
        uids.sort_unstable_by(|a, b| b.cmp(a));
        uids.truncate(MAX_CANDIDATES);
        if uids.is_empty() {
            continue;
        }
        let set = uids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let fetches: Vec<_> = step("UID FETCH", async {
            s.uid_fetch(&set, "(UID INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER])")
                .await?
                .try_collect::<Vec<_>>()
                .await
        })
        .await?;
        for f in &fetches {
            let (Some(uid), Some(header)) = (f.uid, f.header()) else {
                continue;
            };
            let at_ms = f
                .internal_date()
                .map(|d| d.timestamp_millis().max(0) as u64)
                .unwrap_or(0);
            if at_ms < since_ms {
                continue;
            }
            let mut raw = header.to_vec();
            raw.extend_from_slice(b"\r\n");
            let Ok(p) = activities::parse(&raw) else {
                continue;
            };
            let involved = p
                .personal
                .from
                .iter()
                .chain(&p.personal.to)
                .chain(&p.personal.cc)
                .any(|a| a.address == contact);
            if !involved {
                continue;
            }
            let message_id = (!p.message_id.starts_with("sha256:")).then_some(p.message_id);
            found.push(Captured {
                folder: folder.clone(),
                uid,
                message_id,
                subject: p.personal.subject,
                from: p.personal.from,
                to: p.personal.to,
                cc: p.personal.cc,
                at_ms,
                size: f.size,
            });
        }
    }
    let _ = tokio::time::timeout(STEP, s.logout()).await;
    // The same message may sit in two folders (e.g. sent to oneself): keep one.
    found.sort_by(|a, b| b.at_ms.cmp(&a.at_ms).then(a.folder.cmp(&b.folder)));
    let mut seen = std::collections::HashSet::new();
    found.retain(|c| c.message_id.as_ref().is_none_or(|m| seen.insert(m.clone())));
    let ids: Vec<String> = found
        .iter()
        .map(|c| c.message_id.clone().unwrap_or_default())
        .collect();
    let tracked = keep(ids).await?;
    let mut out: Vec<Captured> = found
        .into_iter()
        .zip(tracked)
        .filter_map(|(c, k)| k.then_some(c))
        .collect();
    out.truncate(limit);
    Ok(out)
}

/// Fetches one whole message by folder and UID (`BODY.PEEK[]`: not marked
/// seen), of at most `max_bytes`: a larger one (by its RFC822.SIZE, or by what
/// arrives: only the first `max_bytes + 1` bytes are asked for) is refused with
/// `message_too_large`, so one message cannot take more memory than a request
/// body may.
pub async fn fetch(
    cfg: &MailboxConfig,
    reach: &Reach<'_>,
    folder: &str,
    uid: u32,
    max_bytes: usize,
) -> Result<Vec<u8>, MailboxError> {
    let too_large = || {
        err(
            "message_too_large",
            format!("the message is larger than the {max_bytes}-byte limit"),
        )
    };
    let mut s = connect(cfg, reach).await?;
    step("EXAMINE", s.examine(folder))
        .await
        .map_err(|_| err("not_found", format!("no folder {folder:?} in the mailbox")))?;
    let sizes: Vec<_> = step("UID FETCH", async {
        s.uid_fetch(uid.to_string(), "(UID RFC822.SIZE)")
            .await?
            .try_collect::<Vec<_>>()
            .await
    })
    .await?;
    let size = sizes
        .iter()
        .find(|f| f.uid == Some(uid))
        .and_then(|f| f.size);
    if size.is_some_and(|n| n as usize > max_bytes) {
        let _ = tokio::time::timeout(STEP, s.logout()).await;
        return Err(too_large());
    }
    let query = format!("(UID BODY.PEEK[]<0.{}>)", max_bytes.saturating_add(1));
    let fetches: Vec<_> = step("UID FETCH", async {
        s.uid_fetch(uid.to_string(), &query)
            .await?
            .try_collect::<Vec<_>>()
            .await
    })
    .await?;
    let body = fetches
        .iter()
        .find(|f| f.uid == Some(uid))
        .and_then(|f| f.body())
        .map(<[u8]>::to_vec);
    let _ = tokio::time::timeout(STEP, s.logout()).await;
    match body {
        Some(b) if b.len() > max_bytes => Err(too_large()),
        Some(b) => Ok(b),
        None => Err(err(
            "not_found",
            format!("no message with UID {uid} in {folder:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imap_dates() {
        assert_eq!(imap_date(0), "1-Jan-1970");
        assert_eq!(imap_date(1_796_032_800_000), "30-Nov-2026");
        assert_eq!(imap_date(951_782_400_000), "29-Feb-2000");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a@b"), "\"a@b\"");
        assert_eq!(quote("a\"b\\"), "\"a\\\"b\\\\\"");
    }
}
