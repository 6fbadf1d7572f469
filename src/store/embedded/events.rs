//! The embedded store's hot path: the event journal (group commit: one `write`
//! and one `fdatasync` per batch), the indexer thread that applies journalled
//! batches to redb in packs and makes them durable about once a second, and the
//! event reads, erasure and import on top of the `events` table. See the parent
//! module for why events take this road and records do not.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableTable, WriteTransaction};
use tokio::sync::watch;

use super::segments::{Row, Segments};
use super::{read, Embedded, APPLIED_SEQ, EMAILS, ERASED, EVENTS, META};
use crate::model::{Compact, CompactEvents, Event};
use crate::store::{journal, Result, StoreError};

/// How often applied events are made durable in redb (and the journal emptied).
const DURABLE_EVERY: Duration = Duration::from_secs(1);
/// Under sustained load, the indexer gathers batches for up to this long into one
/// redb transaction. Copy-on-write page work (page copies, checksums) is paid per
/// transaction for every leaf it touches, so one transaction per group commit cost
/// more than everything else per hit; one per interval shares it among thousands of
/// events. Reports wait for the indexer (`wait_indexed`), so this is also about how
/// far behind a report can be. An idle indexer applies the first batch at once.
/// With hits spread over many emails a transaction touches about one leaf per
/// email, so a longer interval shares each leaf among more hits: 200 ms instead
/// of 50 took the server's CPU per pixel on a 1,000-email mix from 92 to 74 µs.
/// Its page writes also slow the journal's syncs (they queue behind redb's
/// flush). Since events are packed per email as they arrive (`Gathered`), a
/// longer interval no longer holds every row: 400 ms. A reader that finds the
/// indexer behind asks it to apply at once (`IndexMsg::Flush`).
const INDEX_EVERY: Duration = Duration::from_millis(400);
/// How long a reader waits for the indexer before reading what is there.
const INDEX_WAIT: Duration = Duration::from_secs(5);
/// Most events one indexer transaction takes (past this it is applied at once).
const GATHER_MAX: usize = 50_000;
pub(super) enum IndexMsg {
    /// The shared set (`Gathered`) was empty and now holds events.
    Wake,
    /// A reader waits, or the set is full: apply what is gathered now instead
    /// of at the interval.
    Flush,
    Shutdown(mpsc::Sender<()>),
}

impl Embedded {
    /// Waits until every event committed so far is visible to readers.
    async fn wait_indexed(&self) {
        let target = self.committed.load(Ordering::Acquire);
        let mut rx = self.applied.clone();
        if *rx.borrow() < target {
            // Under load the indexer gathers for `INDEX_EVERY`: ask it not to
            // keep this reader waiting for the rest of the interval.
            if let Ok(guard) = self.indexer.lock() {
                if let Some((tx, _)) = guard.as_ref() {
                    let _ = tx.send(IndexMsg::Flush);
                }
            }
        }
        let waited = tokio::time::timeout(INDEX_WAIT, rx.wait_for(|a| *a >= target)).await;
        if waited.is_err() {
            tracing::warn!(target, "indexer is behind; reading what is indexed");
        }
    }

    /// Deletes one recipient's events of one email and marks the recipient
    /// erased (new events are dropped), once every event committed so far is
    /// indexed. Returns how many events were deleted.
    pub async fn erase_recipient_events(
        self: &Arc<Self>,
        email: u64,
        recipient: u32,
    ) -> Result<u64> {
        self.wait_indexed().await;
        self.run(move |s| s.erase_indexed_events(email, recipient))
            .await
    }

