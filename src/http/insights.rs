//! Insights (issue #14): the caller's action cards (`GET /api/v1/insights`, with
//! `…/{id}/dismiss` and `…/{id}/snooze`), the explainable score of one contact
//! (`GET /api/v1/insights/contacts/{address}`) and of one email
//! (`GET /api/v1/insights/emails/{id}`), and the best time to send
//! (`GET /api/v1/insights/send-time?to=a,b[&tz=+02:00]`).
//!
//! Only the caller's own emails feed these (admins too see their own), read
//! newest first and at most [`MAX_EMAILS`] of them (`"truncated": true` beyond),
//! a chunk of emails' events at a time (`email_walk`: one read barrier per chunk
//! on Redis, not one per email): what is kept between chunks is the cards found
//! so far (bounded), open times, or one contact's events, never every event.
//! The rules are in `insights` (pure); card state is in the store.
//!
//! Each email is passed with its due reminder and, for cards and scores, the
//! replies the reply watcher recorded (cards: only while the caller's mailbox
//! is watched, since otherwise "nobody replied" is not known).

use std::collections::HashMap;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::request::{percent_decode, read_json, Query};
use super::response::{bad, error, json_response, store_failed, Resp};
use crate::address::normalize_address;
use crate::ids::{id_from_text, id_to_text, now_ms, rfc3339};
use crate::insights::cards::{self, Card, CardKind, Rules};
use crate::insights::score::{score_contact, score_email};
use crate::insights::send_time::{
    format_at_offset, human_opens, parse_offset, pattern, recipient_time, suggested, SendTime,
};
use crate::insights::{same_address, to_json, DueReminder, Reply, Tracked, DAY_MS};
use crate::model::{Event, User};
use crate::state::App;
use crate::store::cards::CardState;

use super::email_walk::Emails;
pub use super::email_walk::MAX_EMAILS;

/// Most addresses in one `send-time` request.
pub const MAX_TO: usize = 50;
/// The longest snooze.
const MAX_SNOOZE_MS: u64 = 365 * DAY_MS;
/// Cards found so far, email by email: everything but `contact_quiet` is final
/// per email; a `contact_quiet` card holds only if the email it came from has
/// the contact's latest activity over all the emails read.
struct Found<'s> {
    owner: u64,
    now: u64,
    rules: Rules,
    /// Filter by it (`GET`); `None` keeps every card (finding one by id).
    state: Option<&'s CardState>,
    cards: Vec<Card>,
    quiet: HashMap<String, Card>,
    last: HashMap<String, u64>,
}

impl<'s> Found<'s> {
    fn new(owner: u64, now: u64, state: Option<&'s CardState>) -> Found<'s> {
        Found {
            owner,
            now,
            rules: Rules::default(),
            state,
            cards: Vec::new(),
            quiet: HashMap::new(),
            last: HashMap::new(),
        }
    }

    fn add(&mut self, app: &App, t: &Tracked) {
        let h = &app.config.heuristics;
        for a in t.activity(h).iter().filter(|a| a.human) {
            if let Some(addr) = t.address(a.recipient) {
                let slot = self.last.entry(addr.to_ascii_lowercase()).or_insert(0);
                *slot = (*slot).max(a.at_ms);
            }
        }
        for c in cards::derive(
            self.owner,
            std::slice::from_ref(t),
            self.now,
            h,
            &self.rules,
        ) {
            if c.kind == CardKind::ContactQuiet {
                let key = c.contact.clone().unwrap_or_default();
                if self.quiet.get(&key).is_none_or(|q| q.at < c.at) {
                    self.quiet.insert(key, c);
                }
            } else {
                self.cards.push(c);
            }
        }
        // Keep memory bounded: only the newest visible cards can be answered.
        if self.state.is_some() && self.cards.len() > 4 * self.rules.max_cards {
            let cards = std::mem::take(&mut self.cards);
            self.cards = self.visible(cards);
        }
    }

    fn visible(&self, cards: Vec<Card>) -> Vec<Card> {
        match self.state {
            Some(s) => cards::visible(
                cards,
                &s.dismissed,
                &s.snoozed,
                self.now,
                self.rules.max_cards,
            ),
            None => cards,
        }
    }

    fn finish(mut self) -> Vec<Card> {
        let silent = self.rules.quiet_silent_ms;
        for (addr, c) in std::mem::take(&mut self.quiet) {
            if self.last.get(&addr).is_some_and(|&at| at + silent == c.at) {
                self.cards.push(c);
            }
        }
        let cards = std::mem::take(&mut self.cards);
        self.visible(cards)
    }
}

/// 405 with `Allow` for a known insights path; 404 for any other.
pub fn wrong_method(method: &hyper::Method, rest: &str, allow: &'static str) -> Resp {
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let known = matches!(
        segs.as_slice(),
        ["insights"]
            | ["insights", "send-time"]
            | ["insights", "contacts", _]
            | ["insights", "emails", _]
            | ["insights", _, "dismiss" | "snooze"]
    );
    if !known {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such endpoint: /api/v1/{rest}"),
        );
    }
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on /api/v1/{rest}"),
    );
    r.headers_mut().insert(
        hyper::header::ALLOW,
        hyper::header::HeaderValue::from_static(allow),
    );
    r
}

