//! `playground sim` as a user runs it: a scenario against a real proxied cluster, its history, its
//! report, and the `N passed, N failed` line.

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_playground");

fn sim(scenario: &str, seed: u64, duration: u64) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let out = Command::new(BIN)
        .args(["sim", scenario, "--seed", &seed.to_string(), "--duration", &duration.to_string(), "--out"])
        .arg(dir.path())
        .output()
        .expect("playground sim runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{scenario}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.ends_with(" passed, 0 failed") && !last.starts_with("0 passed"), "{scenario}: {stdout}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).expect("report"))
        .expect("report.json parses");
    assert_eq!(report["seed"], seed);
    assert_eq!(report["scenario"], scenario);
    assert!(report["checks"].as_array().is_some_and(|c| c.len() >= 5), "{report}");
    assert!(dir.path().join("report.md").exists());
    let history = std::fs::read_to_string(dir.path().join("history.jsonl")).expect("history");
    let oks = history
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .filter(|e| e["type"] == "ok" && e["f"] == "create_order")
        .count();
    assert!(oks > 0, "{scenario}: the history has acknowledged creates");
}

/// One test, so that the clusters do not compete for the machine.
#[test]
fn baseline_kill_and_partition_scenarios_pass_and_a_broken_guarantee_fails() {
    sim("baseline", 1, 8);
    sim("kill", 2, 10);
    sim("partition", 4, 8);

    // With idempotency broken on purpose, the workload's repeated keys make duplicates, and the run fails.
    let dir = tempfile::tempdir().expect("a temp dir");
    let out = Command::new(BIN)
        .args(["sim", "baseline", "--seed", "1", "--duration", "6", "--break", "idempotency", "--out"])
        .arg(dir.path())
        .output()
        .expect("playground sim runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a broken guarantee must fail the run: {stdout}");
    assert!(stdout.contains("FAIL duplicates: "), "{stdout}");
    assert!(stdout.lines().last().is_some_and(|l| !l.ends_with(" 0 failed")), "{stdout}");
}

#[test]
fn sim_lists_its_scenarios_and_refuses_unknown_ones() {
    let list = Command::new(BIN).args(["sim", "list"]).output().expect("sim list");
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success());
    let names = "baseline kill pause isolate latency partition reset panic rolling drill skew overload";
    for s in names.split(' ') {
        assert!(text.contains(s), "{text}");
    }
    let bad = Command::new(BIN).args(["sim", "nope"]).output().expect("sim nope");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nope"));
    let bad = Command::new(BIN).args(["sim", "baseline", "--break", "durability"]).output().expect("sim --break");
    assert!(!bad.status.success(), "only known guarantees can be broken");
}
