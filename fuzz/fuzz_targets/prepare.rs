//! Fuzz target `prepare`: `Draft::parse` on arbitrary bytes, then both copies
//! rendered (untracked, and tracked with a pixel and one click URL per link).
//! Invariants (the cheap ones the golden tests check): when mail-parser reads
//! the input, both copies parse too, keep the subject, drop Bcc, and carry the
//! same attachments with the same decoded bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mail_parser::MessageParser;
use mailbeacon::prepare::{Draft, Limits, Tracking};

const OWN: &str = "https://track.example.com/c/";

fuzz_target!(|raw: &[u8]| {
    let Ok(draft) = Draft::parse(raw, OWN, &Limits::default()) else {
        return;
    };
    let urls: Vec<String> = (0..draft.links().len())
        .map(|i| format!("https://track.example.com/c/tok{i}/x"))
        .collect();
    let tracked = draft.render(Some(&Tracking {
        pixel_url: "https://track.example.com/o/pixel.gif",
        click_urls: &urls,
    }));
    let plain = draft.render(None);
    if !draft.has_html() {
        assert_eq!(tracked, plain, "a copy without HTML must not change");
    }
    let parser = MessageParser::default();
    let Some(m_in) = parser.parse(raw) else {
        return;
    };
    for (which, out) in [("tracked", &tracked), ("untracked", &plain)] {
        let m = parser
            .parse(out)
            .unwrap_or_else(|| panic!("{which} copy does not parse"));
        assert_eq!(m.subject(), m_in.subject(), "{which} subject differs");
        assert!(m.bcc().is_none(), "{which} copy still has Bcc");
        assert_eq!(
            m.attachments.len(),
            m_in.attachments.len(),
            "{which} attachment count differs"
        );
        for (a, b) in m_in.attachments.iter().zip(&m.attachments) {
            let (pa, pb) = (&m_in.parts[*a as usize], &m.parts[*b as usize]);
            assert_eq!(pa.contents(), pb.contents(), "{which} attachment differs");
        }
    }
});
