//! Message-level tests of `Draft`: one test per rule of the design brief.

use super::*;
use mail_parser::{MessageParser, PartType};

const OWN: &str = "https://t.example/c/";

fn lim() -> Limits {
    Limits::default()
}

fn urls(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("https://t.example/c/TOK{i}/x"))
        .collect()
}

fn tracked(d: &Draft) -> Vec<u8> {
    let u = urls(d.links().len());
    d.render(Some(&Tracking {
        pixel_url: "https://t.example/o/PIX.gif",
        click_urls: &u,
    }))
}

/// The decoded HTML bodies of a rendered message.
fn html_of(raw: &[u8]) -> Vec<String> {
    let m = MessageParser::default().parse(raw).expect("output parses");
    m.html_body
        .iter()
        .filter_map(|&i| match &m.parts[i as usize].body {
            PartType::Html(h) => Some(h.to_string()),
            _ => None,
        })
        .collect()
}

fn max_line(b: &[u8]) -> usize {
    b.split(|&c| c == b'\n').map(|l| l.len()).max().unwrap_or(0)
}

fn simple_html(body: &str) -> String {
    format!(
        "From: Ann <ann@example.com>\r\nTo: bob@example.com\r\nSubject: Hi\r\n\
         Message-ID: <m1@example.com>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/html; charset=utf-8\r\n\r\n{body}"
    )
}

#[test]
fn headers_are_read() {
    let d = Draft::parse(simple_html("<p>x</p>").as_bytes(), OWN, &lim()).unwrap();
    let f = d.from().unwrap();
    assert_eq!(f.address, "ann@example.com");
    assert_eq!(f.name.as_deref(), Some("Ann"));
    assert_eq!(d.subject(), Some("Hi"));
    assert_eq!(d.message_id(), Some("m1@example.com"));
    assert!(d.has_html());
}

#[test]
fn recipients_ordered_flattened_deduplicated() {
    let raw = "From: a@example.com\r\n\
        Bcc: Zed <zed@example.com>, BOB@example.com\r\n\
        Cc: team: Carl <carl@example.com>, dee@example.com;, \"Bob B\" <bob@Example.com>\r\n\
        To: Bob <Bob@Example.com>, undisclosed-recipients:;\r\n\
        To: eve@example.com\r\n\r\nhi\r\n";
    let d = Draft::parse(raw.as_bytes(), OWN, &lim()).unwrap();
    let got: Vec<_> = d
        .recipients()
        .iter()
        .map(|r| (r.address.as_str(), r.normalized.as_str(), r.field))
        .collect();
    assert_eq!(
        got,
        [
            ("Bob@Example.com", "bob@example.com", Field::To),
            ("eve@example.com", "eve@example.com", Field::To),
            ("carl@example.com", "carl@example.com", Field::Cc),
            ("dee@example.com", "dee@example.com", Field::Cc),
            ("zed@example.com", "zed@example.com", Field::Bcc),
        ]
    );
    assert_eq!(d.recipients()[0].name.as_deref(), Some("Bob"));
}

#[test]
fn errors_have_kind_and_sentence() {
    let cases: [(&[u8], ErrorKind); 6] = [
        (b"", ErrorKind::Malformed),
        (b"   \r\n\r\n", ErrorKind::Malformed),
        (b"just some garbage without a colon", ErrorKind::Malformed),
        (b"\r\nbody without headers\r\n", ErrorKind::Malformed),
        (b"To: b@example.com\r\n\r\nx", ErrorKind::NoSender),
        (
            b"From: a@example.com\r\nTo: undisclosed-recipients:;\r\n\r\nx",
            ErrorKind::NoRecipients,
        ),
    ];
    for (raw, kind) in cases {
        let e = Draft::parse(raw, OWN, &lim()).err().unwrap();
        assert_eq!(e.kind, kind, "{:?}", String::from_utf8_lossy(raw));
        assert!(e.message.ends_with('.') && e.to_string() == e.message);
    }
}

#[test]
fn too_many_links() {
    let body: String = (0..5)
        .map(|i| format!("<a href=\"https://e.example/{i}\">x</a>"))
        .collect();
    let raw = simple_html(&body);
    let e = Draft::parse(raw.as_bytes(), OWN, &Limits { max_links: 4 })
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::TooManyLinks);
    assert!(Draft::parse(raw.as_bytes(), OWN, &Limits { max_links: 5 }).is_ok());
}

