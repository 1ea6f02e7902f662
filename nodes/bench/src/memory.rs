//! `playground bench memory`: the resident memory an active entity holds on a node.
//!
//! Two single nodes run side by side in one run: one as shipped, and its baseline, whose entities stop
//! one second after their last message (`PLAYGROUND_ENTITY_IDLE_TIMEOUT=1s`). The same orders are
//! created, and each read once (which activates the order's entity), on both. On the node as shipped
//! every order stays an active entity (for the default idle
//! timeout of five minutes); on the baseline none does, but everything else an order costs (its record
//! in the store and sled's cache of it, the connection and request buffers) is the same. So the
//! difference of the two nodes' resident-memory growth over the difference of their active entities is
//! what one active entity holds, and each node's growth per order is what an order costs it in all.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use simulations::common::git_commit;

use super::goals::{self, Verdict};
use super::report::timestamp;
use super::table::Table;
use super::targets::{wait_ready, NodeProcess};
use super::workload::{self, SignedIn};

/// Users the orders are spread over (the order entities are spread over the shards either way).
const USERS: usize = 16;
/// Orders created on each node before the first measurement, so that what any traffic allocates once
/// (connections, buffers, caches, the allocator's arenas) is there before it.
const WARM_UP_ORDERS: usize = 2_000;
/// Requests in flight on each node.
const CONCURRENCY: usize = 8;
/// How long after the last order the nodes are measured: the baseline's entities have stopped by then.
const SETTLE: Duration = Duration::from_secs(4);

/// The idle timeout of the baseline's entities.
const BASELINE_IDLE_TIMEOUT: &str = "1s";

/// Flags of `playground bench memory`.
#[derive(Args, Clone, Debug)]
pub struct MemoryArgs {
    /// Orders created on each node between the two measurements.
    #[arg(long, value_name = "N", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..=1_000_000))]
    pub orders: u64,
    /// Folder that receives bench.json and bench.md.
    #[arg(long, value_name = "DIR", default_value = "./bench-results/memory")]
    pub out: PathBuf,
    /// Argon2id memory in KiB for the nodes this command starts [default: the product's default].
    #[arg(long, value_name = "KIB")]
    pub argon2_memory_kib: Option<u32>,
}

/// What one node showed: before and after the orders.
#[derive(Clone, Debug, Serialize)]
struct NodeFigures {
    node: &'static str,
    orders: u64,
    rss_before_kib: u64,
    rss_after_kib: u64,
    active_before: f64,
    active_after: f64,
}

impl NodeFigures {
    fn rss_growth_kib(&self) -> f64 {
        self.rss_after_kib as f64 - self.rss_before_kib as f64
    }

    fn active_growth(&self) -> f64 {
        self.active_after - self.active_before
    }
}

#[derive(Serialize)]
struct Report {
    version: &'static str,
    git_commit: Option<String>,
    timestamp: String,
    cores: usize,
    nodes: Vec<NodeFigures>,
    /// KiB of resident memory per active entity: the growth difference over the active difference.
    kib_per_entity: Option<f64>,
    verdicts: Vec<Verdict>,
}

pub fn run(args: MemoryArgs, binary: &Path) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-client")
        .build()
        .context("start the client runtime")?;
    let shipped = NodeProcess::start(binary, args.argon2_memory_kib).context("start the node as shipped")?;
    let baseline = NodeProcess::start_with(
        binary,
        args.argon2_memory_kib,
        &[("PLAYGROUND_ENTITY_IDLE_TIMEOUT", BASELINE_IDLE_TIMEOUT)],
    )
    .context("start the baseline node")?;
    let measured = runtime.block_on(async {
        let a = measure("as shipped", &shipped, args.orders).await?;
        let b = measure("baseline", &baseline, args.orders).await?;
        Ok::<_, anyhow::Error>(vec![a, b])
    });
    drop((shipped, baseline));
    drop(runtime);
    let report = Report::new(measured?);
    print!("{}", report.to_text());
    let json = serde_json::to_string_pretty(&report).map_err(anyhow::Error::from);
    super::table::write_outputs(&args.out, "bench", &report.to_text(), json, &report.to_markdown())
}

