//! `mailbeacon migrate --from embedded --to redis` (and back): copies every kind
//! of durable state from one store into the other, then verifies every kind's
//! count.
//!
//! Copied: the key ring (first: links already sent keep verifying, and the
//! sealed values and keyed hashes below keep their meaning), the organization
//! settings, users and their token hashes, live emails (with their delivery,
//! schedule and reminder state, which live in the record) and their events, and
//! through `store::dump` (records as the backend keeps them, sealed values copied
//! as they are, not re-sealed: both stores use the same key ring): contact
//! preferences (do-not-follow), erased recipients (the erase ledger: their events
//! are gone and new ones stay dropped), activities (tracked emails, with their
//! Message-ID index), the audit log (with its sequence numbers), per-user
//! settings, connected mailboxes (sealed credentials as they are), Entra links,
//! webhooks (sealed secrets, health, delivery log), action-card marks (dismissed,
//! snoozed), reply facts, first-open/click marks, and the jobs of the durable
//! queues (`outbox`, `outbox_src`, `timers`, `webhooks`; due time, attempts and
//! payload kept, leases dropped, so a job leased at the source is due at once).
//!
//! Not copied, on purpose: the real-time feed (a 24 h replay buffer for live
//! streams; clients resume from its end), node-number counters and leases and
//! the shard logs' consumer groups (per process; recreated at start), the audit
//! sequence counter and every index (rebuilt from the records they index), the
//! embedded journal and its applied mark (its events are copied as events), the
//! Redis spool (local to a process), and whatever retention already ended
//! (expired emails, activities and card marks).
//!
//! Every write is idempotent (users by email, emails by id, events by their
//! sequence numbers, the other records by their ids or keys), so an interrupted
//! run is resumed by running it again; an email whose events are all there
//! already is skipped. At the end the counts are compared, one line per kind
//! (`contacts 3 → 3`: records at the source, and how many of them the
//! destination holds), and any difference fails the command naming the kind.
//!
//! Run it with the servers stopped: the embedded store allows one process at a
//! time, and events recorded during the copy could be missed.

use crate::config::{Config, StoreKind};
use crate::ids::now_ms;
use crate::keyring;
use crate::store::dump::{Item, Kind};
use crate::store::{self, Store, StoreError};

/// Runs the migration; prints progress and the verified counts.
pub async fn run(config: &Config, from: StoreKind, to: StoreKind) -> Result<(), String> {
    if from == to {
        return Err("--from and --to name the same store".into());
    }
    let e = |e: StoreError| e.to_string();
    let (embedded, redis, spool_dir) = store::open_for_migration(config, from).await?;
    let (src, dst) = match from {
        StoreKind::Embedded => (&embedded, &redis),
        StoreKind::Redis => (&redis, &embedded),
    };
    let result = copy(src, dst).await;
    let closed = (embedded.close().await, redis.close().await);
    let _ = std::fs::remove_dir_all(&spool_dir);
    let summary = result?;
    closed.0.map_err(e)?;
    closed.1.map_err(e)?;
    println!("{summary}");
    Ok(())
}

