//! Fuzz target `token`: open and click verification of arbitrary strings
//! (nothing but a minted token verifies), and the mint → verify round trip
//! on arbitrary ids and destinations.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailbeacon::token::{
    decode_destination, encode_destination, Claims, KeyRing, SigningKey, MAX_DESTINATION_BYTES,
};

fuzz_target!(|data: &[u8]| {
    let keys = KeyRing::new(
        vec![SigningKey::new(3, &[9; 32]), SigningKey::new(4, &[5; 32])],
        4,
    )
    .expect("key 4 is in the ring");
    let s = String::from_utf8_lossy(data);
    let (token, dest) = s.split_once('\n').unwrap_or((&s, ""));
    let _ = keys.verify_open(token);
    let _ = keys.verify_click(token, dest);
    let _ = decode_destination(token);

    // Round trip on ids taken from the input.
    if data.len() >= 20 {
        let email = u64::from_le_bytes(data[0..8].try_into().expect("8 bytes"));
        let recipient = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
        let issued = u32::from_le_bytes(data[12..16].try_into().expect("4 bytes"));
        let link = u32::from_le_bytes(data[16..20].try_into().expect("4 bytes"));
        let destination = String::from_utf8_lossy(&data[20..]);
        let open = keys.mint_open(email, recipient, issued);
        let want = Claims {
            key_id: 4,
            email,
            recipient,
            issued,
            link: None,
        };
        assert_eq!(keys.verify_open(&open), Some(want));
        assert_eq!(
            keys.verify_click(&open, ""),
            None,
            "an open token is not a click token"
        );
        let click = keys.mint_click(email, recipient, issued, link, &destination);
        assert_eq!(
            keys.verify_click(&click, &destination),
            Some(Claims {
                link: Some(link),
                ..want
            })
        );
        assert_eq!(
            keys.verify_open(&click),
            None,
            "a click token is not an open token"
        );
        let other = format!("{destination}x");
        assert_eq!(
            keys.verify_click(&click, &other),
            None,
            "the destination is covered"
        );
        if destination.len() <= MAX_DESTINATION_BYTES {
            assert_eq!(
                decode_destination(&encode_destination(&destination)).as_deref(),
                Some(&*destination)
            );
        }
    }
});
