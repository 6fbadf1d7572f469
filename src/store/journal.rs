//! Append-only journal framing shared by the stores: `len u32 LE | crc32 u32 LE |
//! body`, one record per batch, synced with one `fdatasync`.
//!
//! A record is acknowledged only after its sync returned, so a torn or corrupt
//! record can only be the tail that a crash cut short (never acknowledged):
//! decoding stops there and the caller truncates the file to the last whole
//! record. The embedded store's `events.journal` uses the same layout; the Redis
//! store's local spool (`redis_spool`) uses these functions.
//!
//! `hold` is a test hook: while held, every journal commit of the embedded
//! store waits (as on a stalled disk), so a test can check what the pixel does
//! while no batch can become durable, by order of events rather than by timing.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};

/// Largest record body accepted when decoding (a larger length means corruption).
pub const MAX_RECORD: usize = 64 * 1024 * 1024;
const HEADER: usize = 8;

/// Starts a record in `out` whose body the caller then writes straight into
/// `out` (no copy of it), and seals with `end_frame`. Returns where it starts.
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    start
}

/// Seals the record begun at `start` by `begin_frame`: everything written
/// after its header is its body. Returns the body's range in `out`.
pub fn end_frame(out: &mut [u8], start: usize) -> std::ops::Range<usize> {
    let body = start + HEADER..out.len();
    let len = (body.len() as u32).to_le_bytes();
    let crc = crc32fast::hash(&out[body.clone()]).to_le_bytes();
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + HEADER].copy_from_slice(&crc);
    body
}

/// Frames `body` as one record and appends it to `out`.
pub fn frame(body: &[u8], out: &mut Vec<u8>) {
    let start = begin_frame(out);
    out.extend_from_slice(body);
    end_frame(out, start);
}

/// Splits `bytes` into record bodies. Returns the bodies and the length of the
/// valid prefix (shorter than `bytes` if and only if the tail is torn or corrupt).
pub fn decode(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some((body, next)) = record_at(bytes, at) {
        out.push(body);
        at = next;
    }
    (out, at)
}

/// The record starting at `at`, and where the next one starts; `None` at the end
/// or at a torn or corrupt record.
pub fn record_at(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let head = bytes.get(at..at + HEADER)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > MAX_RECORD {
        return None;
    }
    let body = bytes.get(at + HEADER..at + HEADER + len)?;
    (crc32fast::hash(body) == crc).then_some((body, at + HEADER + len))
}

/// Appends `framed` (one or more framed records) at `len` and syncs the data.
/// On failure the file is cut back to `len`, so no half-written record is left
/// behind (it was never acknowledged).
pub fn append_sync(file: &mut File, len: u64, framed: &[u8]) -> std::io::Result<()> {
    let res = file
        .seek(SeekFrom::Start(len))
        .and_then(|_| file.write_all(framed))
        .and_then(|_| file.sync_data());
    if res.is_err() {
        let _ = file.set_len(len);
    }
    res
}

/// Reads the record starting at byte `at` of `file`; `None` past the end or at a
/// damaged record.
pub fn read_record(file: &mut File, at: u64) -> std::io::Result<Option<(Vec<u8>, u64)>> {
    let mut head = [0u8; HEADER];
    file.seek(SeekFrom::Start(at))?;
    if file.read_exact(&mut head).is_err() {
        return Ok(None);
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > MAX_RECORD {
        return Ok(None);
    }
    let mut body = vec![0u8; len];
    if file.read_exact(&mut body).is_err() || crc32fast::hash(&body) != crc {
        return Ok(None);
    }
    Ok(Some((body, at + (HEADER + len) as u64)))
}

/// Test hook: stalls journal commits, like a disk that stopped answering.
#[doc(hidden)]
pub mod hold {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex};

    static HELD: AtomicBool = AtomicBool::new(false);
    static WAITING: AtomicUsize = AtomicUsize::new(0);
    static LOCK: Mutex<()> = Mutex::new(());
    static RELEASED: Condvar = Condvar::new();

    /// Holds (true) or releases (false) every journal commit of this process.
    pub fn set(held: bool) {
        let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        HELD.store(held, Ordering::SeqCst);
        RELEASED.notify_all();
    }

    /// How many commits are waiting at the hold now.
    pub fn waiting() -> usize {
        WAITING.load(Ordering::SeqCst)
    }

    /// Called by a journal writer before it writes and syncs: returns at once
    /// unless held (one relaxed load on the hot path).
    pub(crate) fn pass() {
        if !HELD.load(Ordering::Relaxed) {
            return;
        }
        let mut g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        WAITING.fetch_add(1, Ordering::SeqCst);
        while HELD.load(Ordering::SeqCst) {
            g = RELEASED.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        WAITING.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_framed_in_place_is_the_record_framed_from_its_body() {
        let mut copied = b"before".to_vec();
        frame(b"{\"a\":1}", &mut copied);
        let mut in_place = b"before".to_vec();
        let start = begin_frame(&mut in_place);
        in_place.extend_from_slice(b"{\"a\":1}");
        let body = end_frame(&mut in_place, start);
        assert_eq!(in_place, copied);
        assert_eq!(&in_place[body], b"{\"a\":1}");
        assert_eq!(
            record_at(&in_place, 6).map(|(b, _)| b),
            Some(&b"{\"a\":1}"[..])
        );
    }

    #[test]
    fn decoding_stops_at_a_torn_or_corrupt_tail() {
        let mut buf = Vec::new();
        frame(b"one", &mut buf);
        frame(b"two", &mut buf);
        let whole = buf.len();
        assert_eq!(decode(&buf), (vec![&b"one"[..], &b"two"[..]], whole));
        let mut torn = buf.clone();
        torn.extend_from_slice(&buf[..5]);
        assert_eq!(decode(&torn).1, whole);
        let mut corrupt = buf.clone();
        corrupt[whole - 1] ^= 0xff;
        assert_eq!(decode(&corrupt), (vec![&b"one"[..]], 11));
    }
}
