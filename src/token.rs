//! Signed, opaque tracking tokens and the key ring that mints and verifies them.
//!
//! A token is a compact binary payload followed by an HMAC-SHA256 tag truncated to
//! 128 bits, written as base64url without padding. The payload holds only internal
//! ids (never an address or anything personal):
//!
//! ```text
//! version u8 | purpose u8 | key id u16 | email id u64 | recipient u32 | issued (unix s) u32 [| link or attachment u32]
//! ```
//!
//! Purposes are separated (open, click and attachment tokens never verify as one
//! another), and a click token's tag also covers the destination URL, so the click route can
//! redirect to exactly the URL the server signed and nothing else, with no lookup.
//! Keys carry ids: rotating the minting key leaves every older key verifying, so
//! links already sitting in mailboxes keep working.
//!
//! Architecture invariant: this module does no I/O. Loading and saving the ring is
//! `keyring`'s job.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;

const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
const HEAD_LEN: usize = 1 + 1 + 2 + 8 + 4 + 4;
const OPEN_LEN: usize = HEAD_LEN;
const CLICK_LEN: usize = HEAD_LEN + 4;
/// An attachment token carries the attachment's index where a click carries the link's.
const ATTACHMENT_LEN: usize = HEAD_LEN + 4;
/// The longest token text we will try to decode; anything longer is garbage.
const MAX_TOKEN_CHARS: usize = 64;
/// The longest destination URL a click link may carry (bytes, decoded).
pub const MAX_DESTINATION_BYTES: usize = 8 * 1024;

/// What a token may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Purpose {
    Open = 1,
    Click = 2,
    /// A tracked download link of one attachment (`/a/{token}/…`).
    Attachment = 3,
}

/// What a valid token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    pub key_id: u16,
    pub email: u64,
    pub recipient: u32,
    /// Unix seconds when the copy carrying this token was prepared.
    pub issued: u32,
    /// The link's index in the email for click tokens, the attachment's index
    /// for attachment tokens; `None` exactly for open tokens.
    pub link: Option<u32>,
}

/// A signing key with its id. The secret is 32 random bytes.
#[derive(Clone)]
pub struct SigningKey {
    pub id: u16,
    key: hmac::Key,
}

impl SigningKey {
    pub fn new(id: u16, secret: &[u8]) -> SigningKey {
        SigningKey {
            id,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }
}

/// The set of keys a process verifies with, and the one it mints with.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<SigningKey>,
    current: u16,
}

impl KeyRing {
    /// Returns `None` if and only if `current` is not among `keys`.
    pub fn new(keys: Vec<SigningKey>, current: u16) -> Option<KeyRing> {
        keys.iter()
            .any(|k| k.id == current)
            .then_some(KeyRing { keys, current })
    }

    pub fn current_id(&self) -> u16 {
        self.current
    }

    fn key(&self, id: u16) -> Option<&hmac::Key> {
        self.keys.iter().find(|k| k.id == id).map(|k| &k.key)
    }

    fn current_key(&self) -> &hmac::Key {
        // `new` guarantees the current id is in the ring.
        self.key(self.current).unwrap_or(&self.keys[0].key)
    }

    pub fn mint_open(&self, email: u64, recipient: u32, issued: u32) -> String {
        let payload = encode_payload(Purpose::Open, self.current, email, recipient, issued, None);
        self.seal(&payload, b"")
    }

    /// Mints a click token whose tag also covers `destination`.
    pub fn mint_click(
        &self,
        email: u64,
        recipient: u32,
        issued: u32,
        link: u32,
        destination: &str,
    ) -> String {
        let payload = encode_payload(
            Purpose::Click,
            self.current,
            email,
            recipient,
            issued,
            Some(link),
        );
        self.seal(&payload, destination.as_bytes())
    }

    /// Mints an attachment token: the download link of attachment `index` of
    /// `email` in recipient `recipient`'s copy.
    pub fn mint_attachment(&self, email: u64, recipient: u32, issued: u32, index: u32) -> String {
        let payload = encode_payload(
            Purpose::Attachment,
            self.current,
            email,
            recipient,
            issued,
            Some(index),
        );
        self.seal(&payload, b"")
    }

