//! The embedded store's records: users and their token hashes, emails and their
//! indexes (by owner, by time, by expiry, by the addresses they mention), the
//! organization settings, contacts, the audit log, and retention. Every write is
//! an ordinary durable redb transaction: these are rare next to events.

use redb::{ReadableTable, ReadableTableMetadata};

use super::{
    Embedded, AUDIT, BY_OWNER, BY_TIME, CONTACTS, EMAILS, ERASED, EVENTS, EXPIRY, META, SUBJECTS,
    TOKENS, USERS, USER_BY_EMAIL,
};
use crate::keyring;
use crate::model::{AuditEntry, Contact, EmailRecord, OrgSettings, User};
use crate::store::{Result, StoreError};

const SETTINGS: &str = "settings";

impl Embedded {
    pub fn create_user(
        &self,
        user: &User,
        token_hash: &[u8; 32],
        email_hash: &[u8; 32],
    ) -> Result<()> {
        let tx = self.db().begin_write()?;
        {
            let mut by_email = tx.open_table(USER_BY_EMAIL)?;
            if by_email.get(email_hash.as_slice())?.is_some() {
                return Err(StoreError::Conflict(
                    "a user with that email already exists".into(),
                ));
            }
            by_email.insert(email_hash.as_slice(), user.id)?;
            tx.open_table(USERS)?
                .insert(user.id, serde_json::to_vec(user)?.as_slice())?;
            tx.open_table(TOKENS)?
                .insert(token_hash.as_slice(), user.id)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn user_by_token_hash(&self, hash: &[u8; 32]) -> Result<Option<User>> {
        let tx = self.db().begin_read()?;
        let Some(id) = tx
            .open_table(TOKENS)?
            .get(hash.as_slice())?
            .map(|g| g.value())
        else {
            return Ok(None);
        };
        let users = tx.open_table(USERS)?;
        let user = users.get(id)?;
        Ok(match user {
            Some(g) => Some(serde_json::from_slice(g.value())?),
            None => None,
        })
    }

    pub fn user(&self, id: u64) -> Result<Option<User>> {
        let tx = self.db().begin_read()?;
        let users = tx.open_table(USERS)?;
        let user = users.get(id)?;
        Ok(match user {
            Some(g) => Some(serde_json::from_slice(g.value())?),
            None => None,
        })
    }

    pub fn list_users(&self) -> Result<Vec<User>> {
        let tx = self.db().begin_read()?;
        let mut out = Vec::new();
        for row in tx.open_table(USERS)?.iter()? {
            let (_, json) = row?;
            out.push(serde_json::from_slice(json.value())?);
        }
        Ok(out)
    }

    pub fn update_user(&self, user: &User) -> Result<bool> {
        let tx = self.db().begin_write()?;
        {
            let mut users = tx.open_table(USERS)?;
            if users.get(user.id)?.is_none() {
                return Ok(false);
            }
            users.insert(user.id, serde_json::to_vec(user)?.as_slice())?;
        }
        tx.commit()?;
        Ok(true)
    }

    pub fn replace_tokens(&self, user: u64, token_hash: &[u8; 32]) -> Result<bool> {
        let tx = self.db().begin_write()?;
        {
            if tx.open_table(USERS)?.get(user)?.is_none() {
                return Ok(false);
            }
            let mut tokens = tx.open_table(TOKENS)?;
            let mut old: Vec<Vec<u8>> = Vec::new();
            for row in tokens.iter()? {
                let (h, id) = row?;
                if id.value() == user {
                    old.push(h.value().to_vec());
                }
            }
            for h in &old {
                tokens.remove(h.as_slice())?;
            }
            tokens.insert(token_hash.as_slice(), user)?;
        }
        tx.commit()?;
        Ok(true)
    }

    pub fn user_count(&self) -> Result<u64> {
        Ok(self.db().begin_read()?.open_table(USERS)?.len()?)
    }

    pub fn put_email(&self, rec: &EmailRecord) -> Result<()> {
        let tx = self.db().begin_write()?;
        {
            let mut emails = tx.open_table(EMAILS)?;
            let old: Option<EmailRecord> = match emails.get(rec.id)? {
                Some(g) => Some(serde_json::from_slice(g.value())?),
                None => None,
            };
            emails.insert(rec.id, serde_json::to_vec(rec)?.as_slice())?;
            let mut subjects = tx.open_table(SUBJECTS)?;
            if let Some(old) = old {
                for h in old.lookups.iter().filter(|h| !rec.lookups.contains(h)) {
                    subjects.remove((h.as_str(), rec.id))?;
                }
            }
            for h in &rec.lookups {
                subjects.insert((h.as_str(), rec.id), ())?;
            }
            tx.open_table(BY_OWNER)?
                .insert((rec.owner, rec.created_ms, rec.id), ())?;
            tx.open_table(BY_TIME)?
                .insert((rec.created_ms, rec.id), ())?;
            tx.open_table(EXPIRY)?
                .insert((rec.expires_ms, rec.id), ())?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn emails_for_lookup(&self, hash: &str) -> Result<Vec<u64>> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(SUBJECTS)?;
        let ids = t
            .range((hash, 0)..=(hash, u64::MAX))?
            .map(|x| x.map(|(k, _)| k.value().1))
            .collect::<std::result::Result<_, _>>()?;
        Ok(ids)
    }

    pub fn get_contacts(&self, hashes: &[String]) -> Result<Vec<Option<Contact>>> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(CONTACTS)?;
        let mut out = Vec::with_capacity(hashes.len());
        for h in hashes {
            out.push(match t.get(h.as_str())? {
                Some(g) => Some(serde_json::from_slice(g.value())?),
                None => None,
            });
        }
        Ok(out)
    }

    pub fn put_contacts(&self, contacts: &[(String, Contact)]) -> Result<()> {
        let tx = self.db().begin_write()?;
        {
            let mut t = tx.open_table(CONTACTS)?;
            for (hash, c) in contacts {
                t.insert(hash.as_str(), serde_json::to_vec(c)?.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn delete_contact(&self, hash: &str) -> Result<bool> {
        let tx = self.db().begin_write()?;
        let existed = tx.open_table(CONTACTS)?.remove(hash)?.is_some();
        tx.commit()?;
        Ok(existed)
    }

    pub fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        let tx = self.db().begin_write()?;
        {
            let mut t = tx.open_table(AUDIT)?;
            let last = t.last()?.map(|(k, _)| k.value()).unwrap_or(0);
            let e = AuditEntry {
                seq: last + 1,
                ..entry.clone()
            };
            t.insert(e.seq, serde_json::to_vec(&e)?.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn list_audit(&self, before: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(AUDIT)?;
        let mut out = Vec::new();
        for row in t.range(..before.unwrap_or(u64::MAX))?.rev().take(limit) {
            let (_, v) = row?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    /// Replaces every entry for which `f` returns a new version; returns how many.
    pub fn rewrite_audit(&self, f: &dyn Fn(&AuditEntry) -> Option<AuditEntry>) -> Result<u64> {
        let tx = self.db().begin_write()?;
        let mut n = 0;
        {
            let mut t = tx.open_table(AUDIT)?;
            let mut changed = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                let e: AuditEntry = serde_json::from_slice(v.value())?;
                if let Some(new) = f(&e) {
                    changed.push((k.value(), new));
                }
            }
            for (k, e) in changed {
                t.insert(k, serde_json::to_vec(&e)?.as_slice())?;
                n += 1;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// The stored bytes of an email record (for `replace_email_if`).
    pub fn get_email_raw(&self, id: u64) -> Result<Option<Vec<u8>>> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(EMAILS)?;
        let got = t.get(id)?;
        Ok(got.map(|g| g.value().to_vec()))
    }

    /// Replaces the record if and only if its stored bytes are still
    /// `expected` (one write transaction). Indexes are left as they are: the
    /// caller changes no indexed field.
    pub fn replace_email_if(&self, expected: &[u8], rec: &EmailRecord) -> Result<bool> {
        let tx = self.db().begin_write()?;
        let swapped = {
            let mut emails = tx.open_table(EMAILS)?;
            let same = emails.get(rec.id)?.is_some_and(|g| g.value() == expected);
            if same {
                emails.insert(rec.id, serde_json::to_vec(rec)?.as_slice())?;
            }
            same
        };
        tx.commit()?;
        Ok(swapped)
    }

    pub fn get_email(&self, id: u64) -> Result<Option<EmailRecord>> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(EMAILS)?;
        let got = t.get(id)?;
        Ok(match got {
            Some(g) => Some(serde_json::from_slice(g.value())?),
            None => None,
        })
    }

    pub fn list_emails(
        &self,
        owner: Option<u64>,
        before: Option<(u64, u64)>,
        limit: usize,
    ) -> Result<Vec<EmailRecord>> {
        let tx = self.db().begin_read()?;
        let emails = tx.open_table(EMAILS)?;
        let (bt, bid) = before.unwrap_or((u64::MAX, u64::MAX));
        let ids: Vec<u64> = match owner {
            Some(o) => {
                let t = tx.open_table(BY_OWNER)?;
                let r = t.range((o, 0, 0)..(o, bt, bid))?;
                r.rev()
                    .take(limit)
                    .map(|x| x.map(|(k, _)| k.value().2))
                    .collect::<std::result::Result<_, _>>()?
            }
            None => {
                let t = tx.open_table(BY_TIME)?;
                let r = t.range((0, 0)..(bt, bid))?;
                r.rev()
                    .take(limit)
                    .map(|x| x.map(|(k, _)| k.value().1))
                    .collect::<std::result::Result<_, _>>()?
            }
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(g) = emails.get(id)? {
                out.push(serde_json::from_slice(g.value())?);
            }
        }
        Ok(out)
    }

    pub fn settings(&self) -> Result<Option<OrgSettings>> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(META)?;
        let got = t.get(SETTINGS)?;
        Ok(match got {
            Some(g) => Some(serde_json::from_slice(g.value())?),
            None => None,
        })
    }

    pub fn put_settings(&self, s: &OrgSettings) -> Result<()> {
        let tx = self.db().begin_write()?;
        tx.open_table(META)?
            .insert(SETTINGS, serde_json::to_vec(s)?.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// Removes the emails (with their events and index entries) and the
    /// activities whose retention ended. Returns how many were removed.
    pub fn sweep(&self, now_ms: u64, created_before_ms: u64) -> Result<usize> {
        let removed =
            self.sweep_emails(now_ms, created_before_ms)? + self.sweep_activities(now_ms)?;
        // Card marks are not emails: not counted.
        self.sweep_cards(now_ms)?;
        Ok(removed)
    }

    fn sweep_emails(&self, now_ms: u64, created_before_ms: u64) -> Result<usize> {
        let tx = self.db().begin_write()?;
        let removed;
        {
            let mut expiry = tx.open_table(EXPIRY)?;
            let mut due: Vec<u64> = expiry
                .range(..(now_ms, 0))?
                .map(|x| x.map(|(k, _)| k.value().1))
                .collect::<std::result::Result<_, _>>()?;
            let mut by_time = tx.open_table(BY_TIME)?;
            for row in by_time.range(..(created_before_ms, 0))? {
                due.push(row?.0.value().1);
            }
            due.sort_unstable();
            due.dedup();
            let mut emails = tx.open_table(EMAILS)?;
            let mut by_owner = tx.open_table(BY_OWNER)?;
            let mut events = tx.open_table(EVENTS)?;
            let mut subjects = tx.open_table(SUBJECTS)?;
            let mut erased = tx.open_table(ERASED)?;
            for &id in &due {
                let rec: Option<EmailRecord> = match emails.remove(id)? {
                    Some(g) => Some(serde_json::from_slice(g.value())?),
                    None => None,
                };
                if let Some(rec) = rec {
                    expiry.remove((rec.expires_ms, id))?;
                    by_owner.remove((rec.owner, rec.created_ms, id))?;
                    by_time.remove((rec.created_ms, id))?;
                    for h in &rec.lookups {
                        subjects.remove((h.as_str(), id))?;
                    }
                    for r in 0..rec.recipients.len() as u32 {
                        erased.remove((id, r))?;
                    }
                }
                super::replies::remove_for(&tx, id)?;
                super::attachments::remove_for(&tx, id)?;
                let keys: Vec<(u64, u64)> = events
                    .range((id, 0)..=(id, u64::MAX))?
                    .map(|x| x.map(|(k, _)| k.value()))
                    .collect::<std::result::Result<_, _>>()?;
                for k in keys {
                    events.remove(k)?;
                }
            }
            removed = due.len();
        }
        tx.commit()?;
        Ok(removed)
    }

    /// Every user with the hashes of its bearer tokens (for `migrate`).
    pub fn users_with_tokens(&self) -> Result<Vec<(User, Vec<[u8; 32]>)>> {
        let tx = self.db().begin_read()?;
        let mut tokens: std::collections::HashMap<u64, Vec<[u8; 32]>> = Default::default();
        for row in tx.open_table(TOKENS)?.iter()? {
            let (h, id) = row?;
            if let Ok(h) = <[u8; 32]>::try_from(h.value()) {
                tokens.entry(id.value()).or_default().push(h);
            }
        }
        let mut out = Vec::new();
        for row in tx.open_table(USERS)?.iter()? {
            let (id, json) = row?;
            let user: User = serde_json::from_slice(json.value())?;
            out.push((user, tokens.remove(&id.value()).unwrap_or_default()));
        }
        Ok(out)
    }

    /// Adds another bearer token for an existing user (for `migrate`).
    pub fn add_token(&self, user: u64, token_hash: &[u8; 32]) -> Result<()> {
        let tx = self.db().begin_write()?;
        tx.open_table(TOKENS)?.insert(token_hash.as_slice(), user)?;
        tx.commit()?;
        Ok(())
    }

    /// Every contact preference, by keyed hash (for `migrate`).
    pub fn all_contacts(&self) -> Result<Vec<(String, Contact)>> {
        let tx = self.db().begin_read()?;
        let mut out = Vec::new();
        for row in tx.open_table(CONTACTS)?.iter()? {
            let (h, json) = row?;
            out.push((h.value().to_owned(), serde_json::from_slice(json.value())?));
        }
        Ok(out)
    }

    /// The erased recipients of one email (for `migrate`).
    pub fn erased_recipients(&self, email: u64) -> Result<Vec<u32>> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(ERASED)?;
        let rows = t
            .range((email, 0)..=(email, u32::MAX))?
            .map(|x| x.map(|(k, _)| k.value().1))
            .collect::<std::result::Result<_, _>>()?;
        Ok(rows)
    }

    /// Marks a recipient of an imported email erased (for `migrate`: its events
    /// were never exported). Idempotent.
    pub fn import_erased(&self, email: u64, recipient: u32) -> Result<()> {
        let tx = self.db().begin_write()?;
        tx.open_table(ERASED)?.insert((email, recipient), ())?;
        tx.commit()?;
        Ok(())
    }

    /// Writes an audit entry under its own sequence number (for `migrate`);
    /// later appends continue after the highest one.
    pub fn import_audit(&self, entry: &AuditEntry) -> Result<()> {
        let tx = self.db().begin_write()?;
        tx.open_table(AUDIT)?
            .insert(entry.seq, serde_json::to_vec(entry)?.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// The data directory's key ring file, if there is one.
    pub fn keyring(&self) -> Result<Option<String>> {
        match std::fs::read_to_string(keyring::path(&self.dir)) {
            Ok(json) => Ok(Some(json)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the key ring file (atomically) if and only if it still holds
    /// `expected` (`None`: no file yet). One process owns the data directory, so
    /// the check and the write cannot race another writer of this store.
    pub fn put_keyring(&self, expected: Option<&str>, json: &str) -> Result<bool> {
        if self.keyring()?.as_deref() != expected {
            return Ok(false);
        }
        keyring::write_json(&self.dir, json).map_err(StoreError::Backend)?;
        Ok(true)
    }
}