/// Every card of the caller's emails (filtered by `state` if given).
async fn derive(
    app: &App,
    user: &User,
    now: u64,
    state: Option<&CardState>,
) -> Result<(Vec<Card>, bool), Resp> {
    let mut emails = Emails::of(app, user);
    let mut found = Found::new(user.id, now, state);
    // Outside insights: the caller's contacts' domains.
    let mut domains = crate::insights::feed::ContactDomains::default();
    // Replies are known only while the caller's mailbox is watched (`replies`).
    let watched = app.store.mailbox(user.id).await.map_err(store_failed)?;
    let watched = watched.is_some();
    while let Some((rec, events)) = emails.next().await? {
        if app.news.is_some() {
            domains.add(&rec);
        }
        let replies = if watched {
            Some(app.store.replies_for(rec.id).await.map_err(store_failed)?)
        } else {
            None
        };
        let due = DueReminder::of(&rec);
        let t = Tracked::new(&rec, &events).known(replies.as_deref(), due.as_ref());
        found.add(app, &t);
    }
    if let Some(news) = app.news.as_deref() {
        found.cards.extend(crate::insights::feed::news_cards(
            news,
            &domains.domains,
            now,
        ));
    }
    Ok((found.finish(), emails.truncated))
}

/// `GET /api/v1/insights`: the caller's cards, newest first, without the ones
/// dismissed or snoozed.
pub async fn list(app: &App, user: &User) -> Resp {
    let now = now_ms();
    let state = match app.store.card_state(user.id, now).await {
        Ok(s) => s,
        Err(e) => return store_failed(e),
    };
    match derive(app, user, now, Some(&state)).await {
        Ok((cards, truncated)) => json_response(
            StatusCode::OK,
            &json!({"cards": to_json(&cards), "truncated": truncated, "emails_limit": MAX_EMAILS}),
        ),
        Err(r) => r,
    }
}

fn no_card(id: &str) -> Resp {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no card with id {id:?} among your insights"),
    )
}

/// 404 unless `id` is one of the caller's cards now (dismissed or snoozed ones
/// included).
async fn check_card(app: &App, user: &User, id: &str, now: u64) -> Result<(), Resp> {
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(no_card(id));
    }
    let (all, _) = derive(app, user, now, None).await?;
    if all.iter().any(|c| c.id == id) {
        Ok(())
    } else {
        Err(no_card(id))
    }
}

