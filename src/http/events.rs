//! `GET /api/v1/events` with `Accept: text/event-stream`: the caller's
//! application events as server-sent events, live.
//!
//! A stream starts at the moment of connecting, or, with `Last-Event-ID`, just
//! after that event, replayed from the retained feed (24 h). It then follows
//! this process's hub (fed by the feed's tail, so every process's events
//! arrive). Each event is `id:`, `event:` (its type) and `data:` (its JSON);
//! a `: heartbeat` comment goes out every `Emitter::heartbeat`. Only the
//! caller's own emails' events are sent (admins too: their own), machine
//! activity only with `?include_machine=true`. A stream that falls more than
//! the hub's capacity behind reloads what it missed from the feed. On shutdown
//! the stream ends cleanly.
//!
//! Cost per stream: one receiver of its owner's channel in the hub and this
//! small state; frames are formatted once per event for all streams, a stream
//! wakes only for its owner's events, and whatever has arrived by the time it
//! writes goes out as one chunk.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;

use super::request::Query;
use super::response::{bad, boxed, error, store_failed, Body};
use crate::model::User;
use crate::realtime::feed::{self, EventPos, LiveBatch, LiveEvent};
use crate::state::App;
use crate::store::Store;

/// Most feed entries a resume replays.
const RESUME_ENTRIES: usize = 10_000;
/// Most bytes a stream writes in one chunk.
const CHUNK_BYTES: usize = 256 * 1024;

struct State {
    owner: u64,
    machine: bool,
    store: Store,
    rx: Receiver<LiveBatch>,
    /// The last event sent (or skipped as the caller's position, or handed
    /// out before the stream subscribed).
    last: EventPos,
    queued: VecDeque<Bytes>,
    heartbeat: tokio::time::Interval,
    app_stop: Arc<crate::realtime::Emitter>,
}

impl State {
    fn wants(&self, e: &LiveEvent) -> bool {
        e.owner == self.owner && (self.machine || !e.machine) && e.pos > self.last
    }

    fn take(&mut self, events: &[Arc<LiveEvent>]) {
        for e in events {
            if self.wants(e) {
                self.last = e.pos;
                self.queued.push_back(e.frame.clone());
            }
        }
    }

    /// Takes what the channel holds now, without waiting; false when the
    /// stream must end.
    async fn drain(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(b) => self.take(&b),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Lagged(n)) => {
                    if !self.reload(n).await {
                        return false;
                    }
                }
                Err(TryRecvError::Closed) => return false,
            }
        }
    }

    /// The stream fell more than the channel holds behind: what it missed
    /// comes from the feed.
    async fn reload(&mut self, missed: u64) -> bool {
        tracing::debug!(missed, "a live stream fell behind; reloading from the feed");
        match feed::read_from(&self.store, self.last.entry, RESUME_ENTRIES, self.owner).await {
            Ok(missed) => {
                self.take(&missed);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload a stream from the feed; ending it");
                false
            }
        }
    }

    /// Everything queued, as one chunk (at most about `CHUNK_BYTES`).
    fn chunk(&mut self) -> Option<Bytes> {
        let first = self.queued.pop_front()?;
        if self.queued.is_empty() {
            return Some(first);
        }
        let mut out = Vec::with_capacity(first.len() * (self.queued.len() + 1));
        out.extend_from_slice(&first);
        while out.len() < CHUNK_BYTES {
            match self.queued.pop_front() {
                Some(b) => out.extend_from_slice(&b),
                None => break,
            }
        }
        Some(Bytes::from(out))
    }
}

pub async fn stream(
    app: &App,
    user: &User,
    req: Request<Incoming>,
    query: &Query,
) -> Response<Body> {
    if req.method() != hyper::Method::GET {
        return boxed(crate::http::response::method_not_allowed(
            "GET",
            format!("{} is not allowed on /api/v1/events", req.method()),
        ));
    }
    let accept = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !accept.contains("text/event-stream") {
        return boxed(error(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "this endpoint streams server-sent events: send Accept: text/event-stream".into(),
        ));
    }
    let machine = match query.get("include_machine").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return boxed(bad("invalid_query", "include_machine: true or false")),
    };
    let Some(hub) = app.realtime.hub() else {
        return boxed(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "live events are not running".into(),
        ));
    };
    let resume = match req.headers().get("last-event-id").map(|v| v.to_str()) {
        None => None,
        Some(Ok(id)) if id.trim().is_empty() => None,
        Some(Ok(id)) => match EventPos::parse(id) {
            Some(p) => Some(p),
            None => {
                return boxed(bad(
                    "invalid_last_event_id",
                    "Last-Event-ID: an event id (evt_…)",
                ))
            }
        },
        Some(Err(_)) => {
            return boxed(bad(
                "invalid_last_event_id",
                "Last-Event-ID: an event id (evt_…)",
            ))
        }
    };
    // Subscribe before reading the backlog, so nothing falls between the two.
    let (rx, start) = hub.subscribe(user.id);
    // For the other processes' publishers (`realtime::audience`): this
    // process's hub counts the stream already, so a failure only delays them.
    if let Err(e) = app
        .store
        .listeners_seen(&[user.id], crate::ids::now_ms())
        .await
    {
        tracing::warn!(error = %e, "cannot record a stream's owner as listening");
    }
    let mut heartbeat = tokio::time::interval(app.realtime.heartbeat());
    heartbeat.reset();
    let mut state = State {
        owner: user.id,
        machine,
        store: app.store.clone(),
        rx,
        last: start,
        queued: VecDeque::from([Bytes::from_static(b": connected\n\n")]),
        heartbeat,
        app_stop: Arc::new(app.realtime.clone()),
    };
    match resume {
        Some(pos) => {
            state.last = pos;
            match feed::read_from(&app.store, pos.entry, RESUME_ENTRIES, user.id).await {
                Ok(backlog) => state.take(&backlog),
                Err(e) => return boxed(store_failed(e)),
            }
        }
        None => {
            // From now: the first live event after subscribing (`start`).
        }
    }
    let body = stream::unfold(state, next_frame);
    let mut r = Response::new(StreamBody::new(body).boxed_unsync());
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

async fn next_frame(mut s: State) -> Option<(Result<Frame<Bytes>, Infallible>, State)> {
    loop {
        if let Some(b) = s.chunk() {
            return Some((Ok(Frame::data(b)), s));
        }
        let stop = s.app_stop.clone();
        tokio::select! {
            _ = stop.stopping() => return None,
            _ = s.heartbeat.tick() => {
                return Some((Ok(Frame::data(Bytes::from_static(b": heartbeat\n\n"))), s));
            }
            got = s.rx.recv() => match got {
                Ok(b) => {
                    s.take(&b);
                    // What else has arrived goes out in the same chunk.
                    if !s.drain().await {
                        return None;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    if !s.reload(n).await {
                        return None;
                    }
                }
                Err(RecvError::Closed) => return None,
            },
        }
    }
}
