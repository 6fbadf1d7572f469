//! The explainable engagement score of a contact or of one email: 0 to 100, made
//! of factors whose integer points sum exactly to the score, each point traced to
//! the events (and replies) that earned it. Human activity only; machine activity
//! is counted apart and never scored.
//!
//! # The formula
//!
//! ```text
//! score  = opens + clicks + replies                       (0..=100)
//! factor = min(cap, floor(per × W))                       (an integer)
//! W      = Σ w over the counted units
//! w      = 0.5 ^ (age / 30 days), rounded to 3 decimals    (age = now − the unit's time)
//! ```
//!
//! | factor  | a unit counts when it has…  | cap | per (contact) |
//! |---------|-----------------------------|-----|---------------|
//! | opens   | a human open                | 30  | 6             |
//! | clicks  | a human click               | 30  | 10            |
//! | replies | a reply                     | 40  | 20            |
//!
//! - **A contact's score**: a unit is one email sent to the contact; an email
//!   counts once per factor however often it was opened (clicked, replied to), at
//!   the time of its latest human open (click, reply). So five emails opened today
//!   fill the opens factor, and an open a month ago is worth half of one today.
//! - **An email's score**: a unit is one of its followed recipients (not erased),
//!   and `per = cap / recipients`: every recipient opening today fills the opens
//!   factor. In integers: `floor(cap × W / recipients)`.
//!
//! Rounding is explicit: each `w` is rounded to three decimals (half away from
//! zero), then each factor is rounded down, and the score is the sum of the
//! factors' points, so the points always add up to the score. Activity dated after
//! `now` counts as age 0.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{same_address, ser_id, ser_opt_time, ser_time, ActKind, Tracked, DAY_MS};
use crate::classify::Heuristics;

/// The half-life of the recency weight.
pub const HALF_LIFE_MS: u64 = 30 * DAY_MS;

/// A factor's name, cap and points per unit (for a contact).
struct Rule {
    name: &'static str,
    cap: u32,
    per: u32,
    /// What was done to a unit, for the detail line: "3 emails opened" (a
    /// contact's score), "2 recipients opened" (an email's).
    verb_email: &'static str,
    verb_recipient: &'static str,
}

/// In `ActKind` order (open, click, reply): `RULES[kind as usize]`.
const RULES: [Rule; 3] = [
    Rule {
        name: "opens",
        cap: 30,
        per: 6,
        verb_email: "opened",
        verb_recipient: "opened",
    },
    Rule {
        name: "clicks",
        cap: 30,
        per: 10,
        verb_email: "clicked",
        verb_recipient: "clicked",
    },
    Rule {
        name: "replies",
        cap: 40,
        per: 20,
        verb_email: "replied to",
        verb_recipient: "replied",
    },
];

/// A score and how it was made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    /// 0 to 100: the sum of `factors[].points`.
    pub score: u8,
    pub factors: Vec<Factor>,
    /// Machine activity, shown apart; it adds no points.
    pub machine: MachineCounts,
    /// The latest human open, click or reply.
    #[serde(
        serialize_with = "ser_opt_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_activity: Option<u64>,
}

/// One part of a score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Factor {
    /// `"opens"`, `"clicks"` or `"replies"`.
    pub name: &'static str,
    pub points: u8,
    /// The most this factor can give.
    pub cap: u8,
    /// How many units counted (emails for a contact, recipients for an email).
    pub count: u32,
    /// `W`: the units' recency weights summed (three decimals).
    pub weight: f64,
    /// One line saying how the points were reached.
    pub detail: String,
    /// The units that earned the points, newest first.
    pub evidence: Vec<Evidence>,
}

/// One counted unit: which email (and, in an email's score, which recipient),
/// when, and its recency weight.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    #[serde(serialize_with = "ser_id")]
    pub email_id: u64,
    /// The recipient (in an email's score).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    #[serde(serialize_with = "ser_time")]
    pub at: u64,
    /// `w`, three decimals.
    pub weight: f64,
}

