//! Per-recipient copies of a followed email: parse once, splice per recipient.
//!
//! [`Draft::parse`] reads the raw RFC 5322 message with mail-parser, takes the
//! sender, subject, Message-ID and the recipients from its headers, rewrites
//! the links of its HTML body part(s) with lol_html (see [`html`]) and
//! encodes the result as quoted-printable *around* the places where
//! per-recipient URLs go (see [`qp`]). What it keeps is a plan: byte ranges of
//! the original message, pre-encoded literal bytes, and numbered holes.
//! [`Draft::render`] then only concatenates: no HTML parsing, no encoding
//! beyond wrapping each URL into lines.
//!
//! [`HtmlBody`] does the same for an HTML body alone (follow from compose):
//! the links rewritten, the pixel added, no MIME around it.
//!
//! Everything outside the rewritten HTML parts is copied byte for byte from
//! the input (attachments, inline images, text/plain parts, attached
//! messages, the preamble and boundaries), except the `Bcc` header, which is
//! removed from every copy.
//!
//! With [`AttachmentMode::Link`] (see [`attachments`]), tracked copies also
//! leave out every attachment part (delimiter line included, so the
//! multipart stays well formed) and list the files in an "Attachments" block
//! before the pixel in the HTML body and at the end of each text/plain body
//! (7bit, 8bit or quoted-printable ones; a base64 text body is left as it
//! is), each with a hole for the recipient's download URL.
//!
//! Architecture invariant: this module does no I/O and does not know about
//! tokens, storage or delivery. It never panics on any input; every index
//! into the input is checked, and the few `unwrap`s carry a comment saying
//! why they cannot fire.

mod attachments;
mod body;
mod html;
mod links;
mod qp;

use std::fmt;

use mail_parser::{Address, HeaderName, MessageParser, MimeHeaders, PartType};

pub use attachments::{url_name, Attachment, AttachmentMode};
pub use body::HtmlBody;
pub use links::SkipReason;

/// Limits applied while parsing a draft.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most trackable links one message may carry (default 1000). More is
    /// refused with [`ErrorKind::TooManyLinks`] rather than silently
    /// tracking only some of them.
    pub max_links: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_links: 1000 }
    }
}

/// What kind of problem stopped [`Draft::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input is not an RFC 5322 message (no header block).
    Malformed,
    /// No To, Cc or Bcc address.
    NoRecipients,
    /// No From address.
    NoSender,
    /// More trackable links than [`Limits::max_links`].
    TooManyLinks,
    /// More To, Cc and Bcc addresses (counted before anything else is done
    /// with them) than [`MAX_ADDRESSES`], or more From and Sender mailboxes
    /// than [`MAX_SENDERS`].
    TooManyRecipients,
}

/// Most To, Cc and Bcc addresses (before de-duplication) a message may list.
pub const MAX_ADDRESSES: usize = 1000;
/// Most From and Sender mailboxes a message may list.
pub const MAX_SENDERS: usize = 100;

/// Why a message could not be prepared.
#[derive(Debug, Clone)]
pub struct PrepareError {
    pub kind: ErrorKind,
    /// A sentence naming the problem, fit to show to the user.
    pub message: String,
}

impl PrepareError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        PrepareError {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for PrepareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PrepareError {}

/// The header a recipient was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    To,
    Cc,
    Bcc,
}

/// One mailbox from the message's headers.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// The address as written (after mail-parser's unquoting).
    pub address: String,
    /// Trimmed and lowercased: the key for de-duplication and look-ups.
    pub normalized: String,
    /// The display name, if any.
    pub name: Option<String>,
    pub field: Field,
}

/// An href that was left alone, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untouched {
    /// Entity-decoded and trimmed.
    pub href: String,
    pub reason: SkipReason,
}

/// Per-recipient URLs for one tracked copy.
#[derive(Debug, Clone, Copy)]
pub struct Tracking<'a> {
    /// The open pixel URL.
    pub pixel_url: &'a str,
    /// `click_urls[i]` replaces `links()[i]`. Links without an entry (the
    /// slice is too short) are left as they were; extra entries are ignored.
    pub click_urls: &'a [String],
}

/// One piece of an output plan.
#[derive(Debug, Clone, Copy)]
enum Seg {
    /// A byte range of the source message.
    Src(usize, usize),
    /// A byte range of the pre-encoded literal buffer.
    Lit(usize, usize),
    /// The encoded click URL of link `n`.
    Link(usize),
    /// The encoded pixel URL.
    Pixel,
    /// The download URL of attachment `n`, quoted-printable (HTML-escaped).
    Attach(usize),
    /// The download URL of attachment `n`, as is (a 7bit or 8bit text part).
    AttachRaw(usize),
}

