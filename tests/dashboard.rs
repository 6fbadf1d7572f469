//! The dashboard in a real browser: starts the server, follows a few emails for
//! a user (with templates) and records human opens and clicks, then runs
//! `node tests/addin/dashboard.test.mjs` (headless Chromium through
//! playwright-core, via `support::browser`): sign in by pasting the token, the
//! KPIs, the charts (inline SVG with text alternatives), top emails and
//! templates, the "Today" cards, and dismissing one with the keyboard only (Tab
//! to its button, Enter). Screenshots at 1280 and 360 px are kept in
//! `target/addin-screenshots/` (`dashboard-*.png`).

mod support;

use base64::Engine as _;
use serde_json::json;
use support::*;

#[test]
fn dashboard_in_headless_chromium() {
    let s = Server::start();
    let user = "ann@sales.test";
    let token = s.user(user);
    let people = ["bob@client.test", "carol@client.test", "dan@client.test"];
    for (i, template) in ["Spring offer", "Spring offer", "Renewal", "Webinar"]
        .iter()
        .enumerate()
    {
        let raw = email(user, &people, &[], &[], &["https://shop.example/pricing"]);
        let (st, v) = s.api(
            "POST",
            "/api/v1/emails",
            Some(&token),
            Some(json!({
                "mime": base64::engine::general_purpose::STANDARD.encode(raw),
                "deliver": "return",
                "template": template,
            })),
        );
        assert_eq!(st, 201, "{v}");
        for (r, rec) in v["recipients"].as_array().unwrap().iter().enumerate() {
            if r > i % 3 {
                continue;
            }
            let c = copy(rec, &s.base);
            let ua = [("User-Agent", BROWSER_UA)];
            assert_eq!(raw_get(&c.pixel.unwrap(), &ua), 200);
            if r == 0 {
                assert_eq!(raw_get(&c.clicks[0], &ua), 302);
            }
        }
    }
    browser::run(
        "dashboard.test.mjs",
        &[("MB_BASE", s.base.clone()), ("MB_TOKEN", token.clone())],
        &|| s.log_text(),
        &[
            "dashboard-signin-1280",
            "dashboard-1280",
            "dashboard-360",
            "dashboard-dismissed-360",
        ],
    );
}

fn raw_get(url: &str, headers: &[(&str, &str)]) -> u16 {
    raw("GET", url, headers).0
}
