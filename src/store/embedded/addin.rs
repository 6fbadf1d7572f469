//! The embedded store's tables for the Outlook add-in: activities and their
//! indexes, per-user settings, connected mailboxes and external identities.
//!
//! All writes are ordinary durable redb transactions (they are rare). An
//! activity and its Message-ID index entry are written in one transaction, so
//! two concurrent "track" calls for one message cannot both store it.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::super::addin::Inserted;
use super::super::{Result, StoreError};
use super::{Embedded, SUBJECTS, USERS, USER_BY_EMAIL};
use crate::model::{Activity, MailboxConfig, User, UserSettings};

const ACTIVITIES: TableDefinition<u64, &[u8]> = TableDefinition::new("activities");
/// keyed hash of the Message-ID -> activity id (the deduplication key).
const ACT_BY_MSGID: TableDefinition<&str, u64> = TableDefinition::new("activities_by_message_id");
/// (owner, created_ms, activity id)
const ACT_BY_OWNER: TableDefinition<(u64, u64, u64), ()> =
    TableDefinition::new("activities_by_owner");
/// (expires_ms, activity id)
const ACT_EXPIRY: TableDefinition<(u64, u64), ()> = TableDefinition::new("activities_by_expiry");
const USER_SETTINGS: TableDefinition<u64, &[u8]> = TableDefinition::new("user_settings");
const MAILBOXES: TableDefinition<u64, &[u8]> = TableDefinition::new("mailboxes");
/// "entra:{tid}:{oid}" -> user id
const EXTERNAL_IDS: TableDefinition<&str, u64> = TableDefinition::new("external_ids");

/// Creates the tables (called from `Embedded::open`).
pub(super) fn create_tables(tx: &WriteTransaction) -> Result<()> {
    tx.open_table(ACTIVITIES)?;
    tx.open_table(ACT_BY_MSGID)?;
    tx.open_table(ACT_BY_OWNER)?;
    tx.open_table(ACT_EXPIRY)?;
    tx.open_table(USER_SETTINGS)?;
    tx.open_table(MAILBOXES)?;
    tx.open_table(EXTERNAL_IDS)?;
    Ok(())
}

fn write_indexes(tx: &WriteTransaction, a: &Activity) -> Result<()> {
    tx.open_table(ACTIVITIES)?
        .insert(a.id, serde_json::to_vec(a)?.as_slice())?;
    tx.open_table(ACT_BY_MSGID)?
        .insert(a.message_id.as_str(), a.id)?;
    tx.open_table(ACT_BY_OWNER)?
        .insert((a.owner, a.created_ms, a.id), ())?;
    tx.open_table(ACT_EXPIRY)?
        .insert((a.expires_ms, a.id), ())?;
    let mut subjects = tx.open_table(SUBJECTS)?;
    for h in &a.lookups {
        subjects.insert((h.as_str(), a.id), ())?;
    }
    Ok(())
}

fn remove_indexes(tx: &WriteTransaction, a: &Activity) -> Result<()> {
    tx.open_table(ACTIVITIES)?.remove(a.id)?;
    let mut by_msgid = tx.open_table(ACT_BY_MSGID)?;
    // Only drop the index entry if it points at this activity.
    let points_here = by_msgid
        .get(a.message_id.as_str())?
        .is_some_and(|g| g.value() == a.id);
    if points_here {
        by_msgid.remove(a.message_id.as_str())?;
    }
    tx.open_table(ACT_BY_OWNER)?
        .remove((a.owner, a.created_ms, a.id))?;
    tx.open_table(ACT_EXPIRY)?.remove((a.expires_ms, a.id))?;
    let mut subjects = tx.open_table(SUBJECTS)?;
    for h in &a.lookups {
        subjects.remove((h.as_str(), a.id))?;
    }
    Ok(())
}

impl Embedded {
    pub fn insert_activity(&self, a: &Activity) -> Result<Inserted> {
        let tx = self.db().begin_write()?;
        let existing = tx
            .open_table(ACT_BY_MSGID)?
            .get(a.message_id.as_str())?
            .map(|g| g.value());
        if let Some(id) = existing {
            let got = tx
                .open_table(ACTIVITIES)?
                .get(id)?
                .map(|g| g.value().to_vec());
            if let Some(bytes) = got {
                let found: Activity = serde_json::from_slice(&bytes)?;
                tx.abort()?;
                return Ok(Inserted::Existing(Box::new(found)));
            }
        }
        write_indexes(&tx, a)?;
        tx.commit()?;
        Ok(Inserted::New)
    }

    pub fn update_activity(&self, a: &Activity) -> Result<()> {
        let tx = self.db().begin_write()?;
        let old: Option<Activity> = match tx.open_table(ACTIVITIES)?.get(a.id)? {
            Some(g) => Some(serde_json::from_slice(g.value())?),
            None => None,
        };
        let Some(old) = old else {
            return Err(StoreError::Conflict(format!(
                "activity {:016x} no longer exists",
                a.id
            )));
        };
        remove_indexes(&tx, &old)?;
        write_indexes(&tx, a)?;
        tx.commit()?;
        Ok(())
    }

