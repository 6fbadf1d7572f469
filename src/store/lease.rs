//! Leases: "at most one process does this at a time" across the processes on
//! one store (today: one reply watcher per mailbox, see `replies`).
//!
//! A lease has a name, an owner (a number the holder picks once per process)
//! and an expiry. [`Store::take_lease`] takes a free or expired lease, or
//! extends one the caller already holds, and says whether the caller holds it
//! now; a holder renews well before the expiry and stops the work the moment
//! a renewal fails, so when it dies another process takes the lease within
//! its lifetime. Redis: `mb:{g}:lease:<name>` holding the owner, set with a
//! compare-and-extend script (`PX`, so the expiry is Redis's own clock).
//! Embedded: one process owns the data directory, so the leases are a map in
//! that process's memory.
//!
//! Names are stored in clear: build them from record ids (`watch:<user id>`),
//! never from addresses.

use super::{Backend, Result, Store};

impl Store {
    /// Takes the lease `name` for `owner` for `ttl_ms` if it is free, expired
    /// or already `owner`'s (then it is extended). True if and only if
    /// `owner` holds it now.
    pub async fn take_lease(&self, name: &str, owner: u64, ttl_ms: u64) -> Result<bool> {
        match &self.backend {
            Backend::Embedded(b) => Ok(b.take_lease(name, owner, ttl_ms)),
            Backend::Redis(r) => r.take_lease(name, owner, ttl_ms).await,
        }
    }

    /// Frees the lease if `owner` holds it (else nothing).
    pub async fn release_lease(&self, name: &str, owner: u64) -> Result<()> {
        match &self.backend {
            Backend::Embedded(b) => {
                b.release_lease(name, owner);
                Ok(())
            }
            Backend::Redis(r) => r.release_lease(name, owner).await,
        }
    }
}
