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
    // Compared with what `Draft::parse` reads: it skips blank lines and mbox
    // `From ` lines before the header block (as some tools write them), and
    // mail-parser would read such a start as a message without headers.
    let Some(m_in) = parser.parse(skip_leading_junk(raw)) else {
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

/// The same leniency as `prepare::skip_leading_junk` (private there): leading
/// lines that are blank or start with `From ` are not part of the message.
fn skip_leading_junk(raw: &[u8]) -> &[u8] {
    let mut rest = raw;
    while let Some(i) = rest.iter().position(|&c| c == b'\n') {
        let line = &rest[..i];
        let blank = line.iter().all(|c| matches!(c, b' ' | b'\t' | b'\r'));
        if !(blank || line.starts_with(b"From ")) {
            break;
        }
        rest = &rest[i + 1..];
    }
    rest
}
