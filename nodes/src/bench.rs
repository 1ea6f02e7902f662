//! `playground bench`: an open-loop HTTP load generator that measures each mix of API calls beside a bare
//! warp handler driven by the same client code in the same run, so the figures read as "how far from what
//! this machine can do at all" rather than as absolute numbers.
//!
//! Per target and mix: a closed-loop saturation phase estimates the knee; open-loop phases then issue
//! requests on a fixed schedule and measure latency from each request's intended send time, so a slow
//! server cannot hide its queueing (coordinated omission).
//!
//! - `load`: the closed and open loops, and the latency histograms they fill.
//! - `workload`: the mixes, their fixtures, and the baseline's one request.
//! - `targets`: the baseline server and the node started as a child process.
//! - `report`: summaries, ratios, the stdout table, `bench.json` and `bench.md`.

mod load;
mod report;
mod targets;
mod workload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use load::PhaseRun;
use report::{PhaseRow, Report};
use workload::{Fixtures, Kind, Workload};

/// Every request gives up after this; it bounds each closed-loop iteration and each open-loop task.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Unmeasured closed-loop run before each saturation phase, so connection set-up and cold caches stay out.
const WARM_UP: Duration = Duration::from_secs(1);
/// Outstanding open-loop requests allowed per connection before the scheduler holds back.
const OUTSTANDING_PER_CONNECTION: usize = 4;
/// Users registered before measuring; enough that per-user state is spread over the shards.
const POOL_USERS: usize = 64;
/// Orders created per pool user for the `get-order` mix.
const ORDERS_PER_USER: usize = 4;
/// Fractions of the saturation throughput the open-loop phases run at when `--rates` is not given.
const DEFAULT_RATE_FRACTIONS: [f64; 3] = [0.25, 0.5, 0.75];

/// Flags of `playground bench`.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Which mix of API calls to measure.
    #[arg(long, value_enum, default_value_t = MixArg::All)]
    pub mix: MixArg,
    /// Seconds each measured phase lasts.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration: u64,
    /// Concurrent workers of the saturation phase; open-loop phases may hold four times as many requests.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub connections: u64,
    /// Comma-separated operations per second for the open-loop phases [default: 25%, 50% and 75% of the
    /// mix's measured saturation throughput].
    #[arg(long, value_name = "RATES", value_delimiter = ',', value_parser = parse_rate)]
    pub rates: Option<Vec<f64>>,
    /// Folder that receives bench.json and bench.md.
    #[arg(long, value_name = "DIR", default_value = "./bench-results")]
    pub out: PathBuf,
    /// Base URL of an already running gateway to measure, instead of starting a node.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Argon2id memory in KiB for the node this command starts [default: the product's default].
    #[arg(long, value_name = "KIB", conflicts_with = "target")]
    pub argon2_memory_kib: Option<u32>,
}

/// The `--mix` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MixArg {
    /// Every mix below, one after the other.
    All,
    /// Register a new user, then log in: one operation of two requests.
    RegisterLogin,
    /// Create an order for a pool user.
    CreateOrder,
    /// Read one of a pool of orders.
    GetOrder,
    /// Check a pool user's session token.
    SessionCheck,
}

impl MixArg {
    fn kinds(self) -> Vec<Kind> {
        match self {
            Self::All => vec![Kind::RegisterLogin, Kind::CreateOrder, Kind::GetOrder, Kind::SessionCheck],
            Self::RegisterLogin => vec![Kind::RegisterLogin],
            Self::CreateOrder => vec![Kind::CreateOrder],
            Self::GetOrder => vec![Kind::GetOrder],
            Self::SessionCheck => vec![Kind::SessionCheck],
        }
    }
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text.trim().parse().map_err(|_| format!("`{text}` is not a number"))?;
    if !rate.is_finite() || rate <= 0.0 || rate > 1_000_000.0 {
        return Err(format!("`{text}`: a rate is more than 0 and at most 1000000 per second"));
    }
    Ok(rate)
}

/// Open-loop rates below the knee, rounded to whole operations per second; none when nothing succeeded.
fn derive_rates(saturation_per_s: f64) -> Vec<f64> {
    if !saturation_per_s.is_finite() || saturation_per_s <= 0.0 {
        return Vec::new();
    }
    let mut rates: Vec<f64> = DEFAULT_RATE_FRACTIONS.iter().map(|f| (saturation_per_s * f).round().max(1.0)).collect();
    rates.dedup();
    rates
}

pub fn run(args: BenchArgs) -> Result<()> {
    // The baseline and the node each get their own runtime or process, so that none of them shares the
    // client's scheduler; all of them still share this machine's cores, which the report says.
    let baseline = targets::Baseline::start()?;
    let node = match &args.target {
        Some(_) => None,
        None => Some(targets::NodeProcess::start(args.argon2_memory_kib)?),
    };
    let target_url = match (&args.target, &node) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(node)) => node.url().to_owned(),
        (None, None) => bail!("no target: neither --target nor a started node"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-client")
        .build()
        .context("start the client runtime")?;
    let report = runtime.block_on(measure(&args, baseline.url(), &target_url))?;
    // The client's connections go before the servers, so neither side sees the other vanish mid-request.
    drop(runtime);
    drop(node);
    drop(baseline);

    print!("{}", report.to_text());
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let json_path = args.out.join("bench.json");
    let json = serde_json::to_string_pretty(&report).context("serialise the report")?;
    std::fs::write(&json_path, json + "\n").with_context(|| format!("write {}", json_path.display()))?;
    let md_path = args.out.join("bench.md");
    std::fs::write(&md_path, report.to_markdown()).with_context(|| format!("write {}", md_path.display()))?;
    println!("\nwrote {} and {}", json_path.display(), md_path.display());
    Ok(())
}

