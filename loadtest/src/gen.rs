//! The load generator: one thread, one epoll loop (mio), N keep-alive HTTP/1.1
//! connections, closed loop like `wrk -t1` (each connection sends its next request as
//! soon as the previous answer is in).
//!
//! Why not wrk: the check "every answered hit recorded exactly once" needs, per
//! URL, how many requests were sent and how many were answered. wrk's Lua hooks can
//! cycle over a URL list, but counting answers per URL needs its `response()` hook,
//! which runs Lua for every response and costs wrk a large part of its rate. Here
//! the counts are two array increments. Requests are built once, up front; each
//! request picks a URL uniformly at random (xorshift), so hits spread over every
//! email in random order.
//!
//! What a run returns: per-URL sent and answered counts, a latency histogram per
//! timeline slot (so any window, e.g. during a fault, can be summarised later),
//! errors by kind, and the longest gap between two answers. A connection that fails
//! (reset, refused while the server restarts) is reopened after a short pause, so a
//! run survives a server being killed and restarted under it. After the measured
//! time no new request is sent; requests still in flight are waited for up to the
//! drain limit, and any left then count as sent but not answered.

use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::hist::Histogram;

/// How long a failed connection waits before it is reopened.
const RECONNECT_AFTER: Duration = Duration::from_millis(20);
const POLL_EVERY: Duration = Duration::from_millis(5);

/// What to run.
pub struct Load<'a> {
    pub addr: SocketAddr,
    /// One complete request per URL (`GET … HTTP/1.1` + headers + blank line).
    pub requests: &'a [Vec<u8>],
    /// The status an answer must have to count as answered (200 pixel, 302 click).
    pub expect_status: u16,
    pub conns: usize,
    /// Sent and counted for the lost/doubled check, left out of rates and latencies.
    pub warmup: Duration,
    /// The measured part, after the warm-up.
    pub duration: Duration,
    /// The longest wait for answers still in flight at the end.
    pub drain: Duration,
    /// Granularity of the timeline.
    pub slot: Duration,
    pub seed: u64,
}

#[derive(Default, Debug, Clone)]
pub struct Errors {
    /// Connections refused or failed before carrying a request.
    pub connect: u64,
    /// Connections that failed (reset, closed) with a request in flight.
    pub io: u64,
    /// Answers with another status than expected.
    pub status: u64,
    /// Answers that were not valid HTTP/1.1 as far as this client reads it.
    pub protocol: u64,
    /// Requests still unanswered when the drain limit ran out.
    pub unanswered_at_end: u64,
}

impl Errors {
    /// Every request-level error (not counting refused connections).
    pub fn requests(&self) -> u64 {
        self.io + self.status + self.protocol + self.unanswered_at_end
    }
}

#[derive(Default, Clone)]
pub struct Slot {
    /// Latencies of the answers completed in this slot.
    pub hist: Histogram,
    pub errors: u64,
}

pub struct Outcome {
    pub sent: Vec<u32>,
    pub answered: Vec<u32>,
    pub slots: Vec<Slot>,
    pub slot: Duration,
    pub warmup_slots: usize,
    pub measured_slots: usize,
    pub errors: Errors,
    pub longest_stall: Duration,
    pub started: Instant,
}

impl Outcome {
    /// Latencies of the answers completed in slots `from..to`.
    pub fn window(&self, from: usize, to: usize) -> Histogram {
        let mut h = Histogram::default();
        for s in self.slots.iter().take(to).skip(from) {
            h.merge(&s.hist);
        }
        h
    }

    /// Latencies of the measured part (after the warm-up, before the drain).
    pub fn measured(&self) -> Histogram {
        self.window(self.warmup_slots, self.warmup_slots + self.measured_slots)
    }

    /// Answers per second over the measured part.
    pub fn rate(&self) -> f64 {
        let secs = self.slot.as_secs_f64() * self.measured_slots as f64;
        self.measured().count() as f64 / secs.max(1e-9)
    }

    /// The timeline slot that holds instant `t`.
    pub fn slot_of(&self, t: Instant) -> usize {
        (t.saturating_duration_since(self.started).as_nanos() / self.slot.as_nanos().max(1))
            as usize
    }

    pub fn total_sent(&self) -> u64 {
        self.sent.iter().map(|&x| u64::from(x)).sum()
    }

    pub fn total_answered(&self) -> u64 {
        self.answered.iter().map(|&x| u64::from(x)).sum()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// No socket; reopened at `retry_at` unless the run is ending.
    Down,
    Connecting,
    Writing,
    Reading,
    /// Closed for good (the run is ending).
    Done,
}

struct Conn {
    stream: Option<TcpStream>,
    state: State,
    url: usize,
    off: usize,
    t0: Instant,
    buf: Vec<u8>,
    retry_at: Instant,
}

/// A parsed response head: status, total length (head + body), `Connection: close`.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub total: usize,
    pub close: bool,
}

