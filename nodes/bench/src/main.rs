//! `playground-bench`, what `playground bench` runs: an open-loop HTTP load generator that measures each
//! mix of API calls beside a bare warp handler driven by the same client code in the same run, so the
//! figures read as "how far from what this machine can do at all" rather than as absolute numbers. The
//! product it measures is the `playground` next to this binary, or `--binary PATH`; the processes are
//! started by the `simulations` harness.
//!
//! Per target and mix: a closed-loop saturation phase estimates the knee; open-loop phases then issue
//! requests on a fixed schedule and measure latency from each request's intended send time, so a slow
//! server cannot hide its queueing (coordinated omission).
//!
//! `--topology` picks what the mixes run against: one node (`single`), a 3-node cluster behind one gateway
//! started with `playground up` (`cluster`), or both in the same run, compared with each other and with
//! the baseline (`both`). `playground bench failover` measures instead how long the cluster's shards stay
//! unwritable when the node leading the most of them is killed, and `playground bench rebalance` how long
//! the placement takes to even out after a fourth node joins, under load. `playground bench scale`
//! compares a 3-node and a 6-node cluster whose nodes each get the same CPU quota, and `playground bench
//! memory` what an active entity holds in resident memory.
//!
//! Every saturation phase also records the CPU time of every product process, so each figure comes with
//! what it cost; the report prints every figure the run measured beside its target.
//!
//! - `load`: the closed and open loops, and the latency histograms they fill.
//! - `workload`: the mixes, their fixtures, and the baseline's one request.
//! - `targets`: the baseline server, the node started as a child process, and how the product is started.
//! - `cluster`: the cluster started as a child process, its members and its view.
//! - `cpu`: CPU time of processes from /proc, per operation and in cores.
//! - `nginx`: nginx in front of bare warp, the gateway's baseline.
//! - `cgroup`: cgroup v1 CPU quotas for the scale-out benchmark.
//! - `failover`: the failover benchmark.
//! - `rebalance`: the rebalancing benchmark.
//! - `scale`: the scale-out benchmark.
//! - `memory`: the resident memory of an active entity.
//! - `goals`: the targets, and a figure's verdict against its target.
//! - `cost`: CPU per operation, cluster against single node, idle CPU, nginx: the cost tables.
//! - `report`: summaries, ratios, the stdout table, `bench.json` and `bench.md`.
//! - `table`: the tables every report renders.

mod cgroup;
mod cluster;
mod cost;
mod cpu;
mod failover;
mod goals;
mod load;
mod memory;
mod nginx;
mod rebalance;
mod report;
mod scale;
mod table;
mod targets;
mod workload;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use simulations::common::product_binary;

use cpu::{Sample, Watched};
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

#[derive(Parser)]
#[command(
    name = "playground-bench",
    version,
    about = "Load, failover and rebalancing benchmarks of playground, beside a bare-warp baseline"
)]
struct Cli {
    /// The `playground` binary to measure (after `failover` or `rebalance`, when given) [default: the
    /// `playground` next to this binary].
    #[arg(long, value_name = "PATH", global = true)]
    binary: Option<PathBuf>,
    #[command(flatten)]
    bench: BenchArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.bench, cli.binary) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("playground-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Flags of `playground bench`.
#[derive(Args, Clone, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// Another benchmark than the load mixes.
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// What the mixes run against: one node, a 3-node cluster behind one gateway, or both side by side.
    #[arg(long, value_enum, default_value_t = Topology::Single)]
    pub topology: Topology,
    /// Which mixes of API calls to measure, comma-separated (run in the order of `all`).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub mix: Vec<MixArg>,
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

/// The benchmarks `playground bench` runs instead of the load mixes.
#[derive(Subcommand, Clone, Debug)]
pub enum BenchCommand {
    /// Kill the node leading the most shards, again and again, and time until every shard takes writes.
    Failover(failover::FailoverArgs),
    /// Start a fourth node under load and time until every node carries its share of replicas and leaders.
    Rebalance(rebalance::RebalanceArgs),
    /// Saturate a 3-node and a 6-node cluster whose nodes each get the same CPU quota, and compare.
    Scale(scale::ScaleArgs),
    /// Create orders on a node as shipped and on one whose entities stop at once, and compare their
    /// resident memory: what an active entity holds.
    Memory(memory::MemoryArgs),
}

/// The `--topology` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Topology {
    /// One node started by this command, serving the API itself (or `--target`).
    Single,
    /// Three nodes and one gateway started by this command with `playground up`.
    Cluster,
    /// The single node and the cluster in the same run, each mix against both.
    Both,
}

