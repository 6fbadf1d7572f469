//! Action cards: what the caller should look at now, derived from their own
//! followed emails, events, replies and due reminders. Each card says in one
//! line why it is there, and has a stable id (the same card gets the same id on
//! every derivation), so a dismissal or a snooze can be stored by id and a
//! dismissed card never comes back.
//!
//! The kinds, with the thresholds of [`Rules::default`]:
//! - `email_opened`: a recipient's first human open of an email, in the last 7 days.
//! - `link_clicked`: a recipient's first human click on a link, in the last 7 days.
//! - `email_replied`: a recipient's first reply, in the last 7 days.
//! - `reminder_due`: a reminder that fell due in the last 7 days.
//! - `no_reply`: a recipient opened (human) but has not replied 3 days after the
//!   first open; shown for 7 days from then; only when replies are known.
//! - `contact_quiet`: a contact with human activity in the last 30 days but none
//!   in the last 14 (shown from the 14th day of silence).
//! - `engagement_spike`: one email opened ≥ 5 times (human) within an hour, or
//!   one recipient's copy opened from ≥ 3 networks within an hour: it was
//!   likely forwarded or discussed. In the last 7 days; once per email.
//! - `company_news`: outside news about a contact's domain, made by
//!   `insights::feed` (not here) when a feed is configured.
//!
//! Ids are the first 8 bytes (16 hex digits) of SHA-256 over the kind, the email
//! id, the recipient's index and what else tells the card apart (the link, the
//! reminder's time, the contact's last activity), never over an address.
//!
//! Pure: no I/O; the caller stores dismissals and snoozes.

use std::collections::{BTreeMap, HashMap, HashSet};

use ring::digest;
use serde::Serialize;

use super::send_time::format_at_offset;
use super::{ser_opt_id, ser_time, Act, ActKind, Tracked, DAY_MS, HOUR_MS};
use crate::classify::Heuristics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CardKind {
    EmailOpened,
    LinkClicked,
    EmailReplied,
    ReminderDue,
    NoReply,
    ContactQuiet,
    EngagementSpike,
    /// Outside news about a contact's company domain (see `insights::feed`).
    CompanyNews,
}

impl CardKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CardKind::EmailOpened => "email_opened",
            CardKind::LinkClicked => "link_clicked",
            CardKind::EmailReplied => "email_replied",
            CardKind::ReminderDue => "reminder_due",
            CardKind::NoReply => "no_reply",
            CardKind::ContactQuiet => "contact_quiet",
            CardKind::EngagementSpike => "engagement_spike",
            CardKind::CompanyNews => "company_news",
        }
    }
}

/// One action card (design.md: `{"id","kind","title","detail","at","email_id"?,"contact"?}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Card {
    pub id: String,
    pub kind: CardKind,
    pub title: String,
    /// One line: why the card is there.
    pub detail: String,
    /// When what the card reports happened.
    #[serde(serialize_with = "ser_time")]
    pub at: u64,
    #[serde(serialize_with = "ser_opt_id", skip_serializing_if = "Option::is_none")]
    pub email_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
}

/// The thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Cards about something that happened are shown for this long.
    pub recent_ms: u64,
    /// `no_reply`: this long after the first open without a reply.
    pub no_reply_after_ms: u64,
    /// `contact_quiet`: active within this…
    pub quiet_active_ms: u64,
    /// …but silent for this long.
    pub quiet_silent_ms: u64,
    /// `engagement_spike`: this many human opens of one email…
    pub spike_opens: usize,
    /// …or of one copy from this many networks…
    pub spike_networks: usize,
    /// …within this window.
    pub spike_window_ms: u64,
    /// At most this many cards are returned.
    pub max_cards: usize,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            recent_ms: 7 * DAY_MS,
            no_reply_after_ms: 3 * DAY_MS,
            quiet_active_ms: 30 * DAY_MS,
            quiet_silent_ms: 14 * DAY_MS,
            spike_opens: 5,
            spike_networks: 3,
            spike_window_ms: HOUR_MS,
            max_cards: 50,
        }
    }
}

