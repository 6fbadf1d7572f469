//! The add-in manifests as a deployment gets them: `mailbeacon addin manifest`
//! writes them, xmllint (libxml2, `--nonet`) finds the XML well-formed, the
//! project's own checks pass (https URLs inside AppDomains, every resid
//! resolves, icon sizes from the PNG headers, the send handler registered in the
//! JavaScript, a pinnable pane), and the running server serves every URL the
//! manifests name.
//!
//! Not checked here: validation against Microsoft's XSDs (they are not
//! available offline in this workplace; `/work/shared/schemas` did not exist
//! when this was written) and `office-addin-manifest validate` for the JSON
//! manifest (it needs Microsoft's service); the Rust structural checks in
//! `addin_manifest::check_json` stand in for it.

mod support;

use std::process::Command;

use mailbeacon::addin_manifest::{check_json, check_xml};
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
