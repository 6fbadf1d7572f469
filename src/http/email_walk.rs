//! The caller's followed emails with their events, newest first, at most
//! [`MAX_EMAILS`], for the insights handlers: records a page at a time, events
//! [`READ_AT_ONCE`] emails at a time (`Store::events_for_many`: one read
//! barrier per chunk on Redis), so what is held at once is one chunk.

use super::response::{store_failed, Resp};
use crate::model::{EmailRecord, Event, User};
use crate::state::App;

/// Most emails (newest first) one insights request reads.
pub const MAX_EMAILS: usize = 1000;
const PAGE: usize = 200;
/// Emails whose events are read together.
const READ_AT_ONCE: usize = 32;

/// The caller's emails, newest first, at most [`MAX_EMAILS`], a page at a time.
pub(super) struct Emails<'a> {
    app: &'a App,
    owner: u64,
    before: Option<(u64, u64)>,
    page: std::vec::IntoIter<EmailRecord>,
    /// Emails of the page whose events are read, next first.
    ready: std::vec::IntoIter<(EmailRecord, Vec<Event>)>,
    more: bool,
    read: usize,
    /// More than [`MAX_EMAILS`] were there: the walk stopped short.
    pub(super) truncated: bool,
}

impl<'a> Emails<'a> {
    pub(super) fn of(app: &'a App, user: &User) -> Emails<'a> {
        Emails {
            app,
            owner: user.id,
            before: None,
            page: Vec::new().into_iter(),
            ready: Vec::new().into_iter(),
            more: true,
            read: 0,
            truncated: false,
        }
    }

    /// The next email with its events.
    pub(super) async fn next(&mut self) -> Result<Option<(EmailRecord, Vec<Event>)>, Resp> {
        loop {
            if let Some(next) = self.ready.next() {
                return Ok(Some(next));
            }
            let mut chunk = Vec::new();
            while chunk.len() < READ_AT_ONCE {
                let Some(rec) = self.page.next() else { break };
                if self.read >= MAX_EMAILS {
                    self.truncated = true;
                    break;
                }
                self.read += 1;
                chunk.push(rec);
            }
            if !chunk.is_empty() {
                let ids: Vec<u64> = chunk.iter().map(|r| r.id).collect();
                let events = self
                    .app
                    .store
                    .events_for_many(&ids)
                    .await
                    .map_err(store_failed)?;
                self.ready = chunk
                    .into_iter()
                    .zip(events)
                    .collect::<Vec<_>>()
                    .into_iter();
                continue;
            }
            if self.truncated {
                return Ok(None);
            }
            if !self.more {
                return Ok(None);
            }
            let page = self
                .app
                .store
                .list_emails(Some(self.owner), self.before, PAGE)
                .await
                .map_err(store_failed)?;
            self.more = page.len() == PAGE;
            self.before = page.last().map(|e| (e.created_ms, e.id));
            self.page = page.into_iter();
        }
    }
}
