//! The Redis store's attachment files (`store::attachments`): a hash per
//! email, `mb:{e:<id>}:att` (the email's hash tag, so the record and its files
//! share a Cluster slot and one script touches one slot), from the attachment
//! index to the sealed bytes; it expires with the email's record and `sweep`
//! deletes it with the email.

use ::redis::AsyncCommands as _;

use super::super::Result;
use super::{keys, Redis};

/// Script: store the files unless the email is gone; the hash gets the
/// record's expiry. ARGV: index, bytes, index, bytes, … Returns 1 if and only
/// if they were stored.
const PUT_ATTACHMENTS: &str = r"
local at = redis.call('PEXPIRETIME', KEYS[1])
if at == -2 then return 0 end
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
if at > 0 then redis.call('PEXPIREAT', KEYS[2], at) end
return 1";

impl Redis {
    pub async fn put_attachments(&self, email: u64, sealed: &[Vec<u8>]) -> Result<bool> {
        let mut cmd = ::redis::cmd("EVAL");
        cmd.arg(PUT_ATTACHMENTS)
            .arg(2)
            .arg(keys::email(email))
            .arg(keys::attachments(email));
        for (i, v) in sealed.iter().enumerate() {
            cmd.arg(i).arg(v.as_slice());
        }
        let stored: i64 = cmd.query_async(&mut self.c()).await?;
        Ok(stored == 1)
    }

    pub async fn attachment(&self, email: u64, index: u32) -> Result<Option<Vec<u8>>> {
        Ok(self.c().hget(keys::attachments(email), index).await?)
    }

    pub async fn delete_attachments(&self, email: u64) -> Result<()> {
        Ok(self.c().del(keys::attachments(email)).await?)
    }
}