impl Topology {
    fn name(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Cluster => "cluster",
            Self::Both => "both",
        }
    }

    fn single(self) -> bool {
        matches!(self, Self::Single | Self::Both)
    }

    fn cluster(self) -> bool {
        matches!(self, Self::Cluster | Self::Both)
    }
}

/// The `--mix` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MixArg {
    /// Every mix below, one after the other.
    All,
    /// Register a new user, then log in: one operation of two requests.
    RegisterLogin,
    /// Create an order for one of 64 pool users, round robin.
    CreateOrder,
    /// Create an order for one user only: one hot shard.
    CreateOrderHot,
    /// Read one of 256 orders (64 users × 4), round robin over the users.
    GetOrder,
    /// Read one of one user's 256 orders: one hot shard.
    GetOrderHot,
    /// Check a pool user's session token.
    SessionCheck,
}

impl MixArg {
    fn kinds(self) -> Vec<Kind> {
        match self {
            Self::All => Kind::MIXES.to_vec(),
            Self::RegisterLogin => vec![Kind::RegisterLogin],
            Self::CreateOrder => vec![Kind::CreateOrder],
            Self::CreateOrderHot => vec![Kind::CreateOrderHot],
            Self::GetOrder => vec![Kind::GetOrder],
            Self::GetOrderHot => vec![Kind::GetOrderHot],
            Self::SessionCheck => vec![Kind::SessionCheck],
        }
    }
}

/// The mixes `--mix` names, each once, in the order `all` runs them.
fn kinds_of(mixes: &[MixArg]) -> Vec<Kind> {
    let wanted: Vec<Kind> = mixes.iter().flat_map(|m| m.kinds()).collect();
    Kind::MIXES.into_iter().filter(|k| wanted.contains(k)).collect()
}

/// A product a run measures: its label, its URL, and its processes (none for `--target`).
struct Product {
    label: &'static str,
    url: String,
    processes: Vec<Watched>,
}

/// The bench's own process in CPU tables: the client, and the bare warp server.
const CLIENT: &str = "bench: client and bare warp";

