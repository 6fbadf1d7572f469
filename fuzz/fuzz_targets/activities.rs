//! Fuzz target `activities`: the tracked-email parser (`addin::activities`)
//! on arbitrary bytes; what it extracts is then fed to the helpers that use
//! it (direction, message-id normalisation, the followed-email lookup).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailbeacon::addin::activities;
use mailbeacon::token::{KeyRing, SigningKey};

fuzz_target!(|raw: &[u8]| {
    let Ok(p) = activities::parse(raw) else {
        return;
    };
    let _ = activities::direction(&p, "me@example.com");
    if let Ok(s) = std::str::from_utf8(raw) {
        let _ = activities::normalize_message_id(s);
        let keys =
            KeyRing::new(vec![SigningKey::new(1, &[7; 32])], 1).expect("key 1 is in the ring");
        let _ = activities::followed_email_in(s, "https://track.example.com", &keys);
    }
});
