//! The task pane in a real browser: starts the server and a private Dovecot
//! (for Auto Capture), connects a user's mailbox, then runs
//! `node tests/addin/pane.test.mjs`, which drives headless Chromium (Debian's
//! `/usr/bin/chromium`, through `playwright-core`) with office.js replaced by
//! a stub: sign-in, track → status flips → untrack, regarding, Auto Capture list
//! → track one, the pinned pane following the selected item, engagement of a
//! followed email, the compose Follow switch, the OnMessageSend handler, and
//! degrading without office.js. Screenshots (320 px wide) are kept in
//! `target/addin-screenshots/`.
//!
//! node, Chromium or playwright-core missing fails the test loudly: the README
//! test command (`scripts/test.sh`) installs them.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::json;
use support::dovecot::{Dovecot, PASSWORD, USER};
use support::*;

#[test]
fn task_pane_in_headless_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("MB_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium is required at {chromium} (apt-get install chromium; ./scripts/test.sh does it)"
    );
    assert!(
        root.join("tests/addin/node_modules/playwright-core")
            .exists(),
        "playwright-core is missing: run ./scripts/test.sh (npm ci in tests/addin)"
    );
    let imap = Dovecot::start();
    let s = Server::start();
    let token = s.user(USER);
    let (st, v) = s.api(
        "PUT",
        "/api/v1/mailbox",
        Some(&token),
        Some(json!({"host": "127.0.0.1", "port": imap.port, "tls": "none", "username": USER, "password": PASSWORD})),
    );
    assert_eq!(st, 200, "{v}");
    let shots = root.join("target/addin-screenshots");
    let out = Command::new("node")
        .arg(root.join("tests/addin/pane.test.mjs"))
        .env("MB_BASE", &s.base)
        .env("MB_TOKEN", &token)
        .env("MB_USER", USER)
        .env("MB_SHOTS", &shots)
        .env("MB_CHROMIUM", &chromium)
        .output()
        .expect("node is required for the browser test (./scripts/test.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "the browser test failed:\n{text}\nserver log:\n{}",
        s.log_text()
    );
    for name in [
        "signin",
        "read-untracked",
        "read-tracked",
        "capture",
        "read-engagement",
        "compose",
        "no-office",
    ] {
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "screenshot {name}"
        );
    }
}
