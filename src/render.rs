//! Following an email: from a parsed draft to the email record and one prepared
//! copy per recipient, each with its own tokens.
//!
//! For recipient `i` the pixel is `{public}/o/{open token}.gif` and link `j`
//! becomes `{public}/c/{click token}/{base64url(original URL)}`; the click token's
//! signature covers the original URL, so the link redirects correctly forever,
//! without a lookup (after retention, erasure, or during a store outage).
//! Recipients who are not followed get the untracked copy.
//!
//! A draft from compose ([`HtmlBody`]) gets one copy for everyone, its HTML
//! alone ([`render_html`]), and a message-level record
//! ([`message_level_record`]).
//!
//! Pure: no I/O. Callers decide who is followed and store the record.

use crate::model::{EmailRecord, RecipientRecord};
use crate::prepare::{Draft, Field, HtmlBody, Tracking};
use crate::token::{encode_destination, KeyRing};

/// What the caller already decided about the email.
pub struct Plan {
    pub id: u64,
    pub owner: u64,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub deliver: String,
    pub public_url: String,
    /// The template or campaign name the sender gave, if any.
    pub template: Option<String>,
    /// For each recipient of the draft, in order: `None` to follow them, or the
    /// reason they are not followed.
    pub not_followed: Vec<Option<&'static str>>,
}

/// Builds the record and the copies (same order as `draft.recipients()`).
/// Holds every copy at once; the API renders them one by one with
/// [`record`] and [`render_copy`] instead.
pub fn prepare(draft: &Draft, keys: &KeyRing, plan: &Plan) -> (EmailRecord, Vec<Vec<u8>>) {
    let links = encoded_links(draft);
    let copies = (0..draft.recipients().len())
        .map(|i| render_copy(draft, keys, plan, &links, i))
        .collect();
    (record(draft, plan), copies)
}

/// The destinations of the draft's links as they travel in click URLs
/// (computed once per email, passed to every [`render_copy`]).
pub fn encoded_links(draft: &Draft) -> Vec<String> {
    draft
        .links()
        .iter()
        .map(|l| encode_destination(l))
        .collect()
}

/// Recipient `i`'s copy: with their own pixel and click tokens if they are
/// followed (and the draft has HTML), else the untracked copy.
pub fn render_copy(
    draft: &Draft,
    keys: &KeyRing,
    plan: &Plan,
    encoded_links: &[String],
    i: usize,
) -> Vec<u8> {
    let followed = plan.not_followed.get(i).copied().flatten().is_none();
    if !(followed && draft.has_html()) {
        return draft.render(None);
    }
    let urls = TrackingUrls::mint(keys, plan, draft.links(), encoded_links, i);
    draft.render(Some(&urls.tracking()))
}

/// A draft from compose with recipient `i`'s tokens (`i` is 0: one copy
/// stands for everyone): the HTML alone.
pub fn render_html(body: &HtmlBody, keys: &KeyRing, plan: &Plan, i: usize) -> String {
    let encoded: Vec<String> = body.links().iter().map(|l| encode_destination(l)).collect();
    let urls = TrackingUrls::mint(keys, plan, body.links(), &encoded, i);
    body.render(&urls.tracking())
}

/// One recipient's pixel URL and click URLs.
struct TrackingUrls {
    pixel: String,
    clicks: Vec<String>,
}

impl TrackingUrls {
    fn mint(
        keys: &KeyRing,
        plan: &Plan,
        links: &[String],
        encoded_links: &[String],
        i: usize,
    ) -> TrackingUrls {
        let issued = (plan.created_ms / 1000).min(u64::from(u32::MAX)) as u32;
        let idx = i as u32;
        let pixel = format!(
            "{}/o/{}.gif",
            plan.public_url,
            keys.mint_open(plan.id, idx, issued)
        );
        let clicks = links
            .iter()
            .zip(encoded_links)
            .enumerate()
            .map(|(j, (url, enc))| {
                let t = keys.mint_click(plan.id, idx, issued, j as u32, url);
                format!("{}/c/{t}/{enc}", plan.public_url)
            })
            .collect();
        TrackingUrls { pixel, clicks }
    }

    fn tracking(&self) -> Tracking<'_> {
        Tracking {
            pixel_url: &self.pixel,
            click_urls: &self.clicks,
        }
    }
}

/// The record of an email followed from compose: tracked per message, so one
/// recipient, "recipient unknown", stands for everyone Outlook sends the
/// single copy to. `from` is normalized; there is no Message-ID (Outlook gives
/// the message its own).
pub fn message_level_record(
    plan: &Plan,
    from: &str,
    subject: Option<&str>,
    links: &[String],
) -> EmailRecord {
    EmailRecord {
        id: plan.id,
        owner: plan.owner,
        from: from.to_owned(),
        subject: subject.map(str::to_owned),
        message_id: None,
        created_ms: plan.created_ms,
        expires_ms: plan.expires_ms,
        deliver: plan.deliver.clone(),
        recipients: vec![RecipientRecord {
            address: "recipient unknown".into(),
            name: None,
            field: "message".into(),
            followed: true,
            reason: Some("message_level_tracking".into()),
            delivery: None,
            erased: false,
        }],
        links: links.to_vec(),
        lookups: Vec::new(),
        template: plan.template.clone(),
        send_at_ms: None,
        reminder: None,
    }
}

/// The email record: recipients (who is followed and why not), links, sender.
pub fn record(draft: &Draft, plan: &Plan) -> EmailRecord {
    let recipients = draft
        .recipients()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let reason = plan.not_followed.get(i).copied().flatten();
            RecipientRecord {
                address: r.normalized.clone(),
                name: r.name.clone(),
                field: match r.field {
                    Field::To => "to",
                    Field::Cc => "cc",
                    Field::Bcc => "bcc",
                }
                .into(),
                // A text-only message has nothing to track: say so rather than
                // pretend the recipient is followed.
                followed: reason.is_none() && draft.has_html(),
                reason: reason
                    .or((!draft.has_html()).then_some("no_html_part"))
                    .map(str::to_owned),
                delivery: None,
                erased: false,
            }
        })
        .collect();
    let from = draft
        .from()
        .map(|f| f.normalized.clone())
        .unwrap_or_default();
    EmailRecord {
        id: plan.id,
        owner: plan.owner,
        from,
        subject: draft.subject().map(str::to_owned),
        message_id: draft.message_id().map(str::to_owned),
        created_ms: plan.created_ms,
        expires_ms: plan.expires_ms,
        deliver: plan.deliver.clone(),
        recipients,
        links: draft.links().to_vec(),
        lookups: Vec::new(),
        template: plan.template.clone(),
        send_at_ms: None,
        reminder: None,
    }
}
