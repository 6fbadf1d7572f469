//! "Sign in with Microsoft" in the task pane, in a real browser: starts one
//! server with Entra sign-in configured (a JWKS file and the add-in's client id)
//! and one without, then runs `node tests/addin/pane-entra.test.mjs`, which drives
//! headless Chromium (Debian's `/usr/bin/chromium`, through `playwright-core`).
//!
//! Microsoft's side cannot run here: Entra is unreachable and NAA needs a real
//! Outlook to broker the sign-in. So office.js is replaced by
//! `tests/addin/office-stub.js` and MSAL by `tests/addin/msal-stub.js` (served in
//! place of the vendored bundle through Playwright's `route`). The access tokens
//! the MSAL stand-in hands to the pane are nevertheless real RS256 JWTs, minted
//! here with the locally generated key of `tests/addin_entra.rs`
//! (`tests/fixtures/entra/`), and the server validates them for real against its
//! JWKS file: signature, claims, and the link to the provisioned user.
//!
//! Scenarios: (a) silent sign-in, with a first token the server refuses and the
//! pane renews once, and a token close to expiry renewed before use, then
//! tracking with the Entra token (the activity's owner is
//! the linked user; no token is stored); (b) silent sign-in needs interaction, so
//! "Sign in with Microsoft" (keyboard) takes the popup path, first blocked and
//! explained, then successful; (c) a valid token of someone without an account
//! gives "ask your admin to add …"; (d) without Entra configured there is no
//! Microsoft button and the MSAL script is never requested; and an Outlook without
//! NAA falls back to the token paste. The send handler (`commands.html`,
//! `OnMessageSend` on a followed draft, no pasted token): the Microsoft token is
//! acquired silently, checked by the server, and the draft gets the pixel and
//! tracked links (a refused token is renewed once); the send is blocked with the
//! exact message when silent sign-in fails, when Outlook has no NAA, when there is
//! no page to load MSAL into (classic Outlook's bare runtime), for an account
//! without mailbeacon account, and without Entra; a pasted token goes first and
//! MSAL is never requested, also without api.js (the bare runtime). Screenshots (320 px wide) go to
//! `target/addin-screenshots/signin-*.png`.
//!
//! node, Chromium or playwright-core missing fails the test loudly:
//! `./scripts/test.sh` installs them.

mod support;

use support::entra::{claims, fixture, sign, AUD, CLIENT_ID, TID};
use support::*;

const USER: &str = "ann@contoso.test";

/// An Entra-like access token for `username` (object id `oid`), signed with `key`.
fn token(username: &str, oid: &str, key: &str) -> String {
    sign(&claims(username, oid), key, "test-kid-1")
}

#[test]
fn sign_in_with_microsoft_in_headless_chromium() {
    let jwks = fixture("jwks.json");
    let s = Server::start_env(&[
        ("MAILBEACON_ENTRA_JWKS", jwks.to_str().unwrap()),
        ("MAILBEACON_ENTRA_AUDIENCE", AUD),
        ("MAILBEACON_ENTRA_TENANTS", TID),
        ("MAILBEACON_ENTRA_CLIENT_ID", CLIENT_ID),
    ]);
    let plain = Server::start();
    let mb_token = s.user(USER);
    plain.user(USER);

    browser::run(
        "pane-entra.test.mjs",
        &[
            ("MB_BASE", s.base.clone()),
            ("MB_BASE_PLAIN", plain.base.clone()),
            ("MB_USER", USER.to_string()),
            ("MB_TOKEN", mb_token.clone()),
            (
                "MB_ENTRA_TOKEN",
                token(USER, "aaaaaaaa-0000-0000-0000-000000000001", "test-key.pem"),
            ),
            (
                "MB_ENTRA_TOKEN_STALE",
                token(
                    USER,
                    "aaaaaaaa-0000-0000-0000-000000000001",
                    "other-key.pem",
                ),
            ),
            (
                "MB_ENTRA_TOKEN_ZED",
                token(
                    "zed@contoso.test",
                    "aaaaaaaa-0000-0000-0000-000000000002",
                    "test-key.pem",
                ),
            ),
            ("MB_CLIENT_ID", CLIENT_ID.to_string()),
            (
                "MB_AUTHORITY",
                format!("https://login.microsoftonline.com/{TID}"),
            ),
            ("MB_SCOPE", format!("{AUD}/access_as_user")),
        ],
        &|| s.log_text(),
        &[
            "signin-entra",
            "signin-entra-signedin",
            "signin-entra-popup-blocked",
            "signin-entra-error",
            "signin-plain",
            "signin-entra-unsupported",
        ],
    );
}
