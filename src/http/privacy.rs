//! Admin privacy endpoints: contact "Follow email" preferences (one at a time or a
//! bulk import), data-subject export and erase, and the audit log.
//!
//! Addresses in paths are percent-decoded and normalized (trimmed, lowercased).
//! Every change and every export or erase is written to the audit log with who
//! did it.

use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::audit::audit;
use super::request::{page_limit, percent_decode, read_body, read_json, Query};
use super::response::{error, json_response, store_failed, Resp};
use crate::address::normalize_address;
use crate::ids::{now_ms, rfc3339};
use crate::model::{Contact, FollowEmail, User};
use crate::state::App;
use crate::subjects;

/// Most rows one import may carry.
const MAX_IMPORT: usize = 100_000;

fn address_from_path(raw: &str) -> Result<String, Resp> {
    let decoded = percent_decode(raw, false);
    normalize_address(&decoded).ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_address",
            format!("{decoded:?} is not an email address"),
        )
    })
}

fn contact_json(c: &Contact) -> Value {
    json!({
        "address": c.address,
        "follow_email": c.follow_email,
        "updated_at": rfc3339(c.updated_ms),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactBody {
    follow_email: FollowEmail,
}

pub async fn contact(
    app: &App,
    user: &User,
    method: &Method,
    raw: &str,
    req: Request<Incoming>,
) -> Resp {
    let address = match address_from_path(raw) {
        Ok(a) => a,
        Err(r) => return r,
    };
    match *method {
        Method::GET => match app.store.contact(&address).await {
            Ok(Some(c)) => json_response(StatusCode::OK, &contact_json(&c)),
            Ok(None) => error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no preference is stored for that address (it is followed by default)".into(),
            ),
            Err(e) => store_failed(e),
        },
        Method::PUT => {
            let body: ContactBody = match read_json(app, req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let c = Contact {
                address: address.clone(),
                follow_email: body.follow_email,
                updated_ms: now_ms(),
            };
            if let Err(e) = app.store.put_contacts(vec![c.clone()]).await {
                return store_failed(e);
            }
            let detail = format!("follow_email={}", follow_str(c.follow_email));
            audit(app, user, "contact.update", Some(&address), detail).await;
            json_response(StatusCode::OK, &contact_json(&c))
        }
        Method::DELETE => match app.store.delete_contact(&address).await {
            Ok(deleted) => {
                audit(app, user, "contact.delete", Some(&address), String::new()).await;
                json_response(StatusCode::OK, &json!({"deleted": deleted}))
            }
            Err(e) => store_failed(e),
        },
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on a contact"),
        ),
    }
}

fn follow_str(f: FollowEmail) -> &'static str {
    match f {
        FollowEmail::Allow => "allow",
        FollowEmail::DoNotAllow => "do_not_allow",
    }
}

fn parse_follow(s: &str) -> Option<FollowEmail> {
    match s.trim().to_ascii_lowercase().as_str() {
        "allow" => Some(FollowEmail::Allow),
        "do_not_allow" | "do not allow" | "donotallow" => Some(FollowEmail::DoNotAllow),
        _ => None,
    }
}

/// `POST /api/v1/contacts/import`: CSV (`text/csv`, header `address,follow_email`)
/// or JSON (an array of `{"address","follow_email"}`). All or nothing: any bad
/// row answers 400 listing the problems (at most 20) and imports nothing.
pub async fn import(app: &App, user: &User, req: Request<Incoming>) -> Resp {
    let is_csv = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("text/csv"));
    let body = match read_body(app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let rows: Vec<(usize, String, String)> = if is_csv {
        let text = String::from_utf8_lossy(&body);
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        match lines.next() {
            Some((_, h))
                if h.trim()
                    .trim_start_matches('\u{feff}')
                    .to_ascii_lowercase()
                    .replace(' ', "")
                    == "address,follow_email" => {}
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_csv",
                    "the first line must be the header address,follow_email".into(),
                )
            }
        }
        lines
            .map(|(n, l)| {
                let (a, f) = l.split_once(',').unwrap_or((l, ""));
                (
                    n + 1,
                    a.trim().trim_matches('"').to_string(),
                    f.trim().trim_matches('"').to_string(),
                )
            })
            .collect()
    } else {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Row {
            address: String,
            follow_email: String,
        }
        match serde_json::from_slice::<Vec<Row>>(&body) {
            Ok(v) => v
                .into_iter()
                .enumerate()
                .map(|(i, r)| (i + 1, r.address, r.follow_email))
                .collect(),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    format!(
                        "expected an array of {{\"address\",\"follow_email\"}} (or text/csv): {e}"
                    ),
                )
            }
        }
    };
    if rows.len() > MAX_IMPORT {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_rows",
            format!("at most {MAX_IMPORT} contacts per import"),
        );
    }
    let mut problems = Vec::new();
    let mut contacts = Vec::with_capacity(rows.len());
    let now = now_ms();
    for (n, a, f) in &rows {
        match (normalize_address(a), parse_follow(f)) {
            (Some(address), Some(follow_email)) => contacts.push(Contact {
                address,
                follow_email,
                updated_ms: now,
            }),
            (None, _) => problems.push(format!("row {n}: {a:?} is not an email address")),
            (_, None) => problems.push(format!(
                "row {n}: follow_email must be allow or do_not_allow, not {f:?}"
            )),
        }
    }
    if !problems.is_empty() {
        let total = problems.len();
        problems.truncate(20);
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_rows",
            format!(
                "{total} row(s) are invalid; nothing was imported: {}",
                problems.join("; ")
            ),
        );
    }
    let n = contacts.len();
    if let Err(e) = app.store.put_contacts(contacts).await {
        return store_failed(e);
    }
    audit(app, user, "contact.import", None, format!("{n} contacts")).await;
    json_response(StatusCode::OK, &json!({"imported": n}))
}