#[test]
fn bcc_removed_from_every_copy_and_nothing_else() {
    let raw =
        "From: a@example.com\r\nTo: b@example.com\r\nBcc: c@example.com,\r\n d@example.com\r\n\
        Subject: s\r\nContent-Type: text/plain\r\n\r\nbody http://e.example/\r\n";
    let d = Draft::parse(raw.as_bytes(), OWN, &lim()).unwrap();
    let want = raw.replace("Bcc: c@example.com,\r\n d@example.com\r\n", "");
    assert_eq!(d.render(None), want.as_bytes());
    // Text-only: the tracked copy is the untracked one.
    assert!(!d.has_html());
    assert!(d.links().is_empty());
    assert_eq!(tracked(&d), want.as_bytes());
    assert_eq!(d.recipients().len(), 3);
}

#[test]
fn html_links_rewritten_with_one_pixel_and_qp() {
    let long = format!("https://e.example/{}?a=1&amp;b=2", "p".repeat(120));
    let body = format!(
        "<html><body><p>{}</p><a href=\"{long}\">x</a> <a href='mailto:z@e.example'>m</a>\r\n\
         <a href=\"https://t.example/c/already\">own</a></body></html>\r\n",
        "word ".repeat(100)
    );
    let raw = simple_html(&body);
    let d = Draft::parse(raw.as_bytes(), OWN, &lim()).unwrap();
    assert_eq!(d.links(), [long.replace("&amp;", "&")]);
    let untouched: Vec<_> = d.untouched_links().iter().map(|u| u.reason).collect();
    assert_eq!(untouched, [SkipReason::Mailto, SkipReason::OwnClickUrl]);
    let out = tracked(&d);
    assert!(max_line(&out) <= 78, "{}", String::from_utf8_lossy(&out));
    let out_s = String::from_utf8(out.clone()).unwrap();
    assert!(out_s.contains("Content-Transfer-Encoding: quoted-printable\r\n"));
    assert!(out_s.contains("Content-Type: text/html; charset=utf-8\r\n"));
    // Every line ends with CRLF, as in the source.
    assert_eq!(out_s.matches('\n').count(), out_s.matches("\r\n").count());
    let html = html_of(&out);
    assert_eq!(html.len(), 1);
    let want = body.replace(&long, "https://t.example/c/TOK0/x").replace(
        "</body>",
        "<img src=\"https://t.example/o/PIX.gif\" width=\"1\" height=\"1\" alt=\"\" \
             style=\"display:block;border:0;width:1px;height:1px\"></body>",
    );
    assert_eq!(html[0].replace("\r\n", "\n"), want.replace("\r\n", "\n"));
    // The untracked copy is the original.
    assert_eq!(d.render(None), raw.as_bytes());
}

#[test]
fn lf_source_gives_lf_output() {
    let raw = simple_html("<a href=\"http://e.example/\">x</a>\n").replace("\r\n", "\n");
    let d = Draft::parse(raw.as_bytes(), OWN, &lim()).unwrap();
    let out = tracked(&d);
    assert!(!out.contains(&b'\r'));
    assert_eq!(html_of(&out)[0].matches("TOK0").count(), 1);
}

#[test]
fn charset_converted_to_utf8() {
    let mut raw = b"From: a@example.com\r\nTo: b@example.com\r\nContent-Type: text/html; charset=\"iso-8859-1\"; format=flowed\r\n\
Content-Transfer-Encoding: 8bit\r\n\r\n<html><head><meta charset=\"iso-8859-1\"></head><body>caf"
        .to_vec();
    raw.push(0xE9);
    raw.extend_from_slice(b" <a href=\"http://e.example/\">x</a></body></html>\r\n");
    let d = Draft::parse(&raw, OWN, &lim()).unwrap();
    let out = tracked(&d);
    let s = String::from_utf8_lossy(&out);
    assert!(
        s.contains("Content-Type: text/html; charset=utf-8; format=\"flowed\"\r\n"),
        "{s}"
    );
    assert!(s.contains("Content-Transfer-Encoding: quoted-printable\r\n"));
    assert!(!s.contains("8bit"));
    let html = &html_of(&out)[0];
    assert!(html.contains("café"), "{html}");
    assert!(html.contains("<meta charset=\"utf-8\">"));
    // The untracked copy keeps the original bytes.
    assert_eq!(d.render(None), raw);
}

