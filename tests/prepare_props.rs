//! Property tests: `Draft::parse` and `render` never panic, on arbitrary
//! bytes and on fixture messages with random bytes changed, inserted or cut.

use std::path::Path;

use mailbeacon::prepare::{Draft, Limits, Tracking};
use proptest::prelude::*;

fn fixtures() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/email");
    let mut out = Vec::new();
    for sub in ["eml", "templates"] {
        let Ok(rd) = std::fs::read_dir(root.join(sub)) else {
            continue;
        };
        let mut paths: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            let name = p.to_string_lossy().to_string();
            if name.ends_with(".json") {
                continue;
            }
            let Ok(body) = std::fs::read(&p) else {
                continue;
            };
            if name.ends_with(".eml") {
                out.push(body);
            } else {
                let mut raw =
                    b"From: a@example.com\r\nTo: b@example.com\r\nContent-Type: text/html\r\n\r\n"
                        .to_vec();
                raw.extend_from_slice(&body);
                out.push(raw);
            }
        }
    }
    out
}

/// Parses and renders every way; returns nothing, must not panic.
fn exercise(raw: &[u8], click_count_delta: isize) {
    let limits = Limits { max_links: 200 };
    let Ok(d) = Draft::parse(raw, "https://t.example/c/", &limits) else {
        return;
    };
    let n = (d.links().len() as isize + click_count_delta).max(0) as usize;
    let urls: Vec<String> = (0..n)
        .map(|i| format!("https://t.example/c/{i}/é\"&="))
        .collect();
    let plain = d.render(None);
    let out = d.render(Some(&Tracking {
        pixel_url: "https://t.example/o/x.gif",
        click_urls: &urls,
    }));
    // What we produce must still be a message mail-parser reads.
    assert!(mail_parser::MessageParser::default()
        .parse(&plain)
        .is_some());
    assert!(mail_parser::MessageParser::default().parse(&out).is_some());
    let _ = (
        d.from(),
        d.subject(),
        d.message_id(),
        d.recipients(),
        d.has_html(),
    );
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Cut(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop::sample::select(vec![
        b"<".to_vec(),
        b">".to_vec(),
        b"\"".to_vec(),
        b"--".to_vec(),
        b"\r\n".to_vec(),
        b"\n\n".to_vec(),
        b"=".to_vec(),
        b"=\r\n".to_vec(),
        b"<!--[if mso]>".to_vec(),
        b"<![endif]-->".to_vec(),
        b"<a href=\"http://x.example/?a&amp;b\">".to_vec(),
        b"</body>".to_vec(),
        b"Content-Type: text/html; charset=iso-8859-1\r\n".to_vec(),
        b"Content-Transfer-Encoding: base64\r\n".to_vec(),
        b"Bcc: z@example.com\r\n".to_vec(),
        vec![0xff, 0xfe, 0x00],
    ]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), interesting).prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 0usize..400).prop_map(|(i, n)| Mutation::Cut(i, n)),
    ]
}

fn apply(mut raw: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = raw.len().max(1);
        match m {
            Mutation::Set(i, b) => {
                if !raw.is_empty() {
                    raw[i % len] = *b;
                }
            }
            Mutation::Insert(i, v) => {
                let at = i % (raw.len() + 1);
                raw.splice(at..at, v.iter().copied());
            }
            Mutation::Cut(i, n) => {
                let at = i % len;
                let end = (at + n).min(raw.len());
                if at < end {
                    raw.drain(at..end);
                }
            }
        }
    }
    raw
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..2048), delta in -2isize..3) {
        exercise(&raw, delta);
    }

    #[test]
    fn header_shaped_bytes_never_panic(body in "[ -~\r\n\t]{0,600}", delta in -2isize..3) {
        let raw = format!("From: a@example.com\r\nTo: b@example.com\r\nContent-Type: text/html\r\n\r\n{body}");
        exercise(raw.as_bytes(), delta);
    }

    #[test]
    fn mutated_fixtures_never_panic(
        pick in any::<prop::sample::Index>(),
        muts in prop::collection::vec(mutation(), 1..6),
        delta in -2isize..3,
    ) {
        let all = fixtures();
        prop_assume!(!all.is_empty());
        let raw = apply(all[pick.index(all.len())].clone(), &muts);
        exercise(&raw, delta);
    }
}