/// `POST /api/v1/insights/{id}/dismiss`: the card does not come back (the
/// dismissal is kept for the retention period, after which its email is gone).
pub async fn dismiss(app: &App, user: &User, id: &str) -> Resp {
    let now = now_ms();
    if let Err(r) = check_card(app, user, id, now).await {
        return r;
    }
    let retention = u64::from(app.settings().retention_days).max(1) * DAY_MS;
    match app
        .store
        .dismiss_card(user.id, id, now, now + retention)
        .await
    {
        Ok(()) => json_response(StatusCode::OK, &json!({"id": id, "dismissed": true})),
        Err(e) => store_failed(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnoozeRequest {
    until: String,
}

/// `POST /api/v1/insights/{id}/snooze {"until"}`: hidden until then.
pub async fn snooze(app: &App, user: &User, id: &str, req: Request<Incoming>) -> Resp {
    let body: SnoozeRequest = match read_json(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let now = now_ms();
    let Some(until) = parse_time(&body.until) else {
        return bad(
            "invalid_until",
            "until must be an RFC 3339 time, e.g. 2026-12-02T09:00:00Z",
        );
    };
    if until <= now {
        return bad("invalid_until", "until must be in the future");
    }
    if until - now > MAX_SNOOZE_MS {
        return bad(
            "invalid_until",
            "a card can be snoozed for at most 365 days",
        );
    }
    if let Err(r) = check_card(app, user, id, now).await {
        return r;
    }
    match app.store.snooze_card(user.id, id, now, until).await {
        Ok(()) => json_response(
            StatusCode::OK,
            &json!({"id": id, "snoozed_until": rfc3339(until)}),
        ),
        Err(e) => store_failed(e),
    }
}

fn invalid_address(what: &str) -> Resp {
    bad(
        "invalid_address",
        format!("{what:?} is not an email address (write + as %2B)"),
    )
}

/// The best hour of `address` from `tracked` (their own opens only).
fn best_hour(address: &str, tracked: &[Tracked], app: &App) -> Value {
    let own = human_opens(tracked, Some(address), &app.config.heuristics);
    match pattern(&own) {
        Some(p) => {
            json!({"hour": p.hour, "weekday": p.weekday, "basis": "recipient", "sample": p.sample})
        }
        None => Value::Null,
    }
}

/// `GET /api/v1/insights/contacts/{address}`: the caller's view of one contact,
/// from the caller's emails that went to them.
pub async fn contact(app: &App, user: &User, raw: &str) -> Resp {
    let decoded = percent_decode(raw, false);
    let Some(address) = normalize_address(&decoded) else {
        return invalid_address(&decoded);
    };
    let mut ids = match app.store.emails_mentioning(&address).await {
        Ok(ids) => ids,
        Err(e) => return store_failed(e),
    };
    // Ids are random: the newest are found by their records.
    let mut recs = Vec::new();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        match app.store.get_email(id).await {
            Ok(Some(r)) if r.owner == user.id => recs.push(r),
            Ok(_) => {}
            Err(e) => return store_failed(e),
        }
    }
    recs.sort_by_key(|r| std::cmp::Reverse(r.created_ms));
    let truncated = recs.len() > MAX_EMAILS;
    recs.truncate(MAX_EMAILS);
    // Only the contact's own events and replies are kept.
    let mut evs: Vec<Vec<Event>> = Vec::with_capacity(recs.len());
    let mut replies: Vec<Vec<Reply>> = Vec::with_capacity(recs.len());
    for rec in &recs {
        let mine: Vec<u32> = (0..rec.recipients.len() as u32)
            .filter(|&i| same_address(&rec.recipients[i as usize].address, &address))
            .collect();
        let (e, r) = match (
            app.store.events_for(rec.id).await,
            app.store.replies_for(rec.id).await,
        ) {
            (Ok(e), Ok(r)) => (e, r),
            (Err(e), _) | (_, Err(e)) => return store_failed(e),
        };
        evs.push(
            e.into_iter()
                .filter(|e| mine.contains(&e.recipient))
                .collect(),
        );
        replies.push(
            r.into_iter()
                .filter(|r| mine.contains(&r.recipient))
                .collect(),
        );
    }
    let tracked: Vec<Tracked> = recs
        .iter()
        .zip(&evs)
        .zip(&replies)
        .map(|((r, e), rp)| Tracked::new(r, e).with_replies(rp))
        .collect();
    let now = now_ms();
    let s = score_contact(&address, &tracked, now, &app.config.heuristics);
    let mut out = to_json(&s);
    out["address"] = json!(address);
    out["emails"] = json!(recs.len());
    out["truncated"] = json!(truncated);
    let best = best_hour(&address, &tracked, app);
    if !best.is_null() {
        out["best_send_hour"] = best;
    }
    json_response(StatusCode::OK, &out)
}

/// `GET /api/v1/insights/emails/{id}`: one of the caller's emails, scored over
/// its recipients.
pub async fn email(app: &App, user: &User, id: &str) -> Resp {
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no email with id {id:?} among yours"),
        )
    };
    let Some(eid) = id_from_text(id) else {
        return not_found();
    };
    let rec = match app.store.get_email(eid).await {
        Ok(Some(r)) if r.owner == user.id => r,
        Ok(_) => return not_found(),
        Err(e) => return store_failed(e),
    };
    let events = match app.store.events_for(eid).await {
        Ok(e) => e,
        Err(e) => return store_failed(e),
    };
    let replies = match app.store.replies_for(eid).await {
        Ok(r) => r,
        Err(e) => return store_failed(e),
    };
    let t = Tracked::new(&rec, &events).with_replies(&replies);
    let s = score_email(&t, now_ms(), &app.config.heuristics);
    let mut out = to_json(&s);
    out["email_id"] = json!(id_to_text(eid));
    json_response(StatusCode::OK, &out)
}

/// `GET /api/v1/insights/send-time?to=a,b[&tz=+02:00]`: each recipient's best
/// hour (their opens, else the pattern of all the caller's emails, else working
/// hours) and one suggested time, usable as `send_at`. `tz` only formats
/// (`suggested_local`).
pub async fn send_time(app: &App, user: &User, q: &Query) -> Resp {
    // An empty list is answered with working hours (nobody to ask about).
    let Some(to) = q.get("to") else {
        return bad("missing_to", "to must list the addresses, comma-separated");
    };
    let mut addresses: Vec<String> = Vec::new();
    for part in to.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some(a) = normalize_address(part) else {
            return invalid_address(part);
        };
        if !addresses.contains(&a) {
            addresses.push(a);
        }
        if addresses.len() > MAX_TO {
            return bad(
                "too_many_recipients",
                format!("to may list at most {MAX_TO} addresses"),
            );
        }
    }
    let offset = match q.get("tz") {
        None => None,
        Some(tz) => match parse_offset(tz) {
            Some(o) => Some(o),
            None => {
                return bad(
                    "invalid_tz",
                    "tz must be a UTC offset such as +02:00, -05:30 or Z (no time-zone names)",
                )
            }
        },
    };
    let h = &app.config.heuristics;
    let mut org: Vec<u64> = Vec::new();
    let mut own: Vec<Vec<u64>> = vec![Vec::new(); addresses.len()];
    let mut emails = Emails::of(app, user);
    loop {
        let (rec, events) = match emails.next().await {
            Ok(Some(x)) => x,
            Ok(None) => break,
            Err(r) => return r,
        };
        let t = [Tracked::new(&rec, &events)];
        org.extend(human_opens(&t, None, h));
        for (i, a) in addresses.iter().enumerate() {
            if rec.recipients.iter().any(|r| same_address(&r.address, a)) {
                own[i].extend(human_opens(&t, Some(a), h));
            }
        }
    }
    org.sort_unstable();
    let org = pattern(&org);
    let recipients: Vec<_> = addresses
        .iter()
        .zip(&own)
        .map(|(a, o)| recipient_time(a, o, org))
        .collect();
    let now = now_ms();
    let answer = SendTime {
        suggested: suggested(now, &recipients),
        recipients,
    };
    let mut out = to_json(&answer);
    if let Some(off) = offset {
        out["suggested_local"] = json!(format_at_offset(answer.suggested, off));
    }
    out["truncated"] = json!(emails.truncated);
    json_response(StatusCode::OK, &out)
}

