//! Opening the store the configuration names, with its key ring, so callers
//! never pick a backend themselves: Redis when `MAILBEACON_REDIS_URL` (one node)
//! or `MAILBEACON_REDIS_CLUSTER` (seed nodes) is set, else the embedded store in
//! the data directory.
//!
//! The key ring lives where the store does: the data directory's file for the
//! embedded store, Redis (shared by every process) for Redis. `stored_keyring`
//! and `publish_keyring` reach it without opening the store, for
//! `mailbeacon keys`.

use std::path::PathBuf;

use crate::config::{Config, StoreKind};
use crate::keyring::{self, Keys};
use crate::token::KeyRing;

use super::embedded::Embedded;
use super::redis::conn::{self, Target};
use super::redis::{self as redis_store, Redis};
use super::{Backend, Store};

/// An opened store and what goes with it.
pub struct Opened {
    pub store: Store,
    /// The signing keys (the data keys are in the store's sealer).
    pub signing: KeyRing,
    /// With a shared key ring (Redis): its JSON as loaded, to notice rotations
    /// made by other processes (`Store::keyring` returns something else then).
    /// `None` when the ring is the data directory's file.
    pub shared_ring: Option<String>,
}

/// The Redis the configuration names, if any.
fn redis_target(config: &Config) -> Option<Target> {
    match (&config.redis_url, config.redis_cluster.is_empty()) {
        (Some(url), _) => Some(Target::Single(url.clone())),
        (None, false) => Some(Target::Cluster(config.redis_cluster.clone())),
        (None, true) => None,
    }
}

