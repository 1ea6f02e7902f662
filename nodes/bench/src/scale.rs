//! `playground bench scale`: does the cluster's throughput grow with its nodes? A 3-node and a 6-node
//! cluster (replication factor 3, the same shard count) are started one after the other, every node
//! process capped at the same CPU quota with its own cgroup v1 `cpu` group, the gateways uncapped; a
//! mixed load saturates each through all of its gateways. On a 2-core machine the quota is what makes
//! nodes, not the machine, the limit: 6 nodes × the quota stays below the machine's cores.
//!
//! Per size: start the cluster, create the fixtures (uncapped, so argon2id does not take minutes), wait
//! until the leaders are even, cap every node, warm up, then one measured saturation phase with the CPU
//! of every process. The clusters are stopped, their folders deleted and the cgroups removed at the end
//! of each size, also on failure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use simulations::common::git_commit;
use tokio::time::Instant;

use super::cgroup::{self, CpuGroup};
use super::cluster::{fetch_view, ClusterProcess, Shape, View};
use super::cpu::Sample;
use super::goals::{self, Verdict};
use super::report::{ratio, timestamp, PhaseRow};
use super::table::Table;
use super::workload::{Fixtures, Kind, Workload};

/// The two sizes compared; the figure is the second's throughput over the first's.
pub const SIZES: [usize; 2] = [3, 6];
/// Every shard on three nodes in both sizes.
const REPLICATION_FACTOR: u32 = 3;
const ORDERS_PER_USER: usize = 4;
/// Unmeasured load after the caps are set, so connection set-up and cold caches stay out.
const WARM_UP: Duration = Duration::from_secs(2);
/// How long a new cluster gets to even out its leaders before the load; it is measured anyway after.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);
/// What the report says the load is; [`crate::workload::mixed_step`] is what it does.
pub const MIX: &str = "70 % get-order, 20 % create-order, 10 % session-check, over the users round robin";

/// Flags of `playground bench scale`.
#[derive(Args, Clone, Debug)]
pub struct ScaleArgs {
    /// CPU quota of every node process, in cores; the same for both sizes. 6 × 0.2 = 1.2 cores keeps the
    /// six nodes below a 2-core machine with room for the gateways and the client.
    #[arg(long, value_name = "CORES", default_value_t = 0.2, value_parser = parse_quota)]
    pub quota: f64,
    /// Gateway processes of each cluster, uncapped; the load goes to all of them, round robin.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub gateways: u32,
    /// Shards of both clusters.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub shards: u32,
    /// Users the load spreads over (each with 4 orders).
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub users: u64,
    /// Seconds of the measured saturation phase of each size.
    #[arg(long, value_name = "SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration: u64,
    /// Concurrent workers of the closed loop.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub connections: u64,
    /// Folder that receives bench.json and bench.md.
    #[arg(long, value_name = "DIR", default_value = "./bench-results/scale")]
    pub out: PathBuf,
    /// Argon2id memory in KiB for the clusters this command starts [default: the product's default].
    #[arg(long, value_name = "KIB")]
    pub argon2_memory_kib: Option<u32>,
    /// Where cgroup v1 mounts its `cpu` controller.
    #[arg(long, value_name = "DIR", default_value = cgroup::CPU_ROOT)]
    pub cgroup_root: PathBuf,
}

fn parse_quota(text: &str) -> Result<f64, String> {
    let cores: f64 = text.trim().parse().map_err(|_| format!("`{text}` is not a number of cores"))?;
    cgroup::quota_us(cores).map_err(|e| e.to_string())?;
    if cores > 64.0 {
        return Err(format!("{cores} cores is more than any machine this runs on"));
    }
    Ok(cores)
}

