//! Authorization matrix (issue 11): every route of `docs/openapi.yaml` (path
//! and method) called with no token, a disabled user's token, another user's
//! token (B), the owner's non-admin token (A) and the admin token. Path
//! parameters are real ids of A's records. One table below classifies every
//! path; a path of the document missing from it fails the test, so a new
//! endpoint must be classified.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use support::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Access {
    /// No token needed (pixel, click, add-in and dashboard files, health).
    Public,
    /// Admins only: 403 for users.
    Admin,
    /// A record of one user: another user gets 404 (existence not revealed).
    Owner,
    /// Any signed-in user, each seeing their own data.
    AnyUser,
}

/// Every path of the OpenAPI document, classified.
const ROUTES: &[(&str, Access)] = &[
    ("/healthz", Access::Public),
    ("/o/{token}.gif", Access::Public),
    ("/c/{token}/{destination}", Access::Public),
    ("/addin/config.json", Access::Public),
    ("/addin/{file}", Access::Public),
    ("/dashboard/", Access::Public),
    ("/dashboard/{file}", Access::Public),
    ("/metrics", Access::Admin),
    ("/api/v1/users", Access::Admin),
    ("/api/v1/users/{id}", Access::Admin),
    ("/api/v1/users/{id}/token", Access::Admin),
    ("/api/v1/settings", Access::Admin),
    ("/api/v1/contacts/{address}", Access::Admin),
    ("/api/v1/contacts/import", Access::Admin),
    ("/api/v1/subjects/{address}", Access::Admin),
    ("/api/v1/audit", Access::Admin),
    ("/api/v1/emails", Access::AnyUser),
    ("/api/v1/stats", Access::AnyUser),
    ("/api/v1/emails/{id}", Access::Owner),
    ("/api/v1/emails/{id}/schedule", Access::Owner),
    ("/api/v1/emails/{id}/reminder", Access::Owner),
    ("/api/v1/activities", Access::AnyUser),
    ("/api/v1/activities/{id}", Access::Owner),
    ("/api/v1/activities/{id}/regarding", Access::Owner),
    ("/api/v1/compose/follow", Access::AnyUser),
    ("/api/v1/me/settings", Access::AnyUser),
    ("/api/v1/mailbox", Access::AnyUser),
    ("/api/v1/capture", Access::AnyUser),
    ("/api/v1/capture/track", Access::AnyUser),
    ("/api/v1/insights", Access::AnyUser),
    ("/api/v1/insights/{id}/dismiss", Access::Owner),
    ("/api/v1/insights/{id}/snooze", Access::Owner),
    ("/api/v1/insights/contacts/{address}", Access::AnyUser),
    ("/api/v1/insights/emails/{id}", Access::Owner),
    ("/api/v1/insights/send-time", Access::AnyUser),
    ("/api/v1/webhooks", Access::AnyUser),
    ("/api/v1/webhooks/{id}", Access::Owner),
    ("/api/v1/webhooks/{id}/deliveries", Access::Owner),
    (
        "/api/v1/webhooks/{id}/deliveries/{delivery}/retry",
        Access::Owner,
    ),
    ("/api/v1/events", Access::AnyUser),
];