/// A replacement of `start..end` of the source by `with`.
#[derive(Debug)]
struct Edit {
    start: usize,
    end: usize,
    with: Vec<Seg>,
}

/// A message parsed once, ready to be rendered for each recipient.
#[derive(Debug)]
pub struct Draft {
    /// The message (leading junk lines removed, see `skip_leading_junk`).
    src: Vec<u8>,
    /// Pre-encoded literal bytes used by `tracked`.
    lit: Vec<u8>,
    /// The untracked copy: `src` minus the Bcc header(s).
    untracked: Vec<Seg>,
    /// The tracked copy, or `None` when there is no HTML body to track.
    tracked: Option<Vec<Seg>>,
    /// Size of `tracked` without its holes (capacity hint).
    tracked_fixed_len: usize,
    /// Per link: range in `lit` of the original href, encoded, used when no
    /// click URL is given for it.
    fallback: Vec<(usize, usize)>,
    /// Line break of the rewritten part(s), for encoding the holes.
    nl: &'static [u8],
    /// Line break of the header block, for header fields we add.
    header_nl: &'static [u8],
    /// Whether the message has a `Date` header field.
    has_date: bool,

    from: Option<Recipient>,
    subject: Option<String>,
    message_id: Option<String>,
    recipients: Vec<Recipient>,
    /// Every From and Sender mailbox, normalized, in header order.
    senders: Vec<String>,
    links: Vec<String>,
    untouched: Vec<Untouched>,
    has_html: bool,
    /// The attachments left out of tracked copies (`AttachmentMode::Link`).
    attachments: Vec<Attachment>,
}

impl Draft {
    /// Parses a raw RFC 5322 message.
    ///
    /// `own_click_prefix` (e.g. `"https://track.example.com/c/"`): links
    /// already starting with it are left alone. An empty prefix matches
    /// nothing.
    pub fn parse(
        raw: &[u8],
        own_click_prefix: &str,
        limits: &Limits,
    ) -> Result<Draft, PrepareError> {
        Draft::parse_with(raw, own_click_prefix, limits, AttachmentMode::Keep)
    }

