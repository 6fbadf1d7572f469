//! The add-in manifests as a deployment gets them: `mailbeacon addin manifest`
//! writes them, xmllint (libxml2, `--nonet`) finds the XML well-formed, the
//! project's own checks pass (https URLs inside AppDomains, every resid
//! resolves, icon sizes from the PNG headers, the send handler registered in the
//! JavaScript, a pinnable pane), and the running server serves every URL the
//! manifests name.
//!
//! The unified JSON manifest is also validated by Microsoft's own
//! `office-addin-manifest validate` (npm, pinned in `tests/addin/package.json`),
//! which checks JSON manifests against their schema offline; a deliberately
//! broken copy must fail it, so a pass means something.
//!
//! Not checked here: validation of the XML manifest against Microsoft's XSDs
//! (they are not available offline in this workplace; `/work/shared/schemas` did
//! not exist), and `office-addin-manifest validate` on the XML (it needs
//! Microsoft's online service); xmllint and the Rust checks stand in for them.

mod support;

use std::process::Command;

use mailbeacon::addin::manifest::{check_json, check_xml};
use support::*;

#[test]
fn manifest_command_writes_valid_manifests_and_the_server_serves_them() {
    let dir = TempDir::new("manifest");
    let url = "https://crm.example.test";
    let out = Command::new(env!("CARGO_BIN_EXE_mailbeacon"))
        .args(["addin", "manifest", "--public-url", url, "--out"])
        .arg(dir.path())
        .env_clear()
        .output()
        .expect("run mailbeacon");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = std::fs::read_to_string(dir.path().join("manifest.xml")).unwrap();
    let json = std::fs::read_to_string(dir.path().join("manifest.json")).unwrap();
    assert_eq!(check_xml(&xml, url), Vec::<String>::new());
    assert_eq!(check_json(&json, url), Vec::<String>::new());
    for icon in ["icon-color-192.png", "icon-outline-32.png"] {
        assert!(
            dir.path().join(icon).exists(),
            "{icon} written next to manifest.json"
        );
    }
    let lint = Command::new("xmllint")
        .args(["--noout", "--nonet"])
        .arg(dir.path().join("manifest.xml"))
        .output()
        .expect("xmllint is required (libxml2-utils; the README test command installs it)");
    assert!(
        lint.status.success(),
        "{}",
        String::from_utf8_lossy(&lint.stderr)
    );

    // Microsoft's validator on the JSON manifest, with a negative control.
    let validator = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/addin/node_modules/.bin/office-addin-manifest");
    assert!(
        validator.exists(),
        "office-addin-manifest is missing: run ./scripts/test.sh (npm ci in tests/addin)"
    );
    let validate = |path: &std::path::Path| {
        Command::new(&validator)
            .arg("validate")
            .arg(path)
            .output()
            .expect("node is required (the README test command installs it)")
    };
    let ok = validate(&dir.path().join("manifest.json"));
    assert!(
        ok.status.success(),
        "office-addin-manifest rejects manifest.json:\n{}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    let mut broken: serde_json::Value = serde_json::from_str(&json).unwrap();
    broken.as_object_mut().unwrap().remove("name");
    let bad_path = dir.path().join("broken.json");
    std::fs::write(&bad_path, broken.to_string()).unwrap();
    let bad = validate(&bad_path);
    assert!(
        !bad.status.success(),
        "control: the validator accepted a manifest without a name, so its pass above proves nothing"
    );

    // An http:// public URL is refused with a clear message.
    let out = Command::new(env!("CARGO_BIN_EXE_mailbeacon"))
        .args([
            "addin",
            "manifest",
            "--public-url",
            "http://crm.example.test",
            "--out",
        ])
        .arg(dir.path().join("x"))
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTPS"));

    // Every /addin/ URL of the manifests is served, with the right type.
    let s = Server::start();
    let mut paths: Vec<String> = xml
        .split(&format!("{url}/addin/"))
        .skip(1)
        .chain(json.split(&format!("{url}/addin/")).skip(1))
        .filter_map(|p| p.split('"').next().map(str::to_string))
        .collect();
    paths.sort();
    paths.dedup();
    assert!(paths.len() >= 8, "{paths:?}");
    for p in paths {
        let (st, hs, body) = raw("GET", &s.url(&format!("/addin/{p}")), &[]);
        assert_eq!(st, 200, "{p}");
        assert!(!body.is_empty(), "{p}");
        let ct = header(&hs, "content-type").unwrap_or("");
        let want = match p.rsplit('.').next() {
            Some("png") => "image/png",
            Some("html") => "text/html",
            Some("js") => "text/javascript",
            _ => "",
        };
        assert!(ct.starts_with(want), "{p}: {ct}");
    }
    assert_eq!(raw("GET", &s.url("/addin/nope.js"), &[]).0, 404);
    assert_eq!(raw("GET", &s.url("/addin/../Cargo.toml"), &[]).0, 404);
    assert_eq!(raw("HEAD", &s.url("/addin/taskpane.html"), &[]).0, 200);
}
