//! The Redis store's records for the Outlook add-in: activities (with their
//! Message-ID and owner indexes and the data-subject index), per-user settings,
//! connected mailboxes and external identities.
//!
//! Keys (see ARCHITECTURE.md): `mb:{a:<id>}` the sealed activity and
//! `mb:{m:<Message-ID hash>}` its deduplication key, both expiring with the
//! activity; `mb:{ao:<owner>}:acts` the owner's activities by creation time;
//! `mb:{s:<hash>}:emails` shared with followed emails (activities are indexed
//! under their own hash namespace, so ids cannot collide in meaning). Settings,
//! mailboxes and external identities are hashes under `{g}` and persist.

use ::redis::AsyncCommands as _;

use super::super::addin::Inserted;
use super::super::{Result, StoreError};
use super::{expire_with, hex, keys, Redis, MAX_EXPIRES_MS};
use crate::ids::{id_from_text, id_to_text};
use crate::model::{Activity, MailboxConfig, User, UserSettings};

const USER_SETTINGS: &str = "mb:{g}:user_settings";
const MAILBOXES: &str = "mb:{g}:mailboxes";
const EXTERNAL_IDS: &str = "mb:{g}:external_ids";

fn activity_key(id: u64) -> String {
    format!("mb:{{a:{}}}", id_to_text(id))
}

fn msgid_key(hash: &str) -> String {
    format!("mb:{{m:{hash}}}")
}

fn owner_key(owner: u64) -> String {
    format!("mb:{{ao:{}}}:acts", id_to_text(owner))
}

/// Claims a Message-ID key in one step (check and insert together): sets
/// `KEYS[1]` to `ARGV[1]` (expiring at `ARGV[2]`) if it is unset or still
/// names `ARGV[3]` (a holder found gone, or "" for none), and returns whoever
/// holds it afterwards.
const CLAIM: &str = r"
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
  return ARGV[1]
end
return cur
";

impl Redis {
    async fn write_record(&self, a: &Activity, expires: u64) -> Result<()> {
        let _: () = ::redis::cmd("SET")
            .arg(activity_key(a.id))
            .arg(serde_json::to_vec(a)?)
            .arg("PXAT")
            .arg(expires)
            .query_async(&mut self.c())
            .await?;
        Ok(())
    }

    async fn write_indexes(&self, a: &Activity, expires: u64) -> Result<()> {
        let mut c = self.c();
        let owner = owner_key(a.owner);
        let mut p = ::redis::pipe();
        p.zadd(&owner, id_to_text(a.id), a.created_ms).ignore();
        expire_with(&mut p, &owner, expires);
        p.query_async::<()>(&mut c).await?;
        for h in &a.lookups {
            let key = keys::subject(h);
            let mut p = ::redis::pipe();
            p.sadd(&key, id_to_text(a.id)).ignore();
            expire_with(&mut p, &key, expires);
            p.query_async::<()>(&mut c).await?;
        }
        Ok(())
    }

    async fn write_activity(&self, a: &Activity) -> Result<()> {
        let expires = a.expires_ms.clamp(1, MAX_EXPIRES_MS);
        self.write_record(a, expires).await?;
        self.write_indexes(a, expires).await
    }

    async fn unindex_activity(&self, a: &Activity) -> Result<()> {
        let mut c = self.c();
        let id = id_to_text(a.id);
        let _: () = c.zrem(owner_key(a.owner), &id).await?;
        for h in &a.lookups {
            let _: () = c.srem(keys::subject(h), &id).await?;
        }
        Ok(())
    }