    /// [`Draft::parse`], saying what tracked copies do with attachments.
    pub fn parse_with(
        raw: &[u8],
        own_click_prefix: &str,
        limits: &Limits,
        attachments: AttachmentMode,
    ) -> Result<Draft, PrepareError> {
        let src = skip_leading_junk(raw);
        if src.len() >= u32::MAX as usize {
            return Err(PrepareError::new(
                ErrorKind::Malformed,
                "The message is larger than 4 GiB, which is not supported.",
            ));
        }
        if !starts_with_header_field(src) {
            return Err(PrepareError::new(
                ErrorKind::Malformed,
                "The input is not an email message: it does not start with a header field.",
            ));
        }
        let Some(msg) = parse_mime(src) else {
            return Err(PrepareError::new(
                ErrorKind::Malformed,
                "The input is not an email message: it has no header block.",
            ));
        };
        let Some(top) = msg.parts.first().filter(|p| !p.headers.is_empty()) else {
            return Err(PrepareError::new(
                ErrorKind::Malformed,
                "The input is not an email message: it has no header block.",
            ));
        };

        // Count first, before any per-address work (a header of 100,000
        // addresses must not cost more than reading it).
        let count = |names: &[HeaderName<'_>]| -> usize {
            top.headers
                .iter()
                .filter(|h| names.contains(&h.name))
                .filter_map(|h| h.value.as_address())
                .map(|a| a.iter().count())
                .sum()
        };
        let listed = count(&[HeaderName::To, HeaderName::Cc, HeaderName::Bcc]);
        if listed > MAX_ADDRESSES {
            return Err(PrepareError::new(
                ErrorKind::TooManyRecipients,
                format!("The message lists {listed} recipient addresses; at most {MAX_ADDRESSES} can be followed in one email."),
            ));
        }
        let listed = count(&[HeaderName::From, HeaderName::Sender]);
        if listed > MAX_SENDERS {
            return Err(PrepareError::new(
                ErrorKind::TooManyRecipients,
                format!("The message lists {listed} From and Sender mailboxes; at most {MAX_SENDERS} are accepted."),
            ));
        }
        let senders: Vec<String> = mailboxes(top, &HeaderName::From, Field::To)
            .into_iter()
            .chain(mailboxes(top, &HeaderName::Sender, Field::To))
            .map(|r| r.normalized)
            .collect();
        let from = mailboxes(top, &HeaderName::From, Field::To)
            .into_iter()
            .next();
        if from.is_none() {
            return Err(PrepareError::new(
                ErrorKind::NoSender,
                "The message has no sender: its From header is missing or holds no address.",
            ));
        }
        let mut recipients: Vec<Recipient> = Vec::new();
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        for (name, field) in [
            (HeaderName::To, Field::To),
            (HeaderName::Cc, Field::Cc),
            (HeaderName::Bcc, Field::Bcc),
        ] {
            for r in mailboxes(top, &name, field) {
                if seen.insert(r.normalized.clone()) {
                    recipients.push(r);
                }
            }
        }
        if recipients.is_empty() {
            return Err(PrepareError::new(
                ErrorKind::NoRecipients,
                "The message has no recipients: no address in its To, Cc or Bcc headers.",
            ));
        }
        let subject = last_text(top, &HeaderName::Subject);
        let message_id = last_text(top, &HeaderName::MessageId).map(|s| {
            s.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        });

        let message_nl = detect_nl(src);
        let mut common: Vec<Edit> = Vec::new();
        for h in top.headers.iter().filter(|h| h.name == HeaderName::Bcc) {
            let (s, e) = (h.offset_field as usize, h.offset_end as usize);
            if s <= e && e <= src.len() {
                common.push(Edit {
                    start: s,
                    end: e,
                    with: Vec::new(),
                });
            }
        }

        // The HTML body parts we rewrite: what mail-parser lists as HTML
        // body, decoded as HTML, not an attachment. Parts of attached
        // messages are not in this list (they belong to the nested message).
        let mut candidates: Vec<usize> = Vec::new();
        for &id in &msg.html_body {
            let id = id as usize;
            let Some(p) = msg.parts.get(id) else { continue };
            let is_attachment = p.content_disposition().is_some_and(|d| d.is_attachment());
            let offsets_ok = p.offset_header <= p.offset_body
                && p.offset_body <= p.offset_end
                && (p.offset_end as usize) <= src.len();
            if matches!(p.body, PartType::Html(_))
                && !is_attachment
                && !p.is_encoding_problem
                && offsets_ok
                && !candidates.contains(&id)
            {
                candidates.push(id);
            }
        }

        let selected = match attachments {
            AttachmentMode::Link if !candidates.is_empty() => attachments::select(&msg, src),
            _ => Vec::new(),
        };
        let linked: Vec<Attachment> = selected.iter().map(|s| s.attachment.clone()).collect();
        let mut block_placed = false;

        let mut sink = html::LinkSink::default();
        let mut lit: Vec<u8> = Vec::new();
        let mut tracked_edits: Vec<Edit> = Vec::new();
        let mut nl = message_nl;
        for (k, &id) in candidates.iter().enumerate() {
            // Cannot fail: `candidates` only holds ids checked above.
            let Some(p) = msg.parts.get(id) else { continue };
            let PartType::Html(text) = &p.body else {
                continue;
            };
            let charset_ok = p
                .content_type()
                .and_then(|ct| ct.attribute("charset"))
                .is_some_and(|c| {
                    let c = c.trim();
                    c.eq_ignore_ascii_case("utf-8") || c.eq_ignore_ascii_case("utf8")
                });
            let opts = html::Options {
                own_click_prefix,
                pixel: k == 0,
                fix_meta_charset: !charset_ok,
            };
            let pieces = html::rewrite(text, &opts, &mut sink).map_err(|e| {
                PrepareError::new(
                    ErrorKind::Malformed,
                    format!("The HTML body could not be rewritten: {e}."),
                )
            })?;
            if sink.links.len() > limits.max_links {
                return Err(too_many(sink.links.len(), limits));
            }
            let has_holes = pieces.iter().any(|p| !matches!(p, html::Piece::Text(_)));
            if !has_holes {
                continue;
            }
            let (hs, bs, be) = (
                p.offset_header as usize,
                p.offset_body as usize,
                p.offset_end as usize,
            );
            let part_nl = src.get(hs..bs).map_or(message_nl, |h| {
                if h.is_empty() {
                    message_nl
                } else {
                    detect_nl(h)
                }
            });
            if k == 0 {
                nl = part_nl;
            }
            header_edits(p, src, part_nl, charset_ok, &mut lit, &mut tracked_edits);
            let pieces = if k == 0 && !linked.is_empty() {
                with_block(pieces, &linked, &mut block_placed)
            } else {
                pieces.into_iter().map(Hole::from).collect()
            };
            // The body.
            let mut with = Vec::new();
            for (i, piece) in pieces.iter().enumerate() {
                match piece {
                    Hole::Text(t) => {
                        let next_is_hole = pieces
                            .get(i + 1)
                            .is_some_and(|p| !matches!(p, Hole::Text(_)));
                        let start = lit.len();
                        qp::encode_literal(t, part_nl, next_is_hole, &mut lit);
                        if lit.len() > start {
                            with.push(Seg::Lit(start, lit.len()));
                        }
                    }
                    Hole::Link(n) => with.push(Seg::Link(*n)),
                    Hole::Pixel => with.push(Seg::Pixel),
                    Hole::Attach(n) => with.push(Seg::Attach(*n)),
                }
            }
            tracked_edits.push(Edit {
                start: bs,
                end: be,
                with,
            });
        }
        if sink.links.len() > limits.max_links {
            return Err(too_many(sink.links.len(), limits));
        }
        let linked = if block_placed {
            for s in &selected {
                tracked_edits.push(Edit {
                    start: s.start,
                    end: s.end,
                    with: Vec::new(),
                });
            }
            text_blocks(&msg, src, nl, &linked, &mut lit, &mut tracked_edits);
            linked
        } else {
            Vec::new()
        };

        // Fallback encodings of the original hrefs.
        let mut fallback = Vec::with_capacity(sink.original.len());
        for orig in &sink.original {
            let start = lit.len();
            qp::encode_splice_raw(orig, nl, &mut lit);
            fallback.push((start, lit.len()));
        }

        let has_html = !candidates.is_empty();
        let untracked = plan(src.len(), common.iter().collect());
        let tracked = if tracked_edits.is_empty() {
            None
        } else {
            let mut all: Vec<&Edit> = common.iter().chain(tracked_edits.iter()).collect();
            all.sort_by_key(|e| (e.start, e.end));
            Some(plan(src.len(), all))
        };
        let tracked_fixed_len = tracked.as_ref().map_or(0, |t| seg_len(t));

        Ok(Draft {
            src: src.to_vec(),
            lit,
            untracked,
            tracked,
            tracked_fixed_len,
            fallback,
            nl,
            header_nl: message_nl,
            has_date: top.headers.iter().any(|h| h.name == HeaderName::Date),
            from,
            subject,
            message_id,
            recipients,
            senders,
            links: sink.links,
            untouched: sink.untouched,
            has_html,
            attachments: linked,
        })
    }