fn own_process() -> Watched {
    Watched::new(CLIENT, i32::try_from(std::process::id()).unwrap_or(i32::MAX))
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

/// The open-loop rates of each target, given each one's saturation throughput (`knees`, in the order of
/// the targets). With `--rates`, every target runs those. Otherwise the first target runs at fractions of
/// its own knee, as a single-target run does; with more than one target, every target also runs at the
/// same fractions of the lowest knee, so that all of them are compared at rates each can sustain.
fn plan_rates(given: Option<&[f64]>, knees: &[f64]) -> Vec<Vec<f64>> {
    if let Some(rates) = given {
        return vec![rates.to_vec(); knees.len()];
    }
    if knees.len() <= 1 {
        return knees.iter().map(|k| derive_rates(*k)).collect();
    }
    let lowest = knees.iter().copied().fold(f64::INFINITY, f64::min);
    let shared = derive_rates(lowest);
    knees
        .iter()
        .enumerate()
        .map(|(i, knee)| if i == 0 { sorted_union(&[derive_rates(*knee), shared.clone()]) } else { shared.clone() })
        .collect()
}

/// Every rate of `plans`, ascending, once.
fn sorted_union(plans: &[Vec<f64>]) -> Vec<f64> {
    let mut all: Vec<f64> = plans.iter().flatten().copied().collect();
    all.sort_by(f64::total_cmp);
    all.dedup();
    all
}

/// Runs the benchmark `args` ask for against the product `binary` [default: see [`product_binary`]].
fn run(args: BenchArgs, binary: Option<PathBuf>) -> Result<()> {
    match args.command {
        Some(BenchCommand::Failover(failover)) => return failover::run(failover, &product_binary(binary)?),
        Some(BenchCommand::Rebalance(rebalance)) => return rebalance::run(rebalance, &product_binary(binary)?),
        Some(BenchCommand::Scale(scale)) => return scale::run(scale, &product_binary(binary)?),
        Some(BenchCommand::Memory(memory)) => return memory::run(memory, &product_binary(binary)?),
        None => {}
    }
    if args.target.is_some() && args.topology != Topology::Single {
        bail!("--target measures a gateway that is already running; it goes only with --topology single");
    }
    // With --target, this command starts no product process, so it needs no product binary.
    let binary = match args.target {
        None => Some(product_binary(binary)?),
        Some(_) => None,
    };
    // The baseline and the products each get their own runtime or processes, so that none of them shares
    // the client's scheduler; all of them still share this machine's cores, which the report says.
    let baseline = targets::Baseline::start()?;
    let node = match (&binary, args.topology.single()) {
        (Some(binary), true) => Some(targets::NodeProcess::start(binary, args.argon2_memory_kib)?),
        _ => None,
    };
    let cluster = match (&binary, args.topology.cluster()) {
        (Some(binary), true) => Some(cluster::ClusterProcess::start(binary, args.argon2_memory_kib, None)?),
        _ => None,
    };
    let mut products: Vec<Product> = Vec::new();
    let mut described: Vec<String> = Vec::new();
    match (&args.target, &node) {
        (Some(url), _) => {
            described.push(url.clone());
            let url = url.trim_end_matches('/').to_owned();
            products.push(Product { label: report::SINGLE, url, processes: Vec::new() });
        }
        (None, Some(node)) => {
            let processes = vec![Watched::new(report::SINGLE, node.pid())];
            products.push(Product { label: report::SINGLE, url: node.url().to_owned(), processes });
            described.push("started node".to_owned());
        }
        (None, None) => {}
    }
    if let Some(cluster) = &cluster {
        products.push(Product {
            label: report::CLUSTER,
            url: cluster.url().to_owned(),
            processes: cluster.processes(),
        });
        described.push(format!("started cluster ({} nodes, 1 gateway)", cluster::NODES));
    }
    // The gateway's baseline: nginx in front of bare warp, when the cluster reads orders.
    let wants_nginx = cluster.is_some() && kinds_of(&args.mix).contains(&Kind::GetOrder);
    let (nginx, nginx_missing) = if wants_nginx { start_nginx(baseline.addr()) } else { (None, None) };
    if products.is_empty() {
        bail!("no target: neither --target nor a started node or cluster");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-client")
        .build()
        .context("start the client runtime")?;
    let extra = Extra { nginx: nginx.as_ref(), nginx_missing };
    let report = runtime.block_on(measure(&args, baseline.url(), &products, described.join(" and "), extra))?;
    // The client's connections go before the servers, so neither side sees the other vanish mid-request.
    drop(runtime);
    drop(nginx);
    drop(cluster);
    drop(node);
    drop(baseline);
    write_report(&report, &args.out)
}

/// nginx in front of the baseline, or why not: missing is one line naming the setup script, never an error.
fn start_nginx(upstream: std::net::SocketAddr) -> (Option<nginx::Nginx>, Option<String>) {
    let Some(binary) = nginx::find() else {
        let why = format!("nginx is not installed (run {})", nginx::SETUP_SCRIPT);
        eprintln!("bench: {why}; the gateway's nginx baseline is not measured");
        return (None, Some(why));
    };
    match nginx::Nginx::start(&binary, upstream) {
        Ok(nginx) => (Some(nginx), None),
        Err(e) => {
            let why = format!("nginx did not start: {e:#}");
            eprintln!("bench: {why}; the gateway's nginx baseline is not measured");
            (None, Some(why))
        }
    }
}

/// What a load run measures besides the products: nginx, or why it is not there.
struct Extra<'a> {
    nginx: Option<&'a nginx::Nginx>,
    nginx_missing: Option<String>,
}

/// Prints the report and writes `bench.json` and `bench.md` into `out`.
fn write_report(report: &Report, out: &Path) -> Result<()> {
    let json = serde_json::to_string_pretty(report).map_err(anyhow::Error::from);
    table::write_outputs(out, "bench", &report.to_text(), json, &report.to_markdown())
}

async fn measure(
    args: &BenchArgs,
    baseline_url: &str,
    products: &[Product],
    described: String,
    extra: Extra<'_>,
) -> Result<Report> {
    let connections = usize::try_from(args.connections).context("--connections")?;
    let max_outstanding = connections * OUTSTANDING_PER_CONNECTION;
    let duration = Duration::from_secs(args.duration);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(max_outstanding)
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .context("build the HTTP client")?;
    for product in products {
        targets::wait_ready(&client, &product.url).await?;
    }

    let mut report = Report::new(args, args.topology.name(), described, max_outstanding);
    report.nginx_not_measured = extra.nginx_missing.clone();
    let hello = Arc::new(Workload::new(Kind::Hello, client.clone(), baseline_url, Fixtures::default()));
    let nginx_hello =
        extra.nginx.map(|n| (Arc::new(Workload::new(Kind::Hello, client.clone(), n.url(), Fixtures::default())), n));
    let mut baseline_at: HashMap<u64, PhaseRow> = HashMap::new();

    let kinds = kinds_of(&args.mix);
    let mut fixtures = Vec::new();
    for product in products {
        eprintln!("bench: fixtures on the {}…", product.label);
        fixtures.push(Fixtures::create(&client, &product.url, &kinds, POOL_USERS, ORDERS_PER_USER).await?);
    }
    if products.iter().any(|p| p.label == report::CLUSTER) {
        report.idle = Some(idle(products).await?);
    }
    for kind in kinds {
        let mixes: Vec<(&Product, Arc<Workload>)> = products
            .iter()
            .zip(&fixtures)
            .map(|(p, f)| (p, Arc::new(Workload::new(kind, client.clone(), &p.url, f.clone()))))
            .collect();
        // On a shared machine capacity drifts over minutes: each mix's knee is compared with a baseline
        // knee measured just before it, not with one from the start of the run.
        report.phases.push(saturate(report::BASELINE, &hello, connections, duration, &[]).await);
        let mut knees = Vec::new();
        for (product, mix) in &mixes {
            let row = saturate(product.label, mix, connections, duration, &product.processes).await;
            knees.push(row.achieved_per_s);
            report.phases.push(row);
        }
        // Reading an order through the gateway, then nginx proxying to bare warp right after it.
        if let (Kind::GetOrder, Some((workload, nginx))) = (kind, &nginx_hello) {
            if products.iter().any(|p| p.label == report::CLUSTER) {
                report.phases.push(saturate(report::NGINX, workload, connections, duration, &nginx.processes()).await);
            }
        }
        let plan = plan_rates(args.rates.as_deref(), &knees);
        for ((product, _), rates) in mixes.iter().zip(&plan) {
            if rates.is_empty() {
                let label = product.label;
                eprintln!("bench: {label}: {}: nothing succeeded at saturation, so no open-loop rates", kind.name());
            }
        }
        for rate in sorted_union(&plan) {
            for ((product, mix), rates) in mixes.iter().zip(&plan) {
                if !rates.contains(&rate) {
                    continue;
                }
                let (label, phase) = (product.label, format!("open {rate}/s"));
                let run = announce(label, kind.name(), &phase, load::open_loop(mix, rate, duration, max_outstanding));
                report.phases.push(PhaseRow::new(label, kind.name(), &run.await));
            }
            // The same rate's baseline runs right after, under the same machine conditions, once per rate.
            if let std::collections::hash_map::Entry::Vacant(slot) = baseline_at.entry(rate.to_bits()) {
                let run = announce(
                    report::BASELINE,
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

/// The products' CPU over the idle window, the cluster's and the single node's side by side.
async fn idle(products: &[Product]) -> Result<cost::Idle> {
    eprintln!("bench: idle: {} s with no requests…", cost::IDLE_WINDOW_S);
    let window = Duration::from_secs(cost::IDLE_WINDOW_S);
    let watched: Vec<&Product> = products.iter().filter(|p| !p.processes.is_empty()).collect();
    let before: Vec<Sample> = watched.iter().map(|p| Sample::take(&p.processes)).collect();
    tokio::time::sleep(window).await;
    let mut idle = cost::Idle { window_s: window.as_secs_f64(), cluster: None, single: None };
    for (product, before) in watched.iter().zip(before) {
        let cpu = before.until(&Sample::take(&product.processes), 0);
        eprintln!("bench: idle: {}: {} cores", product.label, cpu.total_cores.map_or("unknown".into(), goals::number));
        match product.label {
            report::CLUSTER => idle.cluster = Some(cpu),
            _ => idle.single = Some(cpu),
        }
    }
    Ok(idle)
}

/// A warm-up, then the measured saturation phase, with the CPU of `watched` (the product's processes)
/// and of the bench's own process over it.
async fn saturate(
    target: &'static str,
    workload: &Arc<Workload>,
    connections: usize,
    duration: Duration,
    watched: &[Watched],
) -> PhaseRow {
    let name = workload.kind().name();
    announce(target, name, "warm-up", load::closed_loop(workload, connections, WARM_UP)).await;
    let own = [own_process()];
    let (before, own_before) = (Sample::take(watched), Sample::take(&own));
    let run = announce(target, name, "saturation", load::closed_loop(workload, connections, duration)).await;
    let (after, own_after) = (Sample::take(watched), Sample::take(&own));
    let mut row = PhaseRow::new(target, name, &run);
    if !watched.is_empty() {
        let cpu = before.until(&after, run.tally.ok);
        eprintln!(
            "bench: {target}: {name}: {} µs of product CPU per operation",
            cpu.total_us_per_op.map_or("unknown".into(), goals::number)
        );
        row.cpu = Some(cpu);
    }
    row.client_cpu = own_before.until(&own_after, run.tally.ok).processes.into_iter().next();
    row
}

async fn announce(target: &str, mix: &str, phase: &str, run: impl std::future::Future<Output = PhaseRun>) -> PhaseRun {
    eprintln!("bench: {target}: {mix}: {phase}…");
    let run = run.await;
    eprintln!(
        "bench: {target}: {mix}: {phase}: {:.0} ok/s, {} errors, {} dropped",
        run.achieved_per_s(),
        run.tally.error_count(),
        run.tally.dropped
    );
    run
}

/// Parses `args` as the flags of the command `name` takes, for the tests of each command's flags.
#[cfg(test)]
fn parse_flags<A: clap::Args + clap::FromArgMatches>(name: &'static str, args: &[&str]) -> Result<A, clap::Error> {
    let command = A::augment_args(clap::Command::new(name));
    let matches = command.try_get_matches_from(std::iter::once(name).chain(args.iter().copied()))?;
    A::from_arg_matches(&matches)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        parse_flags("bench", args)
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.mix, vec![MixArg::All]);
        assert_eq!(a.duration, 10);
        assert_eq!(a.connections, 32);
        assert_eq!(a.rates, None);
        assert_eq!(a.out, PathBuf::from("./bench-results"));
        assert_eq!(a.target, None);
        assert_eq!(a.argon2_memory_kib, None);
        assert_eq!((a.topology, a.command.is_none()), (Topology::Single, true));
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
        assert_eq!(a.mix, vec![MixArg::GetOrder]);
        assert_eq!((a.duration, a.connections), (3, 8));
        assert_eq!(a.rates, Some(vec![100.0, 250.5]));
        assert_eq!(a.argon2_memory_kib, Some(1024));
        assert_eq!(kinds_of(&parse(&["--mix", "register-login"]).unwrap().mix), vec![Kind::RegisterLogin]);
        assert_eq!(kinds_of(&parse(&["--mix", "all"]).unwrap().mix).len(), 6);
        // A list runs in the order of `all`, each mix once.
        let list = parse(&["--mix", "get-order-hot,create-order,get-order,create-order-hot,create-order"]).unwrap();
        assert_eq!(
            kinds_of(&list.mix),
            vec![Kind::CreateOrder, Kind::CreateOrderHot, Kind::GetOrder, Kind::GetOrderHot]
        );
        assert_eq!(kinds_of(&parse(&["--mix", "all,get-order"]).unwrap().mix), Kind::MIXES.to_vec());
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
        assert!(run(parse(&["--target", "http://127.0.0.1:1", "--topology", "both"]).unwrap(), None).is_err());
    }

    #[test]
    fn topologies_and_the_failover_command_parse() {
        assert_eq!(parse(&[]).unwrap().topology, Topology::Single);
        let both = parse(&["--topology", "both", "--duration", "5"]).unwrap();
        assert!(both.topology.single() && both.topology.cluster() && both.command.is_none());
        let cluster = parse(&["--topology", "cluster"]).unwrap().topology;
        assert!(cluster.cluster() && !cluster.single());
        assert!(parse(&["--topology", "ring"]).is_err());
        let Some(BenchCommand::Failover(f)) = parse(&["failover", "--kills", "5"]).unwrap().command else {
            panic!("failover is a subcommand");
        };
        assert_eq!((f.kills, f.shards), (5, 64));
        // The load flags do not reach the failover benchmark; giving both is refused, not ignored.
        assert!(parse(&["--duration", "5", "failover"]).is_err());
        let Some(BenchCommand::Rebalance(r)) = parse(&["rebalance", "--runs", "2"]).unwrap().command else {
            panic!("rebalance is a subcommand");
        };
        assert_eq!((r.runs, r.max_moves), (2, None));
        assert!(parse(&["--topology", "cluster", "rebalance"]).is_err());
        let Some(BenchCommand::Scale(s)) = parse(&["scale", "--quota", "0.25"]).unwrap().command else {
            panic!("scale is a subcommand");
        };
        assert_eq!(s.quota, 0.25);
        assert!(parse(&["--mix", "get-order", "scale"]).is_err());
    }

    #[test]
    fn rates_are_planned_per_target() {
        // One target: fractions of its own knee.
        assert_eq!(plan_rates(None, &[1000.0]), vec![vec![250.0, 500.0, 750.0]]);
        // Two: the first keeps its own, and both run at fractions of the lower knee.
        assert_eq!(
            plan_rates(None, &[1000.0, 400.0]),
            vec![vec![100.0, 200.0, 250.0, 300.0, 500.0, 750.0], vec![100.0, 200.0, 300.0]]
        );
        assert_eq!(plan_rates(None, &[400.0, 1000.0]), vec![vec![100.0, 200.0, 300.0], vec![100.0, 200.0, 300.0]]);
        // A target where nothing succeeded leaves no shared rates, and the first keeps its own.
        assert_eq!(plan_rates(None, &[1000.0, 0.0]), vec![vec![250.0, 500.0, 750.0], vec![]]);
        assert_eq!(plan_rates(Some(&[50.0, 10.0]), &[1000.0, 400.0]), vec![vec![50.0, 10.0]; 2]);
        assert_eq!(sorted_union(&[vec![3.0, 1.0], vec![2.0, 3.0]]), vec![1.0, 2.0, 3.0]);
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
