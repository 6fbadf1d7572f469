//! One watched mailbox: a single IMAP connection (made by `addin::mailbox`,
//! the code Auto Capture uses) that `EXAMINE`s INBOX (read-only), remembers
//! UIDVALIDITY and the next UID, and then waits: with IDLE when the server's
//! CAPABILITY has it (re-issued every 25 minutes, woken by anything the server
//! says, such as EXISTS), else polling every `poll`. Each time, only the header
//! fields of the new messages are fetched (`BODY.PEEK[HEADER.FIELDS …]`, so
//! nothing is marked seen), plus for a delivery status notification the first
//! 16 KiB of its status part and returned header. Never a body of an ordinary
//! message. Errors reconnect after a growing delay (5 s doubling, at most 10
//! minutes). All of it only while this task holds the mailbox's lease
//! (`Lease`, see `replies`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_imap::extensions::idle::IdleResponse;
use async_imap::imap_proto::SectionPath;
use async_imap::Session;
use futures_util::TryStreamExt as _;
use ring::digest;

use super::apply::{apply, Seen};
use super::parse;
use crate::addin::mailbox::{self, Conn, MailboxError};
use crate::ids::{id_to_text, now_ms};
use crate::model::MailboxConfig;
use crate::state::App;

/// How a mailbox is watched.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Time between checks without IDLE.
    pub poll: Duration,
    /// Use IDLE where the server offers it.
    pub idle: bool,
}

/// A mailbox's lease lives this long without renewal (renewed every third):
/// another process takes over a dead holder's mailbox within it.
const LEASE_MS: u64 = 15_000;
/// How often a process without the lease looks whether it is free.
const LEASE_RETRY: Duration = Duration::from_secs(5);
/// Time limit for each command.
const STEP: Duration = Duration::from_secs(20);
/// IDLE is re-issued this often (RFC 2177 asks for less than 29 minutes).
const IDLE_RENEW: Duration = Duration::from_secs(25 * 60);
/// At the first connection, the last messages already there are read too (a
/// reply that arrived while the server was down still counts; facts are
/// idempotent, so reading one again changes nothing).
const FIRST_LOOK: u32 = 50;
/// Most messages fetched per command.
const BATCH: usize = 100;
/// The header fields read of every new message.
const FIELDS: &str = "(UID INTERNALDATE BODY.PEEK[HEADER.FIELDS (FROM MESSAGE-ID IN-REPLY-TO \
                      REFERENCES CONTENT-TYPE X-ORIGINAL-MESSAGE-ID)])";
/// What is read of a DSN: its status part and the returned message's start.
const DSN_PARTS: &str = "(UID BODY.PEEK[2]<0.16384> BODY.PEEK[3]<0.16384>)";

/// Where reading resumes.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    validity: u32,
    next: u32,
}

fn failed(code: &'static str, message: String) -> MailboxError {
    MailboxError { code, message }
}

async fn step<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, MailboxError> {
    match tokio::time::timeout(STEP, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(failed("mailbox_error", format!("{what}: {e}"))),
        Err(_) => Err(failed(
            "mailbox_timeout",
            format!("{what}: no answer in time"),
        )),
    }
}

/// Delay before reconnecting after `failures` failures in a row.
fn backoff(failures: u32) -> Duration {
    let secs = 5u64.saturating_mul(1 << failures.saturating_sub(1).min(7));
    Duration::from_secs(secs.min(600))
}

/// Watches the mailbox of `owner` until the task is aborted (the supervisor
/// does that; dropping the connection closes it), while this process holds
/// the mailbox's lease (see `replies`, "One watcher per mailbox").
pub async fn run(app: Arc<App>, owner: u64, cfg: MailboxConfig, opts: Options) {
    let lease = Lease {
        app: app.clone(),
        name: format!("watch:{}", id_to_text(owner)),
        owner: crate::ids::random_id(),
    };
    let mut cursor = None;
    let mut failures = 0u32;
    let mut waiting = false;
    loop {
        match lease.take().await {
            Ok(true) => waiting = false,
            Ok(false) => {
                if !waiting {
                    tracing::info!(
                        user = %id_to_text(owner),
                        "reply watcher: another process watches this mailbox"
                    );
                    waiting = true;
                }
                tokio::time::sleep(LEASE_RETRY).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(user = %id_to_text(owner), error = %e,
                    "reply watcher: cannot take the mailbox's lease");
                tokio::time::sleep(LEASE_RETRY).await;
                continue;
            }
        }
        let started = Instant::now();
        let e = tokio::select! {
            Err(e) = session(&app, owner, &cfg, opts, &mut cursor) => e,
            () = lease.hold() => {
                // Lost (another process has it) or not renewable: the
                // connection closes now; the loop takes the lease again when
                // it is free.
                tracing::warn!(user = %id_to_text(owner), "reply watcher: lost the mailbox's lease");
                continue;
            }
        };
        // A connection that worked for a while starts the delays over.
        failures = if started.elapsed() > Duration::from_secs(600) {
            1
        } else {
            failures + 1
        };
        let wait = backoff(failures);
        tracing::warn!(
            user = %id_to_text(owner),
            code = e.code,
            error = %e.message,
            retry_in_s = wait.as_secs(),
            "reply watcher: the mailbox failed"
        );
        tokio::time::sleep(wait).await;
    }
}

/// A mailbox's lease, as one watcher task holds it. The owner is per task,
/// not per process: a watcher the supervisor replaces (the mailbox changed)
/// frees its lease as it is dropped, which must never free its successor's.
struct Lease {
    app: Arc<App>,
    name: String,
    owner: u64,
}

