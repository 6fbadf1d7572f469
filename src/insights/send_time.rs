//! The best time to send: for each recipient, the UTC hour (and, with enough
//! data, the weekday) at which they open email, from their own past human opens;
//! else the organization's pattern; else working hours. Then one `suggested`
//! time for the whole email, the next occurrence of the hour that suits most
//! recipients, usable directly as `send_at`.
//!
//! The rules:
//! - A sample is a person's open; opens of the same copy (email and recipient)
//!   within the same clock hour count once, so re-reading in one sitting does not
//!   outweigh a habit. Machine opens never count.
//! - With at least [`MIN_HOUR_SAMPLE`] opens, the hour is the most frequent UTC
//!   hour; with at least [`MIN_WEEKDAY_SAMPLE`], the weekday is the most frequent
//!   weekday too. Ties go to the earlier hour (weekday, from Monday).
//! - Fewer than that of the recipient's own: the organization's pattern (all the
//!   human opens of the emails passed in, same thresholds), basis
//!   `"organization"`; fewer than that too: [`DEFAULT_HOUR`]:00 UTC on a weekday
//!   (Monday to Friday), basis `"default"`, sample 0.
//! - `suggested`: each recipient votes for their hour; the most votes win, ties
//!   going to the hour with more `"recipient"` votes, then the larger sample, then
//!   the sooner occurrence. A weekday held by more than half of the winning
//!   voters is kept; when every winning voter is `"default"`, weekends are
//!   skipped. The time is the next such hour (on the hour) at least
//!   [`MARGIN_MS`] after now.
//!
//! Times are UTC; a fixed offset (`tz=+02:00`) only changes how a time is
//! written ([`format_at_offset`]). There is no time-zone database here.

use std::collections::HashSet;

use serde::Serialize;

use super::{same_address, ser_time, ActKind, Tracked, DAY_MS, HOUR_MS};
use crate::classify::Heuristics;

/// Own opens needed before a recipient's hour is used.
pub const MIN_HOUR_SAMPLE: u32 = 3;
/// Opens needed before a weekday is used as well.
pub const MIN_WEEKDAY_SAMPLE: u32 = 10;
/// The working-hours fallback, UTC.
pub const DEFAULT_HOUR: u8 = 9;
/// A suggested time is at least this far after now.
pub const MARGIN_MS: u64 = 5 * 60 * 1000;

/// Where a recipient's time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Basis {
    /// Their own opens.
    Recipient,
    /// The organization's opens.
    Organization,
    /// Working hours: no data.
    Default,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

const WEEKDAYS: [Weekday; 7] = [
    Weekday::Monday,
    Weekday::Tuesday,
    Weekday::Wednesday,
    Weekday::Thursday,
    Weekday::Friday,
    Weekday::Saturday,
    Weekday::Sunday,
];

impl Weekday {
    /// The UTC weekday of a time (1970-01-01 was a Thursday).
    pub fn of(ms: u64) -> Weekday {
        WEEKDAYS[((ms / DAY_MS + 3) % 7) as usize]
    }

    pub fn is_weekend(self) -> bool {
        matches!(self, Weekday::Saturday | Weekday::Sunday)
    }
}

/// The UTC hour of a time.
pub fn hour_of(ms: u64) -> u8 {
    ((ms / HOUR_MS) % 24) as u8
}

/// When someone (or everyone) opens email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pattern {
    pub hour: u8,
    pub weekday: Option<Weekday>,
    pub sample: u32,
}

/// The pattern of some open times; `None` below [`MIN_HOUR_SAMPLE`].
pub fn pattern(opens: &[u64]) -> Option<Pattern> {
    let sample = opens.len() as u32;
    if sample < MIN_HOUR_SAMPLE {
        return None;
    }
    let mut hours = [0u32; 24];
    let mut days = [0u32; 7];
    for &t in opens {
        hours[hour_of(t) as usize] += 1;
        days[Weekday::of(t) as usize] += 1;
    }
    // The first maximum: ties go to the earlier hour (weekday).
    let first_max = |c: &[u32]| {
        let m = c.iter().copied().max().unwrap_or(0);
        c.iter().position(|&x| x == m).unwrap_or(0)
    };
    Some(Pattern {
        hour: first_max(&hours) as u8,
        weekday: (sample >= MIN_WEEKDAY_SAMPLE).then(|| WEEKDAYS[first_max(&days)]),
        sample,
    })
}

