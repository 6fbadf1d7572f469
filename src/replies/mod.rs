//! The reply watcher: replies and bounces found in the connected mailboxes.
//!
//! A user with a connected mailbox (the Auto Capture IMAP connection) has INBOX
//! watched by one task, one connection (`watch`). A message whose
//! In-Reply-To/References names a followed email of that user, sent by one of
//! its recipients, is that recipient's reply; a delivery status notification
//! (RFC 3464) naming a copy marks that recipient's delivery `bounced`
//! (`parse` reads them, `apply` records them and raises the events).
//!
//! [`supervise`] (started by `serve`) keeps one watcher per mailbox that may be
//! watched: it re-reads the list every minute, at once when a mailbox is
//! connected or disconnected or a user's Auto Capture switch changes
//! (`App::mailboxes_changed`), and within 2 s of an organization switch
//! change. It stops the watchers of mailboxes that were disconnected (or
//! changed: those start again with the new settings), of users who switched
//! Auto Capture off, and all of them while the organization has Auto Capture or
//! Email Engagement off.
//!
//! **One watcher per mailbox across processes.** Every process runs the
//! supervisor, but a watcher connects only while it holds the mailbox's lease
//! in the store (`store::lease`, name `watch:<user id>`, 15 s, renewed every
//! 5 s); the others look again every 5 s. A renewal that fails or finds
//! another holder closes the connection at once, so two processes never both
//! watch past a renewal; when the holder dies, another takes over within the
//! lease's life plus a look (at most ~20 s), and rereads the last messages
//! (facts are idempotent: nothing counts twice). A stopped watcher frees its
//! lease.
//!
//! Architecture invariant: **the watcher stores only facts.** A reply is a
//! recipient index and a time, keyed by a keyed hash of the reply's Message-ID;
//! a bounce is the delivery state and the DSN's diagnostic. Nothing else of a
//! message is kept, and only header fields (and a DSN's status part) are read.
//!
//! Connections are made by `addin::mailbox::connect`, as for Auto Capture (which
//! does not go through `outbound` yet).

mod apply;
pub mod parse;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

pub use watch::Options;

use crate::ids::id_to_text;
use crate::state::App;

/// The list of mailboxes is re-read at least this often.
const RESCAN: Duration = Duration::from_secs(60);
/// The organization's switches (in memory) are looked at this often.
const SWITCHES: Duration = Duration::from_secs(2);

/// The running watchers; dropping it stops them all.
#[derive(Default)]
struct Watchers(HashMap<u64, (u64, JoinHandle<()>)>);

impl Drop for Watchers {
    fn drop(&mut self) {
        for (_, (_, task)) in self.0.drain() {
            task.abort();
        }
    }
}

/// Keeps one watcher per watchable mailbox until the task is aborted (which
/// stops every watcher too).
pub async fn supervise(app: Arc<App>) {
    let opts = Options {
        poll: app.config.reply_poll,
        idle: app.config.reply_idle,
    };
    let mut watchers = Watchers::default();
    let mut rescan = tokio::time::interval(RESCAN);
    let mut switches = tokio::time::interval(SWITCHES);
    let key = |a: &App| {
        let s = a.settings();
        (s.auto_capture, s.email_engagement)
    };
    let mut last = key(&app);
    loop {
        tokio::select! {
            _ = rescan.tick() => {}
            _ = app.mailboxes_changed.notified() => {}
            _ = switches.tick() => {
                if key(&app) == last {
                    continue;
                }
            }
        }
        last = key(&app);
        reconcile(&app, &mut watchers, opts).await;
    }
}

/// Starts and stops watchers so that exactly the watchable mailboxes have one.
async fn reconcile(app: &Arc<App>, watchers: &mut Watchers, opts: Options) {
    let org = app.settings();
    let mut wanted = HashMap::new();
    if org.auto_capture && org.email_engagement {
        let all = match app.store.mailboxes().await {
            Ok(all) => all,
            Err(e) => {
                tracing::error!(error = %e, "reply watcher: cannot list the mailboxes");
                return;
            }
        };
        for (user, cfg) in all {
            match app.store.user_settings(user).await {
                Ok(s) if s.auto_capture => {
                    wanted.insert(user, cfg);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "reply watcher: cannot read a user's settings");
                    return;
                }
            }
        }
    }
    watchers.0.retain(|user, (updated, task)| {
        let keep = wanted
            .get(user)
            .is_some_and(|c| c.updated_ms == *updated && !task.is_finished());
        if !keep {
            task.abort();
            tracing::info!(user = %id_to_text(*user), "reply watcher: stopped");
        }
        keep
    });
    for (user, cfg) in wanted {
        if watchers.0.contains_key(&user) {
            continue;
        }
        let updated = cfg.updated_ms;
        let task = tokio::spawn(watch::run(app.clone(), user, cfg, opts));
        watchers.0.insert(user, (updated, task));
    }
}
