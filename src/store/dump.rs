//! Enumerating and importing every kind of durable state, backend-neutral, for
//! `mailbeacon migrate` (the records a backend keeps, as it keeps them).
//!
//! `Store::export(kind, now)` lists one kind's records as the backend stores
//! them: sealed values stay sealed and keyed hashes stay hashes. A migration
//! copies the key ring first and opens both stores with the same sealer, so the
//! sealed text and the hashes mean the same at the destination; nothing is opened
//! or re-sealed on the way. `Store::import` writes such records into the other
//! backend, keeping ids, sequence numbers and times: each write is an upsert of
//! one record (or set-if-absent where the record is a mark), so running it again
//! after an interruption changes nothing. Indexes are rebuilt from the records
//! (activities by owner, Message-ID and address; a queue's due index).
//!
//! Each `Item` has a `key`, unique within its kind, so `migrate` can count
//! which source records the destination holds.
//!
//! Enumeration without a global index: activities and card marks are listed per
//! user (the users table), erased recipients, reply facts, first marks and
//! attachment-link files per live email, jobs per known queue name (`QUEUES`), so the same calls work on
//! one Redis node and on a Cluster (no `SCAN`).

use super::cards::Mark;
use super::queue::RawJob;
use super::realtime::Health;
use super::{Backend, Result, Store};
use crate::model::{Activity, AuditEntry, Contact, MailboxConfig, Reply, UserSettings};

/// Every kind `export`/`import` handles (users, settings, the key ring, emails
/// and events have their own calls).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Contacts,
    Erased,
    Activities,
    Audit,
    UserSettings,
    Mailboxes,
    ExternalIds,
    Webhooks,
    Cards,
    Replies,
    FirstMarks,
    Attachments,
    Jobs,
}

impl Kind {
    pub const ALL: [Kind; 13] = [
        Kind::Contacts,
        Kind::Erased,
        Kind::Activities,
        Kind::Audit,
        Kind::UserSettings,
        Kind::Mailboxes,
        Kind::ExternalIds,
        Kind::Webhooks,
        Kind::Cards,
        Kind::Replies,
        Kind::FirstMarks,
        Kind::Attachments,
        Kind::Jobs,
    ];

    /// The name `migrate` prints.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Contacts => "contacts",
            Kind::Erased => "erased recipients",
            Kind::Activities => "activities",
            Kind::Audit => "audit entries",
            Kind::UserSettings => "user settings",
            Kind::Mailboxes => "mailboxes",
            Kind::ExternalIds => "entra links",
            Kind::Webhooks => "webhooks",
            Kind::Cards => "card marks",
            Kind::Replies => "reply facts",
            Kind::FirstMarks => "first marks",
            Kind::Attachments => "attachment files",
            Kind::Jobs => "queued jobs",
        }
    }
}

/// The durable job queues: the outbox's copies and sources, reminders (and
/// other timers), webhook deliveries. A queue not named here is not copied.
pub const QUEUES: [&str; 4] = ["outbox", "outbox_src", "timers", "webhooks"];

/// One record of one kind, as a backend keeps it (sealed where it is sealed).
#[derive(Clone, Debug)]
pub enum Item {
    /// Keyed hash of the address, the contact (address sealed).
    Contact(String, Contact),
    /// Email id, recipient index.
    Erased(u64, u32),
    /// Sealed, with its keyed hashes.
    Activity(Box<Activity>),
    /// With its sequence number.
    Audit(AuditEntry),
    UserSettings(u64, UserSettings),
    /// User id, the mailbox (host, user name and credential sealed).
    Mailbox(u64, MailboxConfig),
    /// Keyed hash of `entra:{tid}:{oid}`, user id.
    External(String, u64),
    /// The webhook's stored JSON (url and secret sealed), its health and its
    /// attempt log (sealed, newest first).
    Webhook(WebhookDump),
    /// User, card id, mark.
    Card(u64, String, CardMark),
    /// Email, keyed hash of the reply's Message-ID, the fact.
    Reply(u64, String, Reply),
    /// Email, recipient, kind (0 open, 1 click), the email's expiry.
    First(u64, u32, u8, u64),
    /// Email, its attachment-link files in index order (each sealed as stored).
    Attachments(u64, Vec<Vec<u8>>),
    /// Queue name, the job (payload sealed; the lease is dropped on import).
    Job(String, JobDump),
}

