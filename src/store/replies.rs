//! The `Store` methods of the reply watcher (`replies`): the Message-ID index
//! of followed emails and the per-recipient reply facts.
//!
//! Every copy of one followed email carries the email's Message-ID, so a reply's
//! `In-Reply-To`/`References` names it. The index is a keyed hash of that
//! Message-ID in the email's `lookups` (its own namespace, next to the address
//! hashes of data-subject requests), so it is written with the record and
//! removed with it at retention, on both backends, with nothing else to keep in
//! step. Reply facts hold a recipient index and a time only; each is keyed by
//! a keyed hash of the reply's own Message-ID, so reading the same message
//! again never counts it twice.

use super::{Backend, Result, Store};
use crate::model::Reply;
use crate::seal::Sealer;

/// The keyed hash under which a followed email is indexed by its Message-ID
/// (normalized, without angle brackets).
pub(super) fn followed_message_id(k: &Sealer, message_id: &str) -> String {
    k.lookup_hex(&format!("followed-message-id:{message_id}"))
}

impl Store {
    /// The key a reply is stored under: a keyed hash of its own Message-ID (or
    /// of whatever stands in for one), never the id itself.
    pub fn reply_key(&self, message_id: &str) -> String {
        self.sealer().lookup_hex(&format!("reply:{message_id}"))
    }

    /// Ids of the followed emails whose Message-ID is `message_id` (normalized,
    /// without angle brackets). Some may have expired since.
    pub async fn emails_by_message_id(&self, message_id: &str) -> Result<Vec<u64>> {
        self.ids_for_lookup(followed_message_id(&self.sealer(), message_id))
            .await
    }

    /// Records a reply to `email` under `key` (see `reply_key`). Returns true if
    /// and only if it is new: a key already recorded for this email, or an email
    /// that no longer exists, writes nothing. The fact lives as long as the email.
    pub async fn add_reply(&self, email: u64, key: &str, reply: Reply) -> Result<bool> {
        let key = key.to_owned();
        on_backend!(self, |s| s.add_reply(email, &key, &reply), |r| r
            .add_reply(email, &key, &reply)
            .await)
    }

    /// Deletes the reply facts of one recipient of `email` (a data-subject
    /// erase). Returns how many were deleted.
    pub async fn erase_replies(&self, email: u64, recipient: u32) -> Result<u64> {
        on_backend!(self, |s| s.erase_replies(email, recipient), |r| r
            .erase_replies(email, recipient)
            .await)
    }

    /// The replies recorded for one email, oldest first.
    pub async fn replies_for(&self, email: u64) -> Result<Vec<Reply>> {
        let mut out = on_backend!(self, |s| s.replies_for(email), |r| r
            .replies_for(email)
            .await)?;
        out.sort_by_key(|r| (r.at_ms, r.recipient));
        Ok(out)
    }

    /// `replies_for` of each of `emails`, in that order: one read transaction
    /// (embedded) or every email's read sent at once (Redis), for reports over
    /// many emails.
    pub async fn replies_for_many(&self, emails: &[u64]) -> Result<Vec<Vec<Reply>>> {
        let ids = emails.to_vec();
        let mut all = on_backend!(self, |s| s.replies_for_many(&ids), |r| r
            .replies_for_many(&ids)
            .await)?;
        for out in &mut all {
            out.sort_by_key(|r| (r.at_ms, r.recipient));
        }
        Ok(all)
    }
}
