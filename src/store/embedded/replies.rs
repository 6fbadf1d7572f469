//! The embedded store's reply facts (`store::replies`): one row per reply,
//! keyed by (email id, keyed hash of the reply's Message-ID), holding the
//! recipient index and the time. Removed with the email at retention.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::super::Result;
use super::{Embedded, EMAILS};
use crate::model::Reply;

/// (email id, keyed hash of the reply's Message-ID) -> JSON `Reply`.
const REPLIES: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("replies");

/// Creates the table (called from `Embedded::open`).
pub(super) fn create_tables(tx: &WriteTransaction) -> Result<()> {
    tx.open_table(REPLIES)?;
    Ok(())
}

/// Deletes every reply of one email (retention), inside the caller's transaction.
pub(super) fn remove_for(tx: &WriteTransaction, email: u64) -> Result<()> {
    let mut t = tx.open_table(REPLIES)?;
    let mut keys = Vec::new();
    for row in t.range((email, "")..)? {
        let (k, _) = row?;
        let (e, h) = k.value();
        if e != email {
            break;
        }
        keys.push(h.to_string());
    }
    for h in keys {
        t.remove((email, h.as_str()))?;
    }
    Ok(())
}

impl Embedded {
    pub fn add_reply(&self, email: u64, key: &str, reply: &Reply) -> Result<bool> {
        let tx = self.db().begin_write()?;
        let exists = tx.open_table(EMAILS)?.get(email)?.is_some();
        let new = exists && {
            let mut t = tx.open_table(REPLIES)?;
            let seen = t.get((email, key))?.is_some();
            if !seen {
                t.insert((email, key), serde_json::to_vec(reply)?.as_slice())?;
            }
            !seen
        };
        if new {
            tx.commit()?;
        } else {
            tx.abort()?;
        }
        Ok(new)
    }

    pub fn erase_replies(&self, email: u64, recipient: u32) -> Result<u64> {
        let tx = self.db().begin_write()?;
        let mut n = 0;
        {
            let mut t = tx.open_table(REPLIES)?;
            let mut keys = Vec::new();
            for row in t.range((email, "")..)? {
                let (k, v) = row?;
                let (e, h) = k.value();
                if e != email {
                    break;
                }
                let reply: Reply = serde_json::from_slice(v.value())?;
                if reply.recipient == recipient {
                    keys.push(h.to_string());
                }
            }
            for h in keys {
                t.remove((email, h.as_str()))?;
                n += 1;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    pub fn replies_for(&self, email: u64) -> Result<Vec<Reply>> {
        let mut all = self.replies_for_many(&[email])?;
        Ok(all.pop().unwrap_or_default())
    }

    pub fn replies_for_many(&self, emails: &[u64]) -> Result<Vec<Vec<Reply>>> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(REPLIES)?;
        let mut all = Vec::with_capacity(emails.len());
        for &email in emails {
            let mut out = Vec::new();
            for row in t.range((email, "")..)? {
                let (k, v) = row?;
                if k.value().0 != email {
                    break;
                }
                out.push(serde_json::from_slice(v.value())?);
            }
            all.push(out);
        }
        Ok(all)
    }

    /// The replies of one email with their keys (for `migrate`).
    pub fn replies_keyed(&self, email: u64) -> Result<Vec<(String, Reply)>> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(REPLIES)?;
        let mut out = Vec::new();
        for row in t.range((email, "")..)? {
            let (k, v) = row?;
            let (e, h) = k.value();
            if e != email {
                break;
            }
            out.push((h.to_owned(), serde_json::from_slice(v.value())?));
        }
        Ok(out)
    }
}