/// A webhook as exported.
#[derive(Clone, Debug)]
pub struct WebhookDump {
    pub id: u64,
    pub json: Vec<u8>,
    pub failing_since_ms: Option<u64>,
    pub disabled_ms: Option<u64>,
    pub attempts: Vec<String>,
}

/// A card mark as exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CardMark {
    Dismissed(u64),
    Snoozed(u64),
}

/// A queued job as exported: its due time, attempts and sealed payload.
#[derive(Clone, Debug)]
pub struct JobDump {
    pub id: String,
    pub due_ms: u64,
    pub attempts: u32,
    pub sealed: String,
}

impl Item {
    /// Unique within its kind.
    pub fn key(&self) -> String {
        match self {
            Item::Contact(h, _) => h.clone(),
            Item::Erased(e, r) => format!("{e:016x}:{r}"),
            Item::Activity(a) => format!("{:016x}", a.id),
            Item::Audit(a) => a.seq.to_string(),
            Item::UserSettings(u, _) | Item::Mailbox(u, _) => format!("{u:016x}"),
            Item::External(h, _) => h.clone(),
            Item::Webhook(w) => format!("{:016x}", w.id),
            Item::Card(u, id, _) => format!("{u:016x}:{id}"),
            Item::Reply(e, h, _) => format!("{e:016x}:{h}"),
            Item::First(e, r, k, _) => format!("{e:016x}:{r}:{k}"),
            Item::Attachments(e, files) => format!("{e:016x}:{}", files.len()),
            Item::Job(q, j) => format!("{q}:{}", j.id),
        }
    }
}

impl Store {
    /// Every record of `kind` (live ones: expired emails, activities and marks
    /// are left out), as the backend keeps it.
    pub async fn export(&self, kind: Kind, now_ms: u64) -> Result<Vec<Item>> {
        let mut out = Vec::new();
        match kind {
            Kind::Contacts => {
                let all = on_backend!(self, |s| s.all_contacts(), |r| r.all_contacts().await)?;
                out.extend(all.into_iter().map(|(h, c)| Item::Contact(h, c)));
            }
            Kind::Audit => {
                let mut before = None;
                loop {
                    let page = on_backend!(self, |s| s.list_audit(before, 500), |r| r
                        .list_audit(before, 500)
                        .await)?;
                    let Some(last) = page.last() else { break };
                    before = Some(last.seq);
                    out.extend(page.into_iter().map(Item::Audit));
                }
            }
            Kind::UserSettings => {
                let all = on_backend!(self, |s| s.all_user_settings(), |r| r
                    .all_user_settings()
                    .await)?;
                out.extend(all.into_iter().map(|(u, s)| Item::UserSettings(u, s)));
            }
            Kind::Mailboxes => {
                let all = on_backend!(self, |s| s.mailboxes(), |r| r.mailboxes().await)?;
                out.extend(all.into_iter().map(|(u, m)| Item::Mailbox(u, m)));
            }
            Kind::ExternalIds => {
                let all = on_backend!(self, |s| s.external_links(), |r| r.external_links().await)?;
                out.extend(all.into_iter().map(|(h, u)| Item::External(h, u)));
            }
            Kind::Webhooks => {
                let all = on_backend!(self, |s| s.webhooks(), |r| r.webhooks().await)?;
                for (json, health) in all {
                    let id = serde_json::from_slice::<crate::model::Webhook>(&json)?.id;
                    let attempts = on_backend!(self, |s| s.webhook_attempts(id), |r| r
                        .webhook_attempts(id)
                        .await)?;
                    out.push(Item::Webhook(WebhookDump {
                        id,
                        json,
                        failing_since_ms: health.failing_since_ms,
                        disabled_ms: health.disabled_ms,
                        attempts,
                    }));
                }
            }
            Kind::Activities | Kind::Cards => {
                for user in on_backend!(self, |s| s.list_users(), |r| r.list_users().await)? {
                    self.export_user(kind, user.id, now_ms, &mut out).await?;
                }
            }
            Kind::Erased | Kind::Replies | Kind::FirstMarks | Kind::Attachments => {
                let mut before = None;
                loop {
                    let page = on_backend!(self, |s| s.list_emails(None, before, 200), |r| r
                        .list_emails(None, before, 200)
                        .await)?;
                    let Some(last) = page.last() else { break };
                    before = Some((last.created_ms, last.id));
                    for rec in page.iter().filter(|r| r.expires_ms > now_ms) {
                        self.export_email(kind, rec.id, rec.expires_ms, &mut out)
                            .await?;
                    }
                }
            }
            Kind::Jobs => {
                for q in QUEUES {
                    let jobs = on_backend!(self, |s| s.queue_all(q), |r| r.queue_all(q).await)?;
                    out.extend(jobs.into_iter().map(|j| {
                        Item::Job(
                            q.to_owned(),
                            JobDump {
                                id: j.id,
                                due_ms: j.due_ms,
                                attempts: j.attempts,
                                sealed: j.sealed,
                            },
                        )
                    }));
                }
            }
        }
        Ok(out)
    }

