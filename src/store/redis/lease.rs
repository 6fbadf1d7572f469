//! The Redis store's leases (`store::lease`): `mb:{g}:lease:<name>` holds the
//! owner (16 hex digits), with a `PX` expiry. One script takes or extends it,
//! so no two processes can both believe they hold it.

use super::super::Result;
use super::Redis;

/// Take if free, extend if ours. KEYS: the lease; ARGV: owner, ttl ms.
const TAKE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1
end
return 0";

/// Delete if ours. KEYS: the lease; ARGV: owner.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1";

fn key(name: &str) -> String {
    format!("mb:{{g}}:lease:{name}")
}

impl Redis {
    pub async fn take_lease(&self, name: &str, owner: u64, ttl_ms: u64) -> Result<bool> {
        let held: i64 = ::redis::Script::new(TAKE)
            .key(key(name))
            .arg(format!("{owner:016x}"))
            .arg(ttl_ms.max(1))
            .invoke_async(&mut self.c())
            .await?;
        Ok(held == 1)
    }

    pub async fn release_lease(&self, name: &str, owner: u64) -> Result<()> {
        let _: i64 = ::redis::Script::new(RELEASE)
            .key(key(name))
            .arg(format!("{owner:016x}"))
            .invoke_async(&mut self.c())
            .await?;
        Ok(())
    }
}
