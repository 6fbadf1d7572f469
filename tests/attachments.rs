//! Attachment links (`"attachments": "link"`, `GET /a/{token}/{index}/{name}`)
//! end to end against the real binary, a real SMTP server (aiosmtpd) and the
//! real stores: the embedded one, a Redis node and a 3-master Redis Cluster.
//!
//! A Thunderbird-like message with a PDF attachment and an inline `cid:` logo
//! is sent to Bob and Carol through the outbox. Each copy loses the PDF, keeps
//! the logo and carries its own download link; the link serves the original
//! bytes; Bob's view counts for Bob only; HEAD, prefetches, tampered tokens and
//! erased recipients count nothing; the stored file is sealed, lives in the
//! email's Cluster slot, and is gone (410) once the email's retention ends.

mod support;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use mail_parser::{MessageParser, MimeHeaders};
use serde_json::{json, Value};

use support::redis::{RedisCluster, RedisServer};
use support::{header, raw, Server, SmtpSink, TempDir, ADMIN, BROWSER_UA};

const MARKER: &[u8] = b"MAILBEACON-PLAINTEXT-MARKER-Q3";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Embedded,
    Redis,
    Cluster,
}

/// The store a test server runs on.
struct Store {
    kind: Kind,
    redis: Option<RedisServer>,
    cluster: Option<RedisCluster>,
    tmp: TempDir,
}

impl Store {
    fn new(kind: Kind) -> Store {
        Store {
            kind,
            redis: (kind == Kind::Redis).then(RedisServer::start),
            cluster: (kind == Kind::Cluster).then(RedisCluster::start),
            tmp: TempDir::new("attach"),
        }
    }

    fn server(&self, extra: &[(&str, &str)]) -> Server {
        let mut env: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(r) = &self.redis {
            env.push(("MAILBEACON_REDIS_URL".into(), r.url()));
        }
        if let Some(c) = &self.cluster {
            env.push(("MAILBEACON_REDIS_CLUSTER".into(), c.seeds()));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Server::start_in(&self.tmp.path().join("data"), &env)
    }

    fn nodes(&self) -> Vec<&RedisServer> {
        match (&self.redis, &self.cluster) {
            (Some(r), _) => vec![r],
            (_, Some(c)) => c.nodes.iter().collect(),
            _ => Vec::new(),
        }
    }

    /// (node index, key) of every Redis key of one email (`mb:{e:<id>}:…`).
    fn email_keys(&self, id: &str) -> Vec<(usize, String)> {
        let tag = format!("mb:{{e:{id}}}:");
        let mut out = Vec::new();
        for (i, n) in self.nodes().iter().enumerate() {
            for k in n.cli(&["--scan"]).lines().filter(|k| k.starts_with(&tag)) {
                out.push((i, k.to_string()));
            }
        }
        out
    }

    /// Every byte of the data directory's files.
    fn files(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut stack = vec![self.tmp.path().to_path_buf()];
        while let Some(p) = stack.pop() {
            if p.is_dir() {
                for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                    stack.push(e.path());
                }
            } else if let Ok(b) = std::fs::read(&p) {
                out.extend_from_slice(&b);
            }
        }
        out
    }
}

/// A small but real PDF with every byte value in a binary stream (so
/// byte-identical means byte-identical) and a plaintext marker.
fn pdf() -> Vec<u8> {
    let mut b =
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n\
2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n3 0 obj\n<< /Length 4096 >>\nstream\n"
            .to_vec();
    for i in 0..4096u32 {
        b.push((i * 7 % 256) as u8);
    }
    b.extend_from_slice(b"\nendstream\nendobj\n% ");
    b.extend_from_slice(MARKER);
    b.extend_from_slice(b"\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n");
    b
}

fn wrap76(b64: &str) -> String {
    b64.as_bytes()
        .chunks(76)
        .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap_or_default()))
        .collect()
}

/// The PNG logo the HTML shows inline (`cid:logo@sales.test`).
const LOGO: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

