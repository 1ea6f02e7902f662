//! `playground bench` as a user runs it: the flags reach `playground-bench`, and its exit code and its
//! messages are the command's. The benchmarks' runs are measurements, not tests.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_playground");

/// `playground bench` runs the `playground-bench` next to it: `cargo test --workspace` builds it, a test
/// of this package alone does not.
fn playground_bench(args: &[&str]) -> Output {
    let bench = Path::new(BIN).with_file_name("playground-bench");
    assert!(
        bench.is_file(),
        "{} is missing: `playground bench` runs it; build it with `cargo build -p bench`, or run the tests \
         with `cargo test --workspace`",
        bench.display()
    );
    Command::new(BIN).arg("bench").args(args).output().expect("playground bench runs")
}

#[test]
fn flags_and_subcommands_pass_through() {
    let help = playground_bench(&["--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("Usage: playground-bench") && text.contains("failover"), "{text}");
    let help = playground_bench(&["failover", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("--kills"), "a subcommand's own help");
    let help = playground_bench(&["memory", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("--orders"), "the memory benchmark's help");
    let few = playground_bench(&["memory", "--orders", "5"]);
    assert_eq!(few.status.code(), Some(2), "fewer orders than the benchmark measures: {few:?}");

    let bad = playground_bench(&["--duration", "0"]);
    assert_eq!(bad.status.code(), Some(2), "clap's usage error, as the bench binary exits with it");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--duration"));
    let both = playground_bench(&["--target", "http://127.0.0.1:1", "--topology", "both"]);
    assert_eq!(both.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&both.stderr).contains("--target measures a gateway"));
}
