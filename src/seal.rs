//! Sealing personal data before it is stored, and keyed hashes for lookups.
//!
//! Addresses, names, subjects, URLs, user agents and client networks are stored
//! only sealed: AES-256-GCM under a data key from the key ring, with a unique
//! nonce, written as text `s1.` + base64url(`key id u16 | nonce | ciphertext+tag`).
//!
//! Nonces: each `Sealer` draws a random 96-bit starting point once and then
//! counts up from it (the low 64 bits), so sealing costs no system call (a
//! `getrandom` per value was a tenth of the event writer's time). Within one
//! sealer nonces never repeat; two sealers (processes, restarts, reloads) can
//! only meet if their random high 32 bits are equal *and* their 64-bit ranges
//! overlap, which is far less likely than a collision among purely random
//! nonces for the same number of values.
//! The key id lets rotation add new data keys while old data stays readable.
//!
//! Lookups that must find data by address (contact preferences, data-subject
//! requests, users by email) use a keyed hash instead: HMAC-SHA256 under a separate
//! lookup key, so the store never holds an address in clear and its hashes cannot
//! be recomputed without the key. The lookup key is never rotated (rotating it
//! would orphan every index); data keys are.
//!
//! Architecture invariant: this module does no I/O; `store` is the only caller
//! that seals on the way in and opens on the way out.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, MAX_TAG_LEN, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use std::sync::atomic::{AtomicU64, Ordering};

const PREFIX: &str = "s1.";
/// AES-256-GCM's tag.
const TAG_LEN: usize = MAX_TAG_LEN;

/// A sealed value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealError {
    /// Not sealed text, or corrupted.
    Malformed,
    /// Sealed under a data key this ring does not have.
    UnknownKey(u16),
    /// The tag did not verify: tampered, or a different key with the same id.
    Forged,
}

impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealError::Malformed => write!(f, "sealed value is malformed"),
            SealError::UnknownKey(id) => write!(f, "sealed under unknown data key {id}"),
            SealError::Forged => write!(f, "sealed value does not verify"),
        }
    }
}

pub struct Sealer {
    keys: Vec<(u16, LessSafeKey)>,
    current: u16,
    lookup: hmac::Key,
    /// Random high 32 bits of every nonce of this sealer.
    nonce_high: [u8; 4],
    /// Next low 64 bits (starts at a random value, then counts up).
    nonce_low: AtomicU64,
}

impl Sealer {
    /// `data_keys`: (id, 32-byte secret); `current` must be among them.
    /// Returns `None` if a secret is not 32 bytes or `current` is missing.
    pub fn new(data_keys: &[(u16, Vec<u8>)], current: u16, lookup_secret: &[u8]) -> Option<Sealer> {
        let mut keys = Vec::with_capacity(data_keys.len());
        for (id, secret) in data_keys {
            let unbound = UnboundKey::new(&AES_256_GCM, secret).ok()?;
            keys.push((*id, LessSafeKey::new(unbound)));
        }
        let mut start = [0u8; NONCE_LEN];
        // The OS random source failing is not recoverable; a fixed starting point
        // would repeat nonces across restarts, so refuse to seal rather than
        // weaken it.
        if SystemRandom::new().fill(&mut start).is_err() {
            panic!("the system random source failed; cannot seal personal data");
        }
        let mut low = [0u8; 8];
        low.copy_from_slice(&start[4..]);
        keys.iter().any(|(id, _)| *id == current).then(|| Sealer {
            keys,
            current,
            lookup: hmac::Key::new(hmac::HMAC_SHA256, lookup_secret),
            nonce_high: [start[0], start[1], start[2], start[3]],
            nonce_low: AtomicU64::new(u64::from_be_bytes(low)),
        })
    }

    fn key(&self, id: u16) -> Option<&LessSafeKey> {
        self.keys.iter().find(|(k, _)| *k == id).map(|(_, k)| k)
    }

