//! `playground-sim`, what `playground sim` runs: fault-injection scenarios against a cluster of
//! `playground` processes (see the `simulations` crate). Exits non-zero on any violation.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use simulations::common::product_binary;
use simulations::sim::{self, summary, SCENARIOS};

#[derive(Parser, Debug)]
#[command(
    name = "playground-sim",
    version,
    about = "Fault-injection scenarios against a real cluster of playground processes, with checkers and a report"
)]
struct SimArgs {
    /// A scenario, `all` to run every one, `list` to list them, or `summary DIR...` to summarize the
    /// reports of earlier runs (a sweep) as a Markdown table.
    #[arg(value_name = "SCENARIO")]
    scenario: String,
    /// With `summary`: the folders whose `report.json` files (at any depth) it summarizes.
    #[arg(value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// Seed of the fault schedule and the workload; the same seed replays the same schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the history and the report go (with `all`, one folder per scenario under it)
    /// [default: sim-results/SCENARIO-seed-N].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Length of the workload, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    duration: u64,
    /// Test-only: start the cluster with a guarantee broken on purpose (`idempotency`, `stale-reads`), to prove that
    /// the checkers catch it; such a run must fail.
    #[arg(long = "break", value_name = "GUARANTEE", value_parser = ["idempotency", "stale-reads"])]
    breaks: Vec<String>,
    /// The `playground` binary the cluster runs [default: the `playground` next to this binary].
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(SimArgs::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("playground-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: SimArgs) -> anyhow::Result<()> {
    if args.scenario == "list" {
        for (name, what) in SCENARIOS {
            println!("{name:<10} {what}");
        }
        return Ok(());
    }
    if args.scenario == "summary" {
        return summary(&args.dirs);
    }
    anyhow::ensure!(args.dirs.is_empty(), "unexpected argument {:?}: only `sim summary` takes folders", args.dirs[0]);
    let scenarios: Vec<&str> = if args.scenario == "all" {
        SCENARIOS.iter().map(|(n, _)| *n).collect()
    } else {
        anyhow::ensure!(
            SCENARIOS.iter().any(|(n, _)| *n == args.scenario),
            "unknown scenario {:?} (see `playground sim list`)",
            args.scenario
        );
        vec![args.scenario.as_str()]
    };
    let binary = product_binary(args.binary)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let duration = Duration::from_secs(args.duration.max(1));
    let (mut passed, mut failed) = (0, 0);
    for scenario in &scenarios {
        let out = match (&args.out, scenarios.len()) {
            (Some(dir), 1) => dir.clone(),
            (Some(dir), _) => dir.join(scenario),
            (None, _) => Path::new("sim-results").join(format!("{scenario}-seed-{}", args.seed)),
        };
        let report = runtime.block_on(sim::run(&binary, scenario, args.seed, &out, duration, &args.breaks))?;
        println!("{}", report.summary().lines().take_while(|l| !l.ends_with(" failed")).collect::<Vec<_>>().join("\n"));
        println!("  report: {}", out.join("report.md").display());
        passed += report.passed();
        failed += report.failed();
    }
    println!("{passed} passed, {failed} failed");
    anyhow::ensure!(failed == 0, "{failed} check(s) failed");
    Ok(())
}

fn summary(dirs: &[PathBuf]) -> anyhow::Result<()> {
    anyhow::ensure!(!dirs.is_empty(), "sim summary: name the folders holding the runs' reports");
    let mut reports = vec![];
    for dir in dirs {
        for path in summary::find_reports(dir)? {
            reports.push(summary::load(&path)?);
        }
    }
    anyhow::ensure!(!reports.is_empty(), "no report.json under {dirs:?}");
    print!("{}", summary::markdown(&reports));
    Ok(())
}