    pub fn get_activity(&self, id: u64) -> Result<Option<Activity>> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(ACTIVITIES)?;
        let got = t.get(id)?;
        Ok(match got {
            Some(g) => Some(serde_json::from_slice(g.value())?),
            None => None,
        })
    }

    pub fn activity_by_message_id(&self, message_id: &str) -> Result<Option<Activity>> {
        let tx = self.db().begin_read()?;
        let Some(id) = tx
            .open_table(ACT_BY_MSGID)?
            .get(message_id)?
            .map(|g| g.value())
        else {
            return Ok(None);
        };
        let t = tx.open_table(ACTIVITIES)?;
        let got = t.get(id)?;
        Ok(match got {
            Some(g) => Some(serde_json::from_slice(g.value())?),
            None => None,
        })
    }

    pub fn tracked_message_ids(&self, ids: &[String]) -> Result<Vec<bool>> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(ACT_BY_MSGID)?;
        ids.iter()
            .map(|m| Ok(t.get(m.as_str())?.is_some()))
            .collect()
    }

    /// Newest first; `before` = `(created_ms, id)` of the last activity of the
    /// previous page (exclusive).
    pub fn list_activities(
        &self,
        owner: u64,
        before: Option<(u64, u64)>,
        limit: usize,
    ) -> Result<Vec<Activity>> {
        let tx = self.db().begin_read()?;
        let idx = tx.open_table(ACT_BY_OWNER)?;
        let acts = tx.open_table(ACTIVITIES)?;
        let mut out = Vec::new();
        let rows = match before {
            Some((t, id)) => idx.range((owner, 0, 0)..(owner, t, id))?,
            None => idx.range((owner, 0, 0)..=(owner, u64::MAX, u64::MAX))?,
        };
        for row in rows.rev() {
            if out.len() >= limit {
                break;
            }
            let (k, _) = row?;
            if let Some(g) = acts.get(k.value().2)? {
                out.push(serde_json::from_slice(g.value())?);
            }
        }
        Ok(out)
    }

    pub fn delete_activity(&self, id: u64) -> Result<bool> {
        let tx = self.db().begin_write()?;
        let old: Option<Activity> = match tx.open_table(ACTIVITIES)?.get(id)? {
            Some(g) => Some(serde_json::from_slice(g.value())?),
            None => None,
        };
        let Some(old) = old else {
            tx.abort()?;
            return Ok(false);
        };
        remove_indexes(&tx, &old)?;
        tx.commit()?;
        Ok(true)
    }

    /// Removes every activity whose retention ended before `now_ms`.
    pub fn sweep_activities(&self, now_ms: u64) -> Result<usize> {
        let tx = self.db().begin_write()?;
        let due: Vec<u64> = tx
            .open_table(ACT_EXPIRY)?
            .range(..(now_ms, 0))?
            .map(|x| x.map(|(k, _)| k.value().1))
            .collect::<std::result::Result<_, _>>()?;
        for id in &due {
            let old: Option<Activity> = match tx.open_table(ACTIVITIES)?.get(*id)? {
                Some(g) => Some(serde_json::from_slice(g.value())?),
                None => None,
            };
            if let Some(old) = old {
                remove_indexes(&tx, &old)?;
            }
        }
        tx.commit()?;
        Ok(due.len())
    }

    pub fn user_settings(&self, user: u64) -> Result<UserSettings> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(USER_SETTINGS)?;
        let got = t.get(user)?;
        Ok(match got {
            Some(g) => serde_json::from_slice(g.value())?,
            None => UserSettings::default(),
        })
    }

    pub fn put_user_settings(&self, user: u64, s: &UserSettings) -> Result<()> {
        let tx = self.db().begin_write()?;
        tx.open_table(USER_SETTINGS)?
            .insert(user, serde_json::to_vec(s)?.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    pub fn mailbox(&self, user: u64) -> Result<Option<MailboxConfig>> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(MAILBOXES)?;
        let got = t.get(user)?;
        Ok(match got {
            Some(g) => Some(serde_json::from_slice(g.value())?),
            None => None,
        })
    }

    /// Every connected mailbox, by user id.
    pub fn mailboxes(&self) -> Result<Vec<(u64, MailboxConfig)>> {
        let tx = self.db().begin_read()?;
        let mut out = Vec::new();
        for row in tx.open_table(MAILBOXES)?.iter()? {
            let (id, json) = row?;
            out.push((id.value(), serde_json::from_slice(json.value())?));
        }
        Ok(out)
    }

    pub fn put_mailbox(&self, user: u64, m: &MailboxConfig) -> Result<()> {
        let tx = self.db().begin_write()?;
        tx.open_table(MAILBOXES)?
            .insert(user, serde_json::to_vec(m)?.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    pub fn delete_mailbox(&self, user: u64) -> Result<bool> {
        let tx = self.db().begin_write()?;
        let existed = tx.open_table(MAILBOXES)?.remove(user)?.is_some();
        tx.commit()?;
        Ok(existed)
    }

    pub fn user_by_email_hash(&self, hash: &[u8; 32]) -> Result<Option<User>> {
        let tx = self.db().begin_read()?;
        let Some(id) = tx
            .open_table(USER_BY_EMAIL)?
            .get(hash.as_slice())?
            .map(|g| g.value())
        else {
            return Ok(None);
        };
        self.user_in(&tx, id)
    }

    pub fn user_by_external(&self, key: &str) -> Result<Option<User>> {
        let tx = self.db().begin_read()?;
        let Some(id) = tx.open_table(EXTERNAL_IDS)?.get(key)?.map(|g| g.value()) else {
            return Ok(None);
        };
        self.user_in(&tx, id)
    }

    fn user_in(&self, tx: &redb::ReadTransaction, id: u64) -> Result<Option<User>> {
        let users = tx.open_table(USERS)?;
        let got = users.get(id)?;
        Ok(match got {
            Some(g) => Some(serde_json::from_slice(g.value())?),
            None => None,
        })
    }

    pub fn link_external(&self, key: &str, user: u64) -> Result<()> {
        let tx = self.db().begin_write()?;
        tx.open_table(EXTERNAL_IDS)?.insert(key, user)?;
        tx.commit()?;
        Ok(())
    }
}
