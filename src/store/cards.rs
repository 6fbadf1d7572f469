//! The state of a user's action cards (`insights::cards`): which cards they
//! dismissed and which they snoozed until when, and the `Store` methods that keep
//! it. Cards themselves are derived on every read; only this is stored.
//!
//! A card id is 16 hex digits from a hash over record ids (never an address), so
//! nothing here is personal and nothing is sealed. Per user there is one entry per
//! card: dismissed (until an expiry: the retention horizon, by which the card's
//! email is gone and the card cannot come back) or snoozed (until a time). A
//! dismissal replaces a snooze; a snooze leaves a dismissal as it is. Entries past
//! their time are not read, and are removed (Redis expires them by itself, the
//! embedded store on each write and at the retention sweep).
//!
//! Times are milliseconds passed in by the caller, so the backends and the tests
//! agree on "now".

use std::collections::{HashMap, HashSet};

use super::{Backend, Result, Store, StoreError};

/// Longest card id, in bytes (ids are 16 hex digits; a little room to spare).
pub const MAX_CARD_ID: usize = 64;

/// One user's dismissed and snoozed cards, as of a time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CardState {
    pub dismissed: HashSet<String>,
    /// Card id → snoozed until (ms).
    pub snoozed: HashMap<String, u64>,
}

/// What a backend keeps for one card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mark {
    /// Dismissed; forgotten after this time.
    Dismissed(u64),
    /// Hidden until this time.
    Snoozed(u64),
}

fn check_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > MAX_CARD_ID
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(StoreError::Backend(format!(
            "invalid card id {id:?}: 1 to {MAX_CARD_ID} letters, digits or _"
        )));
    }
    Ok(())
}

impl Store {
    /// Dismisses card `id` for `user`: it stays hidden until `expires_ms` (pass the
    /// retention horizon). Replaces a snooze. Expired entries of the user go.
    pub async fn dismiss_card(
        &self,
        user: u64,
        id: &str,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<()> {
        check_id(id)?;
        let id = id.to_owned();
        let mark = Mark::Dismissed(expires_ms);
        on_backend!(self, |s| s.mark_card(user, &id, mark, now_ms), |r| r
            .mark_card(user, &id, mark, now_ms)
            .await)
    }

    /// Snoozes card `id` for `user` until `until_ms`. A dismissed card stays
    /// dismissed; a second snooze replaces the first.
    pub async fn snooze_card(&self, user: u64, id: &str, now_ms: u64, until_ms: u64) -> Result<()> {
        check_id(id)?;
        let id = id.to_owned();
        let mark = Mark::Snoozed(until_ms);
        on_backend!(self, |s| s.mark_card(user, &id, mark, now_ms), |r| r
            .mark_card(user, &id, mark, now_ms)
            .await)
    }

    /// The user's dismissals still held at `now_ms` and snoozes ending after it.
    pub async fn card_state(&self, user: u64, now_ms: u64) -> Result<CardState> {
        let marks = on_backend!(self, |s| s.card_marks(user, now_ms), |r| r
            .card_marks(user, now_ms)
            .await)?;
        let mut st = CardState::default();
        for (id, m) in marks {
            match m {
                Mark::Dismissed(until) if until > now_ms => {
                    st.dismissed.insert(id);
                }
                Mark::Snoozed(until) if until > now_ms => {
                    st.snoozed.insert(id, until);
                }
                _ => {}
            }
        }
        Ok(st)
    }
}
