//! Schema-driven API tests (issue 11): schemathesis runs every check over
//! `docs/openapi.yaml` against a real server, once with the admin token and
//! once with a user's token, with a fixed seed. Any failure (undocumented
//! status, schema-valid request refused, schema-violating request accepted,
//! wrong answer to an undeclared method, 5xx) fails the test with
//! schemathesis's report.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

/// Runs schemathesis over the whole document with `token`; panics with its
/// output on any failure.
fn schemathesis(s: &Server, token: &str, who: &str) {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml");
    // Schemathesis and Hypothesis keep caches in the working directory: a
    // scratch dir keeps the repository clean.
    let scratch = TempDir::new("schemathesis");
    let out = Command::new("schemathesis")
        .current_dir(scratch.path())
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml"))
        .arg("run")
        .arg(&spec)
        .args(["--url", &s.base])
        .args(["--checks", "all"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--seed", "1", "--max-examples", "5", "-w", "1", "--no-color"])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "schemathesis is required for this test (./scripts/test.sh installs it with pip): {e}"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found failures with the {who} token:\n{text}\n--- server log ---\n{}",
        s.log_text()
    );
}

#[test]
fn openapi_document_matches_the_server_for_admin_and_user() {
    let sink = SmtpSink::start();
    let s = Server::start_env(&[("MAILBEACON_SMTP_URL", &sink.url())]);
    let user = s.user("ann@sales.test");
    schemathesis(&s, ADMIN, "admin");
    schemathesis(&s, &user, "user");
}
