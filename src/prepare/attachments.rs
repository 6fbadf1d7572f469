//! Attachments as links (`"attachments": "link"`): which parts of a message
//! are attachments, where each one sits in the source (so a tracked copy can
//! leave it out), and the "Attachments" block that lists them in the HTML and
//! text/plain bodies with one per-recipient URL each.
//!
//! An attachment is a part of the message's own MIME tree (never a part of an
//! attached message) that is not a `multipart/*` container and not one of the
//! message's text or HTML bodies, and that either has `Content-Disposition:
//! attachment` or is a non-text part without `Content-Disposition: inline`.
//! A part whose Content-ID is referenced by `cid:` from an HTML body is never
//! one (inline images stay in the copy). A part is removed only when its
//! delimiter lines are where MIME says; otherwise it stays in the copy.
//!
//! Pure: no I/O, no tokens.

use std::collections::HashSet;

use mail_parser::{MessagePart, MimeHeaders, PartType};

/// What to do with a message's attachments in tracked copies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AttachmentMode {
    /// Leave them in every copy (the default).
    #[default]
    Keep,
    /// Take them out of tracked copies and list them as download links.
    Link,
}

/// An attachment taken out of the tracked copies: its decoded bytes with the
/// name and type it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The file name as given (decoded; control characters removed), or a
    /// made-up one (`attachment-1.bin`) when the part names none.
    pub name: String,
    /// `type/subtype`, lowercase (`application/octet-stream` when absent).
    pub content_type: String,
    /// The decoded contents (base64 or quoted-printable undone).
    pub data: Vec<u8>,
}

/// A selected attachment with the source range that holds it: from its
/// delimiter line (`--boundary`) up to the next one, exclusive.
#[derive(Debug)]
pub(crate) struct Selected {
    pub start: usize,
    pub end: usize,
    pub attachment: Attachment,
}

/// A piece of an "Attachments" block: text, or the URL of attachment `n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BlockPiece {
    Text(String),
    Url(usize),
}

/// The attachments of `msg` (see the module doc), in part order, with where
/// each one is in `src`.
pub(crate) fn select(msg: &mail_parser::Message<'_>, src: &[u8]) -> Vec<Selected> {
    let cids = referenced_cids(msg);
    let bodies: HashSet<u32> = msg
        .html_body
        .iter()
        .chain(&msg.text_body)
        .copied()
        .filter(|&id| {
            msg.parts
                .get(id as usize)
                .is_some_and(|p| matches!(p.body, PartType::Text(_) | PartType::Html(_)))
        })
        .collect();
    let mut out = Vec::new();
    for parent in &msg.parts {
        let PartType::Multipart(children) = &parent.body else {
            continue;
        };
        let Some(boundary) = parent
            .content_type()
            .and_then(|ct| ct.attribute("boundary"))
        else {
            continue;
        };
        for &id in children {
            let Some(p) = msg.parts.get(id as usize) else {
                continue;
            };
            if id == 0 || bodies.contains(&id) || !is_attachment(p, &cids) {
                continue;
            }
            let Some((start, end)) = part_range(src, p, boundary) else {
                continue;
            };
            let n = out.len() + 1;
            out.push(Selected {
                start,
                end,
                attachment: Attachment {
                    name: file_name(p, n),
                    content_type: content_type(p),
                    data: p.contents().to_vec(),
                },
            });
        }
    }
    out.sort_by_key(|s| s.start);
    out
}

/// Returns true if and only if `p` is an attachment by the rule of the module
/// doc (its place in the tree checked by the caller).
fn is_attachment(p: &MessagePart<'_>, cids: &HashSet<String>) -> bool {
    if p.is_encoding_problem {
        return false;
    }
    if p.content_id()
        .is_some_and(|id| cids.contains(&normalize_cid(id)))
    {
        return false;
    }
    let disposition = p.content_disposition();
    if disposition.is_some_and(|d| d.is_attachment()) {
        return !matches!(p.body, PartType::Multipart(_));
    }
    let inline = disposition.is_some_and(|d| d.is_inline());
    let non_text = matches!(
        p.body,
        PartType::Binary(_) | PartType::InlineBinary(_) | PartType::Message(_)
    );
    non_text && !inline
}

