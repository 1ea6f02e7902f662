//! `playground-sim` by itself: it lists its scenarios, and a run says which `playground` binary it could
//! not find. Runs of scenarios go through `playground sim`, in the product's tests.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_playground-sim");

#[test]
fn it_lists_its_scenarios() {
    let out = Command::new(BIN).arg("list").output().expect("playground-sim list");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with("baseline ")), "{text}");
}

#[test]
fn a_run_names_the_product_binary_it_cannot_find() {
    let out = Command::new(BIN)
        .args(["baseline", "--duration", "1", "--binary", "/nonexistent/playground"])
        .output()
        .expect("playground-sim baseline");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no playground binary at /nonexistent/playground"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}