pub async fn subject(app: &App, user: &User, method: &Method, raw: &str) -> Resp {
    let address = match address_from_path(raw) {
        Ok(a) => a,
        Err(r) => return r,
    };
    match *method {
        Method::GET => match subjects::export(&app.store, &address, &app.config.heuristics).await {
            Ok(v) => {
                // Name the subject in the log only if something is stored about
                // them: an export after an erase must not bring the address back.
                let empty = |k: &str| v[k].as_array().is_none_or(|a| a.is_empty());
                let found = !v["contact"].is_null()
                    || !empty("emails_received")
                    || !empty("emails_sent")
                    || !empty("activities")
                    || !empty("audit");
                let (subject, detail) = if found {
                    (Some(address.as_str()), String::new())
                } else {
                    (None, "nothing stored about the address".to_string())
                };
                audit(app, user, "subject.export", subject, detail).await;
                json_response(StatusCode::OK, &v)
            }
            Err(e) => store_failed(e),
        },
        Method::DELETE => match subjects::erase(&app.store, &address).await {
            Ok(n) => {
                // Deliberately no subject: the log must not keep the address.
                let detail = format!(
                    "emails={} activities={} events={} contact={} audit_entries={} replies={} copies_cancelled={} feed_entries={}",
                    n.emails,
                    n.activities,
                    n.events,
                    n.contact,
                    n.audit_entries,
                    n.replies,
                    n.copies_cancelled,
                    n.feed_entries
                );
                audit(app, user, "subject.erase", None, detail).await;
                json_response(
                    StatusCode::OK,
                    &json!({"erased": {
                        "emails": n.emails,
                        "activities": n.activities,
                        "events": n.events,
                        "contact_preference": n.contact,
                        "audit_entries": n.audit_entries,
                        "replies": n.replies,
                        "copies_cancelled": n.copies_cancelled,
                        "feed_entries": n.feed_entries,
                    }}),
                )
            }
            Err(e) => store_failed(e),
        },
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on a data subject"),
        ),
    }
}

/// `GET /api/v1/audit`: newest first, `limit` per page, `before` a `seq`.
pub async fn audit_log(app: &App, query: &Query) -> Resp {
    let limit = match page_limit(query) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let before = match query.get("before").map(|b| b.parse()) {
        None => None,
        Some(Ok(b)) => Some(b),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_cursor",
                "before must be the next value of a previous page".into(),
            )
        }
    };
    match app.store.audit_log(before, limit).await {
        Ok(list) => {
            let next = (list.len() == limit)
                .then(|| list.last().map(|e| e.seq))
                .flatten();
            let entries: Vec<Value> = list
                .iter()
                .map(|e| {
                    json!({
                        "seq": e.seq,
                        "at": rfc3339(e.at_ms),
                        "actor": crate::ids::id_to_text(e.actor),
                        "action": e.action,
                        "subject": e.subject,
                        "detail": e.detail,
                    })
                })
                .collect();
            json_response(StatusCode::OK, &json!({"entries": entries, "next": next}))
        }
        Err(e) => store_failed(e),
    }
}
