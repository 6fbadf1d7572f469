//! The Redis store's card state (see `store::cards`): per user two sorted sets
//! under one hash tag `{c:<user>}` (`keys::cards_dismissed`, `keys::cards_snoozed`),
//! scored by the mark's time. One script per write prunes what has passed, applies
//! the mark and extends the key's TTL to its latest score (`PEXPIREAT … NX`, then
//! `… GT`), so Redis forgets marks by itself. Scores are doubles: times are
//! clamped to 2^53 ms, which keeps them exact.

use ::redis::AsyncCommands as _;

use super::super::cards::Mark;
use super::super::Result;
use super::{keys, Redis};

/// Largest exact score.
const MAX_SCORE: u64 = (1 << 53) - 1;

/// Script: KEYS dismissed, snoozed; ARGV id, `d` or `s`, time, now.
/// Returns 0 when a snooze met a dismissal (nothing changed), else 1.
const MARK: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
local k = KEYS[1]
if ARGV[2] == 's' then
  if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
  k = KEYS[2]
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
redis.call('ZADD', k, ARGV[3], ARGV[1])
redis.call('PEXPIREAT', k, ARGV[3], 'NX')
redis.call('PEXPIREAT', k, ARGV[3], 'GT')
return 1";

impl Redis {
    pub(crate) async fn mark_card(
        &self,
        user: u64,
        id: &str,
        mark: Mark,
        now_ms: u64,
    ) -> Result<()> {
        let (kind, t) = match mark {
            Mark::Dismissed(t) => ("d", t),
            Mark::Snoozed(t) => ("s", t),
        };
        let _: i64 = ::redis::cmd("EVAL")
            .arg(MARK)
            .arg(2)
            .arg(keys::cards_dismissed(user))
            .arg(keys::cards_snoozed(user))
            .arg(id)
            .arg(kind)
            .arg(t.min(MAX_SCORE))
            .arg(now_ms.min(MAX_SCORE))
            .query_async(&mut self.c())
            .await?;
        Ok(())
    }

    pub(crate) async fn card_marks(&self, user: u64, now_ms: u64) -> Result<Vec<(String, Mark)>> {
        let after = format!("({}", now_ms.min(MAX_SCORE));
        let mut c = self.c();
        let dismissed: Vec<(String, f64)> = c
            .zrangebyscore_withscores(keys::cards_dismissed(user), &after, "+inf")
            .await?;
        let snoozed: Vec<(String, f64)> = c
            .zrangebyscore_withscores(keys::cards_snoozed(user), &after, "+inf")
            .await?;
        let ms = |s: f64| {
            if s.is_finite() && s > 0.0 {
                s as u64
            } else {
                0
            }
        };
        Ok(dismissed
            .into_iter()
            .map(|(id, s)| (id, Mark::Dismissed(ms(s))))
            .chain(
                snoozed
                    .into_iter()
                    .map(|(id, s)| (id, Mark::Snoozed(ms(s)))),
            )
            .collect())
    }
}
