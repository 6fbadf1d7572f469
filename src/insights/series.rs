//! KPIs over time (`GET /api/v1/stats?interval=day|week`): the totals of
//! `reports::Totals` per fixed UTC bucket, overall and per template, with every
//! bucket from the first to the current one present (empty buckets included).
//!
//! - Buckets: `day` starts at midnight UTC, `week` on Monday at midnight UTC.
//! - An email counts in the bucket of the time it was followed (a cohort): its
//!   opens and clicks count there whenever they happened, so each point's rates
//!   mean what the totals' rates mean: `open_rate` = unique openers / followed
//!   recipients, `click_rate` = unique clickers / followed, `click_to_open_rate`
//!   = unique clickers / unique openers, `reply_rate` = recipients who replied /
//!   followed (all `null` over nothing).
//! - `sent`: followed recipients whose copy left (returned to the caller to send,
//!   or accepted by the SMTP server); not failed, cancelled or still waiting.
//!   `delivered`: of those, the ones that did not bounce. `opened`, `clicked`,
//!   `replied`: recipients with a human open, click, reply.
//!
//! Aggregated while reading: [`Series::add`] takes one email's numbers at a time;
//! per-template points are kept sparse (one per template and bucket that has an
//! email) and made dense at the end. Pure.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::DAY_MS;
use crate::ids::rfc3339;
use crate::model::EmailRecord;
use crate::reports::Totals;

/// Most buckets one answer has: a longer period's series covers its last
/// `MAX_BUCKETS` buckets (`first_bucket`).
pub const MAX_BUCKETS: u64 = 550;

/// How many templates (the most used) get a series of their own.
pub const MAX_TEMPLATES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Day,
    Week,
}

impl Interval {
    pub fn parse(s: &str) -> Option<Interval> {
        match s {
            "day" => Some(Interval::Day),
            "week" => Some(Interval::Week),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Day => "day",
            Interval::Week => "week",
        }
    }

    fn step(self) -> u64 {
        match self {
            Interval::Day => DAY_MS,
            Interval::Week => 7 * DAY_MS,
        }
    }

    /// The start of the bucket holding `ms`: midnight UTC, or Monday midnight UTC
    /// (1970-01-01 was a Thursday: day 0 is 3 days after a Monday).
    pub fn start_of(self, ms: u64) -> u64 {
        let day = ms / DAY_MS;
        match self {
            Interval::Day => day * DAY_MS,
            Interval::Week => day.saturating_sub((day + 3) % 7) * DAY_MS,
        }
    }

    /// How many buckets cover `since_ms..=now_ms`.
    pub fn buckets(self, since_ms: u64, now_ms: u64) -> u64 {
        let (a, b) = (self.start_of(since_ms), self.start_of(now_ms.max(since_ms)));
        (b - a) / self.step() + 1
    }
}

/// One bucket's numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Point {
    pub totals: Totals,
    pub sent: u64,
    pub delivered: u64,
    pub replied: u64,
}

impl Point {
    fn add(&mut self, o: &Point) {
        self.totals.add(&o.totals);
        self.sent += o.sent;
        self.delivered += o.delivered;
        self.replied += o.replied;
    }

    fn json(&self, start: u64) -> Value {
        let t = &self.totals;
        let mut v = t.json();
        v["start"] = json!(rfc3339(start));
        v["sent"] = json!(self.sent);
        v["delivered"] = json!(self.delivered);
        v["opened"] = json!(t.unique_opens);
        v["clicked"] = json!(t.unique_clicks);
        v["replied"] = json!(self.replied);
        v["reply_rate"] = if t.followed == 0 {
            Value::Null
        } else {
            json!((self.replied as f64 / t.followed as f64 * 10_000.0).round() / 10_000.0)
        };
        v
    }
}

/// Where a series over `since_ms..=now_ms` starts: the bucket of `since_ms`, or
/// the one that leaves `MAX_BUCKETS` buckets up to now.
pub fn first_bucket(interval: Interval, since_ms: u64, now_ms: u64) -> u64 {
    let latest = (MAX_BUCKETS - 1) * interval.step();
    interval
        .start_of(since_ms)
        .max(interval.start_of(now_ms).saturating_sub(latest))
}

/// An email's `(sent, delivered)` copies (see the module doc).
pub fn delivery_counts(rec: &EmailRecord) -> (u64, u64) {
    let mut sent = 0;
    let mut delivered = 0;
    for r in rec.recipients.iter().filter(|r| r.followed) {
        let status = r.delivery.as_ref().map_or("returned", |d| d.state.as_str());
        match status {
            "returned" | "sent" | "delivered" => {
                sent += 1;
                delivered += 1;
            }
            "bounced" => sent += 1,
            _ => {}
        }
    }
    (sent, delivered)
}

/// The series being built.
pub struct Series {
    interval: Interval,
    first: u64,
    n: usize,
    overall: Vec<Point>,
    /// (template, bucket index) → numbers.
    by_template: HashMap<(Option<String>, usize), Point>,
}

impl Series {
    /// Buckets from the one holding `since_ms` to the one holding `now_ms`; the
    /// caller checks [`Interval::buckets`] against [`MAX_BUCKETS`] first.
    pub fn new(interval: Interval, since_ms: u64, now_ms: u64) -> Series {
        let n = interval.buckets(since_ms, now_ms) as usize;
        Series {
            interval,
            first: interval.start_of(since_ms),
            n,
            overall: vec![Point::default(); n],
            by_template: HashMap::new(),
        }
    }

