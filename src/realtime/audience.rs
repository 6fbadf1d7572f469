//! Who can receive an owner's hit notifications, decided once per publisher
//! pass: anyone, if an enabled webhook takes everyone's emails (an admin's);
//! else the owners of enabled webhooks, the owners with a stream open in this
//! process, and the owners any process recorded a stream for within the feed
//! window (`Store::listeners`, so a `Last-Event-ID` resume still finds every
//! event it could ask for).
//!
//! Hits of an owner outside it are not turned into application events at all
//! (their first marks are still kept, so `first` stays true only once):
//! nobody could ever read those events, and deriving, sealing and appending
//! them was a fifth of the pixel's cost. An owner starts receiving from the
//! pass after their first webhook (within the webhook list's cache time) or
//! stream; a stream opened in another process is seen by the next pass.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::feed::Hub;
use crate::model::Webhook;
use crate::store::Store;

/// How often this process records its open streams again (well within the
/// feed window, so a stream open for days keeps its owner listed).
pub const REFRESH: Duration = Duration::from_secs(3600);

/// The owners a pass derives events for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Receivers {
    pub everyone: bool,
    pub owners: HashSet<u64>,
}

impl Receivers {
    /// Everyone (a safe default when the listeners cannot be read).
    pub fn everyone() -> Receivers {
        Receivers {
            everyone: true,
            owners: HashSet::new(),
        }
    }

    pub fn includes(&self, owner: u64) -> bool {
        self.everyone || self.owners.contains(&owner)
    }
}

/// The receivers now, from the webhook list, this process's hub and the
/// stored listeners. A store error derives for everyone (a notification is
/// never dropped for want of this optimisation).
pub async fn receivers(store: &Store, hooks: &[Webhook], hub: &Hub) -> Receivers {
    let enabled = hooks.iter().filter(|h| h.disabled_ms.is_none());
    let mut owners = HashSet::new();
    for h in enabled {
        if h.all {
            return Receivers::everyone();
        }
        owners.insert(h.owner);
    }
    owners.extend(hub.owners_listening());
    match store.listeners(crate::ids::now_ms()).await {
        Ok(stored) => owners.extend(stored),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the stream listeners; deriving for everyone");
            return Receivers::everyone();
        }
    }
    Receivers {
        everyone: false,
        owners,
    }
}

/// Records this process's open streams again when `REFRESH` has passed
/// since `last`.
pub async fn refresh(store: &Store, hub: &Hub, last: &mut Instant) {
    if last.elapsed() < REFRESH {
        return;
    }
    *last = Instant::now();
    if let Err(e) = store
        .listeners_seen(&hub.owners_listening(), crate::ids::now_ms())
        .await
    {
        tracing::warn!(error = %e, "cannot record the open streams' owners");
    }
}
