//! The store contract: behaviour every backend must have, run against each backend
//! the build has: the embedded store, a single Redis node and a 3-master Redis
//! Cluster (real servers, started here on free ports). Every backend goes through
//! the same sealing `Store`.

mod support;

use std::future::Future;
use std::sync::Arc;

use std::path::PathBuf;

use mailbeacon::ids::now_ms;
use mailbeacon::keyring;
use mailbeacon::model::{
    Activity, ActivityPersonal, AuditEntry, Contact, EmailRecord, Event, EventKind, FollowEmail,
    MailboxConfig, MailboxSecret, OrgSettings, Participant, RecipientRecord, Reply, Role, User,
};
use mailbeacon::seal::Sealer;
use mailbeacon::store::addin::Inserted;
use mailbeacon::store::cards::CardState;
use mailbeacon::store::dump::{Item, Kind};
use mailbeacon::store::embedded::Embedded;
use mailbeacon::store::redis::conn::Target;
use mailbeacon::store::redis::Redis;
use mailbeacon::store::{Backend, Store, StoreError};

fn sealer() -> Sealer {
    Sealer::new(&[(1, vec![7; 32])], 1, b"lookup key").expect("sealer")
}

fn embedded(dir: &std::path::Path) -> Store {
    Store::new(
        Backend::Embedded(Embedded::open(dir).expect("open embedded store")),
        sealer(),
    )
}

fn temp_dir(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "mailbeacon-contract-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&p);
    p
}

fn email(id: u64, owner: u64, created_ms: u64, expires_ms: u64) -> EmailRecord {
    EmailRecord {
        id,
        owner,
        from: "ann@sales.test".into(),
        subject: Some("s".into()),
        message_id: None,
        created_ms,
        expires_ms,
        deliver: "return".into(),
        recipients: vec![RecipientRecord {
            address: "b@client.test".into(),
            name: None,
            field: "to".into(),
            followed: true,
            reason: None,
            delivery: None,
            erased: false,
        }],
        links: vec!["https://a.example/".into()],
        lookups: Vec::new(),
        template: None,
        send_at_ms: None,
        reminder: None,
    }
}

fn event(email: u64, at_ms: u64) -> Event {
    Event {
        seq: 0,
        at_ms,
        kind: EventKind::Open,
        email,
        recipient: 0,
        link: None,
        method: "GET".into(),
        ua: "ua".into(),
        ip: "127.0.0.0/24".into(),
        since_prepared_s: 10,
        machine_net: None,
    }
}