#[test]
fn base64_html_with_attachment_and_attached_message() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let html = "<html><body><a href=\"https://e.example/a\">a</a></body></html>";
    let png: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let png_b64 = b64.encode(&png);
    let png_lines: Vec<&str> = png_b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let raw = format!(
        "From: a@example.com\r\nTo: b@example.com\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"B1\"\r\n\r\npreamble\r\n--B1\r\n\
Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--B1\r\n\
Content-Type: image/png; name=\"x.png\"\r\nContent-Disposition: attachment; filename=\"x.png\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--B1\r\n\
Content-Type: text/html; name=\"page.html\"\r\nContent-Disposition: attachment; filename=\"page.html\"\r\n\r\n\
<a href=\"https://e.example/attached-html\">no</a>\r\n--B1\r\n\
Content-Type: message/rfc822\r\n\r\nFrom: x@example.com\r\nTo: y@example.com\r\nContent-Type: text/html\r\n\r\n\
<a href=\"https://e.example/inner\">no</a>\r\n--B1--\r\n",
        b64.encode(html),
        png_lines.join("\r\n")
    );
    let d = Draft::parse(raw.as_bytes(), OWN, &lim()).unwrap();
    assert_eq!(d.links(), ["https://e.example/a"]);
    let out = tracked(&d);
    let m_in = MessageParser::default().parse(raw.as_bytes()).unwrap();
    let m_out = MessageParser::default().parse(&out).unwrap();
    assert_eq!(m_in.attachments.len(), m_out.attachments.len());
    for (a, b) in m_in.attachments.iter().zip(&m_out.attachments) {
        let (pa, pb) = (&m_in.parts[*a as usize], &m_out.parts[*b as usize]);
        assert_eq!(pa.contents(), pb.contents());
        assert_eq!(pa.raw_len(), pb.raw_len());
    }
    // Everything after the HTML part is byte-identical.
    let tail = &raw[raw.find("--B1\r\nContent-Type: image/png").unwrap()..];
    assert!(out.ends_with(tail.as_bytes()));
    assert!(
        String::from_utf8_lossy(&out).starts_with("From: a@example.com\r\nTo: b@example.com\r\n")
    );
    let html_out = &html_of(&out)[0];
    assert_eq!(html_out.matches("PIX.gif").count(), 1);
    assert!(html_out.contains("TOK0"));
}

#[test]
fn pixel_only_in_first_html_part() {
    let raw = "From: a@example.com\r\nTo: b@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
--b\r\nContent-Type: text/html\r\n\r\n<body><a href=\"http://e.example/1\">1</a></body>\r\n\
--b\r\nContent-Type: text/html\r\n\r\n<body><a href=\"http://e.example/2\">2</a></body>\r\n--b--\r\n";
    let d = Draft::parse(raw.as_bytes(), OWN, &lim()).unwrap();
    assert_eq!(d.links().len(), 2);
    let out = tracked(&d);
    let s = String::from_utf8_lossy(&out);
    assert_eq!(s.matches("PIX.gif").count(), 1);
    assert!(s.contains("TOK0") && s.contains("TOK1"));
}

#[test]
fn mismatched_click_urls_leave_extra_links_alone() {
    let raw = simple_html(
        "<a href=\"http://e.example/1?a=1&amp;b=2\">1</a><a href='http://e.example/\"2'>2</a>",
    );
    let d = Draft::parse(raw.as_bytes(), OWN, &lim()).unwrap();
    assert_eq!(d.links().len(), 2);
    for n in [0, 1, 5] {
        let u = urls(n);
        let out = d.render(Some(&Tracking {
            pixel_url: "P",
            click_urls: &u,
        }));
        let html = &html_of(&out)[0];
        if n == 0 {
            assert!(
                html.contains("href=\"http://e.example/1?a=1&amp;b=2\""),
                "{html}"
            );
        }
        if n < 2 {
            assert!(html.contains("href=\"http://e.example/&quot;2\""), "{html}");
        }
        assert_eq!(html.matches("TOK").count(), n.min(2));
    }
}

#[test]
fn urls_with_unusual_characters_are_escaped() {
    let raw = simple_html("<a href=\"http://e.example/\">1</a>");
    let d = Draft::parse(raw.as_bytes(), OWN, &lim()).unwrap();
    let u = vec!["https://x.example/?a=1&b=\"q\" é=".to_string()];
    let out = d.render(Some(&Tracking {
        pixel_url: "https://x.example/o/<p>.gif",
        click_urls: &u,
    }));
    assert!(max_line(&out) <= 78);
    let html = &html_of(&out)[0];
    assert!(
        html.contains("href=\"https://x.example/?a=1&amp;b=&quot;q&quot; é=\""),
        "{html}"
    );
    assert!(html.contains("src=\"https://x.example/o/&lt;p&gt;.gif\""));
}

#[test]
fn long_lines_in_7bit_source_get_wrapped() {
    let body = format!(
        "<p>{}</p><a href=\"http://e.example/\">x</a>",
        "é".repeat(2000)
    );
    let raw = simple_html(&body);
    let d = Draft::parse(raw.as_bytes(), OWN, &lim()).unwrap();
    let out = tracked(&d);
    assert!(max_line(&out) <= 78);
    assert!(html_of(&out)[0].contains(&"é".repeat(2000)));
}