    /// Deduplicates on the (per-owner) Message-ID key without a race: the
    /// record is written **before** the key is claimed (`CLAIM`, one script),
    /// so a key's holder always names a record that exists unless it was
    /// deleted or expired since. Losing the claim to a live holder removes our
    /// record and answers the holder; a holder found gone is replaced only if
    /// it still holds the key (compare-and-set in the same script), so two
    /// concurrent inserts of one Message-ID never both answer `New`.
    pub async fn insert_activity(&self, a: &Activity) -> Result<Inserted> {
        let expires = a.expires_ms.clamp(1, MAX_EXPIRES_MS);
        let key = msgid_key(&a.message_id);
        let ours = id_to_text(a.id);
        self.write_record(a, expires).await?;
        let mut stale = String::new();
        for _ in 0..8 {
            let holder: String = ::redis::cmd("EVAL")
                .arg(CLAIM)
                .arg(1)
                .arg(&key)
                .arg(&ours)
                .arg(expires)
                .arg(&stale)
                .query_async(&mut self.c())
                .await?;
            if holder == ours {
                self.write_indexes(a, expires).await?;
                return Ok(Inserted::New);
            }
            if let Some(found) = match id_from_text(&holder) {
                Some(id) => self.get_activity(id).await?,
                None => None,
            } {
                let _: () = self.c().del(activity_key(a.id)).await?;
                return Ok(Inserted::Existing(Box::new(found)));
            }
            // The holder was deleted or expired meanwhile: take over its key
            // if it still holds it.
            stale = holder;
        }
        let _: () = self.c().del(activity_key(a.id)).await?;
        Err(StoreError::Backend(
            "activity deduplication key kept changing; try again".into(),
        ))
    }

    pub async fn update_activity(&self, a: &Activity) -> Result<()> {
        let Some(old) = self.get_activity(a.id).await? else {
            return Err(StoreError::Conflict(format!(
                "activity {:016x} no longer exists",
                a.id
            )));
        };
        self.unindex_activity(&old).await?;
        self.write_activity(a).await
    }

    pub async fn get_activity(&self, id: u64) -> Result<Option<Activity>> {
        let json: Option<Vec<u8>> = self.c().get(activity_key(id)).await?;
        Ok(match json {
            Some(j) => Some(serde_json::from_slice(&j)?),
            None => None,
        })
    }

    pub async fn activity_by_message_id(&self, hash: &str) -> Result<Option<Activity>> {
        let id: Option<String> = self.c().get(msgid_key(hash)).await?;
        match id.as_deref().and_then(id_from_text) {
            Some(id) => self.get_activity(id).await,
            None => Ok(None),
        }
    }

    pub async fn tracked_message_ids(&self, hashes: &[String]) -> Result<Vec<bool>> {
        // One EXISTS per key: in a Cluster they live in different slots.
        futures_util::future::try_join_all(hashes.iter().map(|h| {
            let mut c = self.c();
            let key = msgid_key(h);
            async move { c.exists::<_, bool>(key).await }
        }))
        .await
        .map_err(StoreError::from)
    }

    /// Newest first; `before` = `(created_ms, id)` of the last activity of the
    /// previous page (exclusive). Members with the same score are ordered by
    /// their id text (16 hex digits, so the same order as the number).
    pub async fn list_activities(
        &self,
        owner: u64,
        before: Option<(u64, u64)>,
        limit: usize,
    ) -> Result<Vec<Activity>> {
        let key = owner_key(owner);
        let mut ids: Vec<String> = Vec::new();
        let max = match before {
            None => "+inf".to_string(),
            Some((t, id)) => {
                // Same-millisecond activities older than the cursor's id first.
                let cursor = id_to_text(id);
                let same: Vec<String> = ::redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(t)
                    .arg(t)
                    .arg("BYSCORE")
                    .arg("REV")
                    .query_async(&mut self.c())
                    .await?;
                ids.extend(same.into_iter().filter(|m| *m < cursor).take(limit));
                format!("({t}")
            }
        };
        if ids.len() < limit {
            let rest: Vec<String> = ::redis::cmd("ZRANGE")
                .arg(&key)
                .arg(max)
                .arg("-inf")
                .arg("BYSCORE")
                .arg("REV")
                .arg("LIMIT")
                .arg(0)
                .arg(limit - ids.len())
                .query_async(&mut self.c())
                .await?;
            ids.extend(rest);
        }
        let found = futures_util::future::try_join_all(
            ids.iter()
                .filter_map(|i| id_from_text(i))
                .map(|id| self.get_activity(id)),
        )
        .await?;
        Ok(found.into_iter().flatten().collect())
    }

