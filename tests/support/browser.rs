//! The browser tests' runner: checks that Debian's Chromium and the pinned
//! `playwright-core` are there (failing loudly with what to install: the
//! README test command installs both), runs one `tests/addin/*.test.mjs`
//! script with node, fails with its output and the server's log if it fails,
//! and checks the screenshots it was to write into `target/addin-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the browser tests write their screenshots.
pub fn shots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/addin-screenshots")
}

/// Runs `tests/addin/{script}` with `env` (plus `MB_SHOTS` and `MB_CHROMIUM`);
/// `server_log` is shown when it fails; every name in `screenshots` must then
/// exist as `{name}.png`.
pub fn run(
    script: &str,
    env: &[(&str, String)],
    server_log: &dyn Fn() -> String,
    screenshots: &[&str],
) {
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
    let shots = shots_dir();
    let mut cmd = Command::new("node");
    cmd.arg(root.join("tests/addin").join(script))
        .env("MB_SHOTS", &shots)
        .env("MB_CHROMIUM", &chromium);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
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
        server_log()
    );
    for name in screenshots {
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "screenshot {name}"
        );
    }
}
