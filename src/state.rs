//! The state every request handler shares: configuration, store, recorder, key
//! ring, cached organization settings, and the SMTP mailer.
//!
//! The hot path (pixel, click) reads only in-memory values here: the key ring
//! behind an `RwLock<Arc<_>>` (swapped when `keys rotate` changes the file, or
//! the copy in Redis) and
//! the Email Engagement switch as an atomic. It never waits on the store except to
//! commit its event.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;

use crate::config::Config;
use crate::deliver::Mailer;
use crate::keyring::{self, Keys};
use crate::model::{OrgSettings, User};
use crate::recorder::Recorder;
use crate::store::Store;
use crate::token::KeyRing;

/// How long a token's user is trusted from memory before it is read again.
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(1);

pub struct App {
    pub config: Config,
    pub store: Store,
    pub recorder: Recorder,
    pub mailer: Option<Mailer>,
    /// Bearer-token hash -> user and when it was read from the store. An entry
    /// older than [`AUTH_CACHE_TTL`] is read again (another process sharing the
    /// store may have disabled the user or replaced the token); changes made
    /// here evict the user's entries at once ([`App::forget_user`]).
    pub auth_cache: DashMap<[u8; 32], (User, Instant)>,
    /// Entra access-token checks (with their cached JWKS), when configured.
    pub entra: Option<crate::addin::entra::Validator>,
    /// Auto Capture: the roots IMAP TLS trusts (webpki plus `imap_ca_file`).
    pub imap_roots: Arc<rustls::RootCertStore>,
    /// Where application events go (webhooks, live streams); see `realtime`.
    pub realtime: crate::realtime::Emitter,
    /// The byte budget of large request bodies handled at once, in KiB permits
    /// (`body_budget_bytes`; see `http::budget`).
    pub body_budget: Arc<tokio::sync::Semaphore>,
    /// The outbox's queue of copies to send (see `outbox`), and the timers
    /// queue (reminders): enqueue through these so this process's worker wakes.
    pub outbox: crate::jobs::Jobs,
    pub timers: crate::jobs::Jobs,
    /// Where time-dependent logic (schedules, reminders, retries) reads "now";
    /// a test may swap in a `jobs::ManualClock` before serving.
    pub clock: Arc<dyn crate::jobs::Clock>,
    keys: RwLock<Arc<KeyRing>>,
    keys_modified: RwLock<Option<SystemTime>>,
    settings: RwLock<OrgSettings>,
    engagement: AtomicBool,
    /// Wakes the reply watcher's supervisor (`replies`): a mailbox was
    /// connected or disconnected, or a user's Auto Capture switch changed.
    pub mailboxes_changed: tokio::sync::Notify,
    /// Outside news for `company_news` cards (`insights_feed_url`), if configured.
    pub news: Option<Arc<crate::insights::feed::JsonFeed>>,
}

impl App {
    pub fn new(
        config: Config,
        store: Store,
        recorder: Recorder,
        mailer: Option<Mailer>,
        keys: KeyRing,
        settings: OrgSettings,
    ) -> App {
        let modified = keyring::modified(&config.data_dir);
        let entra = config
            .entra
            .clone()
            .map(crate::addin::entra::Validator::new);
        let imap_roots = crate::addin::mailbox::trust_roots(&config.imap_ca);
        let body_budget = Arc::new(tokio::sync::Semaphore::new(
            (config.body_budget_bytes / 1024).max(1),
        ));
        let outbox = crate::jobs::Jobs::new(store.clone(), "outbox");
        let timers = crate::jobs::Jobs::new(store.clone(), "timers");
        let news = config.insights_feed_url.clone().map(|url| {
            Arc::new(crate::insights::feed::JsonFeed::new(
                url,
                config.outbound.clone(),
                config.insights_feed_every,
            ))
        });
        App {
            config,
            store,
            recorder,
            mailer,
            auth_cache: DashMap::new(),
            entra,
            imap_roots,
            realtime: crate::realtime::Emitter::default(),
            body_budget,
            outbox,
            timers,
            clock: Arc::new(crate::jobs::SystemClock),
            keys: RwLock::new(Arc::new(keys)),
            keys_modified: RwLock::new(modified),
            engagement: AtomicBool::new(settings.email_engagement),
            settings: RwLock::new(settings),
            mailboxes_changed: tokio::sync::Notify::new(),
            news,
        }
    }

    /// Drops every cached token of user `id` (after a change to the account).
    pub fn forget_user(&self, id: u64) {
        self.auth_cache.retain(|_, (u, _)| u.id != id);
    }

    pub fn keys(&self) -> Arc<KeyRing> {
        // A poisoned lock only means a writer panicked mid-swap of an Arc, which
        // cannot leave it half-written: keep using the value.
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reloads the key ring if its file changed (a `keys rotate` by another
    /// process). Returns true if and only if a new ring was loaded.
    pub fn reload_keys_if_changed(&self) -> bool {
        let now = keyring::modified(&self.config.data_dir);
        let before = *self.keys_modified.read().unwrap_or_else(|p| p.into_inner());
        if now.is_none() || now == before {
            return false;
        }
        match keyring::load(&self.config.data_dir) {
            Ok(keys) => {
                let id = keys.signing.current_id();
                self.set_keys(keys);
                *self
                    .keys_modified
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = now;
                tracing::info!(current_key = id, "key ring reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "key ring changed but cannot be loaded; keeping the old one");
                false
            }
        }
    }

    /// Replaces the key ring (a rotation made by another process, read from the
    /// shared store).
    pub fn set_keys(&self, keys: Keys) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys.signing);
        self.store.set_sealer(keys.sealer);
    }

    pub fn settings(&self) -> OrgSettings {
        *self.settings.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_settings(&self, s: OrgSettings) {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = s;
        self.engagement.store(s.email_engagement, Ordering::Relaxed);
    }

    /// The Email Engagement switch, read on every pixel and click.
    pub fn engagement_enabled(&self) -> bool {
        self.engagement.load(Ordering::Relaxed)
    }
}
