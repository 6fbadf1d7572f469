//! What the reply watcher reads of a message, parsed: the few header fields it
//! fetches (From, Message-ID, In-Reply-To, References, Content-Type,
//! X-Original-Message-ID) and, for a delivery status notification (RFC 3464),
//! the per-recipient fields of its `message/delivery-status` part and the
//! Message-ID of the returned message's header. Pure: no I/O.

use mail_parser::{HeaderValue, MessageParser, MimeHeaders as _};

use crate::addin::activities::normalize_message_id;
use crate::address::normalize_address;

/// A message's header, as far as matching needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The sender's normalized address.
    pub from: Option<String>,
    /// The message's own Message-ID, normalized (no angle brackets).
    pub message_id: Option<String>,
    /// The Message-IDs it answers, nearest first: In-Reply-To, then References
    /// from last to first (no duplicates).
    pub parents: Vec<String>,
    /// `multipart/report; report-type=delivery-status`.
    pub is_dsn: bool,
}

fn ids_of(v: &HeaderValue<'_>) -> Vec<String> {
    match v {
        HeaderValue::Text(t) => t
            .split_whitespace()
            .filter_map(normalize_message_id)
            .collect(),
        HeaderValue::TextList(l) => l
            .iter()
            .flat_map(|t| t.split_whitespace())
            .filter_map(normalize_message_id)
            .collect(),
        _ => Vec::new(),
    }
}

/// Parses header fields (`raw` is the header block, as `BODY[HEADER.FIELDS …]`
/// returns it).
pub fn header(raw: &[u8]) -> Header {
    let mut bytes = raw.to_vec();
    bytes.extend_from_slice(b"\r\n");
    let Some(msg) = MessageParser::default().parse_headers(&bytes) else {
        return Header {
            from: None,
            message_id: None,
            parents: Vec::new(),
            is_dsn: false,
        };
    };
    let from = msg
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .and_then(normalize_address);
    let message_id = msg.message_id().and_then(normalize_message_id);
    let mut parents: Vec<String> = Vec::new();
    let in_reply_to = ids_of(msg.in_reply_to());
    let references = ids_of(msg.references());
    let original = msg
        .header("X-Original-Message-ID")
        .map(ids_of)
        .unwrap_or_default();
    for p in original
        .iter()
        .chain(&in_reply_to)
        .chain(references.iter().rev())
    {
        if Some(p) != message_id.as_ref() && !parents.contains(p) {
            parents.push(p.clone());
        }
    }
    let is_dsn = msg.content_type().is_some_and(|c| {
        c.ctype().eq_ignore_ascii_case("multipart")
            && c.subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
            && c.attribute("report-type")
                .is_some_and(|t| t.eq_ignore_ascii_case("delivery-status"))
    });
    Header {
        from,
        message_id,
        parents,
        is_dsn,
    }
}

/// One recipient named by a delivery status notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsnRecipient {
    /// Normalized addresses from `Original-Recipient` and `Final-Recipient`.
    pub addresses: Vec<String>,
    /// `Action: failed`.
    pub failed: bool,
    /// `Diagnostic-Code` (without its type), else `Status`.
    pub detail: Option<String>,
}

/// The fields of a `message/delivery-status` body: groups separated by blank
/// lines, folded lines joined; returns each per-recipient group.
pub fn delivery_status(body: &[u8]) -> Vec<DsnRecipient> {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    let mut out = Vec::new();
    for group in text.split("\n\n") {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in group.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some((_, v)) = fields.last_mut() {
                    v.push(' ');
                    v.push_str(line.trim());
                }
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                fields.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        // "rfc822; bob@client.test": the address type, then the address.
        let typed = |v: &str| {
            let (_, a) = v.split_once(';').unwrap_or(("", v));
            a.trim().to_string()
        };
        let addresses: Vec<String> = ["original-recipient", "final-recipient"]
            .iter()
            .filter_map(|n| get(n))
            .filter_map(|v| normalize_address(typed(v).trim_matches(['<', '>'])))
            .collect();
        if addresses.is_empty() {
            continue;
        }
        let failed = get("action").is_some_and(|a| a.eq_ignore_ascii_case("failed"));
        let detail = get("diagnostic-code")
            .map(typed)
            .or_else(|| get("status").map(str::to_string))
            .filter(|d| !d.is_empty())
            .map(|d| d.chars().take(500).collect());
        out.push(DsnRecipient {
            addresses,
            failed,
            detail,
        });
    }
    out
}

/// The Message-ID of a returned message (its header, as `text/rfc822-headers`
/// or the start of a `message/rfc822` part).
pub fn returned_message_id(part: &[u8]) -> Option<String> {
    let end = part
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| part.windows(2).position(|w| w == b"\n\n"))
        .unwrap_or(part.len());
    header(&part[..end]).message_id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_header_names_its_parents_nearest_first() {
        let h = header(
            b"From: Bob <Bob@Client.test>\r\nMessage-ID: <r1@client.test>\r\n\
In-Reply-To: <q2@example.test>\r\nReferences: <q1@example.test>\r\n <q2@example.test>\r\n\
Content-Type: text/plain\r\n",
        );
        assert_eq!(h.from.as_deref(), Some("bob@client.test"));
        assert_eq!(h.message_id.as_deref(), Some("r1@client.test"));
        assert_eq!(h.parents, ["q2@example.test", "q1@example.test"]);
        assert!(!h.is_dsn);
    }

    #[test]
    fn a_dsn_is_recognised_and_its_fields_read() {
        let h = header(
            b"From: MAILER-DAEMON@mx.client.test\r\nMessage-ID: <dsn1@mx>\r\n\
X-Original-Message-ID: <q1@example.test>\r\n\
Content-Type: multipart/report; report-type=delivery-status;\r\n boundary=\"b\"\r\n",
        );
        assert!(h.is_dsn);
        assert_eq!(h.parents, ["q1@example.test"]);
        let r = delivery_status(
            b"Reporting-MTA: dns; mx.client.test\r\n\r\n\
Original-Recipient: rfc822;Dan@Client.test\r\nFinal-Recipient: rfc822; dan@client.test\r\n\
Action: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 <dan@client.test>:\r\n\
 \tuser unknown\r\n\r\nFinal-Recipient: rfc822; eve@client.test\r\nAction: delayed\r\n\
Status: 4.4.1\r\n",
        );
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].addresses, ["dan@client.test", "dan@client.test"]);
        assert!(r[0].failed);
        assert_eq!(
            r[0].detail.as_deref(),
            Some("550 5.1.1 <dan@client.test>: user unknown")
        );
        assert!(!r[1].failed);
        assert_eq!(r[1].detail.as_deref(), Some("4.4.1"));
    }

    #[test]
    fn returned_headers_give_the_copy_message_id() {
        assert_eq!(
            returned_message_id(
                b"From: ann@sales.test\r\nMessage-ID: <q1@example.test>\r\n\r\nbody <x@y>"
            )
            .as_deref(),
            Some("q1@example.test")
        );
        assert_eq!(returned_message_id(b"garbage"), None);
    }

    #[test]
    fn nothing_to_match_in_junk() {
        let h = header(b"\x00\x01 not a header");
        assert_eq!(h.from, None);
        assert!(h.parents.is_empty());
        assert!(delivery_status(b"hello\r\n\r\nworld").is_empty());
    }
}