fn message() -> String {
    format!(
        "From: Ann <ann@sales.test>\r\n\
To: Bob <bob@client.test>, Carol <carol@client.test>\r\n\
Subject: Q3 report\r\n\
Message-ID: <q3-{}@sales.test>\r\n\
Date: Tue, 01 Dec 2026 09:00:00 +0000\r\n\
MIME-Version: 1.0\r\n\
User-Agent: Mozilla Thunderbird\r\n\
Content-Type: multipart/mixed; boundary=\"------------mix0\"\r\n\
\r\n\
This is a multi-part message in MIME format.\r\n\
--------------mix0\r\n\
Content-Type: multipart/related; boundary=\"------------rel0\"\r\n\
\r\n\
--------------rel0\r\n\
Content-Type: multipart/alternative; boundary=\"------------alt0\"\r\n\
\r\n\
--------------alt0\r\n\
Content-Type: text/plain; charset=UTF-8; format=flowed\r\n\
Content-Transfer-Encoding: 7bit\r\n\
\r\n\
Hi Bob, hi Carol,\r\n\
\r\n\
the Q3 report is attached. More at https://sales.test/q3\r\n\
--------------alt0\r\n\
Content-Type: text/html; charset=UTF-8\r\n\
Content-Transfer-Encoding: 7bit\r\n\
\r\n\
<html><head><meta http-equiv=\"content-type\" content=\"text/html; charset=UTF-8\"></head>\r\n\
<body><p>Hi Bob, hi Carol,</p><p>the Q3 report is attached. More at <a href=\"https://sales.test/q3\">sales.test</a>.</p>\r\n\
<p><img src=\"cid:logo@sales.test\" alt=\"Sales\"></p></body></html>\r\n\
--------------alt0--\r\n\
--------------rel0\r\n\
Content-Type: image/png; name=\"logo.png\"\r\n\
Content-Disposition: inline; filename=\"logo.png\"\r\n\
Content-Id: <logo@sales.test>\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
{}--------------rel0--\r\n\
--------------mix0\r\n\
Content-Type: application/pdf; name=\"Q3 report.pdf\"\r\n\
Content-Disposition: attachment; filename=\"Q3 report.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
{}--------------mix0--\r\n",
        std::process::id(),
        wrap76(&STANDARD.encode(LOGO)),
        wrap76(&STANDARD.encode(pdf())),
    )
}

fn report(s: &Server, tok: &str, id: &str) -> Value {
    let (st, v) = s.api("GET", &format!("/api/v1/emails/{id}"), Some(tok), None);
    assert_eq!(st, 200, "{v}");
    v
}

fn views(rep: &Value, address: &str) -> (u64, u64) {
    let r = rep["recipients"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["address"] == address))
        .unwrap_or_else(|| panic!("{address} in {rep}"));
    (
        r["attachment_views"].as_u64().expect("attachment_views"),
        r["machine_attachment_views"]
            .as_u64()
            .expect("machine_attachment_views"),
    )
}