/// Machine opens and clicks: classified, kept, never scored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MachineCounts {
    pub opens: u64,
    pub clicks: u64,
}

/// `w` in thousandths: `round(1000 × 0.5 ^ (age / half-life))`.
pub fn weight_milli(at_ms: u64, now_ms: u64) -> u64 {
    let age = now_ms.saturating_sub(at_ms) as f64 / HALF_LIFE_MS as f64;
    (1000.0 * 0.5f64.powf(age)).round() as u64
}

/// A unit found for a factor: its email, recipient and time.
struct Unit {
    email_id: u64,
    contact: Option<String>,
    at_ms: u64,
}

/// What the units of a score are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Units {
    Emails,
    Recipients,
}

/// Builds one factor from its units; `per` is `per_num / per_den` points.
fn factor(
    rule: &Rule,
    mut units: Vec<Unit>,
    (per_num, per_den): (u64, u64),
    of: Units,
    now_ms: u64,
) -> Factor {
    units.sort_by(|a, b| b.at_ms.cmp(&a.at_ms).then(a.email_id.cmp(&b.email_id)));
    let mut w_milli = 0;
    let evidence: Vec<Evidence> = units
        .into_iter()
        .map(|u| {
            let w = weight_milli(u.at_ms, now_ms);
            w_milli += w;
            Evidence {
                email_id: u.email_id,
                contact: u.contact,
                at: u.at_ms,
                weight: w as f64 / 1000.0,
            }
        })
        .collect();
    let cap = rule.cap as u64;
    let exact_milli = per_num * w_milli / per_den.max(1); // per × W, in thousandths, rounded down
    let points = (exact_milli / 1000).min(cap);
    let w = w_milli as f64 / 1000.0;
    let count = evidence.len() as u32;
    let per = per_num as f64 / per_den.max(1) as f64;
    let (what, verb) = if of == Units::Emails {
        ("email", rule.verb_email)
    } else {
        ("recipient", rule.verb_recipient)
    };
    let detail = if count == 0 {
        format!("no {what} {verb} yet (up to {cap} points)")
    } else {
        let s = if count == 1 { "" } else { "s" };
        let product = exact_milli as f64 / 1000.0;
        let end = if exact_milli / 1000 > cap {
            format!("capped at {cap}")
        } else {
            format!("rounded down to {points} (at most {cap})")
        };
        format!(
            "{count} {what}{s} {verb}, recency weight {w:.3}: {per:.2} × {w:.3} = {product:.3}, {end}"
        )
    };
    Factor {
        name: rule.name,
        // `points <= cap <= 40`, so this never truncates.
        points: points as u8,
        cap: rule.cap as u8,
        count,
        weight: w,
        detail,
        evidence,
    }
}

fn total(factors: Vec<Factor>, machine: MachineCounts, last_activity: Option<u64>) -> Score {
    // Caps sum to 100, so the sum fits a u8.
    let score = factors
        .iter()
        .map(|f| f.points as u32)
        .sum::<u32>()
        .min(100) as u8;
    Score {
        score,
        factors,
        machine,
        last_activity,
    }
}