    /// Adds the `Message-ID` and `Date` header fields when the message lacks
    /// them, at the top of the header block, the same in every copy (they are
    /// copies of one message). RFC 5322 asks every message for both, and large
    /// receivers refuse or penalize mail without a Message-ID; a client that
    /// leaves them to its submission server would otherwise send copies
    /// without them, since mailbeacon delivers to a relay as already submitted
    /// mail. `message_id` is without angle brackets; `date` is an RFC 5322
    /// date-time. Existing fields are never changed.
    pub fn add_missing_headers(&mut self, message_id: &str, date: &str) {
        let mut fields = Vec::new();
        if self.message_id.is_none() {
            fields.extend_from_slice(format!("Message-ID: <{message_id}>").as_bytes());
            fields.extend_from_slice(self.header_nl);
            self.message_id = Some(message_id.to_string());
        }
        if !self.has_date {
            fields.extend_from_slice(format!("Date: {date}").as_bytes());
            fields.extend_from_slice(self.header_nl);
            self.has_date = true;
        }
        if fields.is_empty() {
            return;
        }
        let start = self.lit.len();
        self.lit.extend_from_slice(&fields);
        let seg = Seg::Lit(start, self.lit.len());
        self.untracked.insert(0, seg);
        if let Some(t) = self.tracked.as_mut() {
            t.insert(0, seg);
            self.tracked_fixed_len += fields.len();
        }
    }

    /// The From mailbox (its `field` is [`Field::To`] and means nothing).
    pub fn from(&self) -> Option<&Recipient> {
        self.from.as_ref()
    }