async fn measure(args: &BenchArgs, baseline_url: &str, target_url: &str) -> Result<Report> {
    let connections = usize::try_from(args.connections).context("--connections")?;
    let max_outstanding = connections * OUTSTANDING_PER_CONNECTION;
    let duration = Duration::from_secs(args.duration);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(max_outstanding)
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .context("build the HTTP client")?;
    targets::wait_ready(&client, target_url).await?;

    let mut report = Report::new(args, target_url, max_outstanding);
    let hello = Arc::new(Workload::new(Kind::Hello, client.clone(), baseline_url, Fixtures::default()));
    let mut baseline_at: HashMap<u64, PhaseRow> = HashMap::new();

    let kinds = args.mix.kinds();
    let fixtures = Fixtures::create(&client, target_url, &kinds, POOL_USERS, ORDERS_PER_USER).await?;
    for kind in kinds {
        let mix = Arc::new(Workload::new(kind, client.clone(), target_url, fixtures.clone()));
        // On a shared machine capacity drifts over minutes: each mix's knee is compared with a baseline
        // knee measured just before it, not with one from the start of the run.
        let baseline_sat = saturate(&hello, connections, duration).await;
        report.phases.push(PhaseRow::new(report::BASELINE, Kind::Hello.name(), &baseline_sat));
        let sat = saturate(&mix, connections, duration).await;
        let sat_row = PhaseRow::new(report::PRODUCT, kind.name(), &sat);
        let rates = args.rates.clone().unwrap_or_else(|| derive_rates(sat_row.achieved_per_s));
        if rates.is_empty() {
            eprintln!("bench: {}: nothing succeeded at saturation, so no open-loop rates to derive", kind.name());
        }
        report.phases.push(sat_row);
        for rate in rates {
            let run = announce(
                kind.name(),
                &format!("open {rate}/s"),
                load::open_loop(&mix, rate, duration, max_outstanding),
            )
            .await;
            report.phases.push(PhaseRow::new(report::PRODUCT, kind.name(), &run));
            // The same rate's baseline runs right after, under the same machine conditions, once per rate.
            if let std::collections::hash_map::Entry::Vacant(slot) = baseline_at.entry(rate.to_bits()) {
                let run = announce(
                    Kind::Hello.name(),
                    &format!("open {rate}/s"),
                    load::open_loop(&hello, rate, duration, max_outstanding),
                )
                .await;
                let row = PhaseRow::new(report::BASELINE, Kind::Hello.name(), &run);
                report.phases.push(row.clone());
                slot.insert(row);
            }
        }
    }
    report.compute_ratios();
    Ok(report)
}

async fn saturate(workload: &Arc<Workload>, connections: usize, duration: Duration) -> PhaseRun {
    let name = workload.kind().name();
    announce(name, "warm-up", load::closed_loop(workload, connections, WARM_UP)).await;
    announce(name, "saturation", load::closed_loop(workload, connections, duration)).await
}

async fn announce(mix: &str, phase: &str, run: impl std::future::Future<Output = PhaseRun>) -> PhaseRun {
    eprintln!("bench: {mix}: {phase}…");
    let run = run.await;
    eprintln!(
        "bench: {mix}: {phase}: {:.0} ok/s, {} errors, {} dropped",
        run.achieved_per_s(),
        run.tally.error_count(),
        run.tally.dropped
    );
    run
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.bench)
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.mix, MixArg::All);
        assert_eq!(a.duration, 10);
        assert_eq!(a.connections, 32);
        assert_eq!(a.rates, None);
        assert_eq!(a.out, PathBuf::from("./bench-results"));
        assert_eq!(a.target, None);
        assert_eq!(a.argon2_memory_kib, None);
    }

    #[test]
    fn every_flag_parses() {
        let a = parse(&[
            "--mix",
            "get-order",
            "--duration",
            "3",
            "--connections",
            "8",
            "--rates",
            "100,250.5",
            "--out",
            "r",
            "--argon2-memory-kib",
            "1024",
        ])
        .unwrap();
        assert_eq!(a.mix, MixArg::GetOrder);
        assert_eq!((a.duration, a.connections), (3, 8));
        assert_eq!(a.rates, Some(vec![100.0, 250.5]));
        assert_eq!(a.argon2_memory_kib, Some(1024));
        assert_eq!(parse(&["--mix", "register-login"]).unwrap().mix.kinds(), vec![Kind::RegisterLogin]);
        assert_eq!(parse(&["--mix", "all"]).unwrap().mix.kinds().len(), 4);
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(parse(&["--mix", "everything"]).is_err());
        assert!(parse(&["--rates", "100,0"]).is_err());
        assert!(parse(&["--rates", "-5"]).is_err());
        assert!(parse(&["--rates", "fast"]).is_err());
        assert!(parse(&["--duration", "0"]).is_err());
        assert!(parse(&["--connections", "0"]).is_err());
        // The memory setting only reaches a node this command starts.
        assert!(parse(&["--target", "http://127.0.0.1:1", "--argon2-memory-kib", "1024"]).is_err());
    }

    #[test]
    fn derived_rates_sit_below_the_knee() {
        assert_eq!(derive_rates(1000.0), vec![250.0, 500.0, 750.0]);
        assert_eq!(derive_rates(10.0), vec![3.0, 5.0, 8.0]);
        // Too slow to split: one rate of at least one operation per second, not three equal phases.
        assert_eq!(derive_rates(1.0), vec![1.0]);
        assert!(derive_rates(0.0).is_empty());
        assert!(derive_rates(f64::NAN).is_empty());
    }
}