/// The score of the contact `address` over `emails` (pass the caller's own
/// emails: this is the caller's view of the contact).
pub fn score_contact(address: &str, emails: &[Tracked], now_ms: u64, h: &Heuristics) -> Score {
    let mut units: [Vec<Unit>; 3] = Default::default();
    let mut machine = MachineCounts::default();
    let mut last: Option<u64> = None;
    for t in emails {
        let mine = |i: u32| t.address(i).is_some_and(|a| same_address(a, address));
        // Per factor, this email's latest human activity by the contact.
        let mut latest: [Option<u64>; 3] = [None; 3];
        for a in t.activity(h).into_iter().filter(|a| mine(a.recipient)) {
            if !a.human {
                match a.kind {
                    ActKind::Open => machine.opens += 1,
                    ActKind::Click => machine.clicks += 1,
                    ActKind::Reply => {}
                }
                continue;
            }
            let k = a.kind as usize;
            latest[k] = latest[k].max(Some(a.at_ms));
            last = last.max(Some(a.at_ms));
        }
        for (k, at) in latest.into_iter().enumerate() {
            if let Some(at_ms) = at {
                units[k].push(Unit {
                    email_id: t.record.id,
                    contact: None,
                    at_ms,
                });
            }
        }
    }
    let factors = RULES
        .iter()
        .zip(units)
        .map(|(r, u)| factor(r, u, (r.per as u64, 1), Units::Emails, now_ms))
        .collect();
    total(factors, machine, last)
}