    /// Counts one email, followed at `created_ms`, in its bucket (ignored outside).
    pub fn add(&mut self, created_ms: u64, template: Option<&str>, p: Point) {
        let start = self.interval.start_of(created_ms);
        if start < self.first {
            return;
        }
        let i = ((start - self.first) / self.interval.step()) as usize;
        if i >= self.n {
            return;
        }
        self.overall[i].add(&p);
        self.by_template
            .entry((template.map(str::to_string), i))
            .or_default()
            .add(&p);
    }

    fn dense(&self, points: &[Point]) -> Value {
        Value::Array(
            points
                .iter()
                .enumerate()
                .map(|(i, p)| p.json(self.first + i as u64 * self.interval.step()))
                .collect(),
        )
    }

    /// The start of the first bucket.
    pub fn first(&self) -> u64 {
        self.first
    }

    pub fn interval(&self) -> Interval {
        self.interval
    }

    /// The overall series.
    pub fn overall_json(&self) -> Value {
        self.dense(&self.overall)
    }

    /// One template's series (every bucket; zeros where it has no email).
    pub fn template_json(&self, template: Option<&str>) -> Value {
        let key = template.map(str::to_string);
        let points: Vec<Point> = (0..self.n)
            .map(|i| {
                self.by_template
                    .get(&(key.clone(), i))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        self.dense(&points)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{email, TUE};
    use super::*;

    fn p(emails: u64, followed: u64, opened: u64, replied: u64) -> Point {
        Point {
            totals: Totals {
                emails,
                recipients: followed,
                followed,
                opens: opened,
                unique_opens: opened,
                ..Totals::default()
            },
            sent: followed,
            delivered: followed,
            replied,
        }
    }

    #[test]
    fn buckets_are_fixed_utc_days_and_monday_weeks() {
        // TUE is 2026-11-03T00:00:00Z, a Tuesday; the Monday before is 11-02.
        let noon = TUE + 12 * 3_600_000;
        assert_eq!(Interval::Day.start_of(noon), TUE);
        assert_eq!(Interval::Week.start_of(noon), TUE - DAY_MS);
        assert_eq!(Interval::Week.start_of(TUE - DAY_MS), TUE - DAY_MS);
        assert_eq!(Interval::Week.start_of(TUE - DAY_MS - 1), TUE - 8 * DAY_MS);
        assert_eq!(Interval::Day.buckets(TUE, TUE + 2 * DAY_MS), 3);
        assert_eq!(Interval::Week.buckets(TUE, TUE + 6 * DAY_MS), 2);
        assert_eq!(
            rfc3339(Interval::Week.start_of(noon)),
            "2026-11-02T00:00:00.000Z"
        );
        // A long period's series keeps its last MAX_BUCKETS buckets.
        let now = TUE + 1000 * DAY_MS + 5;
        let first = first_bucket(Interval::Day, TUE, now);
        assert_eq!(Interval::Day.buckets(first, now), MAX_BUCKETS);
        assert_eq!(
            first_bucket(Interval::Day, now - DAY_MS, now),
            now / DAY_MS * DAY_MS - DAY_MS
        );
    }

    #[test]
    fn empty_buckets_are_included_and_rates_match_the_totals() {
        let mut s = Series::new(Interval::Day, TUE, TUE + 3 * DAY_MS + 5);
        s.add(TUE + 5, Some("promo"), p(1, 4, 2, 1));
        s.add(TUE + 3 * DAY_MS, None, p(1, 2, 0, 0));
        s.add(TUE - 1, None, p(1, 9, 9, 9)); // before the first bucket: ignored
        let v = s.overall_json();
        let a = v.as_array().unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(a[0]["start"], "2026-11-03T00:00:00.000Z");
        assert_eq!(a[0]["sent"], 4);
        assert_eq!(a[0]["opened"], 2);
        assert_eq!(a[0]["open_rate"], 0.5);
        assert_eq!(a[0]["reply_rate"], 0.25);
        assert_eq!(a[1]["emails"], 0);
        assert_eq!(a[1]["open_rate"], Value::Null);
        assert_eq!(a[3]["sent"], 2);
        let promo = s.template_json(Some("promo"));
        assert_eq!(promo[0]["opened"], 2);
        assert_eq!(promo[3]["emails"], 0);
        assert_eq!(promo.as_array().unwrap().len(), 4);
        assert_eq!(s.template_json(None)[3]["emails"], 1);
    }

    #[test]
    fn delivery_counts_follow_the_recipients_states() {
        use crate::model::Delivery;
        let mut e = email(1, 7, "x", &["a@x.test", "b@x.test", "c@x.test", "d@x.test"]);
        let st = |s: &str| {
            Some(Delivery {
                state: s.into(),
                detail: None,
                at_ms: 0,
            })
        };
        e.recipients[0].delivery = st("sent");
        e.recipients[1].delivery = st("failed");
        e.recipients[2].delivery = st("bounced");
        e.recipients[3].followed = false;
        assert_eq!(delivery_counts(&e), (2, 1));
    }
}