    /// Every From mailbox (of every From field) and the Sender, normalized:
    /// the addresses a message claims to come from.
    pub fn senders(&self) -> &[String] {
        &self.senders
    }

    /// The decoded Subject.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// The Message-ID, without angle brackets.
    pub fn message_id(&self) -> Option<&str> {
        self.message_id.as_deref()
    }

    /// To, then Cc, then Bcc; groups flattened; de-duplicated on
    /// `normalized` (first occurrence wins); entries without an address
    /// skipped.
    pub fn recipients(&self) -> &[Recipient] {
        &self.recipients
    }

    /// Trackable links in document order, entity-decoded and trimmed;
    /// index `i` is link number `i`.
    pub fn links(&self) -> &[String] {
        &self.links
    }

    /// Hrefs of `a`, `area` and VML elements in the HTML body that were left
    /// alone, in document order, with the reason.
    pub fn untouched_links(&self) -> &[Untouched] {
        &self.untouched
    }

    /// Returns true if and only if the message has an HTML body part (which
    /// gets the pixel in tracked copies).
    pub fn has_html(&self) -> bool {
        self.has_html
    }

    /// The attachments tracked copies leave out and link to instead
    /// (`AttachmentMode::Link`; empty otherwise), in order: index `i` is the
    /// `i`th entry of [`Draft::render_with`]'s `attachment_urls`.
    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Renders one copy, with `attachment_urls[i]` as the download link of
    /// `attachments()[i]` in a tracked copy (see [`Draft::render`]).
    pub fn render_with(
        &self,
        tracking: Option<&Tracking<'_>>,
        attachment_urls: &[String],
    ) -> Vec<u8> {
        self.render_plan(tracking, attachment_urls)
    }

    /// Renders one copy.
    ///
    /// `None`: the untracked copy, the original with only the Bcc header
    /// removed. `Some(t)`: the HTML body part(s) get `links()[i]` replaced by
    /// `t.click_urls[i]` and one pixel; everything else is byte-identical to
    /// the untracked copy. For a message without an HTML body both are the
    /// same.
    pub fn render(&self, tracking: Option<&Tracking<'_>>) -> Vec<u8> {
        self.render_plan(tracking, &[])
    }

    fn render_plan(&self, tracking: Option<&Tracking<'_>>, attachment_urls: &[String]) -> Vec<u8> {
        let (plan, t) = match (tracking, &self.tracked) {
            (Some(t), Some(plan)) => (plan, Some(t)),
            _ => (&self.untracked, None),
        };
        let holes: usize = t.map_or(0, |t| {
            t.click_urls.iter().map(|u| u.len() + 8).sum::<usize>()
                + t.pixel_url.len()
                + 8
                + attachment_urls
                    .iter()
                    .map(|u| 2 * u.len() + 16)
                    .sum::<usize>()
        });
        let fixed = if t.is_some() {
            self.tracked_fixed_len
        } else {
            self.src.len()
        };
        let mut out = Vec::with_capacity(fixed + holes + holes / 32);
        for seg in plan {
            match *seg {
                Seg::Src(s, e) => out.extend_from_slice(self.src.get(s..e).unwrap_or_default()),
                Seg::Lit(s, e) => out.extend_from_slice(self.lit.get(s..e).unwrap_or_default()),
                Seg::Link(n) => match t.and_then(|t| t.click_urls.get(n)) {
                    Some(url) => qp::encode_splice(url, self.nl, &mut out),
                    None => {
                        if let Some(&(s, e)) = self.fallback.get(n) {
                            out.extend_from_slice(self.lit.get(s..e).unwrap_or_default());
                        }
                    }
                },
                Seg::Pixel => {
                    if let Some(t) = t {
                        qp::encode_splice(t.pixel_url, self.nl, &mut out);
                    }
                }
                Seg::Attach(n) => {
                    let url = attachment_urls.get(n).map_or("#", String::as_str);
                    qp::encode_splice(url, self.nl, &mut out);
                }
                Seg::AttachRaw(n) => {
                    let url = attachment_urls.get(n).map_or("#", String::as_str);
                    out.extend_from_slice(url.as_bytes());
                }
            }
        }
        out
    }
}

fn too_many(n: usize, limits: &Limits) -> PrepareError {
    PrepareError::new(
        ErrorKind::TooManyLinks,
        format!(
            "The message has {n} or more trackable links; at most {} are allowed.",
            limits.max_links
        ),
    )
}