/// A response this client does not understand (it reads only `Content-Length`
/// bodies, as the servers under test send).
#[derive(Debug, PartialEq, Eq)]
pub struct Unreadable;

/// Parses the response at the start of `buf`. `Ok(None)`: not complete yet.
pub fn parse_response(buf: &[u8]) -> Result<Option<Head>, Unreadable> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > 64 * 1024 {
            Err(Unreadable)
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| Unreadable)?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or(Unreadable)?;
    if !status_line.starts_with("HTTP/1.") {
        return Err(Unreadable);
    }
    let status: u16 = status_line
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or(Unreadable)?;
    let mut len = None;
    let mut close = false;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(Unreadable)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            len = Some(value.parse::<usize>().map_err(|_| Unreadable)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Unreadable);
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let body = match len {
        Some(n) => n,
        None if status == 204 || status == 304 || (100..200).contains(&status) => 0,
        None => return Err(Unreadable),
    };
    let total = end + 4 + body;
    Ok((buf.len() >= total).then_some(Head {
        status,
        total,
        close,
    }))
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        ((x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as usize) % n
    }
}

struct Run<'a> {
    load: &'a Load<'a>,
    poll: Poll,
    conns: Vec<Conn>,
    rng: Rng,
    out: Outcome,
    stopping: bool,
    last_answer: Option<Instant>,
}

/// Runs the load; returns when the measured time is over and the answers still in
/// flight are in (or the drain limit ran out).
pub fn run(load: &Load<'_>) -> io::Result<Outcome> {
    assert!(!load.requests.is_empty() && load.conns > 0);
    let slot = load.slot.max(Duration::from_millis(10));
    let started = Instant::now();
    let warmup_slots = (load.warmup.as_nanos() / slot.as_nanos()) as usize;
    let measured_slots = ((load.duration.as_nanos() / slot.as_nanos()) as usize).max(1);
    let end = started + slot * (warmup_slots + measured_slots) as u32;
    let total_slots =
        warmup_slots + measured_slots + (load.drain.as_nanos() / slot.as_nanos()) as usize + 2;
    let mut r = Run {
        load,
        poll: Poll::new()?,
        conns: (0..load.conns)
            .map(|_| Conn {
                stream: None,
                state: State::Down,
                url: 0,
                off: 0,
                t0: started,
                buf: Vec::with_capacity(4096),
                retry_at: started,
            })
            .collect(),
        rng: Rng(load.seed | 1),
        out: Outcome {
            sent: vec![0; load.requests.len()],
            answered: vec![0; load.requests.len()],
            slots: vec![Slot::default(); total_slots],
            slot,
            warmup_slots,
            measured_slots,
            errors: Errors::default(),
            longest_stall: Duration::ZERO,
            started,
        },
        stopping: false,
        last_answer: None,
    };
    for i in 0..load.conns {
        r.open(i);
    }
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut drain_deadline = None;
    loop {
        match r.poll.poll(&mut events, Some(POLL_EVERY)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            let i = ev.token().0;
            r.on_event(
                i,
                ev.is_writable(),
                ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                &mut scratch,
            );
        }
        let now = Instant::now();
        if !r.stopping && now >= end {
            r.stopping = true;
            drain_deadline = Some(now + load.drain);
            for i in 0..r.conns.len() {
                if !matches!(r.conns[i].state, State::Writing | State::Reading) {
                    r.close(i);
                }
            }
        }
        if r.stopping {
            let busy = r
                .conns
                .iter()
                .filter(|c| matches!(c.state, State::Writing | State::Reading))
                .count() as u64;
            if busy == 0 {
                break;
            }
            if drain_deadline.is_some_and(|d| now >= d) {
                r.out.errors.unanswered_at_end += busy;
                break;
            }
        } else {
            for i in 0..r.conns.len() {
                if r.conns[i].state == State::Down && now >= r.conns[i].retry_at {
                    r.open(i);
                }
            }
        }
    }
    for i in 0..r.conns.len() {
        r.close(i);
    }
    Ok(r.out)
}

