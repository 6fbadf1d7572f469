//! Building responses: JSON bodies, the JSON error `{"error":{"code","message"}}`,
//! and the mapping of errors from below HTTP (store, mailbox) to that error with
//! its status. Every handler answers through these, so a failure of the same kind
//! looks the same on every endpoint.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use crate::mailbox::MailboxError;
use crate::store::StoreError;

pub type Resp = Response<Full<Bytes>>;

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
        "mailbox_login_failed" => StatusCode::UNPROCESSABLE_ENTITY,
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