async fn contract<F: Future<Output = Store>>(open: impl Fn() -> F) {
    let store = open().await;
    // Users: create, conflict, lookup by token hash.
    let u = User {
        id: 7,
        email: "ann@sales.test".into(),
        role: Role::User,
        created_ms: 1,
        disabled: false,
    };
    store.create_user(u.clone(), [1; 32]).await.unwrap();
    let dup = User { id: 8, ..u.clone() };
    assert!(matches!(
        store.create_user(dup, [2; 32]).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.user_by_token_hash([1; 32]).await.unwrap(),
        Some(u.clone())
    );
    assert_eq!(store.user_by_token_hash([2; 32]).await.unwrap(), None);
    assert_eq!(store.user_count().await.unwrap(), 1);
    // Accounts: by id, listed, updated in place, tokens replaced.
    assert_eq!(store.user(7).await.unwrap(), Some(u.clone()));
    assert_eq!(store.user(9).await.unwrap(), None);
    assert_eq!(store.list_users().await.unwrap(), vec![u.clone()]);
    let off = User {
        disabled: true,
        ..u.clone()
    };
    assert!(store.update_user(off.clone()).await.unwrap());
    assert!(!store
        .update_user(User {
            id: 9,
            ..off.clone()
        })
        .await
        .unwrap());
    assert_eq!(store.user_by_token_hash([1; 32]).await.unwrap(), Some(off));
    store.add_token(7, [3; 32]).await.unwrap();
    assert!(store.replace_tokens(7, [4; 32]).await.unwrap());
    assert!(!store.replace_tokens(9, [5; 32]).await.unwrap());
    assert_eq!(store.user_by_token_hash([1; 32]).await.unwrap(), None);
    assert_eq!(store.user_by_token_hash([3; 32]).await.unwrap(), None);
    assert!(store.user_by_token_hash([4; 32]).await.unwrap().is_some());
    assert!(store.update_user(u.clone()).await.unwrap());
    store.add_token(7, [1; 32]).await.unwrap();

    // Emails: put, get, list newest first with a cursor.
    for i in 1..=5u64 {
        store
            .put_email(email(i, 7, 1000 + i, u64::MAX / 2))
            .await
            .unwrap();
    }
    store
        .put_email(email(99, 8, 5000, u64::MAX / 2))
        .await
        .unwrap();
    assert_eq!(store.get_email(3).await.unwrap().unwrap().created_ms, 1003);
    assert!(store.get_email(4242).await.unwrap().is_none());
    let page = store.list_emails(Some(7), None, 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [5, 4]);
    let next = store
        .list_emails(Some(7), Some((1004, 4)), 10)
        .await
        .unwrap();
    assert_eq!(next.iter().map(|e| e.id).collect::<Vec<_>>(), [3, 2, 1]);
    assert_eq!(store.list_emails(None, None, 100).await.unwrap().len(), 6);

    // Events: committed events are read back with distinct sequence numbers;
    // events of unknown emails are dropped.
    let batch: Vec<Event> = (0..100).map(|i| event(1 + i % 2, i)).collect();
    store.commit_events(batch).await.unwrap();
    store.commit_events(vec![event(4242, 1)]).await.unwrap();
    let one = store.events_for(1).await.unwrap();
    let two = store.events_for(2).await.unwrap();
    assert_eq!((one.len(), two.len()), (50, 50));
    let mut seqs: Vec<u64> = one.iter().chain(&two).map(|e| e.seq).collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), 100, "sequence numbers are unique");
    // Many emails at once: each its own events, in the order asked, an unknown
    // email empty.
    let many = store.events_for_many(&[2, 4242, 1]).await.unwrap();
    assert_eq!(many.len(), 3);
    assert_eq!(many[0], two);
    assert!(many[1].is_empty());
    assert_eq!(many[2], one);
    assert!(store.events_for_many(&[]).await.unwrap().is_empty());
    // In chunks: the same events, each once, also for an email with thousands
    // of events (on Redis a hash too big for one scan step), and not an erased
    // recipient's.
    let mut kept = 0;
    for i in 0..300u64 {
        let batch: Vec<Event> = (0..8u64)
            .map(|j| Event {
                recipient: ((i + j) % 3) as u32,
                ..event(3, 2000 + i * 8 + j)
            })
            .collect();
        kept += batch.iter().filter(|e| e.recipient != 2).count();
        store.commit_events(batch).await.unwrap();
    }
    store.erase_recipient_events(3, 2).await.unwrap();
    for id in [1, 3, 4242] {
        let whole = store.events_for(id).await.unwrap();
        let (mut chunks, mut largest) = (0, 0);
        let mut got: Vec<Event> = Vec::new();
        store
            .events_chunked(id, |c| {
                chunks += 1;
                largest = largest.max(c.len());
                got.extend(c)
            })
            .await
            .unwrap();
        got.sort_by_key(|e| e.seq);
        assert_eq!(got, whole, "email {id}: chunks hold exactly its events");
        assert!(chunks <= whole.len(), "no empty chunk is handed over");
        if id == 3 && store.kind() != "embedded" {
            // 2,400 events: scanned in steps, not read whole, and no step holds
            // more than about 1,000 (16 fields of at most 64 events; a hash
            // scan may hand over a few fields more than asked).
            assert!(chunks >= 2, "{} scanned in {chunks} chunk(s)", store.kind());
            assert!(
                largest <= 2048,
                "{}: a chunk of {largest} events",
                store.kind()
            );
        }
    }
    assert_eq!(store.events_for(3).await.unwrap().len(), kept);

    // Settings.
    assert_eq!(store.settings().await.unwrap(), None);
    let s = OrgSettings {
        email_engagement: false,
        auto_capture: true,
        retention_days: 30,
    };
    store.put_settings(s).await.unwrap();
    assert_eq!(store.settings().await.unwrap(), Some(s));

    // Retention: an expired email disappears with its events, others stay. (The
    // expiry is in the future so that Redis's own expiry does not act first.)
    let expires = now_ms() + 3_600_000;
    store.put_email(email(50, 7, 10, expires)).await.unwrap();
    store
        .commit_events(vec![event(50, 11), event(50, 12)])
        .await
        .unwrap();
    assert_eq!(store.events_for(50).await.unwrap().len(), 2);
    assert_eq!(store.sweep(expires - 1, 0).await.unwrap(), 0);
    assert_eq!(store.sweep(expires + 1, 0).await.unwrap(), 1);
    assert!(store.get_email(50).await.unwrap().is_none());
    assert!(store.events_for(50).await.unwrap().is_empty());
    assert!(!store
        .list_emails(Some(7), None, 100)
        .await
        .unwrap()
        .iter()
        .any(|e| e.id == 50));
    assert_eq!(store.events_for(1).await.unwrap().len(), 50);
    // A shortened retention removes emails created before the cutoff.
    store
        .put_email(email(60, 7, 100, u64::MAX / 2))
        .await
        .unwrap();
    assert_eq!(store.sweep(expires + 1, 101).await.unwrap(), 1);
    assert!(store.get_email(60).await.unwrap().is_none());

    // Replies: followed emails found by Message-ID (two emails may share one);
    // reply facts counted once per reply Message-ID, only for an email that
    // exists, and gone with the email at retention.
    let mut followed = email(70, 7, 20, expires);
    followed.message_id = Some("q1@example.test".into());
    store.put_email(followed.clone()).await.unwrap();
    let twin = EmailRecord {
        id: 71,
        owner: 8,
        expires_ms: u64::MAX / 2,
        ..followed.clone()
    };
    store.put_email(twin).await.unwrap();
    let mut found = store.emails_by_message_id("q1@example.test").await.unwrap();
    found.sort();
    assert_eq!(found, [70, 71]);
    assert!(store
        .emails_by_message_id("q2@example.test")
        .await
        .unwrap()
        .is_empty());
    assert!(
        store
            .emails_mentioning("q1@example.test")
            .await
            .unwrap()
            .is_empty(),
        "a Message-ID is not an address"
    );
    let (k1, k2) = (
        store.reply_key("r1@client.test"),
        store.reply_key("r2@client.test"),
    );
    assert_ne!(k1, k2);
    assert!(!k1.contains("r1@client.test"));
    let r = |at_ms: u64| Reply {
        recipient: 0,
        at_ms,
    };
    assert!(store.add_reply(70, &k1, r(4_000)).await.unwrap());
    assert!(!store.add_reply(70, &k1, r(4_500)).await.unwrap());
    assert!(store.add_reply(70, &k2, r(3_500)).await.unwrap());
    assert!(store.add_reply(71, &k1, r(4_000)).await.unwrap());
    assert!(!store.add_reply(4242, &k1, r(1)).await.unwrap());
    assert_eq!(store.replies_for(70).await.unwrap(), [r(3_500), r(4_000)]);
    assert_eq!(store.replies_for(71).await.unwrap(), [r(4_000)]);
    assert!(store.replies_for(4242).await.unwrap().is_empty());
    // Many at once: each email's own, oldest first, in the order asked.
    assert_eq!(
        store.replies_for_many(&[71, 4242, 70]).await.unwrap(),
        [vec![r(4_000)], vec![], vec![r(3_500), r(4_000)]]
    );
    assert!(store.replies_for_many(&[]).await.unwrap().is_empty());
    assert_eq!(store.sweep(expires + 1, 0).await.unwrap(), 1);
    assert!(store.replies_for(70).await.unwrap().is_empty());
    assert_eq!(
        store.emails_by_message_id("q1@example.test").await.unwrap(),
        [71]
    );
    assert!(!store.add_reply(70, &k1, r(5_000)).await.unwrap());
    assert_eq!(store.replies_for(71).await.unwrap().len(), 1);
    // A data-subject erase deletes one recipient's reply facts only.
    let k3 = store.reply_key("r3@client.test");
    let other = Reply {
        recipient: 1,
        at_ms: 4_100,
    };
    assert!(store.add_reply(71, &k3, other).await.unwrap());
    assert_eq!(store.erase_replies(71, 0).await.unwrap(), 1);
    assert_eq!(store.erase_replies(71, 0).await.unwrap(), 0);
    assert_eq!(store.replies_for(71).await.unwrap(), [other]);
    // The feed rewritten for an erase: the old text is gone (rewritten in
    // place, or on Redis the entry deleted), the other entries stay.
    let now = 1_000_000_000_000;
    store.feed_append("keep-me", now).await.unwrap();
    store.feed_append("names-dana", now).await.unwrap();
    let changed = store
        .feed_rewrite(|t| t.contains("dana").then(|| "named-no-one".to_string()))
        .await
        .unwrap();
    assert_eq!(changed, 1);
    let texts: Vec<String> = store
        .feed_read(Default::default(), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert!(texts.contains(&"keep-me".to_string()), "{texts:?}");
    assert!(!texts.iter().any(|t| t.contains("dana")), "{texts:?}");

    // Stream listeners: recorded per owner, kept for the feed window.
    let now = now_ms();
    assert!(store.listeners(now).await.unwrap().is_empty());
    store
        .listeners_seen(&[5, 6], now - 25 * 3_600_000)
        .await
        .unwrap();
    store.listeners_seen(&[6, 7], now).await.unwrap();
    let seen = store.listeners(now).await.unwrap();
    assert_eq!(
        seen,
        [6, 7].into_iter().collect(),
        "5 is older than the window"
    );
    store.listeners_seen(&[], now).await.unwrap();

    // Connected mailboxes, listed for the reply watcher (secrets opened).
    let mbx = |user: &str| MailboxConfig {
        host: "imap.example.test".into(),
        port: 143,
        tls: "none".into(),
        username: user.into(),
        updated_ms: 1,
        secret: MailboxSecret::Password(format!("pw-{user}")),
    };
    assert!(store.mailboxes().await.unwrap().is_empty());
    store.put_mailbox(7, mbx("ann")).await.unwrap();
    store.put_mailbox(8, mbx("bea")).await.unwrap();
    let mut all = store.mailboxes().await.unwrap();
    all.sort_by_key(|(u, _)| *u);
    assert_eq!(all, [(7, mbx("ann")), (8, mbx("bea"))]);
    assert!(store.delete_mailbox(8).await.unwrap());
    assert_eq!(store.mailboxes().await.unwrap(), [(7, mbx("ann"))]);

    // The subject index finds emails by address; erasing a recipient's events
    // deletes them and drops later ones.
    assert!(store
        .emails_mentioning("b@client.test")
        .await
        .unwrap()
        .contains(&1));
    assert!(store
        .emails_mentioning("nobody@x.test")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.erase_recipient_events(2, 0).await.unwrap(), 50);
    store.commit_events(vec![event(2, 999)]).await.unwrap();
    assert!(store.events_for(2).await.unwrap().is_empty());
    let mut rec = store.get_email(2).await.unwrap().unwrap();
    rec.recipients[0].address.clear();
    store.put_email(rec).await.unwrap();
    assert!(!store
        .emails_mentioning("b@client.test")
        .await
        .unwrap()
        .contains(&2));

    // Contacts.
    let c = Contact {
        address: "b@client.test".into(),
        follow_email: FollowEmail::DoNotAllow,
        updated_ms: 5,
    };
    store.put_contacts(vec![c.clone()]).await.unwrap();
    let got = store
        .contacts(&["b@client.test".into(), "z@client.test".into()])
        .await
        .unwrap();
    assert_eq!(got, vec![Some(c), None]);
    assert!(store.delete_contact("b@client.test").await.unwrap());
    assert!(!store.delete_contact("b@client.test").await.unwrap());

    // Audit: appended in order, newest first, redactable by subject.
    for (i, subj) in [None, Some("b@client.test"), None].into_iter().enumerate() {
        let e = AuditEntry {
            seq: 0,
            at_ms: i as u64,
            actor: 1,
            action: format!("a{i}"),
            subject: subj.map(String::from),
            detail: String::new(),
        };
        store.audit(e).await.unwrap();
    }
    let log = store.audit_log(None, 10).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["a2", "a1", "a0"]
    );
    assert_eq!(log[1].subject.as_deref(), Some("b@client.test"));
    assert_eq!(
        store.audit_log(Some(log[1].seq), 10).await.unwrap().len(),
        1
    );
    assert_eq!(store.redact_audit("b@client.test").await.unwrap(), 1);
    assert!(store
        .audit_log(None, 10)
        .await
        .unwrap()
        .iter()
        .all(|e| e.subject.is_none()));
    // Activities (the add-in's tracked emails): deduplicated on Message-ID,
    // found by Message-ID and by participant, listed newest first, deleted.
    let act = |id: u64, mid: &str, created_ms: u64| Activity {
        id,
        owner: 7,
        message_id: mid.into(),
        conversation: mid.into(),
        reply_to: None,
        direction: "incoming".into(),
        regarding: None,
        email_id: None,
        source: "addin".into(),
        sent_ms: None,
        created_ms,
        expires_ms: now_ms() + 3_600_000,
        personal: ActivityPersonal {
            from: Some(Participant {
                address: "dora@client.test".into(),
                name: Some("Dora".into()),
            }),
            subject: Some("Renewal".into()),
            ..Default::default()
        },
        sealed: None,
        lookups: Vec::new(),
    };
    assert_eq!(
        store.insert_activity(act(101, "m1@x", 1)).await.unwrap(),
        Inserted::New
    );
    assert_eq!(
        store.insert_activity(act(102, "m2@x", 2)).await.unwrap(),
        Inserted::New
    );
    match store.insert_activity(act(103, "m1@x", 3)).await.unwrap() {
        Inserted::Existing(a) => assert_eq!((a.id, a.message_id.as_str()), (101, "m1@x")),
        other => panic!("expected the existing activity, got {other:?}"),
    }
    // Deduplication is per owner: another user tracking m1@x gets their own
    // activity, and neither finds the other's by Message-ID.
    assert_eq!(
        store
            .insert_activity(Activity {
                owner: 8,
                ..act(104, "m1@x", 4)
            })
            .await
            .unwrap(),
        Inserted::New
    );
    assert_eq!(
        store
            .activity_by_message_id(8, "m1@x".into())
            .await
            .unwrap()
            .map(|a| a.id),
        Some(104)
    );
    assert_eq!(
        store
            .tracked_message_ids(8, vec!["m2@x".into()])
            .await
            .unwrap(),
        [false]
    );
    assert!(store.delete_activity(104).await.unwrap());
    assert_eq!(
        store
            .activity_by_message_id(7, "m1@x".into())
            .await
            .unwrap()
            .map(|a| a.id),
        Some(101)
    );
    let got = store
        .activity_by_message_id(7, "m2@x".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.personal.subject.as_deref(), Some("Renewal"));
    assert_eq!(
        got.personal.from.as_ref().unwrap().address,
        "dora@client.test"
    );
    assert_eq!(
        store
            .tracked_message_ids(7, vec!["m1@x".into(), "zz@x".into()])
            .await
            .unwrap(),
        [true, false]
    );
    let listed: Vec<u64> = store
        .list_activities(7, None, 10)
        .await
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(listed, [102, 101]);
    // Paging: `before` is exclusive, ties on created_ms are ordered by id, and
    // walking the pages visits every activity once.
    for (id, t) in [(201u64, 10u64), (202, 20), (203, 20), (204, 20), (205, 30)] {
        let a = Activity {
            owner: 9,
            personal: ActivityPersonal::default(),
            ..act(id, &format!("p{id}@x"), t)
        };
        store.insert_activity(a).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store.list_activities(9, before, 2).await.unwrap();
        seen.extend(page.iter().map(|a| a.id));
        match page.last() {
            Some(l) if page.len() == 2 => before = Some((l.created_ms, l.id)),
            _ => break,
        }
    }
    assert_eq!(seen, [205, 204, 203, 202, 201]);
    let after_tie: Vec<u64> = store
        .list_activities(9, Some((20, 203)), 10)
        .await
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(after_tie, [202, 201]);
    let mut mentioning = store
        .activities_mentioning("dora@client.test")
        .await
        .unwrap();
    mentioning.sort();
    assert_eq!(mentioning, [101, 102]);
    assert!(store
        .emails_mentioning("dora@client.test")
        .await
        .unwrap()
        .is_empty());
    assert!(store.delete_activity(101).await.unwrap());
    assert!(!store.delete_activity(101).await.unwrap());
    assert_eq!(
        store
            .activity_by_message_id(7, "m1@x".into())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .activities_mentioning("dora@client.test")
            .await
            .unwrap(),
        [102]
    );

    // update_email: concurrent changes of one record all land (compare-and-set),
    // sealed like put_email, and a missing email is None.
    let now = mailbeacon::ids::now_ms();
    let mut rec = email(900, 7, now, now + 3_600_000);
    rec.recipients = (0..8)
        .map(|i| RecipientRecord {
            address: format!("r{i}@client.test"),
            ..rec.recipients[0].clone()
        })
        .collect();
    store.put_email(rec).await.unwrap();
    let updates = (0..8).map(|i| {
        let store = store.clone();
        async move {
            store
                .update_email(900, |r| {
                    r.recipients[i].delivery = Some(mailbeacon::model::Delivery::new(
                        "sent",
                        Some(format!("250 ok {i}")),
                        1,
                    ));
                    true
                })
                .await
                .unwrap()
        }
    });
    futures_util::future::join_all(updates).await;
    let got = store.get_email(900).await.unwrap().unwrap();
    for (i, r) in got.recipients.iter().enumerate() {
        let d = r.delivery.as_ref().expect("every update kept");
        assert_eq!(
            (d.state.as_str(), d.detail.clone()),
            ("sent", Some(format!("250 ok {i}")))
        );
    }
    assert!(store.update_email(901, |_| true).await.unwrap().is_none());
    // Action cards: dismissals (until the retention horizon) and snoozes, per user.
    // Real times: Redis expires the marks' keys natively.
    let now = now_ms();
    assert_eq!(
        store.card_state(7, now).await.unwrap(),
        CardState::default()
    );
    store
        .dismiss_card(7, "00000000000000a1", now, now + 10_000)
        .await
        .unwrap();
    store
        .snooze_card(7, "00000000000000b2", now, now + 500)
        .await
        .unwrap();
    store
        .snooze_card(7, "00000000000000c3", now, now + 900)
        .await
        .unwrap();
    // A later snooze replaces the first; a dismissal replaces a snooze; a snooze
    // does not undo a dismissal.
    store
        .snooze_card(7, "00000000000000c3", now, now + 2_000)
        .await
        .unwrap();
    store
        .snooze_card(7, "00000000000000d4", now, now + 900)
        .await
        .unwrap();
    store
        .dismiss_card(7, "00000000000000d4", now, now + 10_000)
        .await
        .unwrap();
    store
        .snooze_card(7, "00000000000000a1", now, now + 700)
        .await
        .unwrap();
    // Another user's marks are theirs.
    store
        .dismiss_card(8, "00000000000000e5", now, now + 10_000)
        .await
        .unwrap();
    let st = store.card_state(7, now).await.unwrap();
    let mut dismissed: Vec<&str> = st.dismissed.iter().map(String::as_str).collect();
    dismissed.sort_unstable();
    assert_eq!(dismissed, ["00000000000000a1", "00000000000000d4"]);
    assert_eq!(
        st.snoozed,
        [
            ("00000000000000b2".to_string(), now + 500),
            ("00000000000000c3".to_string(), now + 2_000)
        ]
        .into_iter()
        .collect()
    );
    // A snooze ends; a dismissal is forgotten at its horizon.
    let later = store.card_state(7, now + 600).await.unwrap();
    assert!(!later.snoozed.contains_key("00000000000000b2"));
    assert!(later.snoozed.contains_key("00000000000000c3"));
    let gone = store.card_state(7, now + 10_000).await.unwrap();
    assert_eq!(gone, CardState::default());
    let other = store.card_state(8, now).await.unwrap();
    assert_eq!(other.dismissed.len(), 1);
    assert!(other.snoozed.is_empty());
    // Ids are plain tokens, never anything else.
    assert!(store.dismiss_card(7, "", now, now + 1).await.is_err());
    assert!(store.dismiss_card(7, "a:b", now, now + 1).await.is_err());

    // Export and import (for `migrate`): importing a store's own records again
    // changes nothing (the same keys come back), and a leased job comes back
    // unleased with its attempts and payload.
    let job = mailbeacon::store::queue::NewJob {
        id: "migrate:0".into(),
        due_ms: now,
        payload: b"p".to_vec(),
    };
    store.enqueue("outbox", vec![job]).await.unwrap();
    let leased = store.lease("outbox", now, 60_000, 100).await.unwrap();
    assert!(leased.iter().any(|j| j.id == "migrate:0"));
    for kind in Kind::ALL {
        let items = store.export(kind, now).await.unwrap();
        let keys: std::collections::BTreeSet<String> = items.iter().map(Item::key).collect();
        store.import(items, now).await.unwrap();
        let again: std::collections::BTreeSet<String> = store
            .export(kind, now)
            .await
            .unwrap()
            .iter()
            .map(Item::key)
            .collect();
        assert_eq!(keys, again, "{kind:?}");
        if matches!(kind, Kind::Cards | Kind::Jobs) {
            assert!(!keys.is_empty(), "{kind:?}");
        }
    }
    let job = store.get_job("outbox", "migrate:0", now).await.unwrap();
    let job = job.expect("the job is still queued");
    assert_eq!(
        (job.leased_until, job.attempts, job.payload),
        (None, 1, b"p".to_vec())
    );

    // The key ring, where the store keeps it: compare-and-set.
    let ring = keyring::new_json().unwrap();
    assert_eq!(store.keyring().await.unwrap(), None);
    assert!(store.put_keyring(None, &ring).await.unwrap());
    assert!(!store.put_keyring(None, &ring).await.unwrap());
    assert_eq!(store.keyring().await.unwrap(), Some(ring.clone()));
    let (rotated, _) = keyring::rotate_json(&ring).unwrap();
    assert!(!store.put_keyring(Some("stale"), &rotated).await.unwrap());
    assert!(store.put_keyring(Some(&ring), &rotated).await.unwrap());
    assert_eq!(store.keyring().await.unwrap(), Some(rotated.clone()));

    // Leases: one holder at a time, extended by its holder, freed only by it,
    // free again once expired.
    assert!(store.take_lease("watch:t", 1, 60_000).await.unwrap());
    assert!(!store.take_lease("watch:t", 2, 60_000).await.unwrap());
    assert!(store.take_lease("watch:t", 1, 60_000).await.unwrap());
    store.release_lease("watch:t", 2).await.unwrap();
    assert!(!store.take_lease("watch:t", 2, 60_000).await.unwrap());
    store.release_lease("watch:t", 1).await.unwrap();
    assert!(store.take_lease("watch:t", 2, 300).await.unwrap());
    assert!(!store.take_lease("watch:t", 1, 60_000).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert!(store.take_lease("watch:t", 1, 60_000).await.unwrap());
    store.release_lease("watch:t", 1).await.unwrap();

    store.close().await.unwrap();
    drop(store);

    // Everything survives reopening, and sequence numbers keep growing.
    let store = open().await;
    assert_eq!(store.user_by_token_hash([1; 32]).await.unwrap(), Some(u));
    assert_eq!(store.keyring().await.unwrap(), Some(rotated));
    assert!(store
        .card_state(7, now)
        .await
        .unwrap()
        .dismissed
        .contains("00000000000000a1"));
    assert_eq!(store.events_for(1).await.unwrap().len(), 50);
    store.commit_events(vec![event(1, 500)]).await.unwrap();
    let again = store.events_for(1).await.unwrap();
    assert_eq!(again.len(), 51);
    assert!(again.iter().map(|e| e.seq).max().unwrap() > seqs[99]);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn embedded_store_contract() {
    let dir = temp_dir("embedded");
    let d = dir.clone();
    contract(move || {
        let d = d.clone();
        async move { embedded(&d) }
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn open_redis(target: Target, dir: PathBuf) -> Store {
    let r: Arc<Redis> = Redis::open(&target, &dir, 1 << 20)
        .await
        .expect("open the Redis store");
    Store::new(Backend::Redis(r), sealer())
}

#[tokio::test(flavor = "current_thread")]
async fn redis_single_node_contract() {
    let server = support::redis::RedisServer::start();
    let dir = support::TempDir::new("contract-redis");
    let target = Target::Single(server.url());
    let d = dir.path().to_path_buf();
    contract(move || open_redis(target.clone(), d.clone())).await;
}

#[tokio::test(flavor = "current_thread")]
async fn redis_cluster_contract() {
    let cluster = support::redis::RedisCluster::start();
    let dir = support::TempDir::new("contract-cluster");
    let target = Target::Cluster(cluster.nodes.iter().map(|n| n.url()).collect());
    let d = dir.path().to_path_buf();
    contract(move || open_redis(target.clone(), d.clone())).await;
    // The shard logs are spread over the masters.
    let keys = cluster.all_keys();
    let nodes_with_logs: std::collections::BTreeSet<usize> = keys
        .iter()
        .filter(|(_, k)| k.starts_with("mb:{log:"))
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(nodes_with_logs.len(), 3, "{keys:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn embedded_journal_replays_after_a_crash() {
    // Simulates a crash after events were journalled but before the indexer made
    // them durable: the journal is copied aside before close, then put back.
    let dir = temp_dir("replay");
    let store = embedded(&dir);
    store.put_email(email(1, 7, 1, u64::MAX / 2)).await.unwrap();
    store
        .commit_events((0..10).map(|i| event(1, i)).collect())
        .await
        .unwrap();
    let journal = std::fs::read(dir.join("events.journal")).unwrap();
    assert!(
        !journal.is_empty(),
        "events are journalled before being acknowledged"
    );
    store.close().await.unwrap();
    drop(store);
    // Put the journal back (as if the durable index write never happened) and
    // add a torn half-record after it.
    let mut torn = journal.clone();
    torn.extend_from_slice(&journal[..journal.len() / 3]);
    std::fs::write(dir.join("events.journal"), &torn).unwrap();
    let store = embedded(&dir);
    assert_eq!(
        store.events_for(1).await.unwrap().len(),
        10,
        "replay is idempotent"
    );
    store.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
