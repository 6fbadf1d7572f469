//! The `Store` methods that keep the Outlook add-in's records (`model::addin`):
//! tracked emails (Email Activities), per-user settings, connected mailboxes
//! (Auto Capture credentials) and external identities (Entra `tid`+`oid`).
//!
//! Sealing, as everywhere in `Store`: an activity's personal group
//! (`ActivityPersonal`: participants, subject, bodies, attachment names), its
//! Message-ID and its conversation id are sealed together into `sealed` before a
//! backend sees the activity; the backend keeps only keyed hashes of the two ids
//! (for deduplication and lookups) and of the participants' addresses (in
//! `lookups`, for data-subject requests); the `regarding` record is sealed
//! with them. A mailbox's host, user name and credential are sealed field by
//! field.
//!
//! Activities are interaction data: each one carries `expires_ms` (from the
//! organization's `retention_days`) and the sweep removes it. Settings,
//! mailboxes and identities are not, and persist until deleted.

use serde::{Deserialize, Serialize};

use super::{Backend, Result, Store};
use crate::model::User;
use crate::seal::Sealer;

use crate::model::{
    Activity, ActivityPersonal, MailboxConfig, MailboxSecret, Regarding, UserSettings,
};

/// What `insert_activity` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// Stored as new.
    New,
    /// An activity with the same Message-ID already exists (nothing written).
    Existing(Box<Activity>),
}

/// What is sealed of an activity, as one JSON document.
#[derive(Serialize, Deserialize)]
struct SealedActivity {
    message_id: String,
    conversation: String,
    personal: ActivityPersonal,
    /// The CRM record (it names a customer, a deal): sealed too.
    #[serde(default)]
    regarding: Option<Regarding>,
}

/// The keyed hash that stands for a Message-ID at rest, **per owner**: the
/// deduplication and the Message-ID lookups are scoped to one user, so one
/// user's tracking never blocks (nor reveals) a colleague's tracking of the
/// same message; each gets their own activity.
fn msgid_hash(k: &Sealer, owner: u64, message_id: &str) -> String {
    k.lookup_hex(&format!("message-id:{owner:016x}:{message_id}"))
}

/// The keyed hash under which activities mentioning `address` are indexed
/// (distinct from the one for followed emails).
fn activity_lookup(k: &Sealer, address: &str) -> String {
    k.lookup_hex(&format!("activity:{address}"))
}

fn seal_activity(k: &Sealer, a: Activity) -> Result<Activity> {
    let p = &a.personal;
    let mut lookups: Vec<String> = p
        .from
        .iter()
        .chain(&p.to)
        .chain(&p.cc)
        .filter(|x| !x.address.is_empty())
        .map(|x| activity_lookup(k, &x.address))
        .collect();
    lookups.sort();
    lookups.dedup();
    let inner = SealedActivity {
        message_id: a.message_id.clone(),
        conversation: a.conversation.clone(),
        personal: a.personal.clone(),
        regarding: a.regarding.clone(),
    };
    Ok(Activity {
        regarding: None,
        message_id: msgid_hash(k, a.owner, &a.message_id),
        conversation: msgid_hash(k, a.owner, &a.conversation),
        personal: ActivityPersonal::default(),
        sealed: Some(k.seal(&serde_json::to_string(&inner)?)),
        lookups,
        ..a
    })
}

fn open_activity(k: &Sealer, a: Activity) -> Activity {
    let inner = a
        .sealed
        .as_deref()
        .and_then(|s| k.open(s).ok())
        .and_then(|j| serde_json::from_str::<SealedActivity>(&j).ok());
    match inner {
        Some(i) => Activity {
            message_id: i.message_id,
            conversation: i.conversation,
            personal: i.personal,
            // Records sealed before `regarding` was kept them in clear.
            regarding: i.regarding.or(a.regarding),
            sealed: None,
            lookups: Vec::new(),
            ..a
        },
        None => {
            tracing::error!(id = a.id, "cannot open a sealed activity");
            Activity {
                sealed: None,
                lookups: Vec::new(),
                ..a
            }
        }
    }
}

fn seal_mailbox(k: &Sealer, m: MailboxConfig) -> MailboxConfig {
    MailboxConfig {
        host: k.seal(&m.host),
        username: k.seal(&m.username),
        secret: match m.secret {
            MailboxSecret::Password(p) => MailboxSecret::Password(k.seal(&p)),
            MailboxSecret::Xoauth2(t) => MailboxSecret::Xoauth2(k.seal(&t)),
        },
        ..m
    }
}

fn open_mailbox(k: &Sealer, m: MailboxConfig) -> MailboxConfig {
    MailboxConfig {
        // A host stored before hosts were sealed is a plain name.
        host: k.open(&m.host).unwrap_or(m.host.clone()),
        username: k.open_lossy(&m.username),
        secret: match m.secret {
            MailboxSecret::Password(p) => MailboxSecret::Password(k.open_lossy(&p)),
            MailboxSecret::Xoauth2(t) => MailboxSecret::Xoauth2(k.open_lossy(&t)),
        },
        ..m
    }
}

impl Store {
    /// Stores `a` unless its owner already has an activity with its
    /// Message-ID (checked and written atomically), in which case that one is
    /// returned.
    pub async fn insert_activity(&self, a: Activity) -> Result<Inserted> {
        let k = self.sealer();
        let sealed = seal_activity(&k, a)?;
        let got = on_backend!(self, |s| s.insert_activity(&sealed), |r| r
            .insert_activity(&sealed)
            .await)?;
        Ok(match got {
            Inserted::New => Inserted::New,
            Inserted::Existing(a) => Inserted::Existing(Box::new(open_activity(&k, *a))),
        })
    }