/// The score of one email over its followed recipients (not erased).
pub fn score_email(email: &Tracked, now_ms: u64, h: &Heuristics) -> Score {
    let n = email
        .record
        .recipients
        .iter()
        .filter(|r| r.followed && !r.erased && !r.address.is_empty())
        .count() as u64;
    let mut machine = MachineCounts::default();
    let mut last: Option<u64> = None;
    // (factor, recipient) -> latest human time
    let mut latest: BTreeMap<(usize, u32), u64> = BTreeMap::new();
    for a in email.activity(h) {
        if !a.human {
            match a.kind {
                ActKind::Open => machine.opens += 1,
                ActKind::Click => machine.clicks += 1,
                ActKind::Reply => {}
            }
            continue;
        }
        let slot = latest.entry((a.kind as usize, a.recipient)).or_insert(0);
        *slot = (*slot).max(a.at_ms);
        last = last.max(Some(a.at_ms));
    }
    let mut units: [Vec<Unit>; 3] = Default::default();
    for ((k, i), at_ms) in latest {
        units[k].push(Unit {
            email_id: email.record.id,
            contact: email.address(i).map(str::to_string),
            at_ms,
        });
    }
    let factors = RULES
        .iter()
        .zip(units)
        .map(|(r, u)| factor(r, u, (r.cap as u64, n), Units::Recipients, now_ms))
        .collect();
    total(factors, machine, last)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::{Reply, Tracked, DAY_MS};
    use super::*;

    const NOW: u64 = TUE + 90 * DAY_MS;
    const BOB: &str = "bob@example.com";

    fn points(s: &Score) -> Vec<(&'static str, u8)> {
        s.factors.iter().map(|f| (f.name, f.points)).collect()
    }

    #[test]
    fn weights_halve_every_thirty_days() {
        assert_eq!(weight_milli(NOW, NOW), 1000);
        assert_eq!(weight_milli(NOW - 30 * DAY_MS, NOW), 500);
        assert_eq!(weight_milli(NOW - 60 * DAY_MS, NOW), 250);
        // 0.5^(15/30) = 0.70710… → 0.707
        assert_eq!(weight_milli(NOW - 15 * DAY_MS, NOW), 707);
        // 0.5^(300/30) = 0.0009765… → 0.001
        assert_eq!(weight_milli(NOW - 300 * DAY_MS, NOW), 1);
        // Future activity counts as now.
        assert_eq!(weight_milli(NOW + DAY_MS, NOW), 1000);
    }

    #[test]
    fn a_contact_with_nothing_scores_zero() {
        let e = email(1, 7, "Pricing", &[BOB]);
        let s = score_contact(BOB, &[Tracked::new(&e, &[])], NOW, &Heuristics::default());
        assert_eq!(s.score, 0);
        assert_eq!(
            points(&s),
            vec![("opens", 0), ("clicks", 0), ("replies", 0)]
        );
        assert_eq!(s.last_activity, None);
    }

    #[test]
    fn hand_computed_contact_score() {
        // Email 1: opened now (twice: one unit at the latest open, w = 1.000),
        //          clicked 30 days ago (w = 0.500), replied 15 days ago (w = 0.707).
        // Email 2: opened 30 days ago (w = 0.500).
        // Email 3: opened 60 days ago (w = 0.250).
        // opens:   W = 1.000 + 0.500 + 0.250 = 1.750; 6 × 1.750 = 10.5   → 10
        // clicks:  W = 0.500;                        10 × 0.500 = 5      → 5
        // replies: W = 0.707;                        20 × 0.707 = 14.14  → 14
        // score = 10 + 5 + 14 = 29
        let (e1, e2, e3) = (
            email(1, 7, "Pricing", &[BOB]),
            email(2, 7, "Follow-up", &["carol@example.com", BOB]),
            email(3, 7, "Intro", &[BOB]),
        );
        let ev1 = [
            open(1, 0, NOW - 40 * DAY_MS),
            open(1, 0, NOW),
            click(1, 0, NOW - 30 * DAY_MS),
        ];
        let replies1 = [Reply {
            recipient: 0,
            at_ms: NOW - 15 * DAY_MS,
        }];
        // Carol's open of email 2 is not Bob's.
        let ev2 = [open(2, 1, NOW - 30 * DAY_MS), open(2, 0, NOW)];
        let ev3 = [open(3, 0, NOW - 60 * DAY_MS)];
        let emails = [
            Tracked::new(&e1, &ev1).with_replies(&replies1),
            Tracked::new(&e2, &ev2),
            Tracked::new(&e3, &ev3),
        ];
        let s = score_contact("Bob@Example.com ", &emails, NOW, &Heuristics::default());
        assert_eq!(
            points(&s),
            vec![("opens", 10), ("clicks", 5), ("replies", 14)]
        );
        assert_eq!(s.score, 29);
        let opens = &s.factors[0];
        assert_eq!(opens.count, 3);
        assert_eq!(opens.weight, 1.75);
        assert_eq!(
            opens.detail,
            "3 emails opened, recency weight 1.750: 6.00 × 1.750 = 10.500, rounded down to 10 (at most 30)"
        );
        let ev: Vec<(u64, u64)> = opens.evidence.iter().map(|e| (e.email_id, e.at)).collect();
        assert_eq!(
            ev,
            vec![(1, NOW), (2, NOW - 30 * DAY_MS), (3, NOW - 60 * DAY_MS)]
        );
        assert_eq!(s.last_activity, Some(NOW));
    }

    #[test]
    fn factors_are_capped_and_still_sum_to_the_score() {
        // 7 emails opened and clicked today: opens 6 × 7 = 42 → cap 30;
        // clicks 10 × 7 = 70 → cap 30; 3 replied today: 20 × 3 = 60 → cap 40.
        // score = 30 + 30 + 40 = 100.
        let recs: Vec<_> = (1..=7).map(|i| email(i, 7, "x", &[BOB])).collect();
        let evs: Vec<Vec<_>> = (1..=7)
            .map(|i| vec![open(i, 0, NOW), click(i, 0, NOW)])
            .collect();
        let reply = [Reply {
            recipient: 0,
            at_ms: NOW,
        }];
        let emails: Vec<Tracked> = recs
            .iter()
            .zip(&evs)
            .enumerate()
            .map(|(i, (r, e))| {
                let t = Tracked::new(r, e);
                if i < 3 {
                    t.with_replies(&reply)
                } else {
                    t
                }
            })
            .collect();
        let s = score_contact(BOB, &emails, NOW, &Heuristics::default());
        assert_eq!(
            points(&s),
            vec![("opens", 30), ("clicks", 30), ("replies", 40)]
        );
        assert_eq!(s.score, 100);
        assert!(s.factors[0].detail.ends_with("= 42.000, capped at 30"));
        assert_eq!(
            s.score as u32,
            s.factors.iter().map(|f| f.points as u32).sum::<u32>()
        );
    }

    #[test]
    fn machine_activity_is_shown_apart_and_never_scored() {
        let e = email(1, 7, "Pricing", &[BOB]);
        let ev = [
            machine_open(1, 0, NOW),
            machine_open(1, 0, NOW),
            machine_click(1, 0, NOW),
        ];
        let s = score_contact(BOB, &[Tracked::new(&e, &ev)], NOW, &Heuristics::default());
        assert_eq!(s.score, 0);
        assert_eq!(
            s.machine,
            MachineCounts {
                opens: 2,
                clicks: 1
            }
        );
        assert_eq!(s.last_activity, None);
        assert!(s.factors.iter().all(|f| f.evidence.is_empty()));
    }

    #[test]
    fn erased_recipients_are_nobody() {
        let mut e = email(1, 7, "Pricing", &[BOB]);
        e.recipients[0].erased = true;
        e.recipients[0].address.clear();
        let ev = [open(1, 0, NOW)];
        let t = [Tracked::new(&e, &ev)];
        assert_eq!(score_contact(BOB, &t, NOW, &Heuristics::default()).score, 0);
        assert_eq!(score_contact("", &t, NOW, &Heuristics::default()).score, 0);
        assert_eq!(score_email(&t[0], NOW, &Heuristics::default()).score, 0);
    }

    #[test]
    fn hand_computed_email_score() {
        // Three followed recipients; per = cap / 3.
        // opens:   Bob now (1.000) + Carol 30 days ago (0.500): W = 1.500;
        //          30 × 1.500 / 3 = 15                              → 15
        // clicks:  Bob 60 days ago (0.250): 30 × 0.250 / 3 = 2.5    → 2
        // replies: Dan now (1.000): 40 × 1.000 / 3 = 13.333…        → 13
        // Machine opens by Dan add nothing. score = 15 + 2 + 13 = 30
        let e = email(
            1,
            7,
            "Pricing",
            &[BOB, "carol@example.com", "dan@example.com"],
        );
        let ev = [
            open(1, 0, NOW - DAY_MS),
            open(1, 0, NOW),
            open(1, 1, NOW - 30 * DAY_MS),
            click(1, 0, NOW - 60 * DAY_MS),
            machine_open(1, 2, NOW),
        ];
        let replies = [Reply {
            recipient: 2,
            at_ms: NOW,
        }];
        let t = Tracked::new(&e, &ev).with_replies(&replies);
        let s = score_email(&t, NOW, &Heuristics::default());
        assert_eq!(
            points(&s),
            vec![("opens", 15), ("clicks", 2), ("replies", 13)]
        );
        assert_eq!(s.score, 30);
        assert_eq!(
            s.machine,
            MachineCounts {
                opens: 1,
                clicks: 0
            }
        );
        let who: Vec<_> = s.factors[0]
            .evidence
            .iter()
            .map(|e| e.contact.clone().unwrap_or_default())
            .collect();
        assert_eq!(who, vec![BOB, "carol@example.com"]);
        assert_eq!(
            s.factors[2].detail,
            "1 recipient replied, recency weight 1.000: 13.33 × 1.000 = 13.333, rounded down to 13 (at most 40)"
        );
    }

    #[test]
    fn json_shape() {
        let e = email(0xab, 7, "Pricing", &[BOB]);
        let ev = [open(0xab, 0, NOW)];
        let s = score_contact(BOB, &[Tracked::new(&e, &ev)], NOW, &Heuristics::default());
        let v = super::super::to_json(&s);
        assert_eq!(v["score"], 6);
        assert_eq!(v["factors"][0]["name"], "opens");
        assert_eq!(v["factors"][0]["points"], 6);
        assert_eq!(
            v["factors"][0]["evidence"][0]["email_id"],
            "00000000000000ab"
        );
        assert_eq!(v["last_activity"], crate::ids::rfc3339(NOW));
        assert_eq!(v["machine"]["opens"], 0);
    }
}
