//! `playground-bench` by itself: what it refuses before it starts anything, and which `playground`
//! binary it could not find. The benchmarks' runs are measurements, not tests.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_playground-bench");

fn bench(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("playground-bench runs")
}

#[test]
fn it_lists_its_benchmarks() {
    let out = bench(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("failover") && text.contains("rebalance") && text.contains("--binary"), "{text}");
    assert!(text.contains("scale"), "{text}");
}

#[test]
fn scale_says_in_one_line_when_it_cannot_write_cgroups_and_starts_nothing() {
    // Any existing file will do as the product: the cgroup check comes before anything is started.
    let out = bench(&["scale", "--binary", BIN, "--cgroup-root", "/nonexistent/cgroup/cpu"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot create a cgroup under /nonexistent/cgroup/cpu"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[test]
fn a_run_names_the_product_binary_it_cannot_find() {
    let missing = "/nonexistent/playground";
    for args in [&["--duration", "1", "--binary", missing][..], &["failover", "--binary", missing][..]] {
        let out = bench(args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("no playground binary at /nonexistent/playground"), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
}

#[test]
fn a_target_goes_only_with_the_single_topology() {
    let out = bench(&["--target", "http://127.0.0.1:1", "--topology", "both"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--target"));
}
