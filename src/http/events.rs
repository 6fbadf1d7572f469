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
//! Cost per stream: one broadcast receiver and this small state; frames are
//! formatted once per event for all streams.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;

use super::request::Query;
use super::response::{bad, boxed, error, store_failed, Body};
use crate::model::User;
use crate::realtime::feed::{self, EventPos, LiveEvent};
use crate::state::App;
use crate::store::realtime::FeedPos;
use crate::store::Store;

/// Most feed entries a resume replays.
const RESUME_ENTRIES: usize = 10_000;

struct State {
    owner: u64,
    machine: bool,
    store: Store,
    rx: Receiver<Arc<LiveEvent>>,
    /// The last event sent (or skipped as the caller's position).
    last: EventPos,
    queued: VecDeque<Bytes>,
    heartbeat: tokio::time::Interval,
    app_stop: Arc<crate::realtime::Emitter>,
}

impl State {
    fn wants(&self, e: &LiveEvent) -> bool {
        e.owner == self.owner && (self.machine || !e.machine) && e.pos > self.last
    }

    fn take(&mut self, events: Vec<Arc<LiveEvent>>) {
        for e in events {
            if self.wants(&e) {
                self.last = e.pos;
                self.queued.push_back(e.frame.clone());
            }
        }
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
    let rx = hub.subscribe();
    let mut heartbeat = tokio::time::interval(app.realtime.heartbeat());
    heartbeat.reset();
    let mut state = State {
        owner: user.id,
        machine,
        store: app.store.clone(),
        rx,
        last: EventPos {
            entry: FeedPos::default(),
            index: 0,
        },
        queued: VecDeque::from([Bytes::from_static(b": connected\n\n")]),
        heartbeat,
        app_stop: Arc::new(app.realtime.clone()),
    };
    match resume {
        Some(pos) => {
            state.last = pos;
            match feed::read_from(&app.store, pos.entry, RESUME_ENTRIES).await {
                Ok(backlog) => state.take(backlog),
                Err(e) => return boxed(store_failed(e)),
            }
        }
        None => {
            // From now: the first live event after subscribing.
            state.last = EventPos::default();
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
        if let Some(b) = s.queued.pop_front() {
            return Some((Ok(Frame::data(b)), s));
        }
        let stop = s.app_stop.clone();
        tokio::select! {
            _ = stop.stopping() => return None,
            _ = s.heartbeat.tick() => {
                return Some((Ok(Frame::data(Bytes::from_static(b": heartbeat\n\n"))), s));
            }
            got = s.rx.recv() => match got {
                Ok(e) => {
                    if s.wants(&e) {
                        s.last = e.pos;
                        return Some((Ok(Frame::data(e.frame.clone())), s));
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::debug!(missed = n, "a live stream fell behind; reloading from the feed");
                    match feed::read_from(&s.store, s.last.entry, RESUME_ENTRIES).await {
                        Ok(missed) => s.take(missed),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot reload a stream from the feed; ending it");
                            return None;
                        }
                    }
                }
                Err(RecvError::Closed) => return None,
            },
        }
    }
}