/// An RFC 3339 time (`2026-12-02T09:00:00Z`, `…T09:00:00.5+02:00`) in ms since
/// the epoch; `None` for anything else or before 1970.
pub fn parse_time(s: &str) -> Option<u64> {
    // The local part (date, time, fraction) and its zone: `Z` or `±hh:mm`.
    let cut = s
        .len()
        .checked_sub(if s.ends_with(['Z', 'z']) { 1 } else { 6 })?;
    let (local, zone) = (s.get(..cut)?, s.get(cut..)?);
    let offset = parse_offset(zone).filter(|_| zone.len() == 1 || zone.as_bytes()[3] == b':')?;
    let frac = local.get(19..)?;
    let frac_ok = frac.is_empty()
        || (frac.len() > 1
            && frac.starts_with('.')
            && frac[1..].bytes().all(|b| b.is_ascii_digit()));
    if local.as_bytes()[10] != b'T' || !frac_ok {
        return None;
    }
    let t = humantime::parse_rfc3339(&format!("{local}Z")).ok()?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64;
    u64::try_from(ms - i64::from(offset) * 60_000).ok()
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn rfc3339_times_parse() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time("2026-11-03T00:00:00Z"), Some(1_793_664_000_000));
        assert_eq!(
            parse_time("2026-11-03T02:00:00+02:00"),
            Some(1_793_664_000_000)
        );
        assert_eq!(
            parse_time("2026-11-03T00:00:00.250Z"),
            Some(1_793_664_000_250)
        );
        assert!(parse_time("2024-02-29T00:00:00Z").is_some());
        for bad in [
            "",
            "2026-11-03",
            "2026-11-03T00:00:00",
            "2026-02-30T00:00:00Z",
            "2026-11-03T24:00:00Z",
            "2026-11-03T00:00:00+0200",
            "2026-11-03T00:00:00.Z",
            "1969-12-31T23:59:59Z",
            "2026-11-03T00:00:00Zjunk",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}
