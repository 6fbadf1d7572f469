//! The embedded store's leases (`store::lease`): only one process opens a data
//! directory, so a lease is an entry in this process's memory (name → owner,
//! expiry). Nothing is written to disk: a restart starts with no lease held.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Embedded;

/// Name → (owner, until when).
pub(super) type Leases = HashMap<String, (u64, Instant)>;

impl Embedded {
    pub fn take_lease(&self, name: &str, owner: u64, ttl_ms: u64) -> bool {
        let now = Instant::now();
        let mut all = self.leases_lock();
        all.retain(|_, (_, until)| *until > now);
        let (holder, until) = all
            .entry(name.to_owned())
            .or_insert((owner, now + Duration::from_millis(ttl_ms)));
        if *holder != owner {
            return false;
        }
        *until = now + Duration::from_millis(ttl_ms);
        true
    }

    pub fn release_lease(&self, name: &str, owner: u64) {
        let mut all = self.leases_lock();
        if all.get(name).is_some_and(|(holder, _)| *holder == owner) {
            all.remove(name);
        }
    }

    fn leases_lock(&self) -> std::sync::MutexGuard<'_, Leases> {
        // A poisoned lock means a panic between two lines above that leave
        // the map whole; it is still valid.
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }
}