    async fn export_user(
        &self,
        kind: Kind,
        user: u64,
        now_ms: u64,
        out: &mut Vec<Item>,
    ) -> Result<()> {
        if kind == Kind::Cards {
            let marks = on_backend!(self, |s| s.card_marks(user, now_ms), |r| r
                .card_marks(user, now_ms)
                .await)?;
            out.extend(marks.into_iter().map(|(id, m)| {
                let m = match m {
                    Mark::Dismissed(t) => CardMark::Dismissed(t),
                    Mark::Snoozed(t) => CardMark::Snoozed(t),
                };
                Item::Card(user, id, m)
            }));
            return Ok(());
        }
        let mut before = None;
        loop {
            let page = on_backend!(self, |s| s.list_activities(user, before, 200), |r| r
                .list_activities(user, before, 200)
                .await)?;
            let Some(last) = page.last() else { break };
            before = Some((last.created_ms, last.id));
            out.extend(
                page.into_iter()
                    .filter(|a| a.expires_ms > now_ms)
                    .map(|a| Item::Activity(Box::new(a))),
            );
        }
        Ok(())
    }

    async fn export_email(
        &self,
        kind: Kind,
        email: u64,
        expires_ms: u64,
        out: &mut Vec<Item>,
    ) -> Result<()> {
        match kind {
            Kind::Erased => {
                let all = on_backend!(self, |s| s.erased_recipients(email), |r| r
                    .erased_recipients(email)
                    .await)?;
                out.extend(all.into_iter().map(|r| Item::Erased(email, r)));
            }
            Kind::Replies => {
                let all = on_backend!(self, |s| s.replies_keyed(email), |r| r
                    .replies_keyed(email)
                    .await)?;
                out.extend(all.into_iter().map(|(h, r)| Item::Reply(email, h, r)));
            }
            Kind::Attachments => {
                // Files are stored under indexes 0..n with no gap.
                let mut files = Vec::new();
                loop {
                    let i = files.len() as u32;
                    let Some(f) = on_backend!(self, |s| s.attachment(email, i), |r| r
                        .attachment(email, i)
                        .await)?
                    else {
                        break;
                    };
                    files.push(f);
                }
                if !files.is_empty() {
                    out.push(Item::Attachments(email, files));
                }
            }
            _ => {
                let all = on_backend!(self, |s| s.first_marks(email), |r| r
                    .first_marks(email)
                    .await)?;
                out.extend(
                    all.into_iter()
                        .map(|(r, k)| Item::First(email, r, k, expires_ms)),
                );
            }
        }
        Ok(())
    }