    pub async fn delete_activity(&self, id: u64) -> Result<bool> {
        let Some(old) = self.get_activity(id).await? else {
            return Ok(false);
        };
        let mut c = self.c();
        let _: () = c.del(activity_key(id)).await?;
        let key = msgid_key(&old.message_id);
        let holder: Option<String> = c.get(&key).await?;
        if holder.as_deref().and_then(id_from_text) == Some(id) {
            let _: () = c.del(&key).await?;
        }
        self.unindex_activity(&old).await?;
        Ok(true)
    }

    pub async fn user_settings(&self, user: u64) -> Result<UserSettings> {
        let json: Option<Vec<u8>> = self.c().hget(USER_SETTINGS, id_to_text(user)).await?;
        Ok(match json {
            Some(j) => serde_json::from_slice(&j)?,
            None => UserSettings::default(),
        })
    }

    pub async fn put_user_settings(&self, user: u64, s: &UserSettings) -> Result<()> {
        let _: () = self
            .c()
            .hset(USER_SETTINGS, id_to_text(user), serde_json::to_vec(s)?)
            .await?;
        Ok(())
    }

    pub async fn mailbox(&self, user: u64) -> Result<Option<MailboxConfig>> {
        let json: Option<Vec<u8>> = self.c().hget(MAILBOXES, id_to_text(user)).await?;
        Ok(match json {
            Some(j) => Some(serde_json::from_slice(&j)?),
            None => None,
        })
    }

    /// Every connected mailbox, by user id.
    pub async fn mailboxes(&self) -> Result<Vec<(u64, MailboxConfig)>> {
        let all: std::collections::HashMap<String, Vec<u8>> = self.c().hgetall(MAILBOXES).await?;
        let mut out = Vec::with_capacity(all.len());
        for (id, json) in all {
            if let Some(id) = id_from_text(&id) {
                out.push((id, serde_json::from_slice(&json)?));
            }
        }
        out.sort_by_key(|(id, _)| *id);
        Ok(out)
    }

    pub async fn put_mailbox(&self, user: u64, m: &MailboxConfig) -> Result<()> {
        let _: () = self
            .c()
            .hset(MAILBOXES, id_to_text(user), serde_json::to_vec(m)?)
            .await?;
        Ok(())
    }

    pub async fn delete_mailbox(&self, user: u64) -> Result<bool> {
        let n: u64 = self.c().hdel(MAILBOXES, id_to_text(user)).await?;
        Ok(n > 0)
    }

    async fn user_by_id_text(&self, id: Option<String>) -> Result<Option<User>> {
        let Some(id) = id else { return Ok(None) };
        let json: Option<Vec<u8>> = self.c().hget(keys::USERS, id).await?;
        Ok(match json {
            Some(j) => Some(serde_json::from_slice(&j)?),
            None => None,
        })
    }

    pub async fn user_by_email_hash(&self, hash: &[u8; 32]) -> Result<Option<User>> {
        let id: Option<String> = self.c().hget(keys::USER_BY_EMAIL, hex(hash)).await?;
        self.user_by_id_text(id).await
    }

    pub async fn user_by_external(&self, key: &str) -> Result<Option<User>> {
        let id: Option<String> = self.c().hget(EXTERNAL_IDS, key).await?;
        self.user_by_id_text(id).await
    }

    pub async fn link_external(&self, key: &str, user: u64) -> Result<()> {
        let _: () = self.c().hset(EXTERNAL_IDS, key, id_to_text(user)).await?;
        Ok(())
    }
}
