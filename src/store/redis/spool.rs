//! The local spool: where recorder batches go while Redis cannot take them.
//!
//! `redis-spool.journal` in the data directory, framed by `store::journal`. A batch
//! is acknowledged (the pixel answered) only after its record is appended and
//! `fdatasync`ed, exactly like the embedded store's journal. The replayer sends
//! records to Redis oldest first, up to 512 in one round trip (one at a time
//! drained slower than a sustained load spooled behind them, and the spool
//! filled up); once the last one is in, the file is emptied.
//! While the spool holds anything, new batches are appended behind it instead of
//! going to Redis, so events reach Redis in the order they were answered.
//!
//! A replay may send a record that Redis already had (an answer lost to a timeout,
//! or a crash after the send and before the file was emptied): event ids make the
//! second copy harmless.
//!
//! Bounded: past `max_bytes` a batch is refused (`append` fails), the recorder logs
//! it and counts a store error, and the pixel still answers. That is the one case
//! where answered hits are lost, and only after the spool filled up during a long
//! outage.

use std::fs::{File, OpenOptions};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::store::journal;
use crate::store::{Result, StoreError};

/// One spooled batch: its event count and packed events.
pub type Record = (u32, Vec<u8>);

pub struct Spool {
    path: PathBuf,
    file: File,
    /// Bytes of whole records in the file.
    len: u64,
    /// Where the next record to replay starts.
    read_at: u64,
    /// Events in records not yet replayed (the spool depth).
    pub events: u64,
    max_bytes: u64,
}

/// A record body: `events u32 LE | packed batch`.
pub fn body(events: u32, packed: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + packed.len());
    b.extend_from_slice(&events.to_le_bytes());
    b.extend_from_slice(packed);
    b
}

fn split(body: &[u8]) -> Option<(u32, &[u8])> {
    let n = u32::from_le_bytes(body.get(..4)?.try_into().ok()?);
    Some((n, &body[4..]))
}

impl Spool {
    /// Opens the spool in `dir`, keeping whatever an earlier run left to replay and
    /// cutting off a torn tail.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("redis-spool.journal");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (records, valid) = journal::decode(&bytes);
        if valid < bytes.len() {
            tracing::warn!(path = %path.display(), "the spool has a torn tail (never acknowledged); it is dropped");
            file.set_len(valid as u64)?;
            file.sync_data()?;
        }
        let events = records
            .iter()
            .filter_map(|r| split(r))
            .map(|(n, _)| u64::from(n))
            .sum();
        Ok(Spool {
            path,
            file,
            len: valid as u64,
            read_at: 0,
            events,
            max_bytes,
        })
    }

    /// Bytes of records not yet replayed (framing included).
    pub fn backlog_bytes(&self) -> u64 {
        self.len.saturating_sub(self.read_at)
    }

    /// Returns true if and only if nothing waits to be replayed.
    pub fn is_empty(&self) -> bool {
        self.read_at >= self.len
    }

    /// Durably appends one batch. Fails when the spool is full or the disk fails.
    pub fn append(&mut self, events: u32, packed: &[u8]) -> Result<()> {
        let mut framed = Vec::with_capacity(packed.len() + 12);
        journal::frame(&body(events, packed), &mut framed);
        if self.len + framed.len() as u64 > self.max_bytes {
            return Err(StoreError::Backend(format!(
                "the Redis spool {} is full ({} bytes): this batch of {events} events is dropped",
                self.path.display(),
                self.max_bytes
            )));
        }
        journal::append_sync(&mut self.file, self.len, &framed)?;
        self.len += framed.len() as u64;
        self.events += u64::from(events);
        Ok(())
    }

    /// The oldest records not yet replayed, at most `max_records` of them and
    /// (past the first) at most `max_bytes` of batches in all: their (events,
    /// packed batch) and where the record after them starts. One replay round
    /// trip sends them all, so the replayer outpaces a load that keeps spooling.
    pub fn peek_many(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Option<(Vec<Record>, u64)>> {
        let mut out: Vec<Record> = Vec::new();
        let (mut at, mut bytes) = (self.read_at, 0usize);
        while at < self.len && out.len() < max_records.max(1) {
            let Some((b, next)) = journal::read_record(&mut self.file, at)? else {
                return Err(StoreError::Backend(format!(
                    "the spool {} is damaged at byte {at}",
                    self.path.display()
                )));
            };
            let (n, packed) = split(&b)
                .ok_or_else(|| StoreError::Backend("a spool record is too short".into()))?;
            if !out.is_empty() && bytes + packed.len() > max_bytes {
                break;
            }
            bytes += packed.len();
            out.push((n, packed.to_vec()));
            at = next;
        }
        Ok((!out.is_empty()).then_some((out, at)))
    }

    /// Marks the records returned by `peek_many` (`events` in all, `next` where
    /// the record after them starts) as replayed. When they were the last,
    /// empties the file.
    pub fn advance(&mut self, events: u32, next: u64) -> Result<()> {
        self.read_at = next;
        self.events = self.events.saturating_sub(u64::from(events));
        if self.read_at >= self.len {
            self.file.set_len(0)?;
            self.file.sync_data()?;
            self.len = 0;
            self.read_at = 0;
            self.events = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_many_takes_the_oldest_records_within_both_limits_and_advance_drains() {
        let dir = std::env::temp_dir().join(format!("mailbeacon-spool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = Spool::open(&dir, 1 << 20).expect("open");
        assert!(s.peek_many(10, 1000).expect("read").is_none());
        for i in 0..5u32 {
            s.append(i + 1, &[b'a' + i as u8; 100]).expect("append");
        }
        assert_eq!(s.events, 15);
        // Three by count.
        let (got, next) = s.peek_many(3, 1 << 20).expect("read").expect("some");
        let ns: Vec<u32> = got.iter().map(|(n, _)| *n).collect();
        assert_eq!(ns, [1, 2, 3]);
        assert_eq!(got[2].1, vec![b'c'; 100]);
        // Two by bytes (the first always, whatever its size).
        let (by_bytes, _) = s.peek_many(10, 250).expect("read").expect("some");
        assert_eq!(by_bytes.len(), 2);
        assert_eq!(s.peek_many(10, 1).expect("read").expect("some").0.len(), 1);
        s.advance(6, next).expect("advance");
        assert_eq!(s.events, 9);
        // Two records of 100 bytes left, each framed with its count.
        assert!(
            s.backlog_bytes() >= 208 && s.backlog_bytes() < 300,
            "{}",
            s.backlog_bytes()
        );
        let (rest, end) = s.peek_many(10, 1 << 20).expect("read").expect("some");
        assert_eq!(rest.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [4, 5]);
        s.advance(9, end).expect("advance");
        assert!(s.is_empty());
        assert_eq!(s.events, 0);
        // Emptied: the file is cut back, and a reopen finds nothing.
        drop(s);
        let mut again = Spool::open(&dir, 1 << 20).expect("reopen");
        assert!(again.peek_many(10, 1000).expect("read").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