impl Lease {
    async fn take(&self) -> Result<bool, crate::store::StoreError> {
        self.app
            .store
            .take_lease(&self.name, self.owner, LEASE_MS)
            .await
    }

    /// Renews the lease every third of its life; returns when a renewal
    /// fails or finds another holder (the watching must stop).
    async fn hold(&self) {
        loop {
            tokio::time::sleep(Duration::from_millis(LEASE_MS / 3)).await;
            match self.take().await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "reply watcher: renewing the lease failed");
                    return;
                }
            }
        }
    }
}

impl Drop for Lease {
    /// The watcher stopped (aborted by the supervisor, or shutdown): free the
    /// lease at once, so another process need not wait for its expiry.
    fn drop(&mut self) {
        let (store, name, owner) = (
            self.app.store.clone(),
            std::mem::take(&mut self.name),
            self.owner,
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = store.release_lease(&name, owner).await;
            });
        }
    }
}

/// One connection: returns only when it fails.
async fn session(
    app: &App,
    owner: u64,
    cfg: &MailboxConfig,
    opts: Options,
    cursor: &mut Option<Cursor>,
) -> Result<Infallible, MailboxError> {
    let reach = mailbox::Reach {
        policy: &app.config.outbound,
        roots: &app.imap_roots,
    };
    let mut s = mailbox::connect(cfg, &reach).await?;
    let caps = step("CAPABILITY", s.capabilities()).await?;
    let idle = opts.idle && caps.has_str("IDLE");
    let inbox = step("EXAMINE", s.examine("INBOX")).await?;
    let validity = inbox.uid_validity.unwrap_or(0);
    let uid_next = inbox.uid_next.unwrap_or(1);
    let mut next = match *cursor {
        Some(c) if c.validity == validity => c.next,
        _ => uid_next.saturating_sub(FIRST_LOOK).max(1),
    };
    tracing::info!(
        user = %id_to_text(owner),
        mode = if idle { "idle" } else { "poll" },
        poll_s = opts.poll.as_secs(),
        "reply watcher: watching INBOX"
    );
    loop {
        next = read_new(app, owner, &mut s, next).await?;
        *cursor = Some(Cursor { validity, next });
        if idle {
            let mut h = s.idle();
            step("IDLE", h.init()).await?;
            let (wait, stop) = h.wait_with_timeout(IDLE_RENEW);
            // The server's keep-alives reset the library's timer: bound it here.
            let woke = tokio::time::timeout(IDLE_RENEW, wait).await;
            drop(stop);
            if let Ok(Err(e)) = woke {
                return Err(failed("mailbox_error", format!("IDLE: {e}")));
            }
            if let Ok(Ok(IdleResponse::NewData(_))) = &woke {
                tracing::debug!(user = %id_to_text(owner), "reply watcher: woken");
            }
            s = step("DONE", h.done()).await?;
        } else {
            tokio::time::sleep(opts.poll).await;
            step("NOOP", s.noop()).await?;
        }
    }
}

/// Reads every message from UID `next` on; returns the UID to resume from.
async fn read_new(
    app: &App,
    owner: u64,
    s: &mut Session<Conn>,
    mut next: u32,
) -> Result<u32, MailboxError> {
    // "n:*" also names the last message when every UID is below n.
    let mut uids: Vec<u32> = step("UID SEARCH", s.uid_search(format!("UID {next}:*")))
        .await?
        .into_iter()
        .filter(|u| *u >= next)
        .collect();
    uids.sort_unstable();
    for chunk in uids.chunks(BATCH) {
        let set = chunk
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut fetches: Vec<_> = step("UID FETCH", async {
            s.uid_fetch(&set, FIELDS)
                .await?
                .try_collect::<Vec<_>>()
                .await
        })
        .await?;
        fetches.sort_by_key(|f| f.uid);
        for f in &fetches {
            let (Some(uid), Some(raw)) = (f.uid, f.header()) else {
                continue;
            };
            let header = parse::header(raw);
            let dsn = if header.is_dsn {
                Some(dsn_parts(s, uid).await?)
            } else {
                None
            };
            let d = digest::digest(&digest::SHA256, raw);
            let seen = Seen {
                header,
                fallback_id: format!(
                    "sha256:{}",
                    d.as_ref()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                ),
                at_ms: f
                    .internal_date()
                    .map(|t| t.timestamp_millis().max(0) as u64)
                    .unwrap_or_else(now_ms),
                dsn,
            };
            apply(app, owner, &seen)
                .await
                .map_err(|e| failed("store_error", e.to_string()))?;
            next = next.max(uid.saturating_add(1));
        }
        // UIDs that vanished meanwhile (expunged) are passed over too.
        if let Some(last) = chunk.last() {
            next = next.max(last.saturating_add(1));
        }
    }
    Ok(next)
}

/// A DSN's per-recipient fields and the returned copy's Message-ID.
async fn dsn_parts(
    s: &mut Session<Conn>,
    uid: u32,
) -> Result<(Vec<parse::DsnRecipient>, Option<String>), MailboxError> {
    let fetches: Vec<_> = step("UID FETCH", async {
        s.uid_fetch(uid.to_string(), DSN_PARTS)
            .await?
            .try_collect::<Vec<_>>()
            .await
    })
    .await?;
    let Some(f) = fetches.iter().find(|f| f.uid == Some(uid)) else {
        return Ok((Vec::new(), None));
    };
    let status = f
        .section(&SectionPath::Part(vec![2], None))
        .map(parse::delivery_status)
        .unwrap_or_default();
    let returned = f
        .section(&SectionPath::Part(vec![3], None))
        .and_then(parse::returned_message_id);
    Ok((status, returned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(50), Duration::from_secs(600));
    }
}