#[test]
fn leading_junk_lines_are_skipped() {
    let raw = format!(
        "   \r\nFrom sender@example.com Mon Jan  1 00:00:00 2001\r\n{}",
        simple_html("x")
    );
    let d = Draft::parse(raw.as_bytes(), OWN, &lim()).unwrap();
    assert_eq!(d.from().unwrap().address, "ann@example.com");
    assert!(d.render(None).starts_with(b"From: Ann"));
}

#[test]
fn html_without_links_still_gets_pixel() {
    let d = Draft::parse(simple_html("<p>hello</p>").as_bytes(), OWN, &lim()).unwrap();
    assert!(d.links().is_empty());
    let out = tracked(&d);
    let html = &html_of(&out)[0];
    assert!(html.starts_with("<p>hello</p><img src=\"https://t.example/o/PIX.gif\""));
    // Without tracking, the HTML part is untouched.
    assert_eq!(d.render(None), simple_html("<p>hello</p>").as_bytes());
}

#[test]
fn text_plain_parts_are_not_rewritten() {
    let raw = "From: a@example.com\r\nTo: b@example.com\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\n<a href=\"http://e.example/t\">t</a>\r\n\
--b\r\nContent-Type: text/html\r\n\r\n<a href=\"http://e.example/h\">h</a>\r\n--b--\r\n";
    let d = Draft::parse(raw.as_bytes(), OWN, &lim()).unwrap();
    assert_eq!(d.links(), ["http://e.example/h"]);
    let out = tracked(&d);
    let s = String::from_utf8_lossy(&out);
    assert!(s.contains(
        "--b\r\nContent-Type: text/plain\r\n\r\n<a href=\"http://e.example/t\">t</a>\r\n--b\r\n"
    ));
}

#[test]
fn draft_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Draft>();
    assert_send_sync::<PrepareError>();
}

#[test]
fn missing_message_id_and_date_are_added_once_and_existing_ones_kept() {
    let raw = "From: a@example.com\nTo: b@example.com\nSubject: s\n\
               Content-Type: text/html\n\n<a href=\"https://e.example/\">x</a>\n";
    let mut d = Draft::parse(raw.as_bytes(), OWN, &lim()).unwrap();
    assert_eq!(d.message_id(), None);
    d.add_missing_headers("new1@example.com", "Mon, 30 Nov 2026 00:53:20 +0000");
    assert_eq!(d.message_id(), Some("new1@example.com"));
    let head = "Message-ID: <new1@example.com>\nDate: Mon, 30 Nov 2026 00:53:20 +0000\n";
    // Untracked: exactly the original with the two fields on top (LF kept).
    assert_eq!(d.render(None), format!("{head}{raw}").as_bytes());
    let t = tracked(&d);
    assert!(t.starts_with(head.as_bytes()));
    let m = MessageParser::default().parse(&t).unwrap();
    assert_eq!(m.message_id(), Some("new1@example.com"));
    assert!(m.date().is_some());
    assert_eq!(html_of(&t).len(), 1);
    // A second call adds nothing.
    d.add_missing_headers("new2@example.com", "Tue, 01 Dec 2026 00:00:00 +0000");
    assert_eq!(d.render(None), format!("{head}{raw}").as_bytes());

    // A message that has both keeps them, byte-identical.
    let full = simple_html("<p>x</p>");
    let mut d = Draft::parse(full.as_bytes(), OWN, &lim()).unwrap();
    let with_date = full.replacen(
        "Subject: Hi\r\n",
        "Subject: Hi\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\n",
        1,
    );
    d.add_missing_headers("x@y", "never");
    assert_eq!(d.message_id(), Some("m1@example.com"));
    let out = String::from_utf8(d.render(None)).unwrap();
    assert!(out.starts_with("Date: never\r\nFrom:"), "{out}");
    let mut d = Draft::parse(with_date.as_bytes(), OWN, &lim()).unwrap();
    d.add_missing_headers("x@y", "never");
    assert_eq!(d.render(None), with_date.as_bytes());
}

/// Found by the `prepare` fuzz target: the HTML part's text holds "-\r-b" in
/// a multipart with boundary "b". Decoding drops the lone CR, and writing the
/// rewritten part made "--b", which mail-parser (lenient, mid-line too) took
/// for a boundary: the tracked copy had a part and an attachment the original
/// did not. "--" is now always broken in quoted-printable output.
#[test]
fn rewritten_part_never_makes_a_boundary() {
    let raw = include_bytes!("../../fuzz/corpus/prepare/crash-qp-double-dash-boundary");
    let d = Draft::parse(raw, OWN, &lim()).expect("it parses");
    let m_in = MessageParser::default().parse(&raw[..]).unwrap();
    let out = tracked(&d);
    let m_out = MessageParser::default()
        .parse(&out)
        .expect("the copy parses");
    assert_eq!(m_out.parts.len(), m_in.parts.len());
    assert_eq!(m_out.attachments.len(), m_in.attachments.len());
}
