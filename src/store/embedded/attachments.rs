//! The embedded store's attachment files (`store::attachments`): one row per
//! file, keyed by (email id, attachment index), holding the sealed bytes.
//! Removed with the email at retention.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::super::Result;
use super::{Embedded, EMAILS};

/// (email id, attachment index) -> sealed header and bytes.
const ATTACHMENTS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("attachments");

/// Creates the table (called from `Embedded::open`).
pub(super) fn create_tables(tx: &WriteTransaction) -> Result<()> {
    tx.open_table(ATTACHMENTS)?;
    Ok(())
}

/// Deletes every file of one email, inside the caller's transaction.
pub(super) fn remove_for(tx: &WriteTransaction, email: u64) -> Result<()> {
    let mut t = tx.open_table(ATTACHMENTS)?;
    let keys: Vec<u32> = t
        .range((email, 0)..=(email, u32::MAX))?
        .map(|row| row.map(|(k, _)| k.value().1))
        .collect::<std::result::Result<_, _>>()?;
    for i in keys {
        t.remove((email, i))?;
    }
    Ok(())
}

impl Embedded {
    pub fn put_attachments(&self, email: u64, sealed: &[Vec<u8>]) -> Result<bool> {
        let tx = self.db().begin_write()?;
        if tx.open_table(EMAILS)?.get(email)?.is_none() {
            tx.abort()?;
            return Ok(false);
        }
        {
            let mut t = tx.open_table(ATTACHMENTS)?;
            for (i, v) in sealed.iter().enumerate() {
                t.insert((email, i as u32), v.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(true)
    }

    pub fn attachment(&self, email: u64, index: u32) -> Result<Option<Vec<u8>>> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(ATTACHMENTS)?;
        Ok(t.get((email, index))?.map(|v| v.value().to_vec()))
    }

    pub fn delete_attachments(&self, email: u64) -> Result<()> {
        let tx = self.db().begin_write()?;
        remove_for(&tx, email)?;
        tx.commit()?;
        Ok(())
    }
}
