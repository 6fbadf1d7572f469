//! "Sign in with Microsoft" on the dashboard, in a real browser: one server with
//! Entra sign-in configured (JWKS file and client id, as for the pane) and one
//! without, then `node tests/addin/dashboard-entra.test.mjs` (headless Chromium
//! through playwright-core, via `support::browser`).
//!
//! As in `tests/addin_pane_entra.rs`, Microsoft's side cannot run here, so MSAL
//! is replaced by `tests/addin/msal-stub.js`; the access tokens it hands out are
//! real RS256 JWTs signed with the local test key (`tests/fixtures/entra/`) and
//! the server checks them for real, through the same validator as the pane's.
//! Scenarios: the Microsoft button is there (and the page may connect to the
//! authority), the popup signs in, the dashboard loads with the Entra token
//! (never stored), sign-out; a valid token of someone without an account is
//! told so; without Entra there is no button and MSAL is never requested.
//! Screenshot: `target/addin-screenshots/dashboard-entra-*.png`.

mod support;

use support::entra::{claims, fixture, sign, AUD, CLIENT_ID, TID};
use support::*;

const USER: &str = "ann@contoso.test";

#[test]
fn dashboard_sign_in_with_microsoft_in_headless_chromium() {
    let jwks = fixture("jwks.json");
    let s = Server::start_env(&[
        ("MAILBEACON_ENTRA_JWKS", jwks.to_str().unwrap()),
        ("MAILBEACON_ENTRA_AUDIENCE", AUD),
        ("MAILBEACON_ENTRA_TENANTS", TID),
        ("MAILBEACON_ENTRA_CLIENT_ID", CLIENT_ID),
    ]);
    let plain = Server::start();
    s.user(USER);
    let token = |user: &str, oid: &str| sign(&claims(user, oid), "test-key.pem", "test-kid-1");
    browser::run(
        "dashboard-entra.test.mjs",
        &[
            ("MB_BASE", s.base.clone()),
            ("MB_BASE_PLAIN", plain.base.clone()),
            ("MB_USER", USER.to_string()),
            (
                "MB_ENTRA_TOKEN",
                token(USER, "aaaaaaaa-0000-0000-0000-000000000001"),
            ),
            (
                "MB_ENTRA_TOKEN_ZED",
                token("zed@contoso.test", "aaaaaaaa-0000-0000-0000-000000000002"),
            ),
            ("MB_CLIENT_ID", CLIENT_ID.to_string()),
        ],
        &|| s.log_text(),
        &["dashboard-entra-signin", "dashboard-entra-signedin"],
    );
}
