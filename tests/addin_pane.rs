//! The task pane in a real browser: starts the server and a private Dovecot
//! (for Auto Capture), connects a user's mailbox, then runs
//! `node tests/addin/pane.test.mjs`, which drives headless Chromium (Debian's
//! `/usr/bin/chromium`, through `playwright-core`) with office.js replaced by
//! a stub: sign-in, track → status flips → untrack, regarding, Auto Capture list
//! → track one, the pinned pane following the selected item, engagement of a
//! followed email, the live stream (a pixel hit shows up in the "Live" list and
//! the engagement counts; hidden pane stops it, shown resumes), the "Today" cards (dismiss by keyboard, snooze), the compose
//! Follow switch and "Send at the best time", the OnMessageSend handler, and
//! degrading without office.js. Screenshots (320 px wide) are kept in
//! `target/addin-screenshots/`.
//!
//! node, Chromium or playwright-core missing fails the test loudly: the README
//! test command (`scripts/test.sh`) installs them.

mod support;

use serde_json::json;
use support::dovecot::{Dovecot, PASSWORD, USER};
use support::*;

#[test]
fn task_pane_in_headless_chromium() {
    let imap = Dovecot::start();
    let s = Server::start_local_outbound();
    let token = s.user(USER);
    let (st, v) = s.api(
        "PUT",
        "/api/v1/mailbox",
        Some(&token),
        Some(json!({"host": "127.0.0.1", "port": imap.port, "tls": "none", "username": USER, "password": PASSWORD})),
    );
    assert_eq!(st, 200, "{v}");
    browser::run(
        "pane.test.mjs",
        &[
            ("MB_BASE", s.base.clone()),
            ("MB_TOKEN", token.clone()),
            ("MB_USER", USER.to_string()),
        ],
        &|| s.log_text(),
        &[
            "signin",
            "read-untracked",
            "read-tracked",
            "capture",
            "read-engagement",
            "live",
            "today",
            "compose",
            "compose-best-time",
            "no-office",
        ],
    );
}