    fn erase_indexed_events(&self, email: u64, recipient: u32) -> Result<u64> {
        let tx = self.db().begin_write()?;
        let mut n = 0;
        {
            tx.open_table(ERASED)?.insert((email, recipient), ())?;
            let mut events = tx.open_table(EVENTS)?;
            // Rows holding any of the recipient's events: removed, or rewritten
            // with the other recipients' events only.
            let mut changed: Vec<((u64, u64), Vec<Event>)> = Vec::new();
            for row in events.range((email, 0)..=(email, u64::MAX))? {
                let (k, v) = row?;
                let all = decode_events(v.value())?;
                let before = all.len();
                let kept: Vec<Event> = all
                    .into_iter()
                    .filter(|e| e.recipient != recipient)
                    .collect();
                if kept.len() < before {
                    n += (before - kept.len()) as u64;
                    changed.push((k.value(), kept));
                }
            }
            for (k, kept) in changed {
                if kept.is_empty() {
                    events.remove(k)?;
                } else {
                    events.insert(k, serde_json::to_vec(&CompactEvents(&kept))?.as_slice())?;
                }
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// Appends a batch to the journal with one `write` and one `fdatasync`. An
    /// empty batch (the recorder's barriers only) writes nothing but still waits
    /// for a sync of the journal, so it costs about what a batch of hits costs.
    pub fn commit_events(&self, mut events: Vec<Event>) -> Result<()> {
        journal::hold::pass();
        // The lock is held across the write and the sync so sequence numbers reach
        // the journal and the indexer in order.
        let mut j = self
            .journal
            .lock()
            .map_err(|_| StoreError::Backend("journal lock poisoned".into()))?;
        if events.is_empty() {
            j.sync()?;
            return Ok(());
        }
        // Each event's JSON is written straight into its journal record, and
        // the indexer's packs copy it from there: no allocation per event.
        let mut buf = Vec::with_capacity(events.len() * 400);
        let mut items = Vec::with_capacity(events.len());
        let mut seq = j.last_seq;
        for e in &mut events {
            seq += 1;
            e.seq = seq;
            let start = journal::begin_frame(&mut buf);
            serde_json::to_writer(&mut buf, &Compact(e))?;
            let body = journal::end_frame(&mut buf, start);
            items.push((e.email, e.recipient, seq, body));
        }
        drop(events);
        j.append(&buf, seq)?;
        // Journalled: hand the events to the indexer. It is woken only when the
        // set it takes goes from empty to not (and when it grows past one
        // transaction's worth), not for every batch: a wake-up per group
        // commit was a thread switch per commit on a two-core box.
        let wake = match self.gathered.lock() {
            Ok(mut g) => {
                let before = g.len();
                for (email, recipient, seq, body) in items {
                    g.add_one(email, recipient, seq, &buf[body]);
                }
                if before == 0 {
                    Some(IndexMsg::Wake)
                } else if before < GATHER_MAX && g.len() >= GATHER_MAX {
                    Some(IndexMsg::Flush)
                } else {
                    None
                }
            }
            Err(_) => return Err(StoreError::Backend("indexer set poisoned".into())),
        };
        // After the events are in the set: a reader waiting for `committed`
        // then never waits for events the indexer cannot see yet.
        self.committed.store(seq, Ordering::Release);
        if let Some(msg) = wake {
            if let Ok(guard) = self.indexer.lock() {
                if let Some((tx, _)) = guard.as_ref() {
                    let _ = tx.send(msg);
                }
            }
        }
        Ok(())
    }

    /// Every event of one email, oldest first, including every event committed
    /// before this call (it waits for the indexer).
    pub async fn events_for(self: &Arc<Self>, email: u64) -> Result<Vec<Event>> {
        self.wait_indexed().await;
        self.run(move |s| s.indexed_events(email)).await
    }

    /// Every event of one email (as `events_for`), handed to `f` in chunks of
    /// about `CHUNK_EVENTS`: read on a blocking thread, one chunk ahead.
    pub async fn events_chunked(
        self: &Arc<Self>,
        email: u64,
        f: &mut (dyn FnMut(Vec<Event>) + Send),
    ) -> Result<()> {
        const CHUNK_EVENTS: usize = 4096;
        self.wait_indexed().await;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Event>>(1);
        let me = self.clone();
        let reader = tokio::task::spawn_blocking(move || -> Result<()> {
            let mut chunk = Vec::new();
            me.each_indexed(email, &mut |events| {
                chunk.extend(events);
                // A closed receiver (the caller gone) ends the read.
                chunk.len() < CHUNK_EVENTS || tx.blocking_send(std::mem::take(&mut chunk)).is_ok()
            })?;
            if !chunk.is_empty() {
                let _ = tx.blocking_send(chunk);
            }
            Ok(())
        });
        while let Some(chunk) = rx.recv().await {
            f(chunk);
        }
        reader
            .await
            .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }

    fn indexed_events(&self, email: u64) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        self.each_indexed(email, &mut |events| {
            out.extend(events);
            true
        })?;
        Ok(out)
    }

    /// Hands each indexed row's events of one email to `f`, in order, while
    /// `f` answers true.
    fn each_indexed(&self, email: u64, f: &mut dyn FnMut(Vec<Event>) -> bool) -> Result<()> {
        let tx = self.db().begin_read()?;
        let t = tx.open_table(EVENTS)?;
        for row in t.range((email, 0)..=(email, u64::MAX))? {
            let (_, v) = row?;
            if !f(decode_events(v.value())?) {
                break;
            }
        }
        Ok(())
    }

    /// Writes events that already have their sequence numbers (for `migrate`,
    /// which passes all of an email's events at once), durably; later events
    /// get higher numbers. The emails' rows are replaced, not added to, so
    /// importing again (a resumed migration) never counts an event twice,
    /// however the events end up grouped in packs.
    pub fn import_events(&self, events: &[Event]) -> Result<()> {
        let rows = events.iter().map(Row::of).collect::<Result<Vec<_>>>()?;
        let tx = self.db().begin_write()?;
        {
            let mut t = tx.open_table(EVENTS)?;
            let mut emails: Vec<u64> = rows.iter().map(|r| r.email).collect();
            emails.sort_unstable();
            emails.dedup();
            for email in emails {
                t.retain_in((email, 0)..=(email, u64::MAX), |_, _| false)?;
            }
        }
        let max = apply(&tx, &rows)?;
        let applied = {
            let meta = tx.open_table(META)?;
            let got = meta.get(APPLIED_SEQ)?;
            got.and_then(|g| <[u8; 8]>::try_from(g.value()).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0)
        };
        if max > applied {
            tx.open_table(META)?
                .insert(APPLIED_SEQ, max.to_be_bytes().as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// Events gathered for one indexer transaction, packed per email as they
/// arrive, so the rows themselves (one allocation each) are let go at once and
/// the JSON is held once, not in the rows and again in the packs.
#[derive(Default)]
pub(super) struct Gathered {
    packs: std::collections::BTreeMap<u64, Pack>,
    events: usize,
    max_seq: u64,
}

/// One email's gathered events: `bytes` is always a JSON array of them, in the
/// order they came; `items` is each one's (seq, recipient, end of its JSON in
/// `bytes`), so that an erased recipient's events can be left out.
struct Pack {
    bytes: Vec<u8>,
    items: Vec<(u64, u32, u32)>,
}

impl Gathered {
    pub(super) fn add(&mut self, rows: &[Row]) {
        for r in rows {
            self.add_one(r.email, r.recipient, r.seq, &r.json);
        }
    }

    /// Adds one event, given its JSON row.
    pub(super) fn add_one(&mut self, email: u64, recipient: u32, seq: u64, json: &[u8]) {
        self.events += 1;
        self.max_seq = self.max_seq.max(seq);
        let pack = self.packs.entry(email).or_insert_with(|| Pack {
            bytes: Vec::with_capacity(json.len() * 4 + 2),
            items: Vec::new(),
        });
        match pack.bytes.last_mut() {
            Some(close) => *close = b',',
            None => pack.bytes.push(b'['),
        }
        pack.bytes.extend_from_slice(json);
        pack.items.push((seq, recipient, pack.bytes.len() as u32));
        pack.bytes.push(b']');
    }

    pub(super) fn len(&self) -> usize {
        self.events
    }

    pub(super) fn is_empty(&self) -> bool {
        self.events == 0
    }
}

/// Inserts events of known emails; returns the highest seq seen. Events of emails
/// that no longer exist (expired) or of erased recipients are dropped: there is
/// nothing left to attach them to, and keeping them would undo the erase or
/// outlive retention.
pub(super) fn apply(tx: &WriteTransaction, rows: &[Row]) -> Result<u64> {
    let mut g = Gathered::default();
    g.add(rows);
    apply_gathered(tx, &g)
}

/// `apply` for events already gathered: one packed row per email, keyed by the
/// email and its first kept event's seq. Many hits on fewer emails: each email
/// and recipient is looked up once.
pub(super) fn apply_gathered(tx: &WriteTransaction, g: &Gathered) -> Result<u64> {
    let emails = tx.open_table(EMAILS)?;
    let erased = tx.open_table(ERASED)?;
    let mut t = tx.open_table(EVENTS)?;
    let mut keep: std::collections::HashMap<(u64, u32), bool> = Default::default();
    for (&email, pack) in &g.packs {
        if emails.get(email)?.is_none() {
            continue;
        }
        let mut wanted = Vec::with_capacity(pack.items.len());
        for &(_, recipient, _) in &pack.items {
            let w = match keep.get(&(email, recipient)) {
                Some(&w) => w,
                None => {
                    let w = erased.get((email, recipient))?.is_none();
                    keep.insert((email, recipient), w);
                    w
                }
            };
            wanted.push(w);
        }
        if wanted.iter().all(|&w| w) {
            t.insert((email, pack.items[0].0), pack.bytes.as_slice())?;
            continue;
        }
        // Some recipient was erased: the others' events only.
        let mut bytes = Vec::with_capacity(pack.bytes.len());
        let mut first = None;
        let mut start = 1;
        for (&(seq, _, end), &w) in pack.items.iter().zip(&wanted) {
            if w {
                bytes.push(if first.is_none() { b'[' } else { b',' });
                bytes.extend_from_slice(&pack.bytes[start..end as usize]);
                first.get_or_insert(seq);
            }
            start = end as usize + 1;
        }
        if let Some(first) = first {
            bytes.push(b']');
            t.insert((email, first), bytes.as_slice())?;
        }
    }
    Ok(g.max_seq)
}

/// One EVENTS row: a pack (JSON array), or a single JSON event (rows written
/// before packing).
fn decode_events(v: &[u8]) -> Result<Vec<Event>> {
    if v.first() == Some(&b'[') {
        Ok(serde_json::from_slice(v)?)
    } else {
        Ok(vec![serde_json::from_slice(v)?])
    }
}

pub(super) fn indexer(
    db: Arc<RwLock<Database>>,
    journal: Arc<Mutex<Segments>>,
    gathered: Arc<Mutex<Gathered>>,
    rx: mpsc::Receiver<IndexMsg>,
    applied_tx: watch::Sender<u64>,
    mut applied: u64,
) {
    let mut durable = applied;
    let mut last_durable = Instant::now();
    let make_durable = |applied: u64| -> Result<()> {
        let tx = read(&db).begin_write()?;
        tx.open_table(META)?
            .insert(APPLIED_SEQ, applied.to_be_bytes().as_slice())?;
        tx.commit()?;
        // Every journalled event up to `applied` is now durable in redb: the
        // journal may reuse what holds them.
        if let Ok(mut j) = journal.lock() {
            j.mark_durable(applied)?;
        }
        Ok(())
    };
    // "Long ago", so the first batch is applied at once (`checked_sub` only fails
    // within `INDEX_EVERY` of boot, when `now` does just as well).
    let mut last_apply = Instant::now()
        .checked_sub(INDEX_EVERY)
        .unwrap_or_else(Instant::now);
    loop {
        let msg = rx.recv_timeout(Duration::from_millis(200));
        let mut shutdown = None;
        match msg {
            Ok(IndexMsg::Wake) => {
                // Let what arrives until INDEX_EVERY after the previous
                // transaction join this one (unless a reader asks for it
                // sooner, or the set fills up).
                let until = last_apply + INDEX_EVERY;
                loop {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match rx.recv_timeout(left) {
                        Ok(IndexMsg::Wake) => {}
                        Ok(IndexMsg::Flush) => break,
                        Ok(IndexMsg::Shutdown(ack)) => {
                            shutdown = Some(ack);
                            break;
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            shutdown = Some(mpsc::channel().0);
                            break;
                        }
                    }
                }
            }
            Ok(IndexMsg::Shutdown(ack)) => shutdown = Some(ack),
            Ok(IndexMsg::Flush) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => shutdown = Some(mpsc::channel().0),
        }
        // Whatever is gathered now, including events whose Wake is still queued
        // (that Wake then finds an empty set, or the next ones).
        let batch = match gathered.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        if !batch.is_empty() {
            last_apply = Instant::now();
            // Retry until it works: the events are safe in the journal meanwhile,
            // and giving up would let a later durable mark skip them.
            let mut delay = Duration::from_millis(50);
            loop {
                let res = (|| -> Result<u64> {
                    let mut tx = read(&db).begin_write()?;
                    tx.set_durability(Durability::None);
                    let max = apply_gathered(&tx, &batch)?;
                    // The applied mark goes with the events: a durable commit
                    // made by anything else (the job queues, real time) makes
                    // this transaction durable too, and replay must then start
                    // after these events, or it would apply them twice.
                    tx.open_table(META)?
                        .insert(APPLIED_SEQ, applied.max(max).to_be_bytes().as_slice())?;
                    tx.commit()?;
                    Ok(max)
                })();
                match res {
                    Ok(max) => {
                        applied = applied.max(max);
                        let _ = applied_tx.send(applied);
                        break;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "indexing events failed; retrying");
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        let due = last_durable.elapsed() >= DURABLE_EVERY || shutdown.is_some();
        if applied > durable && due {
            match make_durable(applied) {
                Ok(()) => durable = applied,
                Err(e) => tracing::error!(error = %e, "making indexed events durable failed"),
            }
            last_durable = Instant::now();
        }
        if let Some(ack) = shutdown {
            let _ = ack.send(());
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An open of `email` by `recipient`, numbered `seq`.
    fn event(seq: u64, email: u64, recipient: u32) -> Event {
        Event {
            seq,
            at_ms: 1,
            kind: crate::model::EventKind::Open,
            email,
            recipient,
            link: None,
            method: "GET".into(),
            ua: String::new(),
            ip: "ip".into(),
            since_prepared_s: 0,
            machine_net: None,
        }
    }

    /// A fresh store in a temporary directory named after `name`, holding
    /// one email that expires in an hour: the directory, the store, its id.
    fn store_with_email(name: &str) -> (std::path::PathBuf, Arc<Embedded>, u64) {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Embedded::open(&dir).unwrap();
        let mut email = crate::reports::tests::rec(1);
        email.expires_ms = crate::ids::now_ms() + 3_600_000;
        store.put_email(&email).unwrap();
        (dir, store, email.id)
    }

    /// The committer wakes the indexer only when the shared set goes from
    /// empty to not: the commits that join the set meanwhile (no wake-up of
    /// their own) must still be applied, with no reader asking for them, and
    /// a commit after the indexer took the set must wake it again. (A lost
    /// wake-up would only delay events to the indexer's 200 ms poll, so this
    /// checks what readers see: every event applied once, in order.)
    #[test]
    fn the_indexer_applies_every_commit_without_a_reader_asking() {
        let (dir, store, id) = store_with_email("mb-indexer-wake");
        let event = |recipient: u32| event(0, id, recipient);
        let applied_to = |seq: u64| {
            let mut rx = store.applied.clone();
            let deadline = Instant::now() + Duration::from_secs(10);
            while *rx.borrow_and_update() < seq {
                assert!(
                    Instant::now() < deadline,
                    "the indexer never applied seq {seq}"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        // Three commits in a row: the first wakes the indexer, the others join.
        for r in 0..3 {
            store.commit_events(vec![event(r), event(r + 10)]).unwrap();
        }
        applied_to(6);
        // The set was taken: the next commit must wake the indexer again.
        store.commit_events(vec![event(20)]).unwrap();
        applied_to(7);
        let seqs: Vec<u64> = store
            .indexed_events(id)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(
            seqs,
            (1..=7).collect::<Vec<_>>(),
            "every event once, oldest first"
        );
        store.close().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Commits run on the commit thread in the order they were queued; a job
    /// that panics answers its caller with an error and the thread goes on;
    /// after `close`, a commit is refused with an error instead of waiting.
    #[tokio::test(flavor = "current_thread")]
    async fn the_commit_thread_runs_commits_in_turn_survives_a_panic_and_stops_at_close() {
        let (dir, store, id) = store_with_email("mb-commit-thread");
        let commits: Vec<_> = (0..20u32)
            .map(|r| store.commit_on_thread(move |s| s.commit_events(vec![event(0, id, r)])))
            .collect();
        for c in futures_util::future::join_all(commits).await {
            c.expect("committed");
        }
        let panicked = store
            .commit_on_thread(|_| -> Result<()> { panic!("a job that panics") })
            .await;
        assert!(panicked.is_err(), "a panicking job is an error, not a hang");
        store
            .commit_on_thread(move |s| s.commit_events(vec![event(0, id, 99)]))
            .await
            .expect("the thread goes on after a panic");
        store.wait_indexed().await;
        let recipients: Vec<u32> = store
            .indexed_events(id)
            .unwrap()
            .iter()
            .map(|e| e.recipient)
            .collect();
        let expected: Vec<u32> = (0..20).chain([99]).collect();
        assert_eq!(recipients, expected, "in the order queued, each once");
        store.close().unwrap();
        let after = store
            .commit_on_thread(move |s| s.commit_events(vec![event(0, id, 100)]))
            .await;
        assert!(after.is_err(), "a closed store refuses commits");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn gathered_packs_leave_out_an_erased_recipients_events() {
        let path = std::env::temp_dir().join(format!("mb-gathered-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        for email in [7u64, 8] {
            tx.open_table(EMAILS)
                .unwrap()
                .insert(email, b"{}".as_slice())
                .unwrap();
        }
        tx.open_table(ERASED)
            .unwrap()
            .insert((7u64, 1u32), ())
            .unwrap();
        // Email 7: recipient 1 is erased, and it has the first event. Email 8:
        // nobody erased. Email 9: unknown. Two batches, as the indexer gets them.
        let first: Vec<Row> = [event(10, 7, 1), event(11, 8, 1), event(12, 7, 0)]
            .iter()
            .map(|e| Row::of(e).unwrap())
            .collect();
        let second: Vec<Row> = [
            event(13, 7, 1),
            event(14, 9, 0),
            event(15, 7, 0),
            event(16, 8, 0),
        ]
        .iter()
        .map(|e| Row::of(e).unwrap())
        .collect();
        let mut g = Gathered::default();
        g.add(&first);
        g.add(&second);
        assert_eq!(g.len(), 7);
        assert_eq!(apply_gathered(&tx, &g).unwrap(), 16);
        let t = tx.open_table(EVENTS).unwrap();
        let rows: Vec<((u64, u64), Vec<u64>)> = t
            .iter()
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                let seqs = decode_events(v.value())
                    .unwrap()
                    .iter()
                    .map(|e| e.seq)
                    .collect();
                (k.value(), seqs)
            })
            .collect();
        assert_eq!(
            rows,
            vec![((7, 12), vec![12, 15]), ((8, 11), vec![11, 16])],
            "one pack per known email, keyed by its first kept event"
        );
        drop(t);
        drop(tx);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn rows_are_packs_or_single_events_of_older_stores() {
        let e = |seq: u64| Event {
            seq,
            at_ms: 1,
            kind: crate::model::EventKind::Click,
            email: 7,
            recipient: 2,
            link: Some(1),
            method: "GET".into(),
            ua: "ua".into(),
            ip: "ip".into(),
            since_prepared_s: 5,
            machine_net: None,
        };
        let single = serde_json::to_vec(&e(3)).unwrap();
        assert_eq!(decode_events(&single).unwrap(), vec![e(3)]);
        let mut pack = b"[".to_vec();
        pack.extend_from_slice(&serde_json::to_vec(&e(4)).unwrap());
        pack.push(b',');
        pack.extend_from_slice(&serde_json::to_vec(&e(5)).unwrap());
        pack.push(b']');
        assert_eq!(decode_events(&pack).unwrap(), vec![e(4), e(5)]);
        assert!(decode_events(b"[{").is_err());
    }
}
