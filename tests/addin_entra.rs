//! Sign-in with Microsoft Entra access tokens (as the add-in gets them through
//! Nested App Authentication), against the real binary.
//!
//! Entra cannot be reached from here, so this test plays its part: tokens are
//! signed with a locally generated RSA key (`tests/fixtures/entra/test-key.pem`)
//! whose public half is the JWKS file the server is configured with
//! (`MAILBEACON_ENTRA_JWKS=…/jwks.json`). What Entra would add — real keys
//! fetched from its JWKS URL, key rollover — is the same code path with an
//! https:// URL instead of a file.

mod support;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::entra::{fixture, now, sign, AUD, CLIENT_ID, TID};
use support::*;

fn claims() -> Value {
    support::entra::claims("Ann@Contoso.test", "aaaaaaaa-0000-0000-0000-000000000001")
}

fn me(s: &Server, token: &str) -> (u16, Value) {
    s.api("GET", "/api/v1/me/settings", Some(token), None)
}

#[test]
fn entra_tokens_are_checked_and_mapped_to_users() {
    let jwks = fixture("jwks.json");
    let s = Server::start_env(&[
        ("MAILBEACON_ENTRA_JWKS", jwks.to_str().unwrap()),
        ("MAILBEACON_ENTRA_AUDIENCE", AUD),
        ("MAILBEACON_ENTRA_TENANTS", TID),
        ("MAILBEACON_ENTRA_CLIENT_ID", CLIENT_ID),
    ]);
    let ann_token = s.user("ann@contoso.test");

    // The pane learns how to sign in: client id, the one tenant's authority, and
    // the full scope (the App ID URI audience + the checked scope). No secrets.
    let (st, hs, body) = raw("GET", &s.url("/addin/config.json"), &[]);
    assert_eq!(st, 200);
    assert_eq!(header(&hs, "cache-control"), Some("max-age=60"));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v,
        json!({"entra": {
            "client_id": CLIENT_ID,
            "authority": format!("https://login.microsoftonline.com/{TID}"),
            "scopes": [format!("{AUD}/access_as_user")],
        }})
    );

    // A valid token signs Ann in (matched by preferred_username, then by tid+oid).
    let (st, v) = me(&s, &sign(&claims(), "test-key.pem", "test-kid-1"));
    assert_eq!(
        (st, v["email"].as_str()),
        (200, Some("ann@contoso.test")),
        "{v}"
    );
    let mut renamed = claims();
    renamed["preferred_username"] = json!("ann.new@contoso.test");
    let (st, v) = me(&s, &sign(&renamed, "test-key.pem", "test-kid-1"));
    assert_eq!(
        (st, v["email"].as_str()),
        (200, Some("ann@contoso.test")),
        "linked by tid+oid: {v}"
    );

    // Each check refuses with 401 and says why.
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "expired",
            json!({"exp": now() - 3600, "nbf": now() - 7200}),
            "test-key.pem",
            "Expired",
        ),
        (
            "not yet valid",
            json!({"nbf": now() + 3600}),
            "test-key.pem",
            "ImmatureSignature",
        ),
        (
            "wrong audience",
            json!({"aud": "api://someone-else"}),
            "test-key.pem",
            "InvalidAudience",
        ),
        (
            "issuer of another tenant",
            json!({"iss": "https://login.microsoftonline.com/99999999-2222-3333-4444-555555555555/v2.0"}),
            "test-key.pem",
            "does not match tenant",
        ),
        (
            "tenant not allowed",
            json!({"tid": "99999999-2222-3333-4444-555555555555", "iss": "https://login.microsoftonline.com/99999999-2222-3333-4444-555555555555/v2.0"}),
            "test-key.pem",
            "not allowed",
        ),
        (
            "missing scope",
            json!({"scp": "User.Read"}),
            "test-key.pem",
            "lacks the scope",
        ),
        (
            "unknown user",
            json!({"oid": "aaaaaaaa-0000-0000-0000-000000000002", "preferred_username": "zed@contoso.test"}),
            "test-key.pem",
            "no mailbeacon account",
        ),
        (
            "signed by another key",
            json!({}),
            "other-key.pem",
            "InvalidSignature",
        ),
    ];
    for (what, patch, key, why) in cases {
        let mut c = claims();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        let (st, v) = me(&s, &sign(&c, key, "test-kid-1"));
        assert_eq!(st, 401, "{what}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(why), "{what}: {msg}");
        // A valid token of someone without an account has its own code.
        let code = if what == "unknown user" {
            "not_provisioned"
        } else {
            "unauthorized"
        };
        assert_eq!(v["error"]["code"], code, "{what}");
    }
    // Unknown key id, and a token without nbf.
    let (st, _) = me(&s, &sign(&claims(), "test-key.pem", "other-kid"));
    assert_eq!(st, 401);
    let mut no_nbf = claims();
    no_nbf.as_object_mut().unwrap().remove("nbf");
    assert_eq!(me(&s, &sign(&no_nbf, "test-key.pem", "test-kid-1")).0, 401);
    // An HS256 token (alg confusion) is refused.
    let hs = encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    assert_eq!(me(&s, &hs).0, 401);
    // Ordinary bearer tokens keep working beside Entra.
    assert_eq!(me(&s, &ann_token).0, 200);
}