/// Runs mail-parser. It is documented never to panic; the `catch_unwind` is
/// a second line of defence so a parser bug on hostile input becomes a
/// `Malformed` error instead of taking a request down (it does nothing when
/// the binary is built with `panic = "abort"`).
fn parse_mime(src: &[u8]) -> Option<mail_parser::Message<'_>> {
    std::panic::catch_unwind(|| MessageParser::default().parse(src))
        .ok()
        .flatten()
}

/// Skips lines before the header block that cannot be part of a message:
/// whitespace-only lines and an mbox `From ` separator line. Some exported
/// `.eml` files start with them, and mail-parser would otherwise read the
/// first blank line as the end of an empty header block.
fn skip_leading_junk(raw: &[u8]) -> &[u8] {
    let mut rest = raw;
    loop {
        let line_end = rest.iter().position(|&c| c == b'\n');
        let line = match line_end {
            Some(i) => &rest[..i],
            None => rest,
        };
        let blank = line.iter().all(|c| matches!(c, b' ' | b'\t' | b'\r'));
        let mbox = line.starts_with(b"From ");
        match line_end {
            Some(i) if blank || mbox => rest = &rest[i + 1..],
            _ => return rest,
        }
    }
}

/// Returns true if and only if the first line is an RFC 5322 header field:
/// a name of printable ASCII other than `:`, optional blanks, then `:`.
fn starts_with_header_field(src: &[u8]) -> bool {
    let name_len = src
        .iter()
        .take_while(|&&c| (33..=126).contains(&c) && c != b':')
        .count();
    let rest = &src[name_len..];
    let blanks = rest
        .iter()
        .take_while(|&&c| c == b' ' || c == b'\t')
        .count();
    name_len > 0 && rest.get(blanks) == Some(&b':')
}

/// CRLF if the bytes contain one, else LF.
fn detect_nl(b: &[u8]) -> &'static [u8] {
    let first_lf = b.iter().position(|&c| c == b'\n');
    match first_lf {
        Some(i) if i > 0 && b[i - 1] == b'\r' => b"\r\n",
        Some(_) => b"\n",
        None => b"\r\n",
    }
}

/// The mailboxes of all headers called `name` of a part, in order.
fn mailboxes(
    part: &mail_parser::MessagePart<'_>,
    name: &HeaderName<'_>,
    field: Field,
) -> Vec<Recipient> {
    let mut out = Vec::new();
    for h in part.headers.iter().filter(|h| &h.name == name) {
        let Some(addr): Option<&Address<'_>> = h.value.as_address() else {
            continue;
        };
        for a in addr.iter() {
            let Some(address) = a.address.as_deref() else {
                continue;
            };
            let normalized = address.trim().to_lowercase();
            if normalized.is_empty() {
                continue;
            }
            out.push(Recipient {
                address: address.to_string(),
                normalized,
                name: a
                    .name
                    .as_deref()
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_string),
                field,
            });
        }
    }
    out
}

/// The text of the last header called `name` (what mail-parser reports).
fn last_text(part: &mail_parser::MessagePart<'_>, name: &HeaderName<'_>) -> Option<String> {
    part.headers
        .iter()
        .rev()
        .find(|h| &h.name == name)
        .and_then(|h| h.value.as_text())
        .map(str::to_string)
}

