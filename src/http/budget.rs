//! The shared byte budget of large request bodies: memory across concurrent
//! requests stays bounded. An authenticated API request whose body is large
//! (declared 64 KiB or more, or of unknown length) reserves its size, at most
//! `max_body_bytes`, from `App::body_budget` before its body is read, and holds
//! it until its answer is built. When the budget is spent the request answers
//! `503 busy` with `Retry-After` at once, without reading the body: a client
//! retries, nothing waits in memory.

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, RETRY_AFTER};
use hyper::{Method, Request, StatusCode};
use tokio::sync::OwnedSemaphorePermit;

use super::response::{error, Resp};
use crate::state::App;

/// Bodies smaller than this do not take from the budget.
pub const SMALL_BODY: usize = 64 * 1024;

/// The reservation for `req`'s body (`None` for a small or absent body), or
/// the 503 to answer.
#[allow(clippy::result_large_err)]
pub fn reserve(app: &App, req: &Request<Incoming>) -> Result<Option<OwnedSemaphorePermit>, Resp> {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::DELETE) {
        return Ok(None);
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let max = app.config.max_body_bytes;
    let size = match declared {
        Some(n) if (n as usize) < SMALL_BODY => return Ok(None),
        // A body over the limit answers 413 once read; it reserves the limit.
        Some(n) => usize::try_from(n).unwrap_or(max).min(max),
        None => max,
    };
    // Permits are KiB; the budget is at least max_body_bytes, so one request
    // alone always fits.
    let kib = u32::try_from(size.div_ceil(1024)).unwrap_or(u32::MAX);
    match app.body_budget.clone().try_acquire_many_owned(kib) {
        Ok(p) => Ok(Some(p)),
        Err(_) => {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the server is handling as many large requests as it can; retry shortly".into(),
            );
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            Err(r)
        }
    }
}