/// Every Content-ID referenced as `cid:…` in the message's HTML bodies,
/// normalized (angle brackets off, percent-decoded, lowercase).
fn referenced_cids(msg: &mail_parser::Message<'_>) -> HashSet<String> {
    let mut out = HashSet::new();
    for p in &msg.parts {
        let PartType::Html(html) = &p.body else {
            continue;
        };
        let lower = html.to_ascii_lowercase();
        let mut rest = lower.as_str();
        while let Some(at) = rest.find("cid:") {
            let after = &rest[at + 4..];
            let len = after
                .find(|c: char| c.is_whitespace() || "\"'()<>;,".contains(c))
                .unwrap_or(after.len());
            out.insert(normalize_cid(&after[..len]));
            rest = &after[len..];
        }
    }
    out
}

fn normalize_cid(id: &str) -> String {
    let id = id.trim().trim_start_matches('<').trim_end_matches('>');
    percent_decode(id).to_ascii_lowercase()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The range of part `p` of a multipart with `boundary`: from the start of
/// its delimiter line (`--boundary`) to the start of the next delimiter line.
/// Removing it leaves the multipart well formed. `None` if the delimiters are
/// not where they should be.
fn part_range(src: &[u8], p: &MessagePart<'_>, boundary: &str) -> Option<(usize, usize)> {
    let (hs, be) = (p.offset_header as usize, p.offset_end as usize);
    if hs > be || be > src.len() || boundary.is_empty() {
        return None;
    }
    let delim = format!("--{boundary}");
    let d = delim.as_bytes();
    let start = rfind(src.get(..hs)?, d)?;
    // The delimiter starts a line, and only blanks follow it up to the headers.
    if start > 0 && src[start - 1] != b'\n' {
        return None;
    }
    let between = src.get(start + d.len()..hs)?;
    if !between
        .iter()
        .all(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
    {
        return None;
    }
    let mut line = b"\n".to_vec();
    line.extend_from_slice(d);
    let from = be.saturating_sub(1).max(hs);
    let next = find(src.get(from..)?, &line)? + from + 1;
    Some((start, next))
}

/// Where to append to text part `p` (a body of the message): just before the
/// line break that precedes the next delimiter line, or the end of the
/// message for a single-part message. `None` if that cannot be found.
pub(crate) fn text_end(
    msg: &mail_parser::Message<'_>,
    src: &[u8],
    id: usize,
    p: &MessagePart<'_>,
) -> Option<usize> {
    if id == 0 {
        return Some(src.len());
    }
    let parent = msg.parts.iter().find(|q| match &q.body {
        PartType::Multipart(c) => c.contains(&(id as u32)),
        _ => false,
    })?;
    let boundary = parent.content_type()?.attribute("boundary")?;
    let (_, next) = part_range(src, p, boundary)?;
    // `next` starts the delimiter line; the line break before it belongs to
    // the delimiter.
    let mut at = next.checked_sub(1)?;
    if at > 0 && src[at - 1] == b'\r' {
        at -= 1;
    }
    (at >= p.offset_body as usize).then_some(at)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (0..=hay.len() - needle.len())
        .rev()
        .find(|&i| &hay[i..i + needle.len()] == needle)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn file_name(p: &MessagePart<'_>, n: usize) -> String {
    let given: String = p
        .attachment_name()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    // A name is a name, not a path.
    let given = given.rsplit(['/', '\\']).next().unwrap_or("").trim();
    if !given.is_empty() {
        return given.chars().take(200).collect();
    }
    let ext = match p.body {
        PartType::Message(_) => "eml",
        _ => "bin",
    };
    format!("attachment-{n}.{ext}")
}

fn content_type(p: &MessagePart<'_>) -> String {
    let Some(ct) = p.content_type() else {
        return match p.body {
            PartType::Message(_) => "message/rfc822".into(),
            _ => "application/octet-stream".into(),
        };
    };
    let t = ct.ctype().trim().to_ascii_lowercase();
    let s = ct.subtype().unwrap_or("").trim().to_ascii_lowercase();
    let token = |x: &str| {
        !x.is_empty()
            && x.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&c))
    };
    if token(&t) && token(&s) {
        format!("{t}/{s}")
    } else {
        "application/octet-stream".into()
    }
}

/// The file name as it travels in the link's path: ASCII letters, digits,
/// `.`, `-` and `_`, anything else `_`, at most 80 characters, never empty
/// and never starting with a dot.
pub fn url_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    while s.starts_with('.') {
        s.replace_range(..1, "_");
    }
    if s.is_empty() {
        s.push_str("file");
    }
    s
}

