//! Building responses: JSON bodies, the JSON error `{"error":{"code","message"}}`,
//! and the mapping of errors from below HTTP (store, mailbox, the follow use
//! case) to that error with its status. Every handler answers through these, so
//! a failure of the same kind looks the same on every endpoint.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use crate::addin::mailbox::MailboxError;
use crate::follow::{FollowError, MAX_RECIPIENTS, MAX_RETURN_BYTES};
use crate::prepare::ErrorKind;
use crate::store::StoreError;

pub type Resp = Response<Full<Bytes>>;

/// The body the router answers with: every handler's `Resp` is boxed into it at
/// one place (`http::handle`); only the live event stream builds one itself.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// `r` with its body boxed.
pub fn boxed(r: Resp) -> Response<Body> {
    use http_body_util::BodyExt as _;
    r.map(|b| b.boxed_unsync())
}

pub fn json_response(status: StatusCode, value: &Value) -> Resp {
    // Serializing a serde_json::Value cannot fail (its keys are strings).
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// A JSON error: `{"error":{"code","message"}}`.
pub fn error(status: StatusCode, code: &str, message: String) -> Resp {
    json_response(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

/// 405 with the `Allow` header naming the methods `allow` lists (e.g.
/// `"GET, PUT"`).
pub fn method_not_allowed(allow: &'static str, message: String) -> Resp {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        message,
    );
    r.headers_mut()
        .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// A 400 with `code`.
pub fn bad(code: &str, message: impl Into<String>) -> Resp {
    error(StatusCode::BAD_REQUEST, code, message.into())
}

/// A store failure: 409 for a conflict, else 503 (logged; the client may retry).
pub fn store_failed(e: StoreError) -> Resp {
    match e {
        StoreError::Conflict(m) => error(StatusCode::CONFLICT, "conflict", m),
        StoreError::Backend(m) => {
            tracing::error!(error = %m, "store failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store is unavailable; try again".into(),
            )
        }
    }
}

/// A mailbox (IMAP) failure, by its code.
pub fn mailbox_failed(e: MailboxError) -> Resp {
    let status = match e.code {
        "mailbox_login_failed" | "target_not_allowed" => StatusCode::UNPROCESSABLE_ENTITY,
        "message_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "mailbox_timeout" => StatusCode::GATEWAY_TIMEOUT,
        "not_found" => StatusCode::NOT_FOUND,
        "invalid_mailbox" => StatusCode::BAD_REQUEST,
        "store_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    error(status, e.code, e.message)
}

/// The user has no mailbox connected (mailbox and Auto Capture endpoints).
pub fn mailbox_not_connected() -> Resp {
    error(
        StatusCode::CONFLICT,
        "mailbox_not_connected",
        "no mailbox is connected: connect one with PUT /api/v1/mailbox".into(),
    )
}

/// Why an email was not followed, as the JSON error with its status: the one
/// place the follow use case's errors meet HTTP.
pub fn follow_failed(e: FollowError) -> Resp {
    use FollowError as F;
    let (status, code, message) = match e {
        F::EngagementDisabled => (
            StatusCode::FORBIDDEN,
            "engagement_disabled",
            "Email Engagement is switched off for this organization: emails cannot be followed"
                .to_string(),
        ),
        F::SmtpNotConfigured => (
            StatusCode::BAD_REQUEST,
            "smtp_not_configured",
            "deliver \"smtp\" needs MAILBEACON_SMTP_URL; use deliver \"return\" or configure a relay"
                .to_string(),
        ),
        F::InvalidMime => (
            StatusCode::BAD_REQUEST,
            "invalid_mime",
            "mime must be a non-empty base64 RFC 5322 message".to_string(),
        ),
        F::Unpreparable(e) => {
            let (status, code) = match e.kind {
                ErrorKind::Malformed => (StatusCode::BAD_REQUEST, "malformed_mime"),
                ErrorKind::NoRecipients => (StatusCode::BAD_REQUEST, "no_recipients"),
                ErrorKind::NoSender => (StatusCode::BAD_REQUEST, "no_sender"),
                ErrorKind::TooManyLinks => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_links"),
                ErrorKind::TooManyRecipients => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "too_many_recipients")
                }
            };
            (status, code, e.message)
        }
        F::TooManyRecipients(n) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_recipients",
            format!("the message has {n} recipients; at most {MAX_RECIPIENTS} can be followed in one email"),
        ),
        F::SenderNotAllowed { allowed, from } => (
            StatusCode::FORBIDDEN,
            "sender_not_allowed",
            format!("you may only send as {allowed}, but the message is from {from}"),
        ),
        F::TooLargeToReturn { copies, estimate } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large_to_return",
            format!(
                "the {copies} copies would take about {} MiB, and at most {} MiB can be returned in one response; deliver them through SMTP (\"deliver\": \"smtp\") or follow fewer recipients per request",
                estimate.div_ceil(1024 * 1024),
                MAX_RETURN_BYTES / (1024 * 1024)
            ),
        ),
        F::InvalidHtml(m) => (StatusCode::BAD_REQUEST, "invalid_html", m),
        F::InvalidRecipient(a) => (
            StatusCode::BAD_REQUEST,
            "invalid_email",
            format!("{a:?} is not an email address"),
        ),
        F::NoRecipients => (
            StatusCode::BAD_REQUEST,
            "no_recipients",
            "add at least one recipient before following the email".to_string(),
        ),
        F::NoSenderAddress => (
            StatusCode::BAD_REQUEST,
            "no_sender",
            "this account has no email address to send as; use a user account".to_string(),
        ),
        F::Store(e) => return store_failed(e),
    };
    error(status, code, message)
}
