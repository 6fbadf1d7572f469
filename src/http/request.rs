//! Reading requests: the body (limited to `max_body_bytes`), JSON bodies (unknown
//! fields refused by the types), query strings, percent-decoding, paging limits,
//! base64 messages. Each helper answers the client's mistake itself, as the JSON
//! error the handler returns.

// Helpers return the error response itself; it is built once per failed
// request, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http_body_util::BodyExt as _;
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_LENGTH;
use hyper::{Request, StatusCode};
use serde::de::DeserializeOwned;

use super::response::{bad, error, Resp};
use crate::state::App;

/// A query string's parameters (values percent-decoded, `+` as a space).
pub type Query = HashMap<String, String>;

pub fn parse_query(q: &str) -> Query {
    q.split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (!k.is_empty()).then(|| (k.to_owned(), percent_decode(v, true)))
        })
        .collect()
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`, for query
/// strings); invalid escapes stay as written.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads a body of at most `max_body_bytes`. A larger one answers 413; up to
/// `DRAIN_MAX` more bytes are read and discarded first, so an ordinary client that
/// sends its whole body before reading sees the 413 instead of a reset connection.
pub async fn read_body(app: &App, req: Request<Incoming>) -> Result<Bytes, Resp> {
    const DRAIN_MAX: usize = 8 * 1024 * 1024;
    let limit = app.config.max_body_bytes;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > (limit + DRAIN_MAX) as u64) {
        return Err(too_large());
    }
    let body = req.into_body();
    // The whole body within `body_read_timeout`: a client trickling bytes
    // cannot hold the request (and its memory) open for longer.
    match tokio::time::timeout(
        app.config.body_read_timeout,
        collect(body, limit, DRAIN_MAX),
    )
    .await
    {
        Ok(Ok((buf, seen))) if seen <= limit => Ok(Bytes::from(buf)),
        Ok(Ok(_)) => Err(too_large()),
        Ok(Err(r)) => Err(r),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} s",
                app.config.body_read_timeout.as_secs()
            ),
        )),
    }
}

/// Reads frames: keeps up to `limit` bytes, counts (and drops) up to `drain`
/// more. Returns the kept bytes and how many were seen.
async fn collect(mut body: Incoming, limit: usize, drain: usize) -> Result<(Vec<u8>, usize), Resp> {
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("could not read the request body: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= limit {
                buf.extend_from_slice(&data);
            } else if seen > limit + drain {
                break;
            }
        }
    }
    Ok((buf, seen))
}

/// Reads a JSON body into `T` (400 `invalid_json` if it does not fit).
pub async fn read_json<T: DeserializeOwned>(app: &App, req: Request<Incoming>) -> Result<T, Resp> {
    let body = read_body(app, req).await?;
    // Every JSON body is an object (or null where a handler takes an
    // `Option`): serde would otherwise read a struct from an array.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the request body must be a JSON object".into(),
        ));
    }
    serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the request body is not the expected JSON: {e}"),
        )
    })
}

/// `before` of a paged listing: the `"<created ms>-<id>"` cursor a previous
/// page returned as `next`; `None` for the first page, `400 invalid_cursor` for
/// anything else.
pub fn page_cursor(q: &Query) -> Result<Option<(u64, u64)>, Resp> {
    let Some(c) = q.get("before") else {
        return Ok(None);
    };
    c.split_once('-')
        .and_then(|(t, id)| Some((t.parse::<u64>().ok()?, crate::ids::id_from_text(id)?)))
        .map(Some)
        .ok_or_else(|| {
            bad(
                "invalid_cursor",
                "before must be a cursor returned as \"next\" by a previous page",
            )
        })
}

/// `limit` of a paged listing: 1–500, default 50.
pub fn page_limit(q: &Query) -> Result<usize, Resp> {
    match q.get("limit").map(|s| s.parse::<usize>()) {
        None => Ok(50),
        Some(Ok(n)) if (1..=500).contains(&n) => Ok(n),
        Some(_) => Err(bad("invalid_limit", "limit must be a number from 1 to 500")),
    }
}

/// A base64 RFC 5322 message as JSON carries it (whitespace ignored).
pub fn decode_mime(b64: &str) -> Result<Vec<u8>, Resp> {
    let cleaned: Vec<u8> = b64.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    match STANDARD.decode(&cleaned) {
        Ok(r) if !r.is_empty() => Ok(r),
        _ => Err(bad(
            "invalid_mime",
            "mime must be a non-empty base64 RFC 5322 message",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        let q = parse_query("a=1&b=x%40y&c&d=%zz+q");
        assert_eq!(q["a"], "1");
        assert_eq!(q["b"], "x@y");
        assert_eq!(q["c"], "");
        assert_eq!(q["d"], "%zz q");
    }
}