#[test]
fn without_entra_configured_jwts_are_just_invalid_tokens() {
    let s = Server::start();
    s.user("ann@contoso.test");
    let (st, v) = me(&s, &sign(&claims(), "test-key.pem", "test-kid-1"));
    assert_eq!(
        (st, v["error"]["message"].as_str()),
        (401, Some("invalid bearer token"))
    );
    // The pane is told so, and never loads MSAL.
    let (st, _, body) = raw("GET", &s.url("/addin/config.json"), &[]);
    assert_eq!(st, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v, json!({"entra": null}));
}

#[test]
fn entra_client_id_without_jwks_is_a_startup_error() {
    // A harmless command: if the configuration were accepted, it would only
    // write manifests into a temporary directory.
    let dir = TempDir::new("entra-config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailbeacon"))
        .args([
            "addin",
            "manifest",
            "--public-url",
            "https://x.test",
            "--out",
        ])
        .arg(dir.path())
        .env_clear()
        .env("MAILBEACON_ENTRA_CLIENT_ID", CLIENT_ID)
        .output()
        .expect("run mailbeacon");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("entra_client_id"), "{err}");
}

/// A JWKS URL that accepts connections and never answers (counting them).
fn silent_jwks() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let n = std::sync::Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    (format!("https://127.0.0.1:{port}/discovery/v2.0/keys"), n)
}

#[test]
fn an_unreachable_jwks_is_fetched_once_per_backoff_and_never_shown() {
    use std::sync::atomic::Ordering;
    let (url, attempts) = silent_jwks();
    let s = Server::start_env(&[
        ("MAILBEACON_ENTRA_JWKS", &url),
        ("MAILBEACON_ENTRA_AUDIENCE", AUD),
        ("MAILBEACON_ENTRA_TENANTS", TID),
    ]);
    let ann = s.user("ann@sales.test");
    let (_, copy) = s.follow_one(&ann, "bob@client.test", "https://shop.example/a");
    let pixel = copy.pixel.expect("pixel");
    let token = sign(&claims(), "test-key.pem", "test-kid-1");
    // Many anonymous JWT-shaped requests at once, while a pixel is fetched.
    let answers: Vec<(u16, Value)> = std::thread::scope(|sc| {
        let calls: Vec<_> = (0..40).map(|_| sc.spawn(|| me(&s, &token))).collect();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (st, _, _) = raw("GET", &pixel, &[]);
        assert_eq!(st, 200, "the pixel answers while the JWKS fetch hangs");
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for (st, v) in &answers {
        assert_eq!(
            (*st, v["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{v}"
        );
        let text = v.to_string();
        assert!(
            !text.contains("127.0.0.1") && !text.contains("discovery"),
            "{v}"
        );
    }
    // Within the backoff, more tokens try nothing new.
    for _ in 0..5 {
        assert_eq!(me(&s, &token).0, 401);
    }
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        1,
        "one fetch per backoff period"
    );
    // Ordinary tokens never wait on Entra.
    assert_eq!(me(&s, &ann).0, 200);
}

#[test]
fn first_sign_in_links_only_by_the_tenant_sign_in_name_onto_an_unlinked_user() {
    let jwks = fixture("jwks.json");
    let s = Server::start_env(&[
        ("MAILBEACON_ENTRA_JWKS", jwks.to_str().unwrap()),
        ("MAILBEACON_ENTRA_AUDIENCE", AUD),
        ("MAILBEACON_ENTRA_TENANTS", TID),
    ]);
    s.user("ann@contoso.test");
    s.user("bob@contoso.test");
    // The `email` claim (settable by a user) matches Bob, no sign-in name: refused.
    let mut by_email = claims();
    by_email
        .as_object_mut()
        .unwrap()
        .remove("preferred_username");
    by_email["oid"] = json!("aaaaaaaa-0000-0000-0000-0000000000e1");
    by_email["email"] = json!("bob@contoso.test");
    let (st, v) = me(&s, &sign(&by_email, "test-key.pem", "test-kid-1"));
    assert_eq!(st, 401, "{v}");
    // Ann signs in and is linked by tid+oid.
    let (st, v) = me(&s, &sign(&claims(), "test-key.pem", "test-kid-1"));
    assert_eq!(
        (st, v["email"].as_str()),
        (200, Some("ann@contoso.test")),
        "{v}"
    );
    // Another identity now claiming Ann's name does not take her account over.
    let mut other = claims();
    other["oid"] = json!("aaaaaaaa-0000-0000-0000-0000000000e2");
    let (st, v) = me(&s, &sign(&other, "test-key.pem", "test-kid-1"));
    assert_eq!(st, 401, "{v}");
    // Ann's own identity keeps working.
    assert_eq!(
        me(&s, &sign(&claims(), "test-key.pem", "test-kid-1")).0,
        200
    );
}

#[test]
fn entra_without_a_tenant_list_is_a_startup_error() {
    let dir = TempDir::new("entra-tenants");
    let jwks = fixture("jwks.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailbeacon"))
        .args([
            "addin",
            "manifest",
            "--public-url",
            "https://x.test",
            "--out",
        ])
        .arg(dir.path())
        .env_clear()
        .env("MAILBEACON_ENTRA_JWKS", &jwks)
        .env("MAILBEACON_ENTRA_AUDIENCE", AUD)
        .output()
        .expect("run mailbeacon");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("entra_tenants"), "{err}");
}