    /// Replaces an existing activity (same id and Message-ID).
    pub async fn update_activity(&self, a: Activity) -> Result<()> {
        let sealed = seal_activity(&self.sealer(), a)?;
        on_backend!(self, |s| s.update_activity(&sealed), |r| r
            .update_activity(&sealed)
            .await)
    }

    pub async fn get_activity(&self, id: u64) -> Result<Option<Activity>> {
        let k = self.sealer();
        let a = on_backend!(self, |s| s.get_activity(id), |r| r.get_activity(id).await)?;
        Ok(a.map(|a| open_activity(&k, a)))
    }

    /// `owner`'s activity for `message_id` (another user's is never found).
    pub async fn activity_by_message_id(
        &self,
        owner: u64,
        message_id: String,
    ) -> Result<Option<Activity>> {
        let k = self.sealer();
        let h = msgid_hash(&k, owner, &message_id);
        let a = on_backend!(self, |s| s.activity_by_message_id(&h), |r| r
            .activity_by_message_id(&h)
            .await)?;
        Ok(a.map(|a| open_activity(&k, a)))
    }

    /// Which of `message_ids` `owner` tracks.
    pub async fn tracked_message_ids(
        &self,
        owner: u64,
        message_ids: Vec<String>,
    ) -> Result<Vec<bool>> {
        let k = self.sealer();
        let hashes: Vec<String> = message_ids
            .iter()
            .map(|m| msgid_hash(&k, owner, m))
            .collect();
        on_backend!(self, |s| s.tracked_message_ids(&hashes), |r| r
            .tracked_message_ids(&hashes)
            .await)
    }

    /// Newest first, `limit` at most; `before` = `(created_ms, id)` of the last
    /// activity of the previous page (exclusive), `None` for the first page.
    pub async fn list_activities(
        &self,
        owner: u64,
        before: Option<(u64, u64)>,
        limit: usize,
    ) -> Result<Vec<Activity>> {
        let k = self.sealer();
        let list = on_backend!(self, |s| s.list_activities(owner, before, limit), |r| r
            .list_activities(owner, before, limit)
            .await)?;
        Ok(list.into_iter().map(|a| open_activity(&k, a)).collect())
    }

    /// Ids of the activities whose participants include `address` (normalized).
    pub async fn activities_mentioning(&self, address: &str) -> Result<Vec<u64>> {
        let h = activity_lookup(&self.sealer(), address);
        self.ids_for_lookup(h).await
    }

    /// Removes an activity; returns true if and only if it existed.
    pub async fn delete_activity(&self, id: u64) -> Result<bool> {
        on_backend!(self, |s| s.delete_activity(id), |r| r
            .delete_activity(id)
            .await)
    }

    pub async fn user_settings(&self, user: u64) -> Result<UserSettings> {
        on_backend!(self, |s| s.user_settings(user), |r| r
            .user_settings(user)
            .await)
    }

    pub async fn put_user_settings(&self, user: u64, settings: UserSettings) -> Result<()> {
        on_backend!(self, |s| s.put_user_settings(user, &settings), |r| r
            .put_user_settings(user, &settings)
            .await)
    }

    pub async fn mailbox(&self, user: u64) -> Result<Option<MailboxConfig>> {
        let k = self.sealer();
        let m = on_backend!(self, |s| s.mailbox(user), |r| r.mailbox(user).await)?;
        Ok(m.map(|m| open_mailbox(&k, m)))
    }

    /// Every connected mailbox, by user id (the reply watcher's list).
    pub async fn mailboxes(&self) -> Result<Vec<(u64, MailboxConfig)>> {
        let k = self.sealer();
        let all = on_backend!(self, |s| s.mailboxes(), |r| r.mailboxes().await)?;
        Ok(all
            .into_iter()
            .map(|(u, m)| (u, open_mailbox(&k, m)))
            .collect())
    }

    pub async fn put_mailbox(&self, user: u64, m: MailboxConfig) -> Result<()> {
        let sealed = seal_mailbox(&self.sealer(), m);
        on_backend!(self, |s| s.put_mailbox(user, &sealed), |r| r
            .put_mailbox(user, &sealed)
            .await)
    }

    /// Returns true if and only if a mailbox was connected.
    pub async fn delete_mailbox(&self, user: u64) -> Result<bool> {
        on_backend!(self, |s| s.delete_mailbox(user), |r| r
            .delete_mailbox(user)
            .await)
    }

    pub async fn user_by_email(&self, email: String) -> Result<Option<User>> {
        let k = self.sealer();
        let hash = k.lookup(&email);
        let u = on_backend!(self, |s| s.user_by_email_hash(&hash), |r| r
            .user_by_email_hash(&hash)
            .await)?;
        Ok(u.map(|u| User {
            email: k.open_lossy(&u.email),
            ..u
        }))
    }

    /// The user an external identity (e.g. `entra:{tid}:{oid}`) is linked to.
    pub async fn user_by_external(&self, key: String) -> Result<Option<User>> {
        let k = self.sealer();
        let h = k.lookup_hex(&key);
        let u = on_backend!(self, |s| s.user_by_external(&h), |r| r
            .user_by_external(&h)
            .await)?;
        Ok(u.map(|u| User {
            email: k.open_lossy(&u.email),
            ..u
        }))
    }

    pub async fn link_external(&self, key: String, user: u64) -> Result<()> {
        let h = self.sealer().lookup_hex(&key);
        on_backend!(self, |s| s.link_external(&h, user), |r| r
            .link_external(&h, user)
            .await)
    }
}