async fn measure(label: &'static str, node: &NodeProcess, orders: u64) -> Result<NodeFigures> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .timeout(crate::REQUEST_TIMEOUT)
        .build()
        .context("build the HTTP client")?;
    let base = node.url().to_owned();
    wait_ready(&client, &base).await?;
    let mut users = Vec::with_capacity(USERS);
    for n in 0..USERS {
        users.push(workload::sign_up_fresh(&client, &base, "memory", n).await?);
    }
    eprintln!("bench: memory: {label}: warming up with {WARM_UP_ORDERS} orders…");
    create_orders(&client, &base, &users, WARM_UP_ORDERS as u64).await?;
    tokio::time::sleep(SETTLE).await;
    let (rss_before_kib, active_before) = (rss_kib(node.pid())?, active_entities(&client, &base).await?);
    eprintln!("bench: memory: {label}: creating {orders} orders…");
    create_orders(&client, &base, &users, orders).await?;
    tokio::time::sleep(SETTLE).await;
    let (rss_after_kib, active_after) = (rss_kib(node.pid())?, active_entities(&client, &base).await?);
    Ok(NodeFigures { node: label, orders, rss_before_kib, rss_after_kib, active_before, active_after })
}

async fn create_orders(client: &reqwest::Client, base: &str, users: &[SignedIn], n: u64) -> Result<()> {
    futures::stream::iter(0..n)
        .map(|i| {
            let user = &users[i as usize % users.len()];
            async move {
                let body = workload::create_order(client, base, &user.token, None)
                    .await
                    .map_err(|e| anyhow::anyhow!("create order {i}: {e:?}"))?;
                let id = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_owned))
                    .with_context(|| format!("order {i}: the answer has no id"))?;
                // The user's entity writes the order; reading it activates the order's own entity.
                let read = client.get(format!("{base}/v1/orders/{id}")).bearer_auth(&user.token).send().await?;
                if !read.status().is_success() {
                    bail!("read order {id}: status {}", read.status());
                }
                Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<()>()
        .await
}

/// `VmRSS` of process `pid`, in KiB.
fn rss_kib(pid: i32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("read the node's /proc status")?;
    simulations::sim::check::vm_rss_kib(&status).context("VmRSS in the node's /proc status")
}

/// The node's active entities of every kind, from `playground_actor_active` in its `/metrics`.
async fn active_entities(client: &reqwest::Client, base: &str) -> Result<f64> {
    let text = client.get(format!("{base}/metrics")).send().await?.error_for_status()?.text().await?;
    let total = sum_of(&text, "playground_actor_active");
    if total.is_none() {
        bail!("{base}/metrics has no playground_actor_active");
    }
    Ok(total.unwrap_or(0.0))
}

/// The sum over every label set of metric `name` in a Prometheus text exposition.
fn sum_of(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = if rest.starts_with('{') { rest.split_once("} ")?.1 } else { rest.strip_prefix(' ')? };
            value.trim().parse().ok()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

impl Report {
    fn new(nodes: Vec<NodeFigures>) -> Self {
        let kib_per_entity = match nodes.as_slice() {
            [shipped, baseline] => {
                let entities = shipped.active_growth() - baseline.active_growth();
                (entities > 0.0).then(|| (shipped.rss_growth_kib() - baseline.rss_growth_kib()) / entities)
            }
            _ => None,
        };
        // The target is in KB of 1000 bytes.
        let kb = kib_per_entity.map(|k| k * 1.024);
        Self {
            version: env!("CARGO_PKG_VERSION"),
            git_commit: git_commit(),
            timestamp: timestamp(),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            verdicts: vec![goals::MEMORY_PER_ENTITY.judge("order entities", kb)],
            nodes,
            kib_per_entity,
        }
    }

    fn heading(&self) -> String {
        format!(
            "playground {} (commit {}), {}, {} cores: a node as shipped beside one whose entities stop {} after \
             their last message, the same orders on both",
            self.version,
            self.git_commit.as_deref().unwrap_or("unknown"),
            self.timestamp,
            self.cores,
            BASELINE_IDLE_TIMEOUT,
        )
    }

    fn nodes_table(&self) -> Table {
        let headers =
            ["node", "orders", "VmRSS before KiB", "after KiB", "growth KiB", "active entities added", "KiB per order"];
        let mut t = Table::new(&headers, 1);
        for n in &self.nodes {
            t.row(vec![
                n.node.to_owned(),
                n.orders.to_string(),
                n.rss_before_kib.to_string(),
                n.rss_after_kib.to_string(),
                format!("{:.0}", n.rss_growth_kib()),
                format!("{:.0}", n.active_growth()),
                format!("{:.2}", n.rss_growth_kib() / n.orders as f64),
            ]);
        }
        t
    }

    fn sections(&self) -> Vec<(&'static str, Table)> {
        vec![("Targets", goals::table(&self.verdicts)), ("Each node", self.nodes_table())]
    }

    fn summary(&self) -> String {
        match self.kib_per_entity {
            Some(k) => format!("resident memory per active entity: {k:.2} KiB ({:.2} KB)", k * 1.024),
            None => "resident memory per active entity: not measured (no entity stayed active)".into(),
        }
    }

    fn to_text(&self) -> String {
        let mut text = format!("\n{}\n\n{}\n", self.heading(), self.summary());
        for (title, table) in self.sections() {
            let _ = write!(text, "\n{title}\n\n{}", table.to_text());
        }
        text
    }

    fn to_markdown(&self) -> String {
        let mut text = format!("# playground bench memory\n\n{}\n\n{}\n", self.heading(), self.summary());
        for (title, table) in self.sections() {
            let _ = write!(text, "\n## {title}\n\n{}", table.to_markdown());
        }
        text
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn figures(node: &'static str, rss: (u64, u64), active: (f64, f64)) -> NodeFigures {
        NodeFigures {
            node,
            orders: 1000,
            rss_before_kib: rss.0,
            rss_after_kib: rss.1,
            active_before: active.0,
            active_after: active.1,
        }
    }

    #[test]
    fn the_entity_figure_is_the_growth_the_baseline_does_not_have() {
        let r = Report::new(vec![
            figures("as shipped", (50_000, 62_000), (100.0, 1100.0)),
            figures("baseline", (50_000, 52_000), (10.0, 10.0)),
        ]);
        assert_eq!(r.kib_per_entity, Some(10.0));
        assert_eq!(r.verdicts[0].met, Some(false), "10 KiB is 10.24 KB, over the 10 KB target");
        assert!(r.to_markdown().contains("| as shipped | 1000 | 50000 | 62000 | 12000 | 1000 | 12.00 |"));
        let none =
            Report::new(vec![figures("as shipped", (1, 2), (5.0, 5.0)), figures("baseline", (1, 2), (5.0, 5.0))]);
        assert_eq!(none.kib_per_entity, None);
    }

    #[test]
    fn metric_sums_add_every_label_set() {
        let text = "# HELP x\nplayground_actor_active{kind=\"order\"} 12\nplayground_actor_active{kind=\"user\"} 3\n\
                    playground_actor_active_other 9\n";
        assert_eq!(sum_of(text, "playground_actor_active"), Some(15.0));
        assert_eq!(sum_of(text, "missing"), None);
    }

    #[test]
    fn flags_default_and_are_bounded() {
        let a: MemoryArgs = crate::parse_flags("memory", &[]).unwrap();
        assert_eq!(a.orders, 20_000);
        assert!(crate::parse_flags::<MemoryArgs>("memory", &["--orders", "5"]).is_err());
    }
}