/// Makes everything the store writes private to this user: the process
/// creates files 0600 and directories 0700 from now on (umask 077: the redb
/// file, journals, spool, key ring and anything added later), and the data
/// directory itself, created if missing, is set to 0700.
pub fn private_data_dir(dir: &std::path::Path) -> Result<(), String> {
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    // Files written by an older version (0644) are made private too.
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make {} private (0700): {e}", d.display()))?;
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => {
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                        .map_err(|e| format!("cannot make {} private (0600): {e}", p.display()))?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Opens the configured store and loads its key ring, creating the ring if
/// there is none (embedded: a new file; Redis: the data directory's ring if it
/// has one, else a new one, see `shared_keyring`). With Redis, also logs what
/// its persistence settings promise.
pub async fn open(config: &Config) -> Result<Opened, String> {
    private_data_dir(&config.data_dir)?;
    let (backend, keys, shared_ring) = match redis_target(config) {
        None => {
            let (keys, created) = keyring::load_or_create(&config.data_dir)?;
            if created {
                tracing::info!(dir = %config.data_dir.display(), "created a new key ring");
            }
            let embedded = Embedded::open(&config.data_dir).map_err(|e| e.to_string())?;
            (Backend::Embedded(embedded), keys, None)
        }
        Some(t) => {
            let redis = Redis::open(&t, &config.data_dir, config.spool_max_bytes)
                .await
                .map_err(|e| format!("cannot open the Redis store: {e}"))?;
            log_redis_durability(&redis).await;
            let (keys, json) = shared_keyring(&redis, config).await?;
            (Backend::Redis(redis), keys, Some(json))
        }
    };
    let Keys { signing, sealer } = keys;
    Ok(Opened {
        store: Store::new(backend, sealer),
        signing,
        shared_ring,
    })
}

/// The key ring's JSON where the configured store keeps it (Redis, or the data
/// directory's file), without opening the store. `None` if there is none yet.
pub async fn stored_keyring(config: &Config) -> Result<Option<String>, String> {
    match redis_target(config) {
        Some(t) => {
            let mut c = conn::connect(&t).await.map_err(|e| e.to_string())?;
            redis_store::get_keyring(&mut c)
                .await
                .map_err(|e| e.to_string())
        }
        None => {
            let path = keyring::path(&config.data_dir);
            match std::fs::read_to_string(&path) {
                Ok(json) => Ok(Some(json)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(format!("cannot read {}: {e}", path.display())),
            }
        }
    }
}

/// Stores the key ring's JSON where the configured store keeps it if and only
/// if the stored one is still `expected` (`None`: none yet), without opening the
/// store. Returns false if it changed first (compare-and-set on Redis; a
/// concurrent rotation elsewhere is then retried on top by the caller).
pub async fn publish_keyring(
    config: &Config,
    expected: Option<&str>,
    json: &str,
) -> Result<bool, String> {
    match redis_target(config) {
        Some(t) => {
            let mut c = conn::connect(&t).await.map_err(|e| e.to_string())?;
            redis_store::put_keyring(&mut c, expected, json)
                .await
                .map_err(|e| e.to_string())
        }
        None => {
            if stored_keyring(config).await?.as_deref() != expected {
                return Ok(false);
            }
            keyring::write_json(&config.data_dir, json)?;
            Ok(true)
        }
    }
}

/// The key ring shared through Redis. The first process on an empty Redis stores
/// its data directory's ring if it has one (so links already sent keep working and
/// data sealed before stays readable), else a new one; a concurrent first start
/// loses the race and reads the winner's. A ring from before data keys existed is
/// completed the same way, compare-and-set.
async fn shared_keyring(redis: &Redis, config: &Config) -> Result<(Keys, String), String> {
    loop {
        let stored = redis.keyring().await.map_err(|e| e.to_string())?;
        let (expected, json) = match stored {
            Some(json) => match keyring::complete_json(&json)? {
                None => return Ok((keyring::from_json(&json)?, json)),
                Some(completed) => (Some(json), completed),
            },
            None => {
                let local = keyring::path(&config.data_dir);
                let json = if local.exists() {
                    let text = std::fs::read_to_string(&local)
                        .map_err(|e| format!("cannot read {}: {e}", local.display()))?;
                    keyring::complete_json(&text)?.unwrap_or(text)
                } else {
                    keyring::new_json()?
                };
                (None, json)
            }
        };
        if redis
            .put_keyring(expected.as_deref(), &json)
            .await
            .map_err(|e| e.to_string())?
        {
            tracing::info!("stored the key ring in Redis");
            return Ok((keyring::from_json(&json)?, json));
        }
        // Another process stored one first: read theirs.
    }
}

/// Logs what the Redis persistence settings promise (README, "Durability").
async fn log_redis_durability(redis: &Redis) {
    match redis.durability().await {
        Some((aof, fsync)) if aof == "yes" && fsync == "always" => tracing::info!(
            "Redis has appendonly yes, appendfsync always: an answered hit survives a Redis crash or power loss"
        ),
        Some((aof, fsync)) if aof == "yes" => tracing::warn!(
            appendfsync = %fsync,
            "Redis does not fsync every write: a crash of the Redis host can lose about the last second of answered hits (set appendfsync always for no loss)"
        ),
        Some(_) => tracing::warn!(
            "Redis has appendonly no: a Redis restart loses every hit since its last snapshot (set appendonly yes, appendfsync always)"
        ),
        None => tracing::info!(
            "cannot read Redis's persistence settings (CONFIG is disabled); the durability promise is the README's table for the configuration you chose"
        ),
    }
}

/// Both stores for `mailbeacon migrate`: (embedded, Redis, the Redis spool
/// directory to remove afterwards). Both seal with the source's key ring (the
/// migration copies it to the destination first), so records are opened from
/// one and sealed into the other.
pub async fn open_for_migration(
    config: &Config,
    from: StoreKind,
) -> Result<(Store, Store, PathBuf), String> {
    let e = |e: super::StoreError| e.to_string();
    let Some(target) = redis_target(config) else {
        return Err(
            "migrate needs Redis: set MAILBEACON_REDIS_URL or MAILBEACON_REDIS_CLUSTER".into(),
        );
    };
    private_data_dir(&config.data_dir)?;
    let embedded = Embedded::open(&config.data_dir).map_err(e)?;
    // The Redis store's spool is not used by a migration; keep it apart from a
    // server's.
    let spool_dir = config.data_dir.join("migrate-spool");
    let redis = Redis::open(&target, &spool_dir, config.spool_max_bytes)
        .await
        .map_err(e)?;
    let ring = match from {
        StoreKind::Embedded => std::fs::read_to_string(keyring::path(&config.data_dir)).ok(),
        StoreKind::Redis => redis.keyring().await.map_err(e)?,
    }
    .ok_or("the source store has no key ring: nothing was ever followed there")?;
    let embedded = Store::new(
        Backend::Embedded(embedded),
        keyring::from_json(&ring)?.sealer,
    );
    let redis = Store::new(Backend::Redis(redis), keyring::from_json(&ring)?.sealer);
    Ok((embedded, redis, spool_dir))
}
