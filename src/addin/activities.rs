//! Email Activities: a raw RFC 5322 message (what Office.js `getAsFileAsync`
//! hands the add-in, or what Auto Capture fetches over IMAP) turned into the
//! activity record the CRM keeps, and the activity's JSON.
//!
//! Pure: no I/O. Parsing uses mail-parser, which never panics on any input.
//! The caller looks up what needs the store (duplicates, the tracked email this
//! one replies to) and stores the result.

use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders as _};
use ring::digest;
use serde_json::{json, Value};

use crate::ids::{id_to_text, rfc3339};
use crate::model::{Activity, ActivityPersonal, AttachmentInfo, Participant};
use crate::token::KeyRing;

/// Bodies larger than this are cut (at a character boundary) before storing.
pub const MAX_BODY_CHARS: usize = 1024 * 1024;

/// What a message says about itself, before anything is looked up.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// Normalized Message-ID, or `sha256:{hex of the raw message}` when the
    /// message has none (so the same bytes still deduplicate).
    pub message_id: String,
    /// Message-IDs this one answers, nearest first (In-Reply-To, then References
    /// from last to first).
    pub parents: Vec<String>,
    /// The thread root: first of References, else In-Reply-To, else own id.
    pub conversation: String,
    pub sent_ms: Option<u64>,
    pub personal: ActivityPersonal,
}

/// Strips angle brackets and whitespace; `None` when nothing is left.
pub fn normalize_message_id(s: &str) -> Option<String> {
    let t = s
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    (!t.is_empty() && t.len() <= 998 && !t.chars().any(|c| c.is_whitespace() || c.is_control()))
        .then(|| t.to_string())
}

fn ids_of(v: &HeaderValue<'_>) -> Vec<String> {
    match v {
        HeaderValue::Text(t) => normalize_message_id(t).into_iter().collect(),
        HeaderValue::TextList(l) => l.iter().filter_map(|t| normalize_message_id(t)).collect(),
        _ => Vec::new(),
    }
}

fn participants(a: Option<&Address<'_>>) -> Vec<Participant> {
    let Some(a) = a else { return Vec::new() };
    a.iter()
        .filter_map(|x| {
            let address = x.address()?.trim().to_lowercase();
            (!address.is_empty()).then(|| Participant {
                address,
                name: x
                    .name()
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty()),
            })
        })
        .collect()
}

fn cut(s: &str) -> String {
    match s.char_indices().nth(MAX_BODY_CHARS) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// Parses a raw message. Errors are messages for the API client.
pub fn parse(raw: &[u8]) -> Result<Parsed, String> {
    let trimmed = raw
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map_or(&raw[..0], |i| &raw[i..]);
    let first_line = trimmed.split(|b| *b == b'\n').next().unwrap_or_default();
    let looks_like_header = first_line
        .iter()
        .position(|b| *b == b':')
        .is_some_and(|i| i > 0 && first_line[..i].iter().all(|b| b.is_ascii_graphic()));
    if !looks_like_header {
        return Err(
            "the input is not an email message: it does not start with a header field".into(),
        );
    }
    let msg = MessageParser::default()
        .parse(trimmed)
        .ok_or("the message could not be parsed")?;
    let from = participants(msg.from()).into_iter().next();
    let to = participants(msg.to());
    let cc = participants(msg.cc());
    if from.is_none() && to.is_empty() && cc.is_empty() {
        return Err("the message has no sender and no recipients".into());
    }
    let message_id = msg
        .message_id()
        .and_then(normalize_message_id)
        .unwrap_or_else(|| {
            let d = digest::digest(&digest::SHA256, trimmed);
            let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            format!("sha256:{hex}")
        });
    let in_reply_to = ids_of(msg.in_reply_to());
    let references = ids_of(msg.references());
    // The nearest MAX_PARENTS, de-duplicated with a set: a References field
    // of 150,000 ids costs one pass, and the caller's look-ups stay few.
    let mut parents: Vec<String> = Vec::new();
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for p in in_reply_to.iter().chain(references.iter().rev()) {
        if parents.len() == MAX_PARENTS {
            break;
        }
        if *p != message_id && seen.insert(p.as_str()) {
            parents.push(p.clone());
        }
    }
    let conversation = references
        .first()
        .or(in_reply_to.first())
        .cloned()
        .unwrap_or_else(|| message_id.clone());
    let sent_ms = msg
        .date()
        .map(|d| d.to_timestamp())
        .filter(|t| *t > 0)
        .map(|t| t as u64 * 1000);
    let attachments = msg
        .attachments()
        .map(|p| AttachmentInfo {
            name: p.attachment_name().map(str::to_string),
            size: p.contents().len() as u64,
            content_type: p
                .content_type()
                .map(|c| match c.subtype() {
                    Some(s) => format!("{}/{}", c.ctype(), s),
                    None => c.ctype().to_string(),
                })
                .unwrap_or_else(|| "application/octet-stream".into())
                .to_lowercase(),
        })
        .collect();
    let body_html = (msg.html_body_count() > 0)
        .then(|| msg.body_html(0).map(|h| cut(&h)))
        .flatten();
    let body_text = msg.body_text(0).map(|t| cut(&t));
    Ok(Parsed {
        message_id,
        parents,
        conversation,
        sent_ms,
        personal: ActivityPersonal {
            from,
            to,
            cc,
            subject: msg.subject().map(str::to_string),
            body_text,
            body_html,
            attachments,
        },
    })
}

/// Most thread parents kept (In-Reply-To, then the nearest References).
pub const MAX_PARENTS: usize = 100;

/// "outgoing" if and only if the user is the sender.
pub fn direction(p: &Parsed, user_email: &str) -> &'static str {
    match &p.personal.from {
        Some(f) if f.address == user_email => "outgoing",
        _ => "incoming",
    }
}

