//! The node id a process puts in the event ids it makes (10 bits of
//! `events::IdGen`), claimed so that no two live processes share one.
//!
//! A start takes the first free `mb:{g}:node:<n>` (`SET … NX PX`), beginning at
//! a counter so that starts spread over the 1,024 ids, and renews it while it
//! runs; a claim that is not renewed (a crashed process) frees itself after
//! [`TTL_MS`]. When all 1,024 are held the start fails rather than reuse one
//! (reused node ids make colliding event ids, and one hit would overwrite
//! another).

use std::time::Duration;

use ::redis::AsyncCommands as _;
use tokio::sync::watch;

use super::conn::Conn;
use super::keys;
use crate::store::{Result, StoreError};

/// How long a claim lives without renewal.
pub const TTL_MS: u64 = 30_000;
/// How many node ids there are (`IdGen` keeps 10 bits).
pub const NODE_IDS: u64 = 1024;

pub fn key(n: u64) -> String {
    format!("mb:{{g}}:node:{n}")
}

/// A held node id.
#[derive(Clone, Debug)]
pub struct NodeClaim {
    pub id: u64,
    token: String,
}

/// Claims a free node id for `ttl_ms`.
pub async fn claim(c: &mut Conn, ttl_ms: u64) -> Result<NodeClaim> {
    let start: u64 = c.incr(keys::NODES, 1).await?;
    let token = format!("{:016x}", crate::ids::random_id());
    for i in 0..NODE_IDS {
        let n = (start + i) % NODE_IDS;
        let set: Option<String> = ::redis::cmd("SET")
            .arg(key(n))
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(c)
            .await?;
        if set.is_some() {
            return Ok(NodeClaim { id: n, token });
        }
    }
    Err(StoreError::Backend(format!(
        "redis: all {NODE_IDS} node ids are held by running processes"
    )))
}

/// Extends the claim; takes it again if it had expired and nobody took it.
/// False if another process holds it now (this process must stop making ids).
pub async fn renew(c: &mut Conn, claim: &NodeClaim, ttl_ms: u64) -> Result<bool> {
    const RENEW: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1
end
return 0";
    let ok: i64 = ::redis::Script::new(RENEW)
        .key(key(claim.id))
        .arg(&claim.token)
        .arg(ttl_ms)
        .invoke_async(c)
        .await?;
    Ok(ok == 1)
}

/// Frees the claim if it is still this process's.
pub async fn release(c: &mut Conn, claim: &NodeClaim) -> Result<()> {
    const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1";
    let _: i64 = ::redis::Script::new(RELEASE)
        .key(key(claim.id))
        .arg(&claim.token)
        .invoke_async(c)
        .await?;
    Ok(())
}

/// Renews the claim every third of its life until `stop`, then releases it.
pub async fn renew_loop(mut c: Conn, claim: NodeClaim, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_millis(TTL_MS / 3);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        match renew(&mut c, &claim, TTL_MS).await {
            Ok(true) => {}
            Ok(false) => tracing::error!(
                node = claim.id,
                "another process holds this node id now; event ids may collide until restart"
            ),
            Err(e) => tracing::warn!(node = claim.id, error = %e, "could not renew the node id"),
        }
    }
    let _ = release(&mut c, &claim).await;
}
