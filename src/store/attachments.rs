//! The `Store` methods of attachment links (`"attachments": "link"`): the files
//! taken out of an email's copies, stored once per email and served by their
//! tracked download links.
//!
//! Each file is one value, keyed by (email id, attachment index), holding a
//! small JSON header (name, content type) and the bytes, sealed as a whole
//! with [`Sealer::seal_bytes`]: file names and contents are personal data. A
//! value is written only while its email exists, lives as long as the email
//! (Redis: the record's expiry; both: `sweep` removes it with the email) and
//! can be removed on its own (`delete_attachments`).

use serde::{Deserialize, Serialize};

use super::{Backend, Result, Store, StoreError};
use crate::model::Attachment;
use crate::seal::Sealer;

/// The header in front of the bytes, inside the seal.
#[derive(Serialize, Deserialize)]
struct Header {
    name: String,
    content_type: String,
}

fn seal_one(k: &Sealer, a: &Attachment) -> Result<Vec<u8>> {
    let mut plain = serde_json::to_vec(&Header {
        name: a.name.clone(),
        content_type: a.content_type.clone(),
    })?;
    plain.push(b'\n');
    plain.extend_from_slice(&a.data);
    Ok(k.seal_bytes(&plain))
}

fn open_one(k: &Sealer, sealed: &[u8]) -> Result<Attachment> {
    let plain = k
        .open_bytes(sealed)
        .map_err(|e| StoreError::Backend(format!("a stored attachment cannot be opened: {e:?}")))?;
    let nl = plain
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| StoreError::Backend("a stored attachment has no header".into()))?;
    let h: Header = serde_json::from_slice(&plain[..nl])?;
    Ok(Attachment {
        name: h.name,
        content_type: h.content_type,
        data: plain[nl + 1..].to_vec(),
    })
}

impl Store {
    /// Stores the files of one email (index `i` is `attachments[i]`), sealed.
    /// Returns false (and writes nothing) if the email does not exist.
    pub async fn put_attachments(&self, email: u64, attachments: &[Attachment]) -> Result<bool> {
        if attachments.is_empty() {
            return Ok(true);
        }
        let k = self.sealer();
        let sealed: Vec<Vec<u8>> = attachments
            .iter()
            .map(|a| seal_one(&k, a))
            .collect::<Result<_>>()?;
        on_backend!(self, |s| s.put_attachments(email, &sealed), |r| r
            .put_attachments(email, &sealed)
            .await)
    }

    /// File `index` of one email, if it is (still) stored.
    pub async fn attachment(&self, email: u64, index: u32) -> Result<Option<Attachment>> {
        let k = self.sealer();
        let sealed = on_backend!(self, |s| s.attachment(email, index), |r| r
            .attachment(email, index)
            .await)?;
        sealed.map(|s| open_one(&k, &s)).transpose()
    }

    /// Removes every file of one email (retention does this with the email).
    pub async fn delete_attachments(&self, email: u64) -> Result<()> {
        on_backend!(self, |s| s.delete_attachments(email), |r| r
            .delete_attachments(email)
            .await)
    }
}