impl Run<'_> {
    fn open(&mut self, i: usize) {
        match TcpStream::connect(self.load.addr) {
            Ok(mut s) => {
                let _ = s.set_nodelay(true);
                if let Err(_e) = self.poll.registry().register(
                    &mut s,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    self.out.errors.connect += 1;
                    self.down(i);
                    return;
                }
                let c = &mut self.conns[i];
                c.stream = Some(s);
                c.state = State::Connecting;
                c.buf.clear();
            }
            Err(_) => {
                self.out.errors.connect += 1;
                self.down(i);
            }
        }
    }

    /// Drops the socket; reopened later unless the run is ending.
    fn down(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        c.state = if self.stopping {
            State::Done
        } else {
            State::Down
        };
        c.retry_at = Instant::now() + RECONNECT_AFTER;
    }

    fn close(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        c.state = State::Done;
    }

    fn fail(&mut self, i: usize) {
        let slot = self.out.slot_of(Instant::now());
        match self.conns[i].state {
            State::Writing | State::Reading => {
                self.out.errors.io += 1;
                if let Some(s) = self.out.slots.get_mut(slot) {
                    s.errors += 1;
                }
            }
            State::Connecting => self.out.errors.connect += 1,
            _ => {}
        }
        self.down(i);
    }

    fn on_event(&mut self, i: usize, writable: bool, readable: bool, scratch: &mut [u8]) {
        if i >= self.conns.len() || self.conns[i].stream.is_none() {
            return;
        }
        if self.conns[i].state == State::Connecting && (writable || readable) {
            let s = self.conns[i].stream.as_ref().expect("checked above");
            match s.take_error() {
                Ok(None) if s.peer_addr().is_ok() => self.start_request(i),
                Ok(None) if !readable => return, // not connected yet
                _ => return self.fail(i),
            }
        } else if writable && self.conns[i].state == State::Writing {
            self.write(i);
        }
        if readable && self.conns[i].stream.is_some() {
            self.read(i, scratch);
        }
    }

    fn start_request(&mut self, i: usize) {
        if self.stopping {
            return self.close(i);
        }
        let url = self.rng.below(self.load.requests.len());
        self.out.sent[url] += 1;
        let c = &mut self.conns[i];
        c.url = url;
        c.off = 0;
        c.t0 = Instant::now();
        c.state = State::Writing;
        self.write(i);
    }

    fn write(&mut self, i: usize) {
        let req = &self.load.requests[self.conns[i].url];
        loop {
            let c = &mut self.conns[i];
            let Some(s) = c.stream.as_mut() else { return };
            match s.write(&req[c.off..]) {
                Ok(0) => return self.fail(i),
                Ok(n) => {
                    c.off += n;
                    if c.off == req.len() {
                        c.state = State::Reading;
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.fail(i),
            }
        }
    }

    fn read(&mut self, i: usize, scratch: &mut [u8]) {
        loop {
            let c = &mut self.conns[i];
            let Some(s) = c.stream.as_mut() else { return };
            match s.read(scratch) {
                Ok(0) => return self.fail(i),
                Ok(n) => {
                    c.buf.extend_from_slice(&scratch[..n]);
                    // A short read took everything there was. Linux signals an
                    // edge for every arrival, so more data later wakes us again:
                    // no extra read() just to see EAGAIN (wrk does not pay it either).
                    if n < scratch.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.fail(i),
            }
        }
        if self.conns[i].buf.is_empty() {
            return;
        }
        if self.conns[i].state != State::Reading {
            // Bytes nobody asked for.
            self.out.errors.protocol += 1;
            return self.fail(i);
        }
        match parse_response(&self.conns[i].buf) {
            Ok(None) => {}
            Ok(Some(head)) => self.answered(i, head),
            Err(Unreadable) => {
                self.out.errors.protocol += 1;
                self.fail(i);
            }
        }
    }

    fn answered(&mut self, i: usize, head: Head) {
        let now = Instant::now();
        let c = &mut self.conns[i];
        c.buf.drain(..head.total);
        let url = c.url;
        let us = now.duration_since(c.t0).as_micros() as u64;
        let extra = !c.buf.is_empty();
        let slot = self.out.slot_of(now);
        if head.status == self.load.expect_status {
            self.out.answered[url] += 1;
            if let Some(s) = self.out.slots.get_mut(slot) {
                s.hist.record(us);
            }
            if let Some(last) = self.last_answer {
                self.out.longest_stall = self.out.longest_stall.max(now - last);
            }
            self.last_answer = Some(now);
        } else {
            self.out.errors.status += 1;
            if let Some(s) = self.out.slots.get_mut(slot) {
                s.errors += 1;
            }
        }
        if extra {
            self.out.errors.protocol += 1;
            self.conns[i].state = State::Down;
            return self.down(i);
        }
        if head.close {
            self.conns[i].state = State::Down;
            self.down(i);
            if !self.stopping {
                self.open(i);
            }
            return;
        }
        self.start_request(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_complete_and_partial_responses() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-type: image/gif\r\ncontent-length: 3\r\n\r\nGIF";
        assert_eq!(
            parse_response(r),
            Ok(Some(Head {
                status: 200,
                total: r.len(),
                close: false
            }))
        );
        assert_eq!(parse_response(&r[..r.len() - 1]), Ok(None));
        assert_eq!(parse_response(&r[..10]), Ok(None));
        let redirect = b"HTTP/1.1 302 Found\r\nLocation: https://x/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        assert_eq!(
            parse_response(redirect),
            Ok(Some(Head {
                status: 302,
                total: redirect.len(),
                close: true
            }))
        );
    }

    #[test]
    fn refuses_what_it_cannot_count() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_response(b"SSH-2.0-x\r\n\r\n").is_err());
    }

    #[test]
    fn picks_spread_over_every_url() {
        let mut rng = Rng(42);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[rng.below(10)] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }
}