/// Human open times in `emails`, of `address` only or (with `None`) of everyone;
/// opens of one copy within one clock hour count once.
pub fn human_opens(emails: &[Tracked], address: Option<&str>, h: &Heuristics) -> Vec<u64> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for t in emails {
        for a in t.activity(h) {
            if a.kind != ActKind::Open || !a.human {
                continue;
            }
            if let Some(want) = address {
                if !t
                    .address(a.recipient)
                    .is_some_and(|x| same_address(x, want))
                {
                    continue;
                }
            }
            if seen.insert((t.record.id, a.recipient, a.at_ms / HOUR_MS)) {
                out.push(a.at_ms);
            }
        }
    }
    out.sort_unstable();
    out
}

/// One recipient's best time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecipientTime {
    pub address: String,
    /// 0 to 23, UTC.
    pub hour: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weekday: Option<Weekday>,
    pub basis: Basis,
    /// How many opens the hour was taken from (0 for `"default"`).
    pub sample: u32,
}

/// The answer of `GET /api/v1/insights/send-time`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SendTime {
    pub recipients: Vec<RecipientTime>,
    /// Usable directly as `send_at`.
    #[serde(serialize_with = "ser_time")]
    pub suggested: u64,
}

/// Each address's best time from `emails` (whose opens also make the
/// organization's pattern), and the suggested time after `now_ms`.
pub fn send_time(addresses: &[&str], emails: &[Tracked], now_ms: u64, h: &Heuristics) -> SendTime {
    let org = pattern(&human_opens(emails, None, h));
    let recipients: Vec<RecipientTime> = addresses
        .iter()
        .map(|a| recipient_time(a, &human_opens(emails, Some(a), h), org))
        .collect();
    SendTime {
        suggested: suggested(now_ms, &recipients),
        recipients,
    }
}

/// A recipient's best time from their own opens, else `org`, else working hours.
pub fn recipient_time(address: &str, own: &[u64], org: Option<Pattern>) -> RecipientTime {
    let address = address.trim().to_ascii_lowercase();
    let (p, basis) = match (pattern(own), org) {
        (Some(p), _) => (p, Basis::Recipient),
        (None, Some(p)) => (p, Basis::Organization),
        (None, None) => (
            Pattern {
                hour: DEFAULT_HOUR,
                weekday: None,
                sample: 0,
            },
            Basis::Default,
        ),
    };
    RecipientTime {
        address,
        hour: p.hour,
        weekday: p.weekday,
        basis,
        sample: p.sample,
    }
}

/// The first time strictly after `after_ms` that is on the hour `hour` (UTC),
/// on `weekday` if given, and not on a weekend if `workdays_only`.
pub fn next_occurrence(
    after_ms: u64,
    hour: u8,
    weekday: Option<Weekday>,
    workdays_only: bool,
) -> u64 {
    let day0 = after_ms / DAY_MS * DAY_MS;
    let hour = (hour % 24) as u64;
    (0..9)
        .map(|d| day0 + d * DAY_MS + hour * HOUR_MS)
        .find(|&t| {
            let wd = Weekday::of(t);
            t > after_ms && weekday.is_none_or(|w| w == wd) && !(workdays_only && wd.is_weekend())
        })
        // Within 9 days every hour of every weekday comes round; unreachable.
        .unwrap_or(day0 + 8 * DAY_MS + hour * HOUR_MS)
}