/// The document as JSON (PyYAML reads it; openapi-spec-validator, which the
/// test command installs, depends on it).
fn openapi() -> Value {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml");
    let out = Command::new("python3")
        .args([
            "-c",
            "import json,sys,yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(&spec)
        .output()
        .expect("python3 with PyYAML (./scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the OpenAPI document as JSON")
}

/// A's records, the ids the path parameters are filled with.
struct Ids {
    user: String,
    email: String,
    activity: String,
    webhook: String,
}

fn fill(path: &str, ids: &Ids) -> String {
    let id = if path.starts_with("/api/v1/users/") {
        &ids.user
    } else if path.starts_with("/api/v1/emails/") || path.starts_with("/api/v1/insights/emails/") {
        &ids.email
    } else if path.starts_with("/api/v1/activities/") {
        &ids.activity
    } else if path.starts_with("/api/v1/webhooks/") {
        &ids.webhook
    } else {
        // Cards are derived, not stored: a well-formed id no one has.
        "00000000000000aa"
    };
    path.replace("{id}", id)
        .replace("{address}", "bob%40client.example")
        .replace("{delivery}", "evt_1764446913123-0-0")
}

/// Destructive calls last (the admin's new token for A ends A's token).
fn order(method: &str, path: &str) -> u8 {
    match (method, path) {
        (_, "/api/v1/users/{id}/token") => 4,
        (_, "/api/v1/users/{id}") => 3,
        ("DELETE", "/api/v1/subjects/{address}") => 2,
        ("DELETE", _) => 1,
        _ => 0,
    }
}

#[test]
fn every_route_answers_each_caller_as_its_class_says() {
    let s = Server::start_env(&[LOCAL_OUTBOUND]);
    let a = s.user("ann@sales.test");
    let b = s.user("bea@sales.test");
    let (_, list) = s.api("GET", "/api/v1/users", Some(ADMIN), None);
    let user_id = |email: &str| {
        list["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["email"] == email)
            .and_then(|u| u["id"].as_str())
            .unwrap()
            .to_string()
    };
    let a_id = user_id("ann@sales.test");
    let disabled = s.user("dan@sales.test");
    let (_, list) = s.api("GET", "/api/v1/users", Some(ADMIN), None);
    let dan_id = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "dan@sales.test")
        .and_then(|u| u["id"].as_str())
        .unwrap()
        .to_string();
    let (st, v) = s.api(
        "PATCH",
        &format!("/api/v1/users/{dan_id}"),
        Some(ADMIN),
        Some(json!({"disabled": true})),
    );
    assert_eq!(st, 200, "{v}");

    let (email, _) = s.follow_one(&a, "bob@client.example", "https://shop.example/x");
    let raw = support::email("ann@sales.test", &["bob@client.example"], &[], &[], &[]);
    let (st, act) = s.api(
        "POST",
        "/api/v1/activities",
        Some(&a),
        Some(json!({"mime": STANDARD.encode(raw)})),
    );
    assert!(st == 201 || st == 200, "{st} {act}");
    let (st, hook) = s.api(
        "POST",
        "/api/v1/webhooks",
        Some(&a),
        Some(json!({"url": format!("http://127.0.0.1:{}/hook", free_port()), "events": ["email.opened"]})),
    );
    assert_eq!(st, 201, "{hook}");
    let ids = Ids {
        user: a_id,
        email,
        activity: act["id"].as_str().unwrap().to_string(),
        webhook: hook["id"].as_str().unwrap().to_string(),
    };

    let doc = openapi();
    let table: BTreeMap<&str, Access> = ROUTES.iter().copied().collect();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let access = *table
            .get(path.as_str())
            .unwrap_or_else(|| panic!("{path} is not classified in tests/authz.rs ROUTES"));
        for method in ["get", "post", "put", "patch", "delete"] {
            if let Some(op) = item.get(method) {
                let public = op.get("security").is_some_and(|s| s == &json!([]));
                assert_eq!(
                    public,
                    access == Access::Public,
                    "{method} {path}: the document's security and the table disagree"
                );
                ops.push((method.to_uppercase(), path.clone(), access, op.clone()));
            }
        }
    }
    for (path, _) in ROUTES {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} is in the table but not in docs/openapi.yaml"
        );
    }
    ops.sort_by_key(|(m, p, _, _)| order(m, p));

    let tomorrow = String::from_utf8(
        Command::new("date")
            .args(["-u", "-d", "tomorrow", "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .expect("date")
            .stdout,
    )
    .expect("utf-8")
    .trim()
    .to_string();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (method, path, access, op) in &ops {
        if *access == Access::Public {
            continue;
        }
        let url = fill(path, &ids);
        // A schema-valid body where the handler checks the body before the
        // record; else an empty object.
        let body = op.get("requestBody").map(|_| match path.as_str() {
            "/api/v1/insights/{id}/snooze" => json!({ "until": tomorrow }),
            _ => json!({}),
        });
        let call = |token: Option<&str>| s.api(method, &url, token, body.clone()).0;
        let mut expect = |who: &str, got: u16, ok: bool, want: &str| {
            checked += 1;
            if !ok {
                failures.push(format!("{method} {path} as {who}: {got}, expected {want}"));
            }
        };
        let st = call(None);
        expect("no token", st, st == 401, "401");
        let st = call(Some(&disabled));
        expect("a disabled user", st, st == 401, "401");
        let not_auth = |st: u16| st != 401 && st != 403;
        match access {
            Access::Admin => {
                let st = call(Some(&b));
                expect("another user", st, st == 403, "403");
                let st = call(Some(&a));
                expect("a non-admin", st, st == 403, "403");
                let st = call(Some(ADMIN));
                expect("the admin", st, not_auth(st) && st < 500, "not 401/403");
            }
            Access::Owner => {
                let st = call(Some(&b));
                expect(
                    "another user",
                    st,
                    st == 404,
                    "404 (existence not revealed)",
                );
                let st = call(Some(&a));
                expect("the owner", st, not_auth(st) && st < 500, "not 401/403");
                let st = call(Some(ADMIN));
                expect("the admin", st, not_auth(st) && st < 500, "not 401/403");
            }
            Access::AnyUser => {
                for (who, t) in [("another user", &b), ("a non-admin", &a)] {
                    let st = call(Some(t));
                    expect(who, st, not_auth(st) && st < 500, "not 401/403");
                }
                let st = call(Some(ADMIN));
                expect("the admin", st, not_auth(st) && st < 500, "not 401/403");
            }
            Access::Public => unreachable!(),
        }
    }
    assert!(checked > 100, "only {checked} calls were checked");
    assert!(
        failures.is_empty(),
        "{} of {checked} calls answered wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