/// A card's stable id: the first 8 bytes of SHA-256 over its kind and `parts`.
pub fn card_id(kind: CardKind, parts: &[u64]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(kind.as_str().as_bytes());
    for p in parts {
        ctx.update(&p.to_be_bytes());
    }
    ctx.finish().as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `2026-11-03 14:05 UTC`
fn when(ms: u64) -> String {
    let s = format_at_offset(ms, 0);
    format!("{} {} UTC", &s[..10], &s[11..16])
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The caller's cards: derived from `owner`'s emails among `emails` (others are
/// ignored, admins included), without the dismissed ones and those snoozed
/// (id → until) past `now_ms`; newest first, at most `rules.max_cards`.
pub fn cards(
    owner: u64,
    emails: &[Tracked],
    now_ms: u64,
    h: &Heuristics,
    rules: &Rules,
    dismissed: &HashSet<String>,
    snoozed: &HashMap<String, u64>,
) -> Vec<Card> {
    visible(
        derive(owner, emails, now_ms, h, rules),
        dismissed,
        snoozed,
        now_ms,
        rules.max_cards,
    )
}

/// Drops dismissed cards and cards snoozed until after `now_ms`; sorts newest
/// first (ties by id) and keeps at most `max`.
pub fn visible(
    mut cards: Vec<Card>,
    dismissed: &HashSet<String>,
    snoozed: &HashMap<String, u64>,
    now_ms: u64,
    max: usize,
) -> Vec<Card> {
    cards.retain(|c| !dismissed.contains(&c.id) && snoozed.get(&c.id).is_none_or(|&u| u <= now_ms));
    cards.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| a.id.cmp(&b.id)));
    cards.truncate(max);
    cards
}

/// Every card `owner`'s emails call for at `now_ms`, unfiltered and unsorted.
pub fn derive(
    owner: u64,
    emails: &[Tracked],
    now_ms: u64,
    h: &Heuristics,
    rules: &Rules,
) -> Vec<Card> {
    let recent = |at: u64| at <= now_ms && now_ms - at < rules.recent_ms;
    let mut out = Vec::new();
    // address → (last human activity, email index, recipient, kind)
    let mut last: BTreeMap<String, (u64, usize, u32, ActKind)> = BTreeMap::new();
    for (ei, t) in emails
        .iter()
        .enumerate()
        .filter(|(_, t)| t.record.owner == owner)
    {
        let id = t.record.id;
        let subject = t.subject();
        let acts = t.activity(h);
        let n = t.record.recipients.len() as u32;
        for r in 0..n {
            let Some(address) = t.address(r) else {
                continue;
            };
            let contact = Some(address.to_string());
            let who = t.who(r);
            let mine: Vec<&Act> = acts.iter().filter(|a| a.recipient == r).collect();
            let human = |k: ActKind| mine.iter().filter(move |a| a.human && a.kind == k);
            if let Some(a) = mine.iter().filter(|a| a.human).max_by_key(|a| a.at_ms) {
                let key = address.to_ascii_lowercase();
                let slot = last.entry(key).or_insert((0, ei, r, a.kind));
                if a.at_ms >= slot.0 {
                    *slot = (a.at_ms, ei, r, a.kind);
                }
            }

            let opens: Vec<u64> = human(ActKind::Open).map(|a| a.at_ms).collect();
            let machine_opens = mine
                .iter()
                .filter(|a| !a.human && a.kind == ActKind::Open)
                .count();
            if let Some(&first) = opens.first() {
                if recent(first) {
                    let mut detail = format!(
                        "First opened {}; {} so far",
                        when(first),
                        plural(opens.len(), "open", "opens")
                    );
                    if machine_opens > 0 {
                        detail += &format!(
                            " ({} by machines, not counted)",
                            plural(machine_opens, "more", "more")
                        );
                    }
                    out.push(Card {
                        id: card_id(CardKind::EmailOpened, &[id, r as u64]),
                        kind: CardKind::EmailOpened,
                        title: format!("{who} opened \"{subject}\""),
                        detail,
                        at: first,
                        email_id: Some(id),
                        contact: contact.clone(),
                    });
                }
            }

            // First human click per link.
            let mut links: BTreeMap<u32, (u64, usize)> = BTreeMap::new();
            for a in human(ActKind::Click) {
                let e = links.entry(a.link.unwrap_or(0)).or_insert((a.at_ms, 0));
                e.1 += 1;
            }
            for (link, (first, count)) in links {
                if !recent(first) {
                    continue;
                }
                let url = t
                    .record
                    .links
                    .get(link as usize)
                    .map_or("a link", String::as_str);
                out.push(Card {
                    id: card_id(CardKind::LinkClicked, &[id, r as u64, link as u64]),
                    kind: CardKind::LinkClicked,
                    title: format!("{who} clicked a link in \"{subject}\""),
                    detail: format!(
                        "Clicked {url} at {}; {} so far",
                        when(first),
                        plural(count, "click", "clicks")
                    ),
                    at: first,
                    email_id: Some(id),
                    contact: contact.clone(),
                });
            }

            let replies: Vec<u64> = human(ActKind::Reply).map(|a| a.at_ms).collect();
            if let Some(&first) = replies.first() {
                if recent(first) {
                    let mut detail = format!("Replied at {}", when(first));
                    if replies.len() > 1 {
                        detail +=
                            &format!("; {} so far", plural(replies.len(), "reply", "replies"));
                    }
                    out.push(Card {
                        id: card_id(CardKind::EmailReplied, &[id, r as u64]),
                        kind: CardKind::EmailReplied,
                        title: format!("{who} replied to \"{subject}\""),
                        detail,
                        at: first,
                        email_id: Some(id),
                        contact: contact.clone(),
                    });
                }
            }

            if let (Some(&first), true) = (opens.first(), t.replies.is_some()) {
                let at = first + rules.no_reply_after_ms;
                if replies.is_empty() && recent(at) {
                    let days = rules.no_reply_after_ms / DAY_MS;
                    out.push(Card {
                        id: card_id(CardKind::NoReply, &[id, r as u64]),
                        kind: CardKind::NoReply,
                        title: format!("No reply from {who} to \"{subject}\""),
                        detail: format!(
                            "Opened {} ({}), no reply after {}",
                            when(first),
                            plural(opens.len(), "open", "opens"),
                            plural(days as usize, "day", "days")
                        ),
                        at,
                        email_id: Some(id),
                        contact: contact.clone(),
                    });
                }
            }
        }

        if let Some(rem) = t.reminder {
            if recent(rem.at_ms) {
                let why = match rem.when.as_str() {
                    "no_reply" => "nobody has replied",
                    "not_opened" => "nobody has opened it",
                    _ => "as you asked",
                };
                out.push(Card {
                    id: card_id(CardKind::ReminderDue, &[id, rem.at_ms]),
                    kind: CardKind::ReminderDue,
                    title: format!("Reminder: \"{subject}\""),
                    detail: format!("Due at {}: {why}", when(rem.at_ms)),
                    at: rem.at_ms,
                    email_id: Some(id),
                    contact: None,
                });
            }
        }

        if let Some(card) = spike(t, &acts, rules, &recent) {
            out.push(card);
        }
    }

    for (address, (at, ei, r, kind)) in last {
        let quiet_since = at + rules.quiet_silent_ms;
        if now_ms.saturating_sub(at) >= rules.quiet_active_ms || quiet_since > now_ms {
            continue;
        }
        let t = &emails[ei];
        let did = match kind {
            ActKind::Open => "opened",
            ActKind::Click => "clicked a link in",
            ActKind::Reply => "replied to",
        };
        out.push(Card {
            id: card_id(CardKind::ContactQuiet, &[t.record.id, r as u64, at]),
            kind: CardKind::ContactQuiet,
            title: format!("{} has gone quiet", t.who(r)),
            detail: format!(
                "Last {did} \"{}\" at {}; nothing since, for {}",
                t.subject(),
                when(at),
                plural(((now_ms - at) / DAY_MS) as usize, "day", "days")
            ),
            at: quiet_since,
            email_id: Some(t.record.id),
            contact: Some(address),
        });
    }
    out
}

/// The engagement spike of one email, if any (the first window that crosses a
/// threshold).
fn spike(t: &Tracked, acts: &[Act], rules: &Rules, recent: &dyn Fn(u64) -> bool) -> Option<Card> {
    let opens: Vec<&Act> = acts
        .iter()
        .filter(|a| a.human && a.kind == ActKind::Open)
        .collect();
    let mut start = 0;
    for end in 0..opens.len() {
        while opens[end].at_ms - opens[start].at_ms > rules.spike_window_ms {
            start += 1;
        }
        let window = &opens[start..=end];
        let r = opens[end].recipient;
        let nets: HashSet<&str> = window
            .iter()
            .filter(|a| a.recipient == r && !a.net.is_empty())
            .map(|a| a.net)
            .collect();
        let many = window.len() >= rules.spike_opens;
        if !many && nets.len() < rules.spike_networks {
            continue;
        }
        let at = opens[end].at_ms;
        if !recent(at) {
            return None;
        }
        let minutes = rules.spike_window_ms / 60_000;
        let span = if minutes == 60 {
            "an hour".to_string()
        } else {
            format!("{minutes} minutes")
        };
        let recipients: HashSet<u32> = window.iter().map(|a| a.recipient).collect();
        let (detail, contact) = if many {
            let only = (recipients.len() == 1).then(|| t.address(r)).flatten();
            (
                format!(
                    "{} within {span} from {}, from {}: likely forwarded or discussed",
                    plural(window.len(), "open", "opens"),
                    plural(recipients.len(), "recipient", "recipients"),
                    when(window[0].at_ms)
                ),
                only,
            )
        } else {
            (
                format!(
                    "{}'s copy opened from {} within {span}, from {}: likely forwarded",
                    t.who(r),
                    plural(nets.len(), "network", "networks"),
                    when(window[0].at_ms)
                ),
                t.address(r),
            )
        };
        return Some(Card {
            id: card_id(CardKind::EngagementSpike, &[t.record.id]),
            kind: CardKind::EngagementSpike,
            title: format!("\"{}\" is getting attention", t.subject()),
            detail,
            at,
            email_id: Some(t.record.id),
            contact: contact.map(str::to_string),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::{DueReminder, Reply, Tracked};
    use super::*;

    const H: Heuristics = Heuristics { too_fast_s: 3 };
    const NOW: u64 = TUE + 30 * DAY_MS + 12 * HOUR_MS;
    const OWNER: u64 = 7;
    const BOB: &str = "bob@example.com";
    const MIN: u64 = 60_000;

    fn derive_all(emails: &[Tracked]) -> Vec<Card> {
        cards(
            OWNER,
            emails,
            NOW,
            &H,
            &Rules::default(),
            &HashSet::new(),
            &HashMap::new(),
        )
    }

    fn of(cards: &[Card], kind: CardKind) -> Vec<Card> {
        cards.iter().filter(|c| c.kind == kind).cloned().collect()
    }

    #[test]
    fn email_opened_is_the_first_human_open_and_recent() {
        let mut e = email(1, OWNER, "Pricing", &[BOB]);
        e.recipients[0].name = Some("Bob".into());
        let ev = [
            machine_open(1, 0, NOW - 3 * HOUR_MS),
            open(1, 0, NOW - 2 * HOUR_MS),
            open(1, 0, NOW - HOUR_MS),
        ];
        let c = of(&derive_all(&[Tracked::new(&e, &ev)]), CardKind::EmailOpened);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].title, "Bob opened \"Pricing\"");
        assert_eq!(
            c[0].detail,
            "First opened 2026-12-03 10:00 UTC; 2 opens so far (1 more by machines, not counted)"
        );
        assert_eq!(c[0].at, NOW - 2 * HOUR_MS);
        assert_eq!(
            (c[0].email_id, c[0].contact.as_deref()),
            (Some(1), Some(BOB))
        );
        let v = super::super::to_json(&c[0]);
        assert_eq!(v["kind"], "email_opened");
        assert_eq!(v["email_id"], "0000000000000001");
        assert_eq!(v["at"], "2026-12-03T10:00:00.000Z");

        // Machine opens alone make no card; neither does a first open 8 days ago.
        let ev = [machine_open(1, 0, NOW - HOUR_MS)];
        assert!(of(&derive_all(&[Tracked::new(&e, &ev)]), CardKind::EmailOpened).is_empty());
        let ev = [open(1, 0, NOW - 8 * DAY_MS), open(1, 0, NOW - HOUR_MS)];
        assert!(of(&derive_all(&[Tracked::new(&e, &ev)]), CardKind::EmailOpened).is_empty());
    }

    #[test]
    fn only_the_owners_emails_make_cards() {
        let mine = email(1, OWNER, "Mine", &[BOB]);
        let theirs = email(2, OWNER + 1, "Theirs", &[BOB]);
        let (e1, e2) = ([open(1, 0, NOW - HOUR_MS)], [open(2, 0, NOW - HOUR_MS)]);
        let c = derive_all(&[Tracked::new(&mine, &e1), Tracked::new(&theirs, &e2)]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].email_id, Some(1));
    }

    #[test]
    fn link_clicked_per_link_humans_only() {
        let mut e = email(1, OWNER, "Pricing", &[BOB]);
        e.links.push("https://example.com/demo".into());
        let mut second = click(1, 0, NOW - 30 * MIN);
        second.link = Some(1);
        let ev = [
            machine_click(1, 0, NOW - 3 * HOUR_MS),
            click(1, 0, NOW - 2 * HOUR_MS),
            click(1, 0, NOW - HOUR_MS),
            second,
        ];
        let c = of(&derive_all(&[Tracked::new(&e, &ev)]), CardKind::LinkClicked);
        assert_eq!(c.len(), 2);
        // Newest first.
        assert_eq!(
            c[0].detail,
            "Clicked https://example.com/demo at 2026-12-03 11:30 UTC; 1 click so far"
        );
        assert_eq!(
            c[1].detail,
            "Clicked https://example.com/pricing at 2026-12-03 10:00 UTC; 2 clicks so far"
        );
        assert_eq!(c[1].title, "bob@example.com clicked a link in \"Pricing\"");
        assert_ne!(c[0].id, c[1].id);

        let ev = [machine_click(1, 0, NOW - HOUR_MS)];
        assert!(of(&derive_all(&[Tracked::new(&e, &ev)]), CardKind::LinkClicked).is_empty());
    }

    #[test]
    fn replies_and_no_reply() {
        let e = email(1, OWNER, "Pricing", &[BOB, "carol@example.com"]);
        // Both opened 4 days ago; Carol replied 2 days ago.
        let ev = [open(1, 0, NOW - 4 * DAY_MS), open(1, 1, NOW - 4 * DAY_MS)];
        let replies = [Reply {
            recipient: 1,
            at_ms: NOW - 2 * DAY_MS,
        }];
        let c = derive_all(&[Tracked::new(&e, &ev).with_replies(&replies)]);
        let replied = of(&c, CardKind::EmailReplied);
        assert_eq!(replied.len(), 1);
        assert_eq!(replied[0].title, "carol@example.com replied to \"Pricing\"");
        assert_eq!(replied[0].at, NOW - 2 * DAY_MS);
        let none = of(&c, CardKind::NoReply);
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].contact.as_deref(), Some(BOB));
        assert_eq!(none[0].at, NOW - DAY_MS);
        assert_eq!(
            none[0].detail,
            "Opened 2026-11-29 12:00 UTC (1 open), no reply after 3 days"
        );

        // Replies unknown: no no_reply card.
        assert!(of(&derive_all(&[Tracked::new(&e, &ev)]), CardKind::NoReply).is_empty());
        // Opened only 2 days ago: too early.
        let ev = [open(1, 0, NOW - 2 * DAY_MS)];
        assert!(of(
            &derive_all(&[Tracked::new(&e, &ev).with_replies(&[])]),
            CardKind::NoReply
        )
        .is_empty());
        // Machine opens do not count as opened.
        let ev = [machine_open(1, 0, NOW - 4 * DAY_MS)];
        assert!(of(
            &derive_all(&[Tracked::new(&e, &ev).with_replies(&[])]),
            CardKind::NoReply
        )
        .is_empty());
    }

    #[test]
    fn reminder_due() {
        let e = email(1, OWNER, "Pricing", &[BOB]);
        let rem = DueReminder {
            when: "no_reply".into(),
            at_ms: NOW - HOUR_MS,
        };
        let c = of(
            &derive_all(&[Tracked::new(&e, &[]).with_reminder(&rem)]),
            CardKind::ReminderDue,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].title, "Reminder: \"Pricing\"");
        assert_eq!(
            c[0].detail,
            "Due at 2026-12-03 11:00 UTC: nobody has replied"
        );
        assert!(derive_all(&[Tracked::new(&e, &[])]).is_empty());
    }

    #[test]
    fn contact_quiet() {
        let e = email(1, OWNER, "Pricing", &[BOB]);
        // Active 20 days ago, silent since: quiet from day 14, i.e. 6 days ago.
        let ev = [
            machine_open(1, 0, NOW - HOUR_MS),
            open(1, 0, NOW - 20 * DAY_MS),
        ];
        let c = of(
            &derive_all(&[Tracked::new(&e, &ev)]),
            CardKind::ContactQuiet,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].title, "bob@example.com has gone quiet");
        assert_eq!(
            c[0].detail,
            "Last opened \"Pricing\" at 2026-11-13 12:00 UTC; nothing since, for 20 days"
        );
        assert_eq!(c[0].at, NOW - 6 * DAY_MS);
        // Active 10 days ago: not quiet yet. 31 days ago: too long ago to matter.
        for age in [10 * DAY_MS, 31 * DAY_MS] {
            let ev = [open(1, 0, NOW - age)];
            assert!(of(
                &derive_all(&[Tracked::new(&e, &ev)]),
                CardKind::ContactQuiet
            )
            .is_empty());
        }
        // Only machine activity: never engaged, so never quiet.
        let ev = [machine_open(1, 0, NOW - 20 * DAY_MS)];
        assert!(derive_all(&[Tracked::new(&e, &ev)]).is_empty());
    }

    #[test]
    fn engagement_spike_needs_human_opens() {
        let e = email(1, OWNER, "Pricing", &[BOB]);
        let t0 = NOW - 5 * HOUR_MS;
        let five: Vec<_> = (0..5).map(|i| open(1, 0, t0 + i * 10 * MIN)).collect();
        let c = of(
            &derive_all(&[Tracked::new(&e, &five)]),
            CardKind::EngagementSpike,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].at, t0 + 40 * MIN);
        assert_eq!(
            c[0].detail,
            "5 opens within an hour from 1 recipient, from 2026-12-03 07:00 UTC: likely forwarded or discussed"
        );
        assert_eq!(c[0].contact.as_deref(), Some(BOB));

        // Four human opens and a machine one: no spike; five spread over 5 hours: none.
        let mut four: Vec<_> = five[..4].to_vec();
        four.push(machine_open(1, 0, t0 + 45 * MIN));
        assert!(of(
            &derive_all(&[Tracked::new(&e, &four)]),
            CardKind::EngagementSpike
        )
        .is_empty());
        let spread: Vec<_> = (0..5).map(|i| open(1, 0, t0 + i * 61 * MIN)).collect();
        assert!(of(
            &derive_all(&[Tracked::new(&e, &spread)]),
            CardKind::EngagementSpike
        )
        .is_empty());

        // One copy opened from three networks within the hour.
        let nets = [
            open_from(1, 0, t0, "192.0.2.0"),
            open_from(1, 0, t0 + 5 * MIN, "198.51.100.0"),
            open_from(1, 0, t0 + 20 * MIN, "203.0.113.0"),
        ];
        let c = of(
            &derive_all(&[Tracked::new(&e, &nets)]),
            CardKind::EngagementSpike,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(
            c[0].detail,
            "bob@example.com's copy opened from 3 networks within an hour, from 2026-12-03 07:00 UTC: likely forwarded"
        );
        // Two networks: none.
        assert!(of(
            &derive_all(&[Tracked::new(&e, &nets[..2])]),
            CardKind::EngagementSpike
        )
        .is_empty());
    }

    #[test]
    fn ids_are_stable_and_dismissed_or_snoozed_cards_stay_away() {
        let e = email(1, OWNER, "Pricing", &[BOB]);
        let ev = [open(1, 0, NOW - 2 * HOUR_MS), click(1, 0, NOW - HOUR_MS)];
        let t = [Tracked::new(&e, &ev)];
        let a = derive_all(&t);
        // More activity later: the same cards keep their ids.
        let ev2 = [ev[0].clone(), ev[1].clone(), open(1, 0, NOW - MIN)];
        let b = derive_all(&[Tracked::new(&e, &ev2)]);
        let ids = |c: &[Card]| c.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].kind, CardKind::LinkClicked); // newest first
        assert_eq!(a[0].id.len(), 16);

        let dismissed: HashSet<String> = [a[0].id.clone()].into();
        let snoozed: HashMap<String, u64> = [(a[1].id.clone(), NOW + HOUR_MS)].into();
        let r = Rules::default();
        assert!(cards(OWNER, &t, NOW, &H, &r, &dismissed, &snoozed).is_empty());
        // The snooze ends; the dismissal does not.
        let later = cards(OWNER, &t, NOW + HOUR_MS, &H, &r, &dismissed, &snoozed);
        assert_eq!(ids(&later), vec![a[1].id.clone()]);
        // The cap.
        let capped = cards(
            OWNER,
            &t,
            NOW,
            &H,
            &Rules { max_cards: 1, ..r },
            &HashSet::new(),
            &HashMap::new(),
        );
        assert_eq!(capped.len(), 1);
    }
}
