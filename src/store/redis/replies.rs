//! The Redis store's reply facts (`store::replies`): a hash per email,
//! `mb:{e:<id>}:replies` (the email's hash tag, so one script touches one slot),
//! from the keyed hash of a reply's Message-ID to the JSON `Reply`; it expires
//! with the email's record and `sweep` deletes it with the email.

use std::collections::HashMap;

use ::redis::AsyncCommands as _;

use super::super::Result;
use super::{keys, Redis};
use crate::model::Reply;

/// Script: add a reply unless the email is gone or the reply is already there;
/// the hash gets the record's expiry. Returns 1 if and only if it was added.
const ADD_REPLY: &str = r"
local at = redis.call('PEXPIRETIME', KEYS[1])
if at == -2 then return 0 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
if at > 0 then redis.call('PEXPIREAT', KEYS[2], at) end
return 1";

impl Redis {
    pub async fn add_reply(&self, email: u64, key: &str, reply: &Reply) -> Result<bool> {
        let added: i64 = ::redis::cmd("EVAL")
            .arg(ADD_REPLY)
            .arg(2)
            .arg(keys::email(email))
            .arg(keys::replies(email))
            .arg(key)
            .arg(serde_json::to_vec(reply)?)
            .query_async(&mut self.c())
            .await?;
        Ok(added == 1)
    }

    pub async fn erase_replies(&self, email: u64, recipient: u32) -> Result<u64> {
        let all: HashMap<String, Vec<u8>> = self.c().hgetall(keys::replies(email)).await?;
        let mut gone = Vec::new();
        for (field, json) in all {
            let reply: Reply = serde_json::from_slice(&json)?;
            if reply.recipient == recipient {
                gone.push(field);
            }
        }
        if gone.is_empty() {
            return Ok(0);
        }
        let n: u64 = self.c().hdel(keys::replies(email), &gone).await?;
        Ok(n)
    }

    pub async fn replies_for(&self, email: u64) -> Result<Vec<Reply>> {
        let all: HashMap<String, Vec<u8>> = self.c().hgetall(keys::replies(email)).await?;
        all.values()
            .map(|j| Ok(serde_json::from_slice(j)?))
            .collect()
    }

    /// `replies_for` of each of `emails`, in that order: every read sent at
    /// once on the multiplexed connection (each email's key in its own slot).
    pub async fn replies_for_many(&self, emails: &[u64]) -> Result<Vec<Vec<Reply>>> {
        futures_util::future::try_join_all(emails.iter().map(|&email| self.replies_for(email)))
            .await
    }

    /// The replies of one email with their keys (for `migrate`).
    pub async fn replies_keyed(&self, email: u64) -> Result<Vec<(String, Reply)>> {
        let all: HashMap<String, Vec<u8>> = self.c().hgetall(keys::replies(email)).await?;
        all.into_iter()
            .map(|(k, j)| Ok((k, serde_json::from_slice(&j)?)))
            .collect()
    }
}