    /// Seals `plain`. The empty string stays empty (nothing to hide, and it keeps
    /// "absent" values cheap).
    pub fn seal(&self, plain: &str) -> String {
        if plain.is_empty() {
            return String::new();
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&self.nonce_high);
        // Wrapping: 2^64 values from one sealer cannot be reached.
        let low = self.nonce_low.fetch_add(1, Ordering::Relaxed);
        nonce[4..].copy_from_slice(&low.to_be_bytes());
        // Two allocations in all (the sealed bytes, then their text): this
        // runs twice per recorded hit.
        let mut buf = Vec::with_capacity(2 + NONCE_LEN + plain.len() + TAG_LEN);
        buf.extend_from_slice(&self.current.to_be_bytes());
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(plain.as_bytes());
        // `current` is in the ring by construction, and ring refuses only
        // inputs of tens of gigabytes; should either ever fail, nothing is
        // stored rather than the clear text.
        let Some(key) = self.key(self.current) else {
            return String::new();
        };
        let Ok(tag) = key.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut buf[2 + NONCE_LEN..],
        ) else {
            return String::new();
        };
        buf.extend_from_slice(tag.as_ref());
        let mut out = String::with_capacity(PREFIX.len() + (buf.len() * 4).div_ceil(3));
        out.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(&buf, &mut out);
        out
    }

    pub fn open(&self, sealed: &str) -> Result<String, SealError> {
        if sealed.is_empty() {
            return Ok(String::new());
        }
        let b64 = sealed.strip_prefix(PREFIX).ok_or(SealError::Malformed)?;
        let mut raw = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| SealError::Malformed)?;
        if raw.len() < 2 + NONCE_LEN + TAG_LEN {
            return Err(SealError::Malformed);
        }
        let id = u16::from_be_bytes([raw[0], raw[1]]);
        let key = self.key(id).ok_or(SealError::UnknownKey(id))?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&raw[2..2 + NONCE_LEN]);
        // Opened in place, and the clear text moved to the front of the same
        // buffer: one allocation per value (reports open two per event).
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut raw[2 + NONCE_LEN..],
            )
            .map_err(|_| SealError::Forged)?
            .len();
        raw.copy_within(2 + NONCE_LEN..2 + NONCE_LEN + plain, 0);
        raw.truncate(plain);
        String::from_utf8(raw).map_err(|_| SealError::Malformed)
    }

    /// Seals bytes (a stored file): `key id u16 | nonce | ciphertext+tag`,
    /// binary, under the current data key, like [`Sealer::seal`] without the
    /// text form.
    pub fn seal_bytes(&self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&self.nonce_high);
        let low = self.nonce_low.fetch_add(1, Ordering::Relaxed);
        nonce[4..].copy_from_slice(&low.to_be_bytes());
        let mut out = Vec::with_capacity(2 + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&self.current.to_be_bytes());
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        // `current` is in the ring by construction.
        if let Some(key) = self.key(self.current) {
            let _ = key.seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut body,
            );
        }
        out.extend_from_slice(&body);
        out
    }

    /// Opens what [`Sealer::seal_bytes`] sealed.
    pub fn open_bytes(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < 2 + NONCE_LEN + 16 {
            return Err(SealError::Malformed);
        }
        let id = u16::from_be_bytes([sealed[0], sealed[1]]);
        let key = self.key(id).ok_or(SealError::UnknownKey(id))?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[2..2 + NONCE_LEN]);
        let mut body = sealed[2 + NONCE_LEN..].to_vec();
        let plain = key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut body)
            .map_err(|_| SealError::Forged)?;
        let n = plain.len();
        body.truncate(n);
        Ok(body)
    }

    /// Opens a value, or gives a placeholder (and logs) when it cannot: a report
    /// must not fail because one stored value is unreadable.
    pub fn open_lossy(&self, sealed: &str) -> String {
        self.open(sealed).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot open a sealed value");
            "[unreadable]".into()
        })
    }

    /// The keyed hash of a normalized address (or any lookup string).
    pub fn lookup(&self, value: &str) -> [u8; 32] {
        let tag = hmac::sign(&self.lookup, value.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// `lookup` as 64 lowercase hex digits, for text keys.
    pub fn lookup_hex(&self, value: &str) -> String {
        self.lookup(value)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sealer(ids: &[u16], current: u16) -> Sealer {
        let keys: Vec<(u16, Vec<u8>)> = ids.iter().map(|&i| (i, vec![i as u8; 32])).collect();
        Sealer::new(&keys, current, b"lookup").unwrap()
    }

    proptest! {
        #[test]
        fn round_trip_and_opaque(s in "\\PC{1,80}") {
            let k = sealer(&[1], 1);
            let sealed = k.seal(&s);
            prop_assert!(!sealed.contains(&s) || s.len() < 3);
            prop_assert_eq!(k.open(&sealed).unwrap(), s);
        }

        #[test]
        fn tampering_is_detected(s in "[a-z@.]{3,40}", pos in 0usize..64) {
            let k = sealer(&[1], 1);
            let sealed = k.seal(&s);
            let mut raw = URL_SAFE_NO_PAD.decode(&sealed[3..]).unwrap();
            let i = 2 + pos % (raw.len() - 2);
            raw[i] ^= 0x40;
            let bad = format!("s1.{}", URL_SAFE_NO_PAD.encode(raw));
            prop_assert!(k.open(&bad).is_err());
        }
    }

    #[test]
    fn rotation_keeps_old_data_readable() {
        let old = sealer(&[1], 1);
        let sealed = old.seal("ann@example.com");
        let new = sealer(&[1, 2], 2);
        assert_eq!(new.open(&sealed).unwrap(), "ann@example.com");
        let fresh = URL_SAFE_NO_PAD.decode(&new.seal("x")[3..]).unwrap();
        assert_eq!(&fresh[..2], &[0, 2], "new data uses key 2");
        assert_eq!(sealer(&[2], 2).open(&sealed), Err(SealError::UnknownKey(1)));
    }

    #[test]
    fn nonces_never_repeat_within_or_across_sealers() {
        use std::collections::HashSet;
        let nonce_of = |sealed: &str| {
            let raw = URL_SAFE_NO_PAD.decode(&sealed[PREFIX.len()..]).unwrap();
            raw[2..2 + NONCE_LEN].to_vec()
        };
        let (a, b) = (sealer(&[1], 1), sealer(&[1], 1));
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(nonce_of(&a.seal("x"))));
            assert!(seen.insert(nonce_of(&b.seal("x"))));
        }
        // Consecutive within one sealer, from a random start.
        let n1 = nonce_of(&a.seal("x"));
        let n2 = nonce_of(&a.seal("x"));
        assert_eq!(n1[..4], n2[..4]);
        let low = |n: &[u8]| u64::from_be_bytes(n[4..].try_into().unwrap());
        assert_eq!(low(&n2), low(&n1).wrapping_add(1));
    }

    #[test]
    fn same_plaintext_seals_differently_but_hashes_the_same() {
        let k = sealer(&[1], 1);
        assert_ne!(k.seal("a@b.c"), k.seal("a@b.c"));
        assert_eq!(k.lookup("a@b.c"), k.lookup("a@b.c"));
        assert_ne!(k.lookup("a@b.c"), k.lookup("a@b.d"));
        assert_eq!(k.seal(""), "");
        assert_eq!(k.open("plain").unwrap_err(), SealError::Malformed);
    }
}