pub fn run(args: ScaleArgs, binary: &Path) -> Result<()> {
    let root = args.cgroup_root.as_path();
    cgroup::check_writable(root).context("bench scale caps every node with a cgroup v1 cpu quota")?;
    let stale = cgroup::remove_stale(root);
    if stale > 0 {
        eprintln!("bench: scale: removed {stale} cgroups left by an earlier run that was killed");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-client")
        .build()
        .context("start the client runtime")?;
    let mut sizes = Vec::new();
    for nodes in SIZES {
        let measured = runtime.block_on(one_size(&args, binary, root, nodes));
        match measured {
            Ok(size) => sizes.push(size),
            Err(e) => {
                drop(runtime);
                return Err(e.context(format!("the {nodes}-node cluster")));
            }
        }
    }
    drop(runtime);
    let report = Report::new(&args, sizes);
    write_report(&report, &args.out)
}

/// One size: the cluster started, the fixtures, the caps, the load; everything stopped again on return.
async fn one_size(args: &ScaleArgs, binary: &Path, root: &Path, nodes: usize) -> Result<Size> {
    // Declared before the cluster, so dropped after it: the groups are empty by then.
    let mut groups: Vec<CpuGroup> = Vec::new();
    let gateways = usize::try_from(args.gateways).context("--gateways")?;
    let shape = Shape { nodes, gateways, shards: Some(args.shards), replication_factor: Some(REPLICATION_FACTOR) };
    eprintln!("bench: scale: starting {nodes} nodes and {gateways} gateways with {} shards…", args.shards);
    let cluster = ClusterProcess::start_shaped(binary, args.argon2_memory_kib, shape)?;
    let measured = measure(args, root, &cluster, &mut groups).await;
    if measured.is_err() {
        eprintln!("bench: scale: the cluster's log ends:\n{}", cluster.log_tail());
    }
    drop(cluster);
    drop(groups);
    measured
}

async fn measure(args: &ScaleArgs, root: &Path, cluster: &ClusterProcess, groups: &mut Vec<CpuGroup>) -> Result<Size> {
    let shape = cluster.shape();
    let connections = usize::try_from(args.connections).context("--connections")?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(crate::REQUEST_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .context("build the HTTP client")?;
    let gateways = cluster.gateway_urls();
    for url in &gateways {
        super::targets::wait_ready(&client, url).await?;
    }
    let users = usize::try_from(args.users).context("--users")?;
    let fixtures = Fixtures::create(&client, cluster.url(), &[Kind::Mixed], users, ORDERS_PER_USER).await?;
    let (leaders, settled) = settle(&client, cluster, shape.nodes).await?;
    let run_id = std::process::id().to_string();
    let mut pids: Vec<(String, i32)> = cluster.node_processes().into_iter().collect();
    pids.sort();
    if pids.len() != shape.nodes {
        bail!("found {} node processes of {}: {pids:?}", pids.len(), shape.nodes);
    }
    for (name, pid) in &pids {
        groups.push(CpuGroup::cap(root, &run_id, name, *pid, args.quota)?);
    }
    eprintln!("bench: scale: {} nodes capped at {} cores each", shape.nodes, args.quota);
    let workload = Arc::new(Workload::spread_over(Kind::Mixed, client.clone(), &gateways, fixtures));
    let label = size_label(shape.nodes);
    let _ = crate::announce(label, "mixed", "warm-up", crate::load::closed_loop(&workload, connections, WARM_UP)).await;
    let watched = cluster.processes();
    let throttled_before: Vec<Option<(u64, f64)>> = groups.iter().map(CpuGroup::throttled).collect();
    let before = Sample::take(&watched);
    let duration = Duration::from_secs(args.duration);
    let run =
        crate::announce(label, "mixed", "saturation", crate::load::closed_loop(&workload, connections, duration)).await;
    let cpu = before.until(&Sample::take(&watched), run.tally.ok);
    let throttled = groups
        .iter()
        .zip(throttled_before)
        .map(|(g, before)| {
            let d = g.throttled().zip(before).map(|((n, ms), (n0, ms0))| (n.saturating_sub(n0), ms - ms0));
            (g.member.clone(), d)
        })
        .collect();
    let mut row = PhaseRow::new(label, Kind::Mixed.name(), &run);
    row.cpu = Some(cpu);
    Ok(Size { nodes: shape.nodes, gateways: shape.gateways, leaders, leaders_even: settled, throttled, row })
}

fn size_label(nodes: usize) -> &'static str {
    match nodes {
        3 => "3 nodes",
        6 => "6 nodes",
        _ => "cluster",
    }
}

/// Waits until every shard has a leader and the leaders are even (within one per node), up to
/// [`SETTLE_LIMIT`]; returns the leaders per node and whether they were even.
async fn settle(
    client: &reqwest::Client,
    cluster: &ClusterProcess,
    nodes: usize,
) -> Result<(BTreeMap<String, usize>, bool)> {
    let deadline = Instant::now() + SETTLE_LIMIT;
    loop {
        let view = fetch_view(client, cluster.url(), cluster.admin_token()).await?;
        let leaders = leaders_by_member(&view);
        let even = view.is_whole(nodes) && within_one(&leaders);
        if even || Instant::now() >= deadline {
            if !even {
                eprintln!("bench: scale: leaders not even after {SETTLE_LIMIT:?}: {leaders:?}; measuring anyway");
            }
            return Ok((leaders, even));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Shards led per member, members leading none included.
fn leaders_by_member(view: &View) -> BTreeMap<String, usize> {
    let mut by: BTreeMap<String, usize> = view.members.iter().map(|m| (m.id.clone(), 0)).collect();
    for leader in view.shards.iter().filter_map(|s| s.leader.as_deref()) {
        *by.entry(leader.to_owned()).or_default() += 1;
    }
    by
}

fn within_one(by: &BTreeMap<String, usize>) -> bool {
    let (min, max) = (by.values().min(), by.values().max());
    min.zip(max).is_some_and(|(min, max)| max - min <= 1)
}

/// One cluster size's figures.
#[derive(Clone, Debug, Serialize)]
struct Size {
    nodes: usize,
    gateways: usize,
    /// Shards led per node when the load started, and whether that was even (within one).
    leaders: BTreeMap<String, usize>,
    leaders_even: bool,
    /// Per node: CFS periods throttled and time throttled (ms) over the phase.
    throttled: Vec<(String, Option<(u64, f64)>)>,
    row: PhaseRow,
}

impl Size {
    /// CPU the nodes used over the phase as a share of their quotas: near 1 means the nodes were the limit.
    fn quota_use(&self, quota: f64) -> Option<f64> {
        let cpu = self.row.cpu.as_ref()?;
        let nodes: Option<f64> = cpu.processes.iter().filter(|p| p.name.starts_with("node-")).map(|p| p.cores).sum();
        ratio(nodes?, quota * self.nodes as f64)
    }
}

#[derive(Debug, Serialize)]
struct Report {
    version: &'static str,
    git_commit: Option<String>,
    timestamp: String,
    cores: usize,
    quota_cores_per_node: f64,
    gateways: u32,
    shards: u32,
    replication_factor: u32,
    users: u64,
    mix: &'static str,
    duration_s: u64,
    connections: u64,
    sizes: Vec<Size>,
    /// Throughput of the larger cluster over the smaller one's.
    scale_ratio: Option<f64>,
    verdicts: Vec<Verdict>,
}

impl Report {
    fn new(args: &ScaleArgs, sizes: Vec<Size>) -> Self {
        let per_s = |n: usize| sizes.iter().find(|s| s.nodes == n).map(|s| s.row.achieved_per_s);
        let scale_ratio = per_s(SIZES[1]).zip(per_s(SIZES[0])).and_then(|(l, s)| ratio(l, s));
        Self {
            version: env!("CARGO_PKG_VERSION"),
            git_commit: git_commit(),
            timestamp: timestamp(),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            quota_cores_per_node: args.quota,
            gateways: args.gateways,
            shards: args.shards,
            replication_factor: REPLICATION_FACTOR,
            users: args.users,
            mix: MIX,
            duration_s: args.duration,
            connections: args.connections,
            scale_ratio,
            verdicts: vec![goals::SCALE_OUT.judge("mixed", scale_ratio)],
            sizes,
        }
    }

    fn heading(&self) -> String {
        format!(
            "playground {} (commit {}), {}, {} cores: {} and {} nodes, each capped at {} cores (cgroup v1 cpu \
             quota), {} uncapped gateways, {} shards × {} replicas; load: {}, {} users, {} connections, {} s",
            self.version,
            self.git_commit.as_deref().unwrap_or("unknown"),
            self.timestamp,
            self.cores,
            SIZES[0],
            SIZES[1],
            self.quota_cores_per_node,
            self.gateways,
            self.shards,
            self.replication_factor,
            self.mix,
            self.users,
            self.connections,
            self.duration_s,
        )
    }

    fn sizes_table(&self) -> Table {
        let headers = [
            "cluster",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "CPU µs/op",
            "nodes' cores",
            "of their quota",
            "leaders",
        ];
        let mut t = Table::new(&headers, 1);
        for s in &self.sizes {
            let r = &s.row;
            let cpu = r.cpu.as_ref();
            let nodes_cores: Option<f64> =
                cpu.and_then(|c| c.processes.iter().filter(|p| p.name.starts_with("node-")).map(|p| p.cores).sum());
            let leaders: Vec<String> = s.leaders.values().map(usize::to_string).collect();
            t.row(vec![
                r.target.to_owned(),
                format!("{:.0}", r.achieved_per_s),
                super::report::ms(r.p50_ms),
                super::report::ms(r.p99_ms),
                r.errors.to_string(),
                cpu.and_then(|c| c.total_us_per_op).map_or("-".into(), goals::number),
                nodes_cores.map_or("-".into(), goals::number),
                s.quota_use(self.quota_cores_per_node).map_or("-".into(), |u| format!("{:.0} %", u * 100.0)),
                format!("{}{}", leaders.join("/"), if s.leaders_even { "" } else { " (uneven)" }),
            ]);
        }
        t
    }

    fn throttle_table(&self) -> Table {
        let mut t = Table::new(&["cluster", "node", "periods throttled", "time throttled ms"], 2);
        for s in &self.sizes {
            for (node, th) in &s.throttled {
                t.row(vec![
                    s.row.target.to_owned(),
                    node.clone(),
                    th.map_or("-".into(), |(n, _)| n.to_string()),
                    th.map_or("-".into(), |(_, ms)| format!("{ms:.0}")),
                ]);
            }
        }
        t
    }

    fn sections(&self) -> Vec<(&'static str, Table)> {
        let rows: Vec<PhaseRow> = self.sizes.iter().map(|s| s.row.clone()).collect();
        vec![
            ("Targets", goals::table(&self.verdicts)),
            ("Saturation of each size", self.sizes_table()),
            ("CPU per operation, per process", super::cost::process_table(&rows)),
            ("Throttling of the capped nodes", self.throttle_table()),
        ]
    }

    fn to_text(&self) -> String {
        let mut text = format!("\n{}\n", self.heading());
        for (title, table) in self.sections() {
            let _ = write!(text, "\n{title}\n\n{}", table.to_text());
        }
        text
    }

    fn to_markdown(&self) -> String {
        let mut text = format!("# playground bench scale\n\n{}\n", self.heading());
        for (title, table) in self.sections() {
            let _ = write!(text, "\n## {title}\n\n{}", table.to_markdown());
        }
        let _ = write!(text, "\n## Method\n\n{METHOD}\n");
        text
    }
}

const METHOD: &str = "\
- Each size is a fresh `playground up --nodes N --gateways G` with `PLAYGROUND_SHARDS` and \
`PLAYGROUND_REPLICATION_FACTOR=3`: every shard on three of the N nodes.
- Fixtures (users with a session and 4 orders each) are created before any cap, and the leaders are let even out \
(within one per node, up to 60 s).
- Every node process then gets its own cgroup v1 `cpu` group with `cpu.cfs_quota_us` = quota × `cpu.cfs_period_us` \
(100 ms), its pid written to `cgroup.procs` (all its threads). Gateways, the launcher and the client are uncapped. \
Two gateways by default: an uncapped gateway already has a runtime thread per core, so more add no CPU; two keep \
any one process's listener, pool or node connections from being the bottleneck. Their cores are in the table: if \
gateways and client took what the nodes left of the machine, the machine set the figure, not the quota.
- A closed loop of `connections` workers runs the mix through every gateway round robin: 2 s unmeasured, then the \
measured phase. CPU is utime + stime from /proc/<pid>/stat over the phase. `of their quota`: the nodes' CPU over \
the phase against N × quota; near 100 % the nodes were the limit, well below it something else was.
- The cluster is stopped and its folder deleted, and the cgroups removed, before the next size starts.";

fn write_report(report: &Report, out: &Path) -> Result<()> {
    let json = serde_json::to_string_pretty(report).map_err(anyhow::Error::from);
    super::table::write_outputs(out, "bench", &report.to_text(), json, &report.to_markdown())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cluster::{Member, ShardLeader};

    fn parse(args: &[&str]) -> Result<ScaleArgs, clap::Error> {
        crate::parse_flags("scale", args)
    }

    #[test]
    fn flags_default_and_are_bounded() {
        let a = parse(&[]).unwrap();
        assert_eq!((a.quota, a.gateways, a.shards, a.users, a.duration, a.connections), (0.2, 2, 64, 256, 20, 32));
        assert_eq!(a.out, PathBuf::from("./bench-results/scale"));
        assert_eq!(a.cgroup_root, PathBuf::from("/sys/fs/cgroup/cpu"));
        assert!(SIZES[1] as f64 * a.quota < 2.0, "six capped nodes stay below two cores");
        let a =
            parse(&["--quota", "0.5", "--gateways", "3", "--duration", "5", "--argon2-memory-kib", "1024"]).unwrap();
        assert_eq!((a.quota, a.gateways, a.duration, a.argon2_memory_kib), (0.5, 3, 5, Some(1024)));
        for bad in [
            &["--quota", "0"][..],
            &["--quota", "-1"],
            &["--quota", "lots"],
            &["--quota", "0.001"],
            &["--gateways", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn leaders_are_counted_per_member_and_even_within_one() {
        let view = View {
            shard_count: 4,
            members: ["node-1", "node-2", "node-3"]
                .iter()
                .map(|id| Member { id: (*id).into(), state: "up".into() })
                .collect(),
            shards: [Some("node-1"), Some("node-1"), Some("node-2"), None]
                .iter()
                .map(|l| ShardLeader { leader: l.map(str::to_owned) })
                .collect(),
        };
        let by = leaders_by_member(&view);
        assert_eq!(by.values().copied().collect::<Vec<_>>(), [2, 1, 0]);
        assert!(!within_one(&by));
        assert!(within_one(&[("a".to_owned(), 11), ("b".to_owned(), 10)].into_iter().collect()));
        assert!(!within_one(&BTreeMap::new()));
        assert_eq!((size_label(3), size_label(6), size_label(4)), ("3 nodes", "6 nodes", "cluster"));
    }
}
