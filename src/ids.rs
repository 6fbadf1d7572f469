//! Identifiers and clocks: random ids, their text form, and the wall clock.
//!
//! Email and user ids are random 64-bit numbers (never sequential, so they reveal
//! nothing about volume and cannot be enumerated), written as 16 lowercase hex
//! digits in the API.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};

/// A random, non-zero 64-bit id.
pub fn random_id() -> u64 {
    let mut b = [0u8; 8];
    loop {
        // SystemRandom only fails if the OS random source is unavailable, in which
        // case nothing secure can be done; an all-zero fill is then retried.
        let _ = SystemRandom::new().fill(&mut b);
        let id = u64::from_be_bytes(b);
        if id != 0 {
            return id;
        }
    }
}

/// `n` random bytes.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let _ = SystemRandom::new().fill(&mut b);
    b
}

pub fn id_to_text(id: u64) -> String {
    format!("{id:016x}")
}

/// Parses the 16-hex-digit form; `None` for anything else.
pub fn id_from_text(s: &str) -> Option<u64> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-29T20:08:33.123Z`.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// RFC 5322 date-time in UTC, e.g. `Sun, 29 Nov 2026 20:08:33 +0000`.
/// (An HTTP date has the same layout with `GMT`, an obsolete zone in RFC 5322.)
pub fn rfc5322(ms: u64) -> String {
    let http = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms));
    match http.strip_suffix(" GMT") {
        Some(rest) => format!("{rest} +0000"),
        None => http,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5322_dates() {
        assert_eq!(rfc5322(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322(1_796_000_000_000),
            "Mon, 30 Nov 2026 00:53:20 +0000"
        );
    }

    #[test]
    fn text_round_trip() {
        for id in [1u64, 0xdead_beef, u64::MAX] {
            assert_eq!(id_from_text(&id_to_text(id)), Some(id));
        }
        for bad in [
            "",
            "0",
            "zzzzzzzzzzzzzzzz",
            "+123456789abcdef",
            "00000000000000000",
        ] {
            assert_eq!(id_from_text(bad), None);
        }
    }
}