/// "512 bytes", "12 KB", "1.4 MB".
fn human_size(n: usize) -> String {
    const KB: usize = 1024;
    const MB: usize = 1024 * 1024;
    if n < KB {
        format!("{n} bytes")
    } else if n < MB {
        format!("{} KB", n.div_ceil(KB))
    } else {
        format!("{:.1} MB", n as f64 / MB as f64)
    }
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The block for the HTML body: a heading and one list item per file, its
/// link's `href` a hole (the name HTML-escaped, the size beside it).
pub(crate) fn html_block(atts: &[Attachment]) -> Vec<BlockPiece> {
    let mut out = vec![BlockPiece::Text(
        "<div class=\"mailbeacon-attachments\" style=\"margin:16px 0 0;padding:8px 0 0;\
border-top:1px solid #dddddd;font-family:Arial,sans-serif;font-size:14px\">\n\
<p style=\"margin:0 0 4px 0;font-weight:bold\">Attachments</p>\n<ul style=\"margin:0;padding:0 0 0 20px\">\n<li><a href=\""
            .to_string(),
    )];
    for (i, a) in atts.iter().enumerate() {
        if i > 0 {
            out.push(BlockPiece::Text("<li><a href=\"".into()));
        }
        out.push(BlockPiece::Url(i));
        out.push(BlockPiece::Text(format!(
            "\">{}</a> ({})</li>\n",
            escape_html(&a.name),
            human_size(a.data.len())
        )));
    }
    if let Some(BlockPiece::Text(t)) = out.last_mut() {
        t.push_str("</ul></div>\n");
    }
    out
}

/// The block for a text/plain body, appended at its end. `unicode`: the part
/// may carry any UTF-8 (else names are reduced to ASCII).
pub(crate) fn text_block(atts: &[Attachment], unicode: bool) -> Vec<BlockPiece> {
    let mut out = Vec::new();
    let mut text = String::from("\n\nAttachments:\n");
    for (i, a) in atts.iter().enumerate() {
        let name: String = if unicode {
            a.name.clone()
        } else {
            a.name
                .chars()
                .map(|c| if c.is_ascii() { c } else { '_' })
                .collect()
        };
        if i > 0 {
            text.push('\n');
        }
        text.push_str(&format!("- {name} ({}):\n  ", human_size(a.data.len())));
        out.push(BlockPiece::Text(std::mem::take(&mut text)));
        out.push(BlockPiece::Url(i));
    }
    // The part ends with the last URL (the line break before the next
    // delimiter belongs to the delimiter).
    out
}

#[cfg(test)]
mod tests {
    use super::super::{Draft, Limits, Tracking};
    use super::*;
    use mail_parser::MessageParser;

    /// A message as Thunderbird writes one: a text and HTML alternative in a
    /// related part with an inline logo (`cid:`), a PDF, an image attached
    /// without a disposition, and an inline image nobody references.
    fn message(nl: &str) -> Vec<u8> {
        let m = "From: Alice <alice@example.com>\n\
To: Bob <bob@example.com>\n\
Subject: Q3\n\
MIME-Version: 1.0\n\
Content-Type: multipart/mixed; boundary=\"mix\"\n\
\n\
This is a multi-part message in MIME format.\n\
--mix\n\
Content-Type: multipart/related; boundary=\"rel\"\n\
\n\
--rel\n\
Content-Type: multipart/alternative; boundary=\"alt\"\n\
\n\
--alt\n\
Content-Type: text/plain; charset=utf-8\n\
Content-Transfer-Encoding: quoted-printable\n\
\n\
Hi Bob, the report is attached.\n\
--alt\n\
Content-Type: text/html; charset=utf-8\n\
\n\
<html><body><p>Hi Bob</p><img src=\"cid:logo@example\"><a href=\"https://example.com/\">site</a></body></html>\n\
--alt--\n\
\n\
--rel\n\
Content-Type: image/png; name=\"logo.png\"\n\
Content-ID: <logo@example>\n\
Content-Transfer-Encoding: base64\n\
\n\
iVBORw0KGgo=\n\
--rel--\n\
\n\
--mix\n\
Content-Type: application/pdf; name=\"Q3 report.pdf\"\n\
Content-Disposition: attachment; filename=\"Q3 report.pdf\"\n\
Content-Transfer-Encoding: base64\n\
\n\
JVBERi0xLjQKJcOkw7zDtsOfCg==\n\
--mix\n\
Content-Type: image/jpeg; name=\"photo.jpg\"\n\
Content-Transfer-Encoding: base64\n\
\n\
/9j/4AAQ\n\
--mix\n\
Content-Type: image/gif\n\
Content-Disposition: inline\n\
Content-Transfer-Encoding: base64\n\
\n\
R0lGODlh\n\
--mix--\n";
        m.replace('\n', nl).into_bytes()
    }

    fn parse(raw: &[u8], mode: AttachmentMode) -> Draft {
        Draft::parse_with(raw, "", &Limits::default(), mode).expect("parses")
    }

    fn render(d: &Draft) -> Vec<u8> {
        let clicks = vec!["https://t.example/c/C0/x".to_string()];
        let urls: Vec<String> = (0..d.attachments().len())
            .map(|i| {
                format!(
                    "https://t.example/a/TOK/{i}/{}",
                    url_name(&d.attachments()[i].name)
                )
            })
            .collect();
        d.render_with(
            Some(&Tracking {
                pixel_url: "https://t.example/o/P.gif",
                click_urls: &clicks,
            }),
            &urls,
        )
    }

    #[test]
    fn attachments_are_selected_and_inline_images_kept() {
        for nl in ["\r\n", "\n"] {
            let d = parse(&message(nl), AttachmentMode::Link);
            let names: Vec<&str> = d.attachments().iter().map(|a| a.name.as_str()).collect();
            assert_eq!(names, ["Q3 report.pdf", "photo.jpg"]);
            assert_eq!(d.attachments()[0].content_type, "application/pdf");
            assert_eq!(
                d.attachments()[0].data,
                b"%PDF-1.4\n%\xc3\xa4\xc3\xbc\xc3\xb6\xc3\x9f\n"
            );
            assert_eq!(d.attachments()[1].content_type, "image/jpeg");

            let out = render(&d);
            assert!(out.split(|&c| c == b'\n').all(|l| l.len() <= 78));
            let m = MessageParser::default()
                .parse(&out)
                .expect("the copy parses");
            let kinds: Vec<String> = m
                .parts
                .iter()
                .filter_map(|p| {
                    p.content_type()
                        .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")))
                })
                .collect();
            assert!(kinds.contains(&"image/png".to_string()), "{kinds:?}");
            assert!(kinds.contains(&"image/gif".to_string()), "{kinds:?}");
            assert!(!kinds.contains(&"application/pdf".to_string()), "{kinds:?}");
            assert!(!kinds.contains(&"image/jpeg".to_string()), "{kinds:?}");
            assert_eq!(m.attachments.len(), 2, "logo and the inline gif stay");
            let html = m.body_html(0).expect("html").to_string();
            assert!(
                html.contains(
                    "<a href=\"https://t.example/a/TOK/0/Q3_report.pdf\">Q3 report.pdf</a>"
                ),
                "{html}"
            );
            assert!(
                html.contains("https://t.example/a/TOK/1/photo.jpg"),
                "{html}"
            );
            let block = html.find("mailbeacon-attachments").expect("block");
            assert!(block < html.find("https://t.example/o/P.gif").expect("pixel"));
            assert!(html.contains("https://t.example/c/C0/x"));
            let text = m.body_text(0).expect("text").to_string();
            assert!(
                text.starts_with("Hi Bob, the report is attached."),
                "{text}"
            );
            assert!(text.contains("- Q3 report.pdf (19 bytes):"), "{text}");
            assert!(
                text.trim_end()
                    .ends_with("https://t.example/a/TOK/1/photo.jpg"),
                "{text}"
            );
            // The rest is untouched: the untracked copy keeps everything.
            let untracked = d.render(None);
            assert_eq!(untracked, message(nl));
        }
    }

    #[test]
    fn keep_mode_and_messages_without_attachments_are_unchanged() {
        let keep = parse(&message("\r\n"), AttachmentMode::Keep);
        assert!(keep.attachments().is_empty());
        let link = parse(&message("\r\n"), AttachmentMode::Link);
        let u = vec!["https://t.example/c/C0/x".to_string()];
        let t = Tracking {
            pixel_url: "https://t.example/o/P.gif",
            click_urls: &u,
        };
        assert!(keep.render(Some(&t)).windows(8).any(|w| w == b"JVBERi0x"));
        assert!(!link
            .render_with(Some(&t), &[])
            .windows(8)
            .any(|w| w == b"JVBERi0x"));

        let plain = b"From: a@example.com\r\nTo: b@example.com\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n";
        let a = parse(plain, AttachmentMode::Keep);
        let b = parse(plain, AttachmentMode::Link);
        assert!(b.attachments().is_empty());
        assert_eq!(a.render(Some(&t)), b.render_with(Some(&t), &[]));
    }

    #[test]
    fn an_attached_message_is_one_attachment_and_a_text_only_message_has_none() {
        let m = "From: a@example.com\r\nTo: b@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
--b\r\nContent-Type: text/html\r\n\r\n<p>see attached</p>\r\n\
--b\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@example.com\r\nSubject: old\r\nContent-Type: multipart/mixed; boundary=inner\r\n\r\n\
--inner\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=x.pdf\r\n\r\nPDF\r\n--inner--\r\n\
--b--\r\n";
        let d = parse(m.as_bytes(), AttachmentMode::Link);
        assert_eq!(d.attachments().len(), 1);
        assert_eq!(d.attachments()[0].content_type, "message/rfc822");
        assert!(d.attachments()[0].data.starts_with(b"From: c@example.com"));
        let out = render(&d);
        let parsed = MessageParser::default().parse(&out).expect("parses");
        assert!(parsed.attachments.is_empty());

        let text_only = "From: a@example.com\r\nTo: b@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n\
--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=x.pdf\r\n\r\nPDF\r\n--b--\r\n";
        let d = parse(text_only.as_bytes(), AttachmentMode::Link);
        assert!(
            d.attachments().is_empty(),
            "no HTML: nothing is tracked, nothing linked"
        );
    }

    #[test]
    fn url_names_are_path_safe() {
        assert_eq!(url_name("Q3 report (final).pdf"), "Q3_report__final_.pdf");
        assert_eq!(url_name("../../etc/passwd"), "_._.._etc_passwd");
        assert_eq!(url_name(""), "file");
        assert_eq!(url_name("Überblick.pdf"), "_berblick.pdf");
        assert!(url_name(&"a".repeat(500)).len() <= 80);
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(10), "10 bytes");
        assert_eq!(human_size(1500), "2 KB");
        assert_eq!(human_size(3 * 1024 * 1024 / 2), "1.5 MB");
    }

    #[test]
    fn names_are_escaped_in_html() {
        let a = Attachment {
            name: "<script>&.pdf".into(),
            content_type: "application/pdf".into(),
            data: vec![0; 3],
        };
        let block = html_block(&[a]);
        let text: String = block
            .iter()
            .map(|p| match p {
                BlockPiece::Text(t) => t.clone(),
                BlockPiece::Url(_) => "URL".into(),
            })
            .collect();
        assert!(text.contains("&lt;script&gt;&amp;.pdf"), "{text}");
        assert!(!text.contains("<script>"));
    }

    #[test]
    fn cids_are_normalized() {
        assert_eq!(normalize_cid("<Logo%40Example>"), "logo@example");
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