/// The download links of one delivered copy (HTML body), after checking the
/// copy's structure.
fn links_of(copy: &[u8], base: &str) -> Vec<String> {
    let m = MessageParser::default()
        .parse(copy)
        .expect("the copy parses");
    let types: Vec<String> = m
        .parts
        .iter()
        .filter_map(|p| p.content_type())
        .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")))
        .collect();
    assert!(!types.iter().any(|t| t == "application/pdf"), "{types:?}");
    let logo = m
        .parts
        .iter()
        .find(|p| p.content_id() == Some("logo@sales.test"))
        .expect("the inline logo stays");
    assert_eq!(logo.contents(), LOGO);
    let html = m.body_html(0).expect("html").to_string();
    assert!(html.contains("cid:logo@sales.test"));
    assert!(html.contains(">Q3 report.pdf</a>"), "{html}");
    let text = m.body_text(0).expect("text").to_string();
    let prefix = format!("{base}/a/");
    let mut out = Vec::new();
    let mut rest = html.as_str();
    while let Some(i) = rest.find(&prefix) {
        let tail = &rest[i..];
        let end = tail.find('"').unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    assert_eq!(out.len(), 1, "{html}");
    assert!(out[0].ends_with("/0/Q3_report.pdf"), "{}", out[0]);
    assert!(text.contains(&out[0]), "the text body lists it too: {text}");
    out
}

fn tamper(url: &str) -> String {
    // Flip one character of the token (the segment after /a/).
    let at = url.find("/a/").expect("/a/") + 3 + 10;
    let mut b = url.as_bytes().to_vec();
    b[at] = if b[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).expect("ascii")
}

fn run(kind: Kind) {
    let store = Store::new(kind);
    let sink = SmtpSink::start();
    let s = store.server(&[("MAILBEACON_SMTP_URL", &sink.url())]);
    let tok = s.user("ann@sales.test");

    // Bad input first: a clear 400, nothing stored.
    let (st, v) = s.api(
        "POST",
        "/api/v1/emails",
        Some(&tok),
        Some(json!({"mime": STANDARD.encode(message()), "attachments": "inline"})),
    );
    assert_eq!(
        (st, &v["error"]["code"]),
        (400, &json!("invalid_attachments"))
    );

    let (st, v) = s.api(
        "POST",
        "/api/v1/emails",
        Some(&tok),
        Some(json!({"mime": STANDARD.encode(message()), "deliver": "smtp", "attachments": "link"})),
    );
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    let t0 = Instant::now();
    while sink.received().len() < 2 {
        assert!(t0.elapsed() < Duration::from_secs(30), "copies not sent");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut link = std::collections::HashMap::new();
    for (_, rcpts, data) in sink.received() {
        link.insert(rcpts[0].clone(), links_of(&data, &s.base).remove(0));
    }
    let (bob, carol) = (&link["bob@client.test"], &link["carol@client.test"]);
    assert_ne!(bob, carol, "one link per recipient");

    // HEAD and a prefetch are served and not counted.
    let (st, hs, body) = raw("HEAD", bob, &[("User-Agent", BROWSER_UA)]);
    assert_eq!(st, 200);
    assert!(body.is_empty());
    assert_eq!(header(&hs, "content-type"), Some("application/pdf"));
    let (st, _, body) = raw(
        "GET",
        bob,
        &[("User-Agent", BROWSER_UA), ("Sec-Purpose", "prefetch")],
    );
    assert_eq!((st, body == pdf()), (200, true));
    assert_eq!(views(&report(&s, &tok, &id), "bob@client.test"), (0, 0));

    // Bob's view: the original bytes, counted once, for Bob.
    let (st, hs, body) = raw("GET", bob, &[("User-Agent", BROWSER_UA)]);
    assert_eq!(st, 200);
    assert!(body == pdf(), "byte-identical");
    assert_eq!(header(&hs, "content-type"), Some("application/pdf"));
    assert_eq!(
        header(&hs, "content-disposition"),
        Some("attachment; filename=\"Q3 report.pdf\"; filename*=UTF-8''Q3%20report.pdf")
    );
    assert!(header(&hs, "cache-control").is_some_and(|c| c.contains("no-store")));
    assert_eq!(header(&hs, "x-content-type-options"), Some("nosniff"));
    let rep = report(&s, &tok, &id);
    assert_eq!(views(&rep, "bob@client.test"), (1, 0), "{rep}");
    assert_eq!(views(&rep, "carol@client.test"), (0, 0), "{rep}");
    assert_eq!(rep["totals"]["attachment_views"], 1);
    let (st, stats) = s.api("GET", "/api/v1/stats", Some(&tok), None);
    assert_eq!(st, 200, "{stats}");
    assert_eq!(stats["attachment_views"], 1, "{stats}");

    // A scanner's fetch is machine activity, shown apart.
    let (st, _, _) = raw("GET", carol, &[("User-Agent", "Barracuda Sentinel (EE)")]);
    assert_eq!(st, 200);
    assert_eq!(views(&report(&s, &tok, &id), "carol@client.test"), (0, 1));

    // Tampered or mismatched: a neutral 404, never the file.
    for bad in [
        tamper(bob),
        bob.replace("/0/Q3_report.pdf", "/1/Q3_report.pdf"),
        format!("{}/a/garbage/0/x.pdf", s.base),
    ] {
        let (st, _, body) = raw("GET", &bad, &[("User-Agent", BROWSER_UA)]);
        assert_eq!(st, 404, "{bad}");
        assert!(!body.windows(MARKER.len()).any(|w| w == MARKER));
        assert!(String::from_utf8_lossy(&body).contains("Link not found"));
    }
    let (st, v) = s.api("POST", bob.trim_start_matches(&s.base), None, None);
    assert_eq!(st, 405, "{v}");
    let rep = report(&s, &tok, &id);
    assert_eq!(rep["totals"]["attachment_views"], 1, "{rep}");

    // Sealed at rest: the file's plaintext is nowhere in storage.
    let files = store.files();
    assert!(!files.windows(MARKER.len()).any(|w| w == MARKER));
    if kind != Kind::Embedded {
        let keys = store.email_keys(&id);
        let node_of = |suffix: &str| {
            keys.iter()
                .find(|(_, k)| k.ends_with(suffix))
                .unwrap_or_else(|| panic!("{suffix} in {keys:?}"))
                .0
        };
        assert_eq!(node_of(":att"), node_of(":rec"), "one Cluster slot");
        let n = store.nodes()[node_of(":att")];
        let att_key = format!("mb:{{e:{id}}}:att");
        let sealed = n.cli(&["--raw", "HGETALL", &att_key]);
        assert!(!sealed.contains(std::str::from_utf8(MARKER).unwrap_or_default()));
        let ttl: i64 = n.cli(&["PTTL", &att_key]).trim().parse().unwrap_or(-9);
        assert!(ttl > 0, "the file expires with the email: {ttl}");
    }

    // Carol is erased: her link still serves the file and records nothing.
    let (st, v) = s.api(
        "DELETE",
        "/api/v1/subjects/carol@client.test",
        Some(ADMIN),
        None,
    );
    assert_eq!(st, 200, "{v}");
    let (st, _, body) = raw("GET", carol, &[("User-Agent", BROWSER_UA)]);
    assert_eq!((st, body == pdf()), (200, true));
    let rep = report(&s, &tok, &id);
    assert_eq!(rep["totals"]["attachment_views"], 1, "{rep}");
    assert_eq!(rep["totals"]["machine_attachment_views"], 0, "{rep}");

    // Retention ends: the email and its file are gone, the link answers 410.
    let mut s = s;
    expire(&store, &mut s, &id);
    s.restart();
    let (st, hs, body) = raw("GET", bob, &[("User-Agent", BROWSER_UA)]);
    assert_eq!(st, 410);
    assert_eq!(
        header(&hs, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(!body.windows(MARKER.len()).any(|w| w == MARKER));
    assert!(String::from_utf8_lossy(&body).contains("no longer available"));
    if kind != Kind::Embedded {
        assert!(store.email_keys(&id).is_empty());
    }
}

/// Ends the email's retention the way each store does: the embedded store's
/// sweep (the server stopped, the store opened here), Redis's own expiry of
/// the email's keys (which carry the record's TTL).
fn expire(store: &Store, s: &mut Server, id: &str) {
    s.stop();
    match store.kind {
        Kind::Embedded => {
            use mailbeacon::seal::Sealer;
            use mailbeacon::store::{embedded::Embedded, Backend, Store as S};
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let st = S::new(
                    Backend::Embedded(
                        Embedded::open(&store.tmp.path().join("data")).expect("open"),
                    ),
                    Sealer::new(&[(1, vec![5; 32])], 1, b"lookup").expect("sealer"),
                );
                assert_eq!(st.sweep(u64::MAX, 0).await.expect("sweep"), 1);
                st.close().await.expect("close");
            });
        }
        Kind::Redis | Kind::Cluster => {
            for (n, key) in store.email_keys(id) {
                store.nodes()[n].cli(&["PEXPIRE", &key, "1"]);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn attachment_links_on_the_embedded_store() {
    run(Kind::Embedded);
}

#[test]
fn attachment_links_on_redis() {
    run(Kind::Redis);
}

#[test]
fn attachment_links_on_a_redis_cluster() {
    run(Kind::Cluster);
}

/// `deliver: "return"`: the same links in the returned copies; a recipient
/// whose contact preference says not to follow them keeps the file itself.
#[test]
fn returned_copies_and_opted_out_recipients() {
    let s = Server::start();
    let tok = s.user("ann@sales.test");
    let (st, v) = s.api(
        "PUT",
        "/api/v1/contacts/carol@client.test",
        Some(ADMIN),
        Some(json!({"follow_email": "do_not_allow"})),
    );
    assert!(st == 200 || st == 201, "{st} {v}");
    let (st, v) = s.api(
        "POST",
        "/api/v1/emails",
        Some(&tok),
        Some(
            json!({"mime": STANDARD.encode(message()), "deliver": "return", "attachments": "link"}),
        ),
    );
    assert_eq!(st, 201, "{v}");
    let copy = |i: usize| {
        STANDARD
            .decode(v["recipients"][i]["mime"].as_str().expect("mime"))
            .expect("base64")
    };
    let bob = links_of(&copy(0), &s.base).remove(0);
    let events = stream(&s, &tok);
    let (st, _, body) = raw("GET", &bob, &[("User-Agent", BROWSER_UA)]);
    assert_eq!((st, body == pdf()), (200, true));
    // The live stream tells of the view.
    let deadline = Instant::now() + Duration::from_secs(10);
    let data = loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("no email.attachment_viewed within 10 s");
        let frame = events.recv_timeout(left).expect("a frame");
        if frame.contains("event: email.attachment_viewed") {
            let line = frame
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .expect("data");
            break serde_json::from_str::<Value>(line).expect("JSON");
        }
    };
    assert_eq!(data["data"]["recipient"], "bob@client.test", "{data}");
    assert_eq!(data["data"]["attachment"], 0, "{data}");
    assert_eq!(data["data"]["machine"], false, "{data}");
    // Carol's copy is the untracked original: the PDF is still in it.
    let carol = MessageParser::default().parse(&copy(1)).map(|m| {
        m.parts
            .iter()
            .any(|p| p.attachment_name() == Some("Q3 report.pdf") && p.contents() == pdf())
    });
    assert_eq!(carol, Some(true));
    assert_eq!(v["recipients"][1]["followed"], false);
    // The default keeps attachments in every copy.
    let (st, v) = s.api(
        "POST",
        "/api/v1/emails",
        Some(&tok),
        Some(json!({"mime": STANDARD.encode(message()), "deliver": "return"})),
    );
    assert_eq!(st, 201, "{v}");
    let kept = STANDARD
        .decode(v["recipients"][0]["mime"].as_str().expect("mime"))
        .expect("base64");
    assert!(!String::from_utf8_lossy(&kept).contains("/a/"));
    let m = MessageParser::default().parse(&kept).expect("parses");
    assert!(m.parts.iter().any(|p| p.contents() == pdf()));
}

/// The caller's live event stream, one frame per message.
fn stream(s: &Server, tok: &str) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let resp = support::agent()
        .get(&s.url("/api/v1/events"))
        .set("Authorization", &format!("Bearer {tok}"))
        .set("Accept", "text/event-stream")
        .call()
        .expect("the stream opens");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(resp.into_reader());
        let mut frame = String::new();
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            if line == "\n" {
                if tx.send(std::mem::take(&mut frame)).is_err() {
                    return;
                }
            } else {
                frame.push_str(&line);
            }
            line.clear();
        }
    });
    rx
}

/// The store side on each backend, through the sealing `Store`: files are
/// written only for an existing email, read back byte for byte by index,
/// deleted on their own, and removed by the retention sweep with their email.
fn store_contract(kind: Kind) {
    use mailbeacon::model::{Attachment, EmailRecord, RecipientRecord};
    use mailbeacon::seal::Sealer;
    use mailbeacon::store::embedded::Embedded;
    use mailbeacon::store::redis::conn::Target;
    use mailbeacon::store::redis::Redis;
    use mailbeacon::store::{Backend, Store as S};

    let store = Store::new(kind);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = store.tmp.path().join("data");
        let backend = match (&store.redis, &store.cluster) {
            (Some(r), _) => Backend::Redis(
                Redis::open(&Target::Single(r.url()), &dir, 1 << 20)
                    .await
                    .expect("redis"),
            ),
            (_, Some(c)) => Backend::Redis(
                Redis::open(
                    &Target::Cluster(c.nodes.iter().map(|n| n.url()).collect()),
                    &dir,
                    1 << 20,
                )
                .await
                .expect("cluster"),
            ),
            _ => Backend::Embedded(Embedded::open(&dir).expect("embedded")),
        };
        let st = S::new(
            backend,
            Sealer::new(&[(1, vec![9; 32])], 1, b"lookup").expect("sealer"),
        );
        let now = mailbeacon::ids::now_ms();
        let rec = |id: u64, expires_ms: u64| EmailRecord {
            id,
            owner: 1,
            from: "ann@sales.test".into(),
            subject: None,
            message_id: None,
            created_ms: now,
            expires_ms,
            deliver: "return".into(),
            recipients: vec![RecipientRecord {
                address: "bob@client.test".into(),
                name: None,
                field: "to".into(),
                followed: true,
                reason: None,
                delivery: None,
                erased: false,
            }],
            links: Vec::new(),
            lookups: Vec::new(),
            template: None,
            send_at_ms: None,
            reminder: None,
        };
        let files = vec![
            Attachment {
                name: "Q3 report.pdf".into(),
                content_type: "application/pdf".into(),
                data: pdf(),
            },
            Attachment {
                name: "Überblick.txt".into(),
                content_type: "text/plain".into(),
                data: Vec::new(),
            },
        ];
        assert!(
            !st.put_attachments(41, &files).await.expect("put"),
            "no such email"
        );
        assert_eq!(st.attachment(41, 0).await.expect("get"), None);

        st.put_email(rec(42, now + 3_600_000)).await.expect("email");
        st.put_email(rec(43, now + 7_200_000)).await.expect("email");
        assert!(st.put_attachments(42, &files).await.expect("put"));
        assert!(st.put_attachments(43, &files[..1]).await.expect("put"));
        assert_eq!(
            st.attachment(42, 0).await.expect("get").as_ref(),
            Some(&files[0])
        );
        assert_eq!(
            st.attachment(42, 1).await.expect("get").as_ref(),
            Some(&files[1])
        );
        assert_eq!(st.attachment(42, 2).await.expect("get"), None);

        st.delete_attachments(43).await.expect("delete");
        assert_eq!(st.attachment(43, 0).await.expect("get"), None);
        assert!(st.attachment(42, 0).await.expect("get").is_some());

        // Retention: the sweep removes the email and its files.
        assert_eq!(st.sweep(now + 3_600_001, 0).await.expect("sweep"), 1);
        assert!(st.get_email(42).await.expect("get").is_none());
        assert_eq!(st.attachment(42, 0).await.expect("get"), None);
        assert_eq!(st.attachment(42, 1).await.expect("get"), None);
        st.close().await.expect("close");
    });
    if kind != Kind::Embedded {
        assert!(store.email_keys("000000000000002a").is_empty());
    }
}

#[test]
fn store_keeps_files_with_their_email_on_each_backend() {
    for kind in [Kind::Embedded, Kind::Redis, Kind::Cluster] {
        store_contract(kind);
    }
}