/// Every address the message was exchanged with, except the user's own.
pub fn counterparts(p: &ActivityPersonal, user_email: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for a in p.from.iter().chain(&p.to).chain(&p.cc) {
        if a.address != user_email && seen.insert(a.address.as_str()) {
            out.push(a.address.clone());
        }
    }
    out
}

/// The followed email whose open pixel (`{public_url}/o/{token}.gif`, with a
/// valid signature) this HTML carries, if any.
pub fn followed_email_in(html: &str, public_url: &str, keys: &KeyRing) -> Option<u64> {
    let prefix = format!("{public_url}/o/");
    let mut rest = html;
    while let Some(i) = rest.find(&prefix) {
        let after = &rest[i + prefix.len()..];
        let end = after.find(".gif").unwrap_or(after.len());
        if let Some(c) = keys.verify_open(&after[..end]) {
            return Some(c.email);
        }
        rest = after;
    }
    None
}

/// The JSON of an activity; `full` adds the bodies.
pub fn to_json(a: &Activity, full: bool) -> Value {
    let p = &a.personal;
    let mut v = json!({
        "id": id_to_text(a.id),
        "message_id": a.message_id,
        "conversation": a.conversation,
        "reply_to": a.reply_to.map(id_to_text),
        "direction": a.direction,
        "regarding": a.regarding,
        "email_id": a.email_id.map(id_to_text),
        "source": a.source,
        "owner": id_to_text(a.owner),
        "sent_at": a.sent_ms.map(rfc3339),
        "created_at": rfc3339(a.created_ms),
        "expires_at": rfc3339(a.expires_ms),
        "from": p.from,
        "to": p.to,
        "cc": p.cc,
        "subject": p.subject,
        "attachments": p.attachments,
    });
    if full {
        v["body_text"] = json!(p.body_text);
        v["body_html"] = json!(p.body_html);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: &str = "From: Bob <Bob@Client.test>\r\nTo: ann@sales.test\r\nCc: Carol <carol@client.test>\r\n\
Subject: Re: Offer\r\nMessage-ID: <r1@client.test>\r\nIn-Reply-To: <o1@sales.test>\r\n\
References: <root@sales.test> <o1@sales.test>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"m\"\r\n\r\n--m\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSounds good.\r\n\
--m\r\nContent-Type: application/pdf; name=\"offer.pdf\"\r\nContent-Disposition: attachment; filename=\"offer.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--m--\r\n";

    #[test]
    fn a_reply_is_parsed_with_its_thread_and_attachments() {
        let p = parse(REPLY.as_bytes()).expect("parses");
        assert_eq!(p.message_id, "r1@client.test");
        assert_eq!(p.parents, ["o1@sales.test", "root@sales.test"]);
        assert_eq!(p.conversation, "root@sales.test");
        assert_eq!(p.personal.from.as_ref().unwrap().address, "bob@client.test");
        assert_eq!(p.personal.cc[0].name.as_deref(), Some("Carol"));
        assert_eq!(p.personal.subject.as_deref(), Some("Re: Offer"));
        assert_eq!(
            p.personal.body_text.as_deref().map(str::trim),
            Some("Sounds good.")
        );
        assert_eq!(p.personal.attachments.len(), 1);
        let a = &p.personal.attachments[0];
        assert_eq!(
            (a.name.as_deref(), a.size, a.content_type.as_str()),
            (Some("offer.pdf"), 9, "application/pdf")
        );
        assert_eq!(direction(&p, "ann@sales.test"), "incoming");
        assert_eq!(direction(&p, "bob@client.test"), "outgoing");
        assert_eq!(
            counterparts(&p.personal, "ann@sales.test"),
            ["bob@client.test", "carol@client.test"]
        );
        assert_eq!(p.sent_ms, Some(1_796_032_800_000));
    }

    #[test]
    fn garbage_is_refused_and_missing_ids_hash_the_bytes() {
        for bad in [&b""[..], b"hello world", b"\x00\x01\x02", b": x\r\n\r\n"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let raw = b"From: a@x.test\r\nTo: b@y.test\r\nSubject: no id\r\n\r\nhi\r\n";
        let p = parse(raw).expect("parses");
        assert!(p.message_id.starts_with("sha256:"), "{}", p.message_id);
        assert_eq!(parse(raw).unwrap().message_id, p.message_id);
        assert_eq!(p.conversation, p.message_id);
    }

    #[test]
    fn message_ids_normalize() {
        assert_eq!(normalize_message_id(" <a@b> ").as_deref(), Some("a@b"));
        assert_eq!(normalize_message_id("<>"), None);
        assert_eq!(normalize_message_id("a b@c"), None);
    }
}
