//! The smoke run inside the test suite: the real mailbeacon binary on the embedded
//! store, a few seconds of pixel and click load from the real generator, then a
//! `kill -9` and restart mid-run. Fails if any answered hit was lost or any hit
//! recorded twice. Asserts nothing about timings.
//!
//! It runs the workspace's debug build of `mailbeacon` (`cargo test --workspace`
//! builds it, as the root package's integration tests need it), or the binary
//! named by `MAILBEACON_BIN`.

use std::path::PathBuf;

fn mailbeacon_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MAILBEACON_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug/mailbeacon")
}

#[test]
fn nothing_lost_nothing_doubled_also_across_a_kill() {
    let bin = mailbeacon_bin();
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (cargo build --workspace), or set MAILBEACON_BIN",
        bin.display()
    );
    let scratch =
        std::env::temp_dir().join(format!("mailbeacon-smoke-test-{}", std::process::id()));
    let report = loadtest::compare::smoke(&bin, &scratch);
    let md = loadtest::report::markdown(&report);
    let _ = std::fs::remove_dir_all(&scratch);
    println!("{md}");
    assert!(report.problems.is_empty(), "{md}");
    assert_eq!(report.runs.len(), 2, "{md}");
    assert_eq!(report.faults.len(), 1, "{md}");
    for r in report.runs.iter().chain(&report.faults) {
        let v = r.verdict.as_ref().expect("every mailbeacon run is checked");
        assert!(v.answered > 0, "no hit was answered: {md}");
        assert_eq!((v.lost, v.doubled), (0, 0), "{md}");
    }
    assert!(report.ok(), "{md}");
}