async fn copy(src: &Store, dst: &Store) -> Result<String, String> {
    let e = |e: StoreError| e.to_string();
    // The key ring first: without it, links already sent would stop verifying.
    copy_keyring(src, dst).await?;
    if let Some(s) = src.settings().await.map_err(e)? {
        dst.put_settings(s).await.map_err(e)?;
    }
    let users = src.users_with_tokens().await.map_err(e)?;
    for (user, hashes) in &users {
        let Some(first) = hashes.first() else {
            continue;
        };
        match dst.create_user(user.clone(), *first).await {
            Ok(()) | Err(StoreError::Conflict(_)) => {}
            Err(err) => return Err(err.to_string()),
        }
        for h in hashes {
            dst.add_token(user.id, *h).await.map_err(e)?;
        }
    }
    let now = now_ms();
    let (mut emails, mut events, mut skipped, mut expired) = (0u64, 0u64, 0u64, 0u64);
    let mut before = None;
    loop {
        let page = src.list_emails(None, before, 200).await.map_err(e)?;
        let Some(last) = page.last() else { break };
        before = Some((last.created_ms, last.id));
        for rec in page {
            if rec.expires_ms <= now {
                expired += 1;
                continue;
            }
            let evs = src.events_for(rec.id).await.map_err(e)?;
            let n = evs.len() as u64;
            let done = dst.get_email(rec.id).await.map_err(e)?.is_some()
                && dst.events_for(rec.id).await.map_err(e)?.len() as u64 == n;
            if done {
                skipped += 1;
            } else {
                let id = rec.id;
                dst.put_email(rec).await.map_err(e)?;
                dst.import_events(id, evs).await.map_err(e)?;
            }
            emails += 1;
            events += n;
            if emails % 1000 == 0 {
                eprintln!("migrate: {emails} emails copied");
            }
        }
    }
    eprintln!("migrate: {emails} emails and {events} events copied");
    let mut copied = Vec::new();
    for kind in Kind::ALL {
        let items = src.export(kind, now).await.map_err(e)?;
        eprintln!("migrate: copying {} {}", items.len(), kind.name());
        let keys: Vec<String> = items.iter().map(Item::key).collect();
        dst.import(items, now).await.map_err(e)?;
        copied.push((kind, keys));
    }
    let mut lines = verify(src, dst, users.len() as u64, now).await?;
    for (kind, keys) in copied {
        let there: std::collections::HashSet<String> = dst
            .export(kind, now)
            .await
            .map_err(e)?
            .iter()
            .map(Item::key)
            .collect();
        let found = keys.iter().filter(|k| there.contains(*k)).count();
        lines.push(format!("{} {} → {found}", kind.name(), keys.len()));
        if found != keys.len() {
            return Err(format!(
                "{}\nverification failed: {}: {} in the source, {found} of them in the destination",
                lines.join("\n"),
                kind.name(),
                keys.len()
            ));
        }
    }
    Ok(format!(
        "{}\nmigrated {} users, {emails} emails ({skipped} already there), {events} events; {expired} expired emails not copied; counts verified",
        lines.join("\n"),
        users.len()
    ))
}

/// Compares users, live emails and each email's events between the stores;
/// returns the lines for users, emails and events.
async fn verify(src: &Store, dst: &Store, users: u64, now: u64) -> Result<Vec<String>, String> {
    let e = |e: StoreError| e.to_string();
    let dst_users = dst.users_with_tokens().await.map_err(e)?.len() as u64;
    if dst_users < users {
        return Err(format!(
            "verification failed: {users} users in the source, {dst_users} in the destination"
        ));
    }
    let mut before = None;
    let (mut checked, mut events) = (0u64, 0usize);
    loop {
        let page = src.list_emails(None, before, 200).await.map_err(e)?;
        let Some(last) = page.last() else { break };
        before = Some((last.created_ms, last.id));
        for rec in page.into_iter().filter(|r| r.expires_ms > now) {
            let a = src.events_for(rec.id).await.map_err(e)?.len();
            if dst.get_email(rec.id).await.map_err(e)?.is_none() {
                return Err(format!(
                    "verification failed: email {:016x} is missing",
                    rec.id
                ));
            }
            let b = dst.events_for(rec.id).await.map_err(e)?.len();
            if a != b {
                return Err(format!(
                    "verification failed: email {:016x} has {a} events in the source, {b} in the destination",
                    rec.id
                ));
            }
            checked += 1;
            events += b;
        }
    }
    eprintln!("migrate: verified {checked} emails and {users} users");
    Ok(vec![
        format!("users {users} → {dst_users}"),
        format!("emails {checked} → {checked}"),
        format!("events {events} → {events}"),
    ])
}

/// Copies the key ring from `src` to `dst` (each keeps it where it keeps it:
/// the data directory's file, or Redis). A destination that already holds a
/// different ring is refused: links signed with either would break.
async fn copy_keyring(src: &Store, dst: &Store) -> Result<(), String> {
    let e = |e: StoreError| e.to_string();
    let Some(json) = src.keyring().await.map_err(e)? else {
        return Ok(()); // no ring at the source: nothing was ever signed there
    };
    keyring::from_json(&json)?;
    match dst.keyring().await.map_err(e)? {
        None => {
            if !dst.put_keyring(None, &json).await.map_err(e)? {
                return Err("the destination's key ring changed during the migration".into());
            }
        }
        Some(existing) if existing == json => {}
        Some(_) => {
            return Err("the destination already holds a different key ring; refusing to replace it (links signed with either would break)".into())
        }
    }
    Ok(())
}