    /// Writes exported records (see the module doc); idempotent. Emails must be
    /// imported first: erased recipients, reply facts and first marks belong
    /// to an email and expire with it.
    pub async fn import(&self, items: Vec<Item>, now_ms: u64) -> Result<()> {
        for item in items {
            self.import_one(item, now_ms).await?;
        }
        Ok(())
    }

    async fn import_one(&self, item: Item, now_ms: u64) -> Result<()> {
        match item {
            Item::Contact(h, c) => {
                let rows = vec![(h, c)];
                on_backend!(self, |s| s.put_contacts(&rows), |r| r
                    .put_contacts(&rows)
                    .await)
            }
            Item::Erased(e, rcpt) => {
                on_backend!(self, |s| s.import_erased(e, rcpt), |r| r
                    .import_erased(e, rcpt)
                    .await)
            }
            Item::Activity(a) => {
                on_backend!(self, |s| s.import_activity(&a), |r| r
                    .import_activity(&a)
                    .await)
            }
            Item::Audit(a) => {
                on_backend!(self, |s| s.import_audit(&a), |r| r.import_audit(&a).await)
            }
            Item::UserSettings(u, st) => {
                on_backend!(self, |s| s.put_user_settings(u, &st), |r| r
                    .put_user_settings(u, &st)
                    .await)
            }
            Item::Mailbox(u, m) => {
                on_backend!(self, |s| s.put_mailbox(u, &m), |r| r
                    .put_mailbox(u, &m)
                    .await)
            }
            Item::External(h, u) => {
                on_backend!(self, |s| s.link_external(&h, u), |r| r
                    .link_external(&h, u)
                    .await)
            }
            Item::Webhook(w) => {
                let health = Health {
                    failing_since_ms: w.failing_since_ms,
                    disabled_ms: w.disabled_ms,
                };
                on_backend!(
                    self,
                    |s| s.import_webhook(w.id, &w.json, health, &w.attempts),
                    |r| r.import_webhook(w.id, &w.json, health, &w.attempts).await
                )
            }
            Item::Card(u, id, m) => {
                let m = match m {
                    CardMark::Dismissed(t) => Mark::Dismissed(t),
                    CardMark::Snoozed(t) => Mark::Snoozed(t),
                };
                on_backend!(self, |s| s.mark_card(u, &id, m, now_ms), |r| r
                    .mark_card(u, &id, m, now_ms)
                    .await)
            }
            Item::Reply(e, h, reply) => on_backend!(self, |s| s.add_reply(e, &h, &reply), |r| r
                .add_reply(e, &h, &reply)
                .await)
            .map(drop),
            Item::Attachments(e, files) => {
                on_backend!(self, |s| s.put_attachments(e, &files), |r| r
                    .put_attachments(e, &files)
                    .await)
                .map(drop)
            }
            Item::First(email, recipient, kind, expires_ms) => {
                let marks = vec![super::realtime::FirstMark {
                    email,
                    recipient,
                    kind,
                    expires_ms,
                }];
                on_backend!(self, |s| s.mark_first(&marks), |r| r
                    .mark_first(&marks)
                    .await)
                .map(drop)
            }
            Item::Job(q, j) => {
                let raw = RawJob {
                    id: j.id,
                    due_ms: j.due_ms,
                    attempts: j.attempts,
                    lease: 0,
                    until_ms: 0,
                    sealed: j.sealed,
                };
                on_backend!(self, |s| s.queue_import(&q, &raw), |r| r
                    .queue_import(&q, &raw)
                    .await)
            }
        }
    }
}