/// Header edits for a rewritten HTML part: the transfer encoding becomes
/// quoted-printable and, unless the part already said utf-8, the charset
/// becomes utf-8. Other header lines stay byte-identical.
fn header_edits(
    p: &mail_parser::MessagePart<'_>,
    src: &[u8],
    nl: &[u8],
    charset_ok: bool,
    lit: &mut Vec<u8>,
    edits: &mut Vec<Edit>,
) {
    let in_block = |h: &&mail_parser::Header<'_>| {
        h.offset_field <= h.offset_end
            && p.offset_header <= h.offset_field
            && h.offset_end <= p.offset_body
            && (h.offset_end as usize) <= src.len()
    };
    let ctes: Vec<_> = p
        .headers
        .iter()
        .filter(|h| h.name == HeaderName::ContentTransferEncoding)
        .filter(in_block)
        .collect();
    let cts: Vec<_> = p
        .headers
        .iter()
        .filter(|h| h.name == HeaderName::ContentType)
        .filter(in_block)
        .collect();

    let mut cte_line = b"Content-Transfer-Encoding: quoted-printable".to_vec();
    cte_line.extend_from_slice(nl);
    let push_lit = |bytes: &[u8], lit: &mut Vec<u8>| {
        let s = lit.len();
        lit.extend_from_slice(bytes);
        Seg::Lit(s, lit.len())
    };
    let remove = |h: &mail_parser::Header<'_>| Edit {
        start: h.offset_field as usize,
        end: h.offset_end as usize,
        with: Vec::new(),
    };

    let mut cte_placed = false;
    if !charset_ok {
        let mut line = content_type_utf8(p).into_bytes();
        line.extend_from_slice(nl);
        if let Some((first, others)) = cts.split_first() {
            let mut with = vec![push_lit(&line, lit)];
            if ctes.is_empty() {
                with.push(push_lit(&cte_line, lit));
                cte_placed = true;
            }
            edits.push(Edit {
                start: first.offset_field as usize,
                end: first.offset_end as usize,
                with,
            });
            edits.extend(others.iter().map(|h| remove(h)));
        }
    }
    if let Some((first, others)) = ctes.split_first() {
        let with = vec![push_lit(&cte_line, lit)];
        edits.push(Edit {
            start: first.offset_field as usize,
            end: first.offset_end as usize,
            with,
        });
        edits.extend(others.iter().map(|h| remove(h)));
        cte_placed = true;
    }
    if !cte_placed {
        // After the Content-Type mail-parser used (the last one), or after
        // the last header line.
        let at = cts
            .last()
            .map(|h| h.offset_end)
            .or_else(|| {
                p.headers
                    .iter()
                    .filter(in_block)
                    .map(|h| h.offset_end)
                    .max()
            })
            .unwrap_or(p.offset_body) as usize;
        edits.push(Edit {
            start: at,
            end: at,
            with: vec![push_lit(&cte_line, lit)],
        });
    }
}

/// `Content-Type: <type>/<subtype>; charset=utf-8` plus the part's other
/// parameters.
fn content_type_utf8(p: &mail_parser::MessagePart<'_>) -> String {
    let mut s = String::from("Content-Type: ");
    match p.content_type() {
        Some(ct) => {
            s.push_str(ct.ctype());
            s.push('/');
            s.push_str(ct.subtype().unwrap_or("html"));
            s.push_str("; charset=utf-8");
            for a in ct.attributes().unwrap_or_default() {
                if a.name.eq_ignore_ascii_case("charset") || !is_token(&a.name) {
                    continue;
                }
                s.push_str("; ");
                s.push_str(&a.name);
                s.push_str("=\"");
                for c in a.value.chars().filter(|c| !c.is_control()) {
                    if c == '"' || c == '\\' {
                        s.push('\\');
                    }
                    s.push(c);
                }
                s.push('"');
            }
        }
        None => s.push_str("text/html; charset=utf-8"),
    }
    s
}

/// RFC 2045 token characters (parameter names).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&c))
}

/// Builds a plan from the source length and sorted, non-overlapping edits.
/// An edit overlapping an earlier one is dropped (cannot happen with the
/// edits built above; dropping keeps the output well-formed if it did).
fn plan(len: usize, mut edits: Vec<&Edit>) -> Vec<Seg> {
    edits.sort_by_key(|e| (e.start, e.end));
    let mut out = Vec::new();
    let mut cursor = 0;
    for e in edits {
        if e.start < cursor || e.end < e.start || e.end > len {
            continue;
        }
        if e.start > cursor {
            out.push(Seg::Src(cursor, e.start));
        }
        out.extend(e.with.iter().cloned());
        cursor = e.end;
    }
    if cursor < len {
        out.push(Seg::Src(cursor, len));
    }
    out
}

fn seg_len(plan: &[Seg]) -> usize {
    plan.iter()
        .map(|s| match *s {
            Seg::Src(a, b) | Seg::Lit(a, b) => b - a,
            Seg::Link(_) | Seg::Pixel | Seg::Attach(_) | Seg::AttachRaw(_) => 0,
        })
        .sum()
}

/// A piece of a rewritten HTML body, with the attachment holes.
enum Hole {
    Text(String),
    Link(usize),
    Pixel,
    Attach(usize),
}

impl From<html::Piece> for Hole {
    fn from(p: html::Piece) -> Hole {
        match p {
            html::Piece::Text(t) => Hole::Text(t),
            html::Piece::Link(n) => Hole::Link(n),
            html::Piece::PixelUrl => Hole::Pixel,
        }
    }
}