/// The overall time for an email to all of `recipients` (see the module doc);
/// with none, working hours.
pub fn suggested(now_ms: u64, recipients: &[RecipientTime]) -> u64 {
    let after = now_ms + MARGIN_MS;
    if recipients.is_empty() {
        return next_occurrence(after, DEFAULT_HOUR, None, true);
    }
    let voters = |hour: u8| recipients.iter().filter(move |r| r.hour == hour);
    let when = |hour: u8| {
        let n = voters(hour).count();
        let mut days = [0usize; 7];
        for r in voters(hour) {
            if let Some(w) = r.weekday {
                days[w as usize] += 1;
            }
        }
        let weekday = (0..7).find(|&d| days[d] * 2 > n).map(|d| WEEKDAYS[d]);
        let workdays_only = voters(hour).all(|r| r.basis == Basis::Default);
        next_occurrence(after, hour, weekday, workdays_only)
    };
    let mut hours: Vec<u8> = recipients.iter().map(|r| r.hour).collect();
    hours.sort_unstable();
    hours.dedup();
    let best = hours
        .into_iter()
        .max_by_key(|&hour| {
            let votes = voters(hour).count();
            let own = voters(hour).filter(|r| r.basis == Basis::Recipient).count();
            let sample: u64 = voters(hour).map(|r| r.sample as u64).sum();
            (votes, own, sample, std::cmp::Reverse(when(hour)))
        })
        .unwrap_or(DEFAULT_HOUR);
    when(best)
}