    fn seal(&self, payload: &[u8], extra: &[u8]) -> String {
        let tag = tag(self.current_key(), payload, extra);
        let mut raw = Vec::with_capacity(payload.len() + TAG_LEN);
        raw.extend_from_slice(payload);
        raw.extend_from_slice(&tag.as_ref()[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Returns the claims if and only if `token` is a well-formed open token signed
    /// by a key in this ring.
    pub fn verify_open(&self, token: &str) -> Option<Claims> {
        self.verify(token, Purpose::Open, b"")
    }

    /// Returns the claims if and only if `token` is a well-formed click token signed
    /// by a key in this ring over exactly `destination`.
    pub fn verify_click(&self, token: &str, destination: &str) -> Option<Claims> {
        self.verify(token, Purpose::Click, destination.as_bytes())
    }

    /// Returns the claims (`link` is the attachment's index) if and only if
    /// `token` is a well-formed attachment token signed by a key in this ring.
    pub fn verify_attachment(&self, token: &str) -> Option<Claims> {
        self.verify(token, Purpose::Attachment, b"")
    }

    fn verify(&self, token: &str, purpose: Purpose, extra: &[u8]) -> Option<Claims> {
        if token.len() > MAX_TOKEN_CHARS {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        let want = match purpose {
            Purpose::Open => OPEN_LEN,
            Purpose::Click => CLICK_LEN,
            Purpose::Attachment => ATTACHMENT_LEN,
        };
        if raw.len() != want + TAG_LEN || raw[0] != VERSION || raw[1] != purpose as u8 {
            return None;
        }
        let (payload, got) = raw.split_at(want);
        let key_id = u16::from_be_bytes([payload[2], payload[3]]);
        let key = self.key(key_id)?;
        let expected = tag(key, payload, extra);
        if !constant_time_eq(&expected.as_ref()[..TAG_LEN], got) {
            return None;
        }
        Some(decode_payload(payload))
    }
}

fn encode_payload(
    purpose: Purpose,
    key_id: u16,
    email: u64,
    recipient: u32,
    issued: u32,
    link: Option<u32>,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(CLICK_LEN);
    p.push(VERSION);
    p.push(purpose as u8);
    p.extend_from_slice(&key_id.to_be_bytes());
    p.extend_from_slice(&email.to_be_bytes());
    p.extend_from_slice(&recipient.to_be_bytes());
    p.extend_from_slice(&issued.to_be_bytes());
    if let Some(link) = link {
        p.extend_from_slice(&link.to_be_bytes());
    }
    p
}

/// Decodes a payload whose length was already checked to be OPEN_LEN, CLICK_LEN
/// or ATTACHMENT_LEN (the same as CLICK_LEN).
fn decode_payload(p: &[u8]) -> Claims {
    let be32 = |at: usize| u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
    let mut email = [0u8; 8];
    email.copy_from_slice(&p[4..12]);
    Claims {
        key_id: u16::from_be_bytes([p[2], p[3]]),
        email: u64::from_be_bytes(email),
        recipient: be32(12),
        issued: be32(16),
        link: (p.len() == CLICK_LEN).then(|| be32(20)),
    }
}

fn tag(key: &hmac::Key, payload: &[u8], extra: &[u8]) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(payload);
    // Length-prefix the destination so payload/destination boundaries cannot shift.
    ctx.update(&(extra.len() as u32).to_be_bytes());
    ctx.update(extra);
    ctx.sign()
}

/// Compares two byte strings in time independent of where they differ.
/// (`ring::hmac::verify` needs the full 32-byte tag; ours is truncated to 16.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Encodes a destination URL for the click path segment (base64url, no padding).
pub fn encode_destination(url: &str) -> String {
    URL_SAFE_NO_PAD.encode(url.as_bytes())
}

/// Decodes a click path's destination segment; `None` for anything that is not
/// base64url of a UTF-8 string within the size limit.
pub fn decode_destination(segment: &str) -> Option<String> {
    if segment.len() > MAX_DESTINATION_BYTES * 4 / 3 + 4 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ring(ids: &[u16], current: u16) -> KeyRing {
        let keys = ids
            .iter()
            .map(|&id| SigningKey::new(id, &[id as u8; 32]))
            .collect();
        KeyRing::new(keys, current).expect("current is in ring")
    }

    #[test]
    fn tokens_are_compact_and_url_safe() {
        let r = ring(&[1], 1);
        let t = r.mint_click(u64::MAX, 7, 1_700_000_000, 3, "https://example.com/");
        assert_eq!(t.len(), 54, "{t}");
        assert_eq!(r.mint_open(1, 2, 3).len(), 48);
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    #[test]
    fn destination_is_covered_by_the_signature() {
        let r = ring(&[1], 1);
        let t = r.mint_click(1, 0, 5, 0, "https://example.com/a");
        assert!(r.verify_click(&t, "https://example.com/a").is_some());
        assert!(r.verify_click(&t, "https://evil.example/a").is_none());
        assert!(r.verify_click(&t, "https://example.com/a?x").is_none());
    }

    #[test]
    fn garbage_is_rejected() {
        let r = ring(&[1], 1);
        for t in [
            "",
            "a",
            "!!!!",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            &"A".repeat(5000),
        ] {
            assert!(r.verify_open(t).is_none());
            assert!(r.verify_click(t, "https://x/").is_none());
        }
    }

    proptest! {
        #[test]
        fn open_round_trip(email: u64, rcpt: u32, issued: u32) {
            let r = ring(&[1, 2], 2);
            let t = r.mint_open(email, rcpt, issued);
            let c = r.verify_open(&t).expect("valid");
            prop_assert_eq!(c, Claims { key_id: 2, email, recipient: rcpt, issued, link: None });
        }

        #[test]
        fn click_round_trip(email: u64, rcpt: u32, issued: u32, link: u32, dest in "https?://[a-z.]{1,20}/[ -~]{0,40}") {
            let r = ring(&[9], 9);
            let t = r.mint_click(email, rcpt, issued, link, &dest);
            let c = r.verify_click(&t, &dest).expect("valid");
            prop_assert_eq!(c, Claims { key_id: 9, email, recipient: rcpt, issued, link: Some(link) });
        }

        #[test]
        fn any_changed_byte_is_rejected(email: u64, rcpt: u32, pos in 0usize..48, bit in 0u8..8) {
            let r = ring(&[1], 1);
            for click in [false, true] {
                let t = if click { r.mint_click(email, rcpt, 1, 2, "https://a/") } else { r.mint_open(email, rcpt, 1) };
                let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
                let i = pos % raw.len();
                raw[i] ^= 1 << bit;
                let bad = URL_SAFE_NO_PAD.encode(&raw);
                prop_assert!(r.verify_open(&bad).is_none());
                prop_assert!(r.verify_click(&bad, "https://a/").is_none());
            }
        }

        #[test]
        fn truncated_tokens_are_rejected(email: u64, cut in 1usize..40) {
            let r = ring(&[1], 1);
            let t = r.mint_open(email, 1, 1);
            let short = &t[..t.len().saturating_sub(cut)];
            prop_assert!(r.verify_open(short).is_none());
        }

        #[test]
        fn wrong_purpose_is_rejected(email: u64, rcpt: u32) {
            let r = ring(&[1], 1);
            let open = r.mint_open(email, rcpt, 1);
            let click = r.mint_click(email, rcpt, 1, 0, "");
            prop_assert!(r.verify_click(&open, "").is_none());
            prop_assert!(r.verify_open(&click).is_none());
        }

        #[test]
        fn attachment_round_trip(email: u64, rcpt: u32, issued: u32, index: u32) {
            let r = ring(&[3, 4], 4);
            let t = r.mint_attachment(email, rcpt, issued, index);
            prop_assert_eq!(t.len(), 54);
            let c = r.verify_attachment(&t).expect("valid");
            prop_assert_eq!(c, Claims { key_id: 4, email, recipient: rcpt, issued, link: Some(index) });
        }

        #[test]
        fn purposes_never_verify_as_one_another(email: u64, rcpt: u32, issued: u32, n: u32) {
            let r = ring(&[1], 1);
            let open = r.mint_open(email, rcpt, issued);
            let click = r.mint_click(email, rcpt, issued, n, "");
            let attachment = r.mint_attachment(email, rcpt, issued, n);
            prop_assert!(r.verify_attachment(&open).is_none());
            prop_assert!(r.verify_attachment(&click).is_none());
            prop_assert!(r.verify_open(&attachment).is_none());
            prop_assert!(r.verify_click(&attachment, "").is_none());
            prop_assert!(r.verify_attachment(&attachment).is_some());
        }

        #[test]
        fn any_changed_byte_of_an_attachment_token_is_rejected(email: u64, idx: u32, pos in 0usize..40, bit in 0u8..8) {
            let r = ring(&[1], 1);
            let t = r.mint_attachment(email, 1, 1, idx);
            let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
            let i = pos % raw.len();
            raw[i] ^= 1 << bit;
            prop_assert!(r.verify_attachment(&URL_SAFE_NO_PAD.encode(&raw)).is_none());
        }

        #[test]
        fn wrong_key_is_rejected(email: u64) {
            let a = ring(&[1], 1);
            let b = KeyRing::new(vec![SigningKey::new(1, &[42; 32])], 1).unwrap();
            prop_assert!(b.verify_open(&a.mint_open(email, 0, 0)).is_none());
        }

        #[test]
        fn old_key_verifies_after_rotation(email: u64, rcpt: u32) {
            let before = ring(&[1], 1);
            let open = before.mint_open(email, rcpt, 3);
            let click = before.mint_click(email, rcpt, 3, 4, "https://a/b");
            let after = ring(&[1, 2], 2);
            prop_assert_eq!(after.verify_open(&open).map(|c| c.key_id), Some(1));
            prop_assert!(after.verify_click(&click, "https://a/b").is_some());
            prop_assert_eq!(after.verify_open(&after.mint_open(email, rcpt, 3)).map(|c| c.key_id), Some(2));
        }
    }
}