/// The pieces with the "Attachments" block put right before the pixel's
/// `<img` (`placed` set when it was).
fn with_block(pieces: Vec<html::Piece>, atts: &[Attachment], placed: &mut bool) -> Vec<Hole> {
    let mut out: Vec<Hole> = Vec::with_capacity(pieces.len() + 2 * atts.len());
    let mut pieces = pieces.into_iter().peekable();
    while let Some(p) = pieces.next() {
        let before_pixel = matches!(pieces.peek(), Some(html::Piece::PixelUrl));
        match p {
            html::Piece::Text(t) if before_pixel && !*placed && t.ends_with(html::PIXEL_BEFORE) => {
                let mut head = t[..t.len() - html::PIXEL_BEFORE.len()].to_string();
                for b in attachments::html_block(atts) {
                    match b {
                        attachments::BlockPiece::Text(x) => head.push_str(&x),
                        attachments::BlockPiece::Url(n) => {
                            out.push(Hole::Text(std::mem::take(&mut head)));
                            out.push(Hole::Attach(n));
                        }
                    }
                }
                head.push_str(html::PIXEL_BEFORE);
                out.push(Hole::Text(head));
                *placed = true;
            }
            p => out.push(Hole::from(p)),
        }
    }
    out.retain(|h| !matches!(h, Hole::Text(t) if t.is_empty()));
    out
}

/// Appends the "Attachments" block to every text/plain body whose encoding
/// allows it (7bit, 8bit, binary or quoted-printable; an ASCII-compatible
/// charset; the same line breaks as the HTML part).
fn text_blocks(
    msg: &mail_parser::Message<'_>,
    src: &[u8],
    nl: &'static [u8],
    atts: &[Attachment],
    lit: &mut Vec<u8>,
    edits: &mut Vec<Edit>,
) {
    let mut done: Vec<u32> = Vec::new();
    for &id in &msg.text_body {
        let Some(p) = msg.parts.get(id as usize) else {
            continue;
        };
        let plain = p.content_type().is_none_or(|ct| {
            ct.ctype().eq_ignore_ascii_case("text")
                && ct.subtype().is_none_or(|s| s.eq_ignore_ascii_case("plain"))
        });
        let attached = p.content_disposition().is_some_and(|d| d.is_attachment());
        if done.contains(&id)
            || !matches!(p.body, PartType::Text(_))
            || !plain
            || attached
            || p.is_encoding_problem
        {
            continue;
        }
        let cte = p
            .content_transfer_encoding()
            .map(|c| c.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let qp = match cte.as_str() {
            "quoted-printable" => true,
            "" | "7bit" | "8bit" | "binary" => false,
            _ => continue,
        };
        let charset = p
            .content_type()
            .and_then(|ct| ct.attribute("charset"))
            .map(|c| c.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let utf8 = charset == "utf-8" || charset == "utf8";
        let ascii_compatible = charset.is_empty()
            || utf8
            || charset == "us-ascii"
            || charset.starts_with("iso-8859-")
            || charset.starts_with("windows-125");
        if !ascii_compatible {
            continue;
        }
        let Some(at) = attachments::text_end(msg, src, id as usize, p) else {
            continue;
        };
        let part_nl = src
            .get(p.offset_header as usize..p.offset_body as usize)
            .filter(|h| !h.is_empty())
            .map_or(nl, detect_nl);
        if part_nl != nl {
            continue;
        }
        let unicode = utf8 && (qp || cte == "8bit" || cte == "binary");
        let block = attachments::text_block(atts, unicode);
        let mut with = Vec::new();
        for (i, b) in block.iter().enumerate() {
            match b {
                attachments::BlockPiece::Text(t) => {
                    let start = lit.len();
                    if qp {
                        let next_is_hole = block.get(i + 1).is_some();
                        qp::encode_literal(t, nl, next_is_hole, lit);
                    } else {
                        for (j, line) in t.split('\n').enumerate() {
                            if j > 0 {
                                lit.extend_from_slice(nl);
                            }
                            lit.extend_from_slice(line.as_bytes());
                        }
                    }
                    if lit.len() > start {
                        with.push(Seg::Lit(start, lit.len()));
                    }
                }
                attachments::BlockPiece::Url(n) if qp => with.push(Seg::Attach(*n)),
                attachments::BlockPiece::Url(n) => with.push(Seg::AttachRaw(*n)),
            }
        }
        edits.push(Edit {
            start: at,
            end: at,
            with,
        });
        done.push(id);
    }
}

#[cfg(test)]
mod tests;