/// Parses a fixed UTC offset: `Z`, `UTC`, `+02:00`, `-05:30`, `+0200`, `+02`, or
/// ` 02:00` (a `+` that a query string decoded to a space). Minutes east of UTC;
/// `None` beyond ±14:00 or for anything else.
pub fn parse_offset(s: &str) -> Option<i32> {
    let t = s.trim_end();
    if t.eq_ignore_ascii_case("z") || t.eq_ignore_ascii_case("utc") {
        return Some(0);
    }
    let (sign, rest) = match t.as_bytes().first()? {
        b'+' | b' ' => (1, &t[1..]),
        b'-' => (-1, &t[1..]),
        _ => return None,
    };
    let digits: String = match rest.len() {
        2 | 4 => rest.to_string(),
        5 if rest.as_bytes()[2] == b':' => rest.replacen(':', "", 1),
        _ => return None,
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hh: i32 = digits[..2].parse().ok()?;
    let mm: i32 = if digits.len() == 4 {
        digits[2..].parse().ok()?
    } else {
        0
    };
    (mm < 60 && hh * 60 + mm <= 14 * 60).then_some(sign * (hh * 60 + mm))
}

/// Year, month, day of a day count since 1970-01-01 (proleptic Gregorian;
/// Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `ms` written in RFC 3339 at a fixed offset (minutes east of UTC), to the
/// second: `2026-11-03T16:00:00+02:00`; offset 0 is written `Z`.
pub fn format_at_offset(ms: u64, offset_min: i32) -> String {
    let local_s = (ms / 1000) as i64 + offset_min as i64 * 60;
    let (days, secs) = (local_s.div_euclid(86_400), local_s.rem_euclid(86_400));
    let (y, m, d) = civil(days);
    let (hh, mi, ss) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let zone = if offset_min == 0 {
        "Z".to_string()
    } else {
        let sign = if offset_min < 0 { '-' } else { '+' };
        let a = offset_min.unsigned_abs();
        format!("{sign}{:02}:{:02}", a / 60, a % 60)
    };
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mi:02}:{ss:02}{zone}")
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    const H: Heuristics = Heuristics { too_fast_s: 3 };
    const BOB: &str = "bob@example.com";
    const CAROL: &str = "carol@example.com";
    const WEEK: u64 = 7 * DAY_MS;

    #[test]
    fn calendar_arithmetic() {
        assert_eq!(Weekday::of(TUE), Weekday::Tuesday);
        assert_eq!(Weekday::of(0), Weekday::Thursday);
        assert_eq!(Weekday::of(TUE + 5 * DAY_MS), Weekday::Sunday);
        assert_eq!(hour_of(TUE + 14 * HOUR_MS + 59 * 60_000), 14);
        assert_eq!(format_at_offset(TUE, 0), "2026-11-03T00:00:00Z");
        assert_eq!(format_at_offset(0, 0), "1970-01-01T00:00:00Z");
        // Crosses the day (and the month) backwards.
        assert_eq!(
            format_at_offset(TUE - 2 * DAY_MS, -330),
            "2026-10-31T18:30:00-05:30"
        );
        assert_eq!(
            format_at_offset(TUE + 14 * HOUR_MS, 120),
            "2026-11-03T16:00:00+02:00"
        );
        // 2028 is a leap year.
        assert_eq!(
            format_at_offset(1_835_395_200_000, 0),
            "2028-02-29T00:00:00Z"
        );
        for ms in [TUE, TUE + 12_345_678_901, 951_782_400_000] {
            assert_eq!(
                format_at_offset(ms, 0),
                crate::ids::rfc3339(ms / 1000 * 1000).replace(".000", "")
            );
        }
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("+02:00"), Some(120));
        assert_eq!(parse_offset("-05:30"), Some(-330));
        assert_eq!(parse_offset(" 05:45"), Some(345));
        assert_eq!(parse_offset("+0100"), Some(60));
        assert_eq!(parse_offset("-03"), Some(-180));
        assert_eq!(parse_offset("Z"), Some(0));
        assert_eq!(parse_offset("utc"), Some(0));
        assert_eq!(parse_offset("+14:00"), Some(840));
        for bad in [
            "",
            "+",
            "02:00",
            "+2:00",
            "+15:00",
            "+01:60",
            "+01-00",
            "Europe/Paris",
            "+٠١:00",
        ] {
            assert_eq!(parse_offset(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_recipient_who_always_opens_on_tuesday_afternoons() {
        // Ten Tuesdays, one email each, opened at 14:05 (and re-read at 14:40,
        // which counts once), plus one Friday 09:00 open: 11 samples.
        let recs: Vec<_> = (0..10)
            .map(|i| email(i + 1, 7, "x", &[BOB, CAROL]))
            .collect();
        let mut evs: Vec<Vec<_>> = (0..10)
            .map(|i| {
                let t = TUE + i * WEEK + 14 * HOUR_MS + 5 * 60_000;
                vec![open(i + 1, 0, t), open(i + 1, 0, t + 35 * 60_000)]
            })
            .collect();
        evs[0].push(open(1, 0, TUE + 3 * DAY_MS + 9 * HOUR_MS));
        // Machine opens at 03:00 never count.
        for (i, e) in evs.iter_mut().enumerate() {
            e.push(machine_open(i as u64 + 1, 0, TUE + 3 * HOUR_MS));
        }
        let emails: Vec<Tracked> = recs
            .iter()
            .zip(&evs)
            .map(|(r, e)| Tracked::new(r, e))
            .collect();
        let opens = human_opens(&emails, Some(BOB), &H);
        assert_eq!(opens.len(), 11);
        let p = pattern(&opens).unwrap();
        assert_eq!(
            (p.hour, p.weekday, p.sample),
            (14, Some(Weekday::Tuesday), 11)
        );

        // Asked on Wednesday at noon: next Tuesday 14:00.
        let now = TUE + 10 * WEEK + DAY_MS + 12 * HOUR_MS;
        let st = send_time(&[BOB], &emails, now, &H);
        assert_eq!(
            st.recipients,
            vec![RecipientTime {
                address: BOB.into(),
                hour: 14,
                weekday: Some(Weekday::Tuesday),
                basis: Basis::Recipient,
                sample: 11
            }]
        );
        assert_eq!(st.suggested, TUE + 11 * WEEK + 14 * HOUR_MS);
        let v = super::super::to_json(&st);
        assert_eq!(v["recipients"][0]["basis"], "recipient");
        assert_eq!(v["recipients"][0]["weekday"], "tuesday");
        assert_eq!(v["suggested"], "2027-01-19T14:00:00.000Z");

        // Carol never opened: the organization's pattern (Bob's opens are all
        // there is), basis "organization".
        let st = send_time(&[CAROL], &emails, now, &H);
        assert_eq!(st.recipients[0].basis, Basis::Organization);
        assert_eq!(st.recipients[0].hour, 14);
        assert_eq!(st.recipients[0].sample, 11);
    }

    #[test]
    fn few_opens_give_an_hour_but_no_weekday_and_two_give_nothing() {
        let opens = [
            TUE + 8 * HOUR_MS,
            TUE + DAY_MS + 8 * HOUR_MS,
            TUE + 3 * DAY_MS + 17 * HOUR_MS,
        ];
        assert_eq!(
            pattern(&opens),
            Some(Pattern {
                hour: 8,
                weekday: None,
                sample: 3
            })
        );
        assert_eq!(pattern(&opens[..2]), None);
        // A tie between 08 and 17 goes to the earlier hour.
        let tie = [
            TUE + 17 * HOUR_MS,
            TUE + 8 * HOUR_MS,
            TUE + DAY_MS + 17 * HOUR_MS,
            TUE + DAY_MS + 8 * HOUR_MS,
        ];
        assert_eq!(pattern(&tie).unwrap().hour, 8);
    }

    #[test]
    fn no_data_anywhere_means_working_hours_on_a_weekday() {
        let e = email(1, 7, "x", &[BOB]);
        let ev = [open(1, 0, TUE + 20 * HOUR_MS), machine_open(1, 0, TUE)];
        // Saturday 10:00: Monday 09:00.
        let now = TUE + 4 * DAY_MS + 10 * HOUR_MS;
        let st = send_time(&[BOB], &[Tracked::new(&e, &ev)], now, &H);
        assert_eq!(st.recipients[0].basis, Basis::Default);
        assert_eq!((st.recipients[0].hour, st.recipients[0].sample), (9, 0));
        assert_eq!(st.suggested, TUE + 6 * DAY_MS + 9 * HOUR_MS);
        assert_eq!(Weekday::of(st.suggested), Weekday::Monday);
        assert_eq!(suggested(now, &[]), st.suggested);
    }

    #[test]
    fn the_suggested_time_is_strictly_after_now_and_the_margin() {
        // 13:56 Tuesday: 14:00 is within the 5-minute margin, so Wednesday 14:00.
        let r = recipient_time(BOB, &[TUE + 14 * HOUR_MS; 3], None);
        let now = TUE + 13 * HOUR_MS + 56 * 60_000;
        assert_eq!(
            suggested(now, std::slice::from_ref(&r)),
            TUE + DAY_MS + 14 * HOUR_MS
        );
        // 13:50: today 14:00.
        assert_eq!(suggested(now - 6 * 60_000, &[r]), TUE + 14 * HOUR_MS);
    }

    #[test]
    fn the_hour_that_suits_most_recipients_wins() {
        let rt = |address: &str, hour: u8, basis: Basis, sample: u32| RecipientTime {
            address: address.into(),
            hour,
            weekday: None,
            basis,
            sample,
        };
        let now = TUE; // Tuesday 00:00
                       // Two vote 15, one votes 10: 15:00 today.
        let rs = [
            rt("a@x", 10, Basis::Recipient, 40),
            rt("b@x", 15, Basis::Recipient, 3),
            rt("c@x", 15, Basis::Organization, 50),
        ];
        assert_eq!(suggested(now, &rs), TUE + 15 * HOUR_MS);
        // One each: the recipient's own hour beats the organization's.
        let rs = [
            rt("a@x", 10, Basis::Organization, 50),
            rt("b@x", 15, Basis::Recipient, 3),
        ];
        assert_eq!(suggested(now, &rs), TUE + 15 * HOUR_MS);
        // Both their own: the larger sample.
        let rs = [
            rt("a@x", 10, Basis::Recipient, 9),
            rt("b@x", 15, Basis::Recipient, 3),
        ];
        assert_eq!(suggested(now, &rs), TUE + 10 * HOUR_MS);
        // A weekday held by a majority of the winners is kept.
        let mut a = rt("a@x", 10, Basis::Recipient, 12);
        a.weekday = Some(Weekday::Friday);
        let b = rt("b@x", 10, Basis::Recipient, 12);
        assert_eq!(
            suggested(now, &[a.clone()]),
            TUE + 3 * DAY_MS + 10 * HOUR_MS
        );
        // Friday is held by 1 of 2: not a majority, so any day.
        assert_eq!(suggested(now, &[a, b]), TUE + 10 * HOUR_MS);
    }
}
