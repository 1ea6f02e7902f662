//! Fault-injection simulations: a seeded fault schedule against a real proxied cluster, a workload that
//! records a Jepsen-style history, checkers over the history and the state read back after healing, and a
//! report (JSON and Markdown).
//!
//! - `schedule`: the scenarios and their seeded fault schedules.
//! - `workload`: the client tasks and the final read-back.
//! - `history`: events and the JSONL history.
//! - `check`: the checkers; `linear`: per-order linearizability.
//! - `windows`: availability, latency and recovery around each fault.
//! - `summary`: the Markdown table of many runs.

pub mod check;
pub mod history;
pub mod linear;
pub mod schedule;
pub mod summary;
pub mod windows;
pub mod workload;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::cluster::ProcessCluster;
use crate::common::{git_commit, nearest_rank};
use check::Check;
use history::{Event, History};
pub use schedule::SCENARIOS;
use schedule::{Action, FaultEvent};

const NODES: usize = 3;
const GATEWAYS: usize = 2;
const SHARDS: u32 = 8;
const CLIENTS: u64 = 4;
/// Client tasks of the `overload` scenario (over the same users), and the in-flight limit of its gateways.
const OVERLOAD_CLIENTS: u64 = 64;
const OVERLOAD_MAX_IN_FLIGHT: &str = "16";
/// The variable of the test-only `faults.clock_skew_ms`, which shifts a process's wall clock.
const CLOCK_SKEW_ENV: &str = "PLAYGROUND_CLOCK_SKEW_MS";
/// Registrations racing for each contested email.
const RACERS: u64 = 3;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Percentiles {
    pub count: usize,
    pub p50_ms: u64,
    pub p99_ms: u64,
}

/// How a run's cluster and workload were set up: with the seed and commit, enough to replay it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunConfig {
    pub nodes: usize,
    pub gateways: usize,
    pub shards: u32,
    /// Client tasks of the workload.
    pub clients: u64,
    /// Configuration every node and gateway was started with beyond the defaults, as environment
    /// variables (`playground --help` lists them).
    pub env: BTreeMap<String, String>,
    /// Configuration of single nodes (`node-N`), as environment variables.
    pub node_env: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub commit: Option<String>,
    #[serde(default)]
    pub config: RunConfig,
    /// The workload's length, in ms.
    pub duration_ms: u64,
    /// When the workload started, in ms since the start of the run (the fault times are relative to it).
    pub workload_started_at: u64,
    pub timeline: Vec<FaultEvent>,
    /// Completed operations by function, then by outcome (`ok`, `fail`, `info`).
    pub counts: BTreeMap<String, BTreeMap<String, u64>>,
    /// Latency of ok operations by function, from the intended send time.
    pub latency: BTreeMap<String, Percentiles>,
    pub recovery_ms: Option<u64>,
    /// For each fault of the timeline: availability and latency before, during and after it, and the
    /// recovery times once it ended.
    #[serde(default)]
    pub faults: Vec<windows::FaultWindows>,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.checks.iter().filter(|c| c.passed).count()
    }

    pub fn failed(&self) -> usize {
        self.checks.len() - self.passed()
    }

    /// A few lines for a terminal, ending with `N passed, N failed`.
    pub fn summary(&self) -> String {
        let mut s = format!("scenario {} seed {}\n", self.scenario, self.seed);
        for f in &self.timeline {
            let node = f.node.map(|n| format!(" node-{}", n + 1)).unwrap_or_default();
            let _ = writeln!(s, "  fault at {} ms: {:?}{node}", f.at, f.action);
        }
        for (f, by) in &self.counts {
            let by: Vec<String> = by.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(s, "  {f}: {}", by.join(", "));
        }
        if let Some(all) = self.latency.get("all") {
            let _ = writeln!(s, "  latency of ok operations: p50 {} ms, p99 {} ms", all.p50_ms, all.p99_ms);
        }
        for f in &self.faults {
            let pct = |a: Option<f64>| a.map(|a| format!("{:.1} %", a * 100.0)).unwrap_or_else(|| "-".into());
            let ms = |r: Option<u64>| r.map(|r| format!("{r} ms")).unwrap_or_else(|| "not within the run".into());
            let _ = writeln!(
                s,
                "  {}: availability before/during/after {} / {} / {}, first ok {}, throughput back {} after it",
                f.fault,
                pct(f.before.availability),
                pct(f.during.availability),
                pct(f.after.availability),
                ms(f.first_ok_ms),
                ms(f.throughput_ms),
            );
        }
        for c in &self.checks {
            let _ = writeln!(s, "  {} {}: {}", if c.passed { "PASS" } else { "FAIL" }, c.name, c.detail);
        }
        let _ = write!(s, "{} passed, {} failed", self.passed(), self.failed());
        s
    }

    pub fn markdown(&self) -> String {
        let mut s = format!("# Simulation `{}`, seed {}\n\n", self.scenario, self.seed);
        let _ = writeln!(s, "- commit: {}", self.commit.as_deref().unwrap_or("unknown"));
        let _ = writeln!(s, "- workload: {} ms", self.duration_ms);
        let c = &self.config;
        let _ = writeln!(
            s,
            "- cluster: {} nodes, {} gateways, {} shards, {} clients",
            c.nodes, c.gateways, c.shards, c.clients
        );
        for (var, value) in &c.env {
            let _ = writeln!(s, "- every process: `{var}={value}`");
        }
        for (node, env) in &c.node_env {
            for (var, value) in env {
                let _ = writeln!(s, "- {node}: `{var}={value}`");
            }
        }
        let _ = writeln!(s, "- result: {} passed, {} failed", self.passed(), self.failed());
        let _ = writeln!(s, "- recovery after the last heal: {:?} ms\n", self.recovery_ms);
        s.push_str("## Fault timeline\n\n| planned (ms) | applied (ms since workload start) | action | node |\n|---|---|---|---|\n");
        for f in &self.timeline {
            let applied = f.applied_at.map(|a| a.saturating_sub(self.workload_started_at).to_string());
            let node = f.node.map(|n| format!("node-{}", n + 1)).unwrap_or_else(|| "all links".into());
            let _ = writeln!(s, "| {} | {} | {:?} | {node} |", f.at, applied.unwrap_or_default(), f.action);
        }
        s.push_str("\n## Operations\n\n| f | ok | fail | info |\n|---|---|---|---|\n");
        for (f, by) in &self.counts {
            let n = |k: &str| by.get(k).copied().unwrap_or_default();
            let _ = writeln!(s, "| {f} | {} | {} | {} |", n("ok"), n("fail"), n("info"));
        }
        s.push_str("\n## Latency of ok operations\n\n| f | count | p50 (ms) | p99 (ms) |\n|---|---|---|---|\n");
        for (f, p) in &self.latency {
            let _ = writeln!(s, "| {f} | {} | {} | {} |", p.count, p.p50_ms, p.p99_ms);
        }
        if !self.faults.is_empty() {
            s.push_str(&self.fault_table());
        }
        s.push_str("\n## Checks\n\n| check | result | detail |\n|---|---|---|\n");
        for c in &self.checks {
            let _ = writeln!(s, "| {} | {} | {} |", c.name, if c.passed { "pass" } else { "FAIL" }, c.detail);
        }
        s
    }
}

impl Report {
    /// The per-fault table of the Markdown report.
    fn fault_table(&self) -> String {
        let rel = |ms: u64| ms.saturating_sub(self.workload_started_at);
        let avail = |w: &windows::Window| match w.availability {
            Some(a) => format!("{:.1} % ({}/{})", a * 100.0, w.ok, w.ok + w.fail + w.info),
            None => "no operations".to_owned(),
        };
        let lat = |w: &windows::Window| format!("{} / {}", w.latency.p50_ms, w.latency.p99_ms);
        let rec = |r: Option<u64>| r.map(|ms| format!("{ms} ms")).unwrap_or_else(|| "not within the run".into());
        let mut s = String::from(
            "\n## Faults: availability, latency and recovery\n\nTimes in ms since the workload started; operations \
             by intended send time; latency p50 / p99 of ok operations, in ms; throughput is ok operations per \
             500 ms bucket, recovered at 90 % of its mean before the fault.\n\n\
             | fault | node | start | end | availability before | during | after | latency before | during | \
             after | first ok after | throughput recovered after |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for f in &self.faults {
            let node = f.node.map(|n| format!("node-{}", n + 1)).unwrap_or_else(|| "all".into());
            let _ = writeln!(
                s,
                "| {} | {node} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                f.fault,
                rel(f.start),
                rel(f.end),
                avail(&f.before),
                avail(&f.during),
                avail(&f.after),
                lat(&f.before),
                lat(&f.during),
                lat(&f.after),
                rec(f.first_ok_ms),
                rec(f.throughput_ms),
            );
        }
        s
    }
}

fn percentiles(mut ms: Vec<u64>) -> Percentiles {
    ms.sort_unstable();
    let at = |q: f64| nearest_rank(&ms, q).unwrap_or(0);
    Percentiles { count: ms.len(), p50_ms: at(0.50), p99_ms: at(0.99) }
}

fn counts(events: &[Event]) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut counts: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind != "invoke") {
        *counts.entry(e.f.clone()).or_default().entry(e.kind.clone()).or_default() += 1;
    }
    counts
}

fn latency(events: &[Event]) -> BTreeMap<String, Percentiles> {
    let mut by: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == "ok") {
        let ms = e.at.saturating_sub(e.intended);
        by.entry(e.f.clone()).or_default().push(ms);
        by.entry("all".into()).or_default().push(ms);
    }
    by.into_iter().map(|(f, ms)| (f, percentiles(ms))).collect()
}

/// Guarantees a run can break on purpose (`--break`), to prove that the checkers fail: each names the
/// test-only environment switch the cluster is started with.
pub const BREAKS: &[(&str, &str)] =
    &[("idempotency", "PLAYGROUND_BREAK_IDEMPOTENCY"), ("stale-reads", "PLAYGROUND_STALE_READS")];

/// The index of the node that leads the shard of the first client's user, as a gateway's cluster view
/// shows it: the node whose stale reads that client would see.
async fn leader_of_user(gw: &crate::client::Api, user_id: &str) -> Option<usize> {
    let shard = u64::from(playground_proto::shard_of(user_id, SHARDS));
    let view = gw.get("/v1/cluster", Some(crate::cluster::ADMIN_TOKEN)).await.ok()?.json();
    let entry = view["shards"].as_array()?.iter().find(|s| s["shard"].as_u64() == Some(shard))?;
    let n = entry["leader"].as_str()?.strip_prefix("node-")?.parse::<usize>().ok()?;
    n.checked_sub(1).filter(|i| *i < NODES)
}

/// Applies one fault action to the cluster; `panic` is the workload's panic-injection switch.
async fn apply(cluster: &mut ProcessCluster, f: &FaultEvent, panic: &AtomicBool) -> anyhow::Result<()> {
    let node = f.node.unwrap_or_default();
    match f.action {
        Action::Silence => {
            cluster.silence(&format!("node-{}", node + 1));
            Ok(())
        }
        Action::Reset => {
            cluster.reset_all();
            Ok(())
        }
        Action::PanicOn | Action::PanicOff => {
            panic.store(f.action == Action::PanicOn, Ordering::SeqCst);
            Ok(())
        }
        Action::Terminate => tokio::task::block_in_place(|| cluster.terminate(node, Duration::from_secs(15))),
        Action::RestartReady => {
            tokio::task::block_in_place(|| cluster.restart(node))?;
            cluster.node(node).wait_ready(Duration::from_secs(30)).await?;
            cluster.wait_ready(Duration::from_secs(30)).await
        }
        Action::KillAll => {
            for i in 0..cluster.nodes.len() {
                cluster.kill9(i)?;
            }
            Ok(())
        }
        Action::RestartAll => {
            tokio::task::block_in_place(|| cluster.restart_all())?;
            cluster.wait_ready(Duration::from_secs(60)).await
        }
        Action::Kill9 => cluster.kill9(node),
        // Starting a process blocks until it prints its address.
        Action::Restart => tokio::task::block_in_place(|| cluster.restart(node)),
        Action::Freeze => cluster.freeze(node),
        Action::Thaw => cluster.thaw(node),
        Action::Isolate => {
            cluster.isolate(&format!("node-{}", node + 1));
            Ok(())
        }
        Action::Split => {
            cluster.split(&format!("node-{}", node + 1));
            Ok(())
        }
        Action::Delay { delay_ms, jitter_ms } => {
            for (_, _, p) in &cluster.links {
                p.delay(Duration::from_millis(delay_ms), Duration::from_millis(jitter_ms));
            }
            Ok(())
        }
        Action::Heal => {
            cluster.heal();
            Ok(())
        }
        // In effect since the node started.
        Action::Skew { .. } => Ok(()),
        Action::Join => {
            let joined = tokio::task::block_in_place(|| cluster.add_node())?;
            cluster.node(joined).wait_ready(Duration::from_secs(30)).await
        }
        Action::Drain => {
            let path = format!("/v1/cluster/members/node-{}/drain", node + 1);
            let r = cluster.gateway(0).send(reqwest::Method::POST, &path, Some(crate::ADMIN_TOKEN), None, &[]).await?;
            anyhow::ensure!(r.status == 202, "drain node-{}: {} {}", node + 1, r.status, r.text);
            Ok(())
        }
    }
}

/// Samples the resident memory of each pid every second until `until`; returns the largest sample of each
/// node (index, KiB) and the number of sampling rounds.
async fn sample_rss(pids: Vec<(usize, u32)>, until: Instant) -> (Vec<(usize, u64)>, usize) {
    let mut peak: BTreeMap<usize, u64> = BTreeMap::new();
    let mut rounds = 0;
    loop {
        for (i, pid) in &pids {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            if let Some(kib) = check::vm_rss_kib(&status) {
                let p = peak.entry(*i).or_default();
                *p = (*p).max(kib);
            }
        }
        rounds += 1;
        if Instant::now() >= until {
            return (peak.into_iter().collect(), rounds);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Runs `scenario` with `seed` against a fresh proxied cluster of `binary`; writes `history.jsonl`,
/// `report.json` and `report.md` into `out`. `breaks` names guarantees (of [`BREAKS`]) the cluster breaks on
/// purpose; a run with any must fail its checks.
pub async fn run(
    binary: &Path,
    scenario: &str,
    seed: u64,
    out: &Path,
    duration: Duration,
    breaks: &[String],
) -> anyhow::Result<Report> {
    let mut timeline = schedule::schedule(scenario, seed, duration, NODES)?;
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let mut env = vec![];
    if scenario == "panic" {
        env.push(("PLAYGROUND_PANIC_INJECTION", "true"));
    }
    let overload = scenario == "overload";
    if overload {
        env.push(("PLAYGROUND_MAX_IN_FLIGHT", OVERLOAD_MAX_IN_FLIGHT));
    }
    if scenario == "lose" {
        // Short, so that the lost node's replicas are re-created within the run.
        env.push(("PLAYGROUND_DEAD_MEMBER_TIMEOUT", "3s"));
    }
    // A skewed clock is set when its node starts (and kept across restarts).
    let skews: Vec<(usize, String)> = timeline
        .iter()
        .filter_map(|f| match f.action {
            Action::Skew { skew_ms } => Some((f.node.unwrap_or_default(), skew_ms.to_string())),
            _ => None,
        })
        .collect();
    let node_env: Vec<(usize, &str, &str)> = skews.iter().map(|(i, ms)| (*i, CLOCK_SKEW_ENV, ms.as_str())).collect();
    for b in breaks {
        let var = BREAKS.iter().find(|(name, _)| name == b).map(|(_, var)| *var);
        env.push((var.with_context(|| format!("unknown guarantee to break {b:?}"))?, "true"));
    }
    let mut cluster =
        ProcessCluster::start_proxied_with_node_env(binary, NODES, GATEWAYS, SHARDS, &env, &node_env).await?;
    let config = RunConfig {
        nodes: NODES,
        gateways: GATEWAYS,
        shards: SHARDS,
        clients: if overload { OVERLOAD_CLIENTS } else { CLIENTS },
        env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        node_env: node_env.iter().fold(BTreeMap::new(), |mut by, (i, k, v)| {
            by.entry(format!("node-{}", i + 1)).or_insert_with(BTreeMap::new).insert((*k).to_owned(), (*v).to_owned());
            by
        }),
    };
    let panic = Arc::new(AtomicBool::new(false));
    let gws: Vec<_> = (0..GATEWAYS).map(|i| cluster.gateway(i)).collect();
    let h = History::new(Instant::now());

    // Users first, before any fault.
    let mut users = vec![];
    for p in 0..CLIENTS {
        let email = format!("client-{p}-seed-{seed}@example.com");
        let until = Instant::now() + Duration::from_secs(30);
        users.push(workload::signup(&h, p, &gws, &email, until).await?);
    }

    let started = Instant::now();
    let workload_started_at = h.now();
    let until = started + duration;
    let rss = overload.then(|| tokio::spawn(sample_rss(cluster.node_pids(), until)));
    let mut tasks = vec![];
    for p in 0..config.clients {
        let user = users[p as usize % users.len()].clone();
        // Processes past the users' own are numbered after the racers and the liveness probe.
        let process = if p < CLIENTS { p } else { p + CLIENTS + 1 + 2 * RACERS };
        let (h, gws, panic) = (h.clone(), gws.clone(), panic.clone());
        tasks.push(tokio::spawn(workload::client(h, process, gws, user, seed, until, panic, !overload)));
    }
    if scenario == "split" {
        // Reads of the first client's orders through every member, the cut-off node included.
        let members: Vec<_> = (0..NODES).map(|i| cluster.node(i)).chain(gws.iter().cloned()).collect();
        let (h, user) = (h.clone(), users[0].clone());
        let process = CLIENTS + 1 + 2 * RACERS + OVERLOAD_CLIENTS + CLIENTS;
        tasks.push(tokio::spawn(workload::reader(h, process, members, user, seed, until)));
    }
    // Racing registrations: one early, one in the middle of the run (where the faults are).
    for (i, fraction) in [(0u64, 10u32), (1, 2)] {
        let (h, gws) = (h.clone(), gws.clone());
        let email = format!("race-{i}-seed-{seed}@example.com");
        let at = started + duration / fraction;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            workload::race(h, CLIENTS + 1 + i * RACERS, gws, email, RACERS).await;
        }));
    }

    for f in timeline.iter_mut() {
        tokio::time::sleep_until((started + Duration::from_millis(f.at)).into()).await;
        if f.action == Action::Split {
            if let Some(leader) = leader_of_user(&gws[0], &users[0].id).await {
                f.node = Some(leader);
            }
        }
        apply(&mut cluster, f, &panic).await.with_context(|| format!("apply {f:?}"))?;
        f.applied_at = Some(h.now());
    }
    for t in tasks {
        t.await.context("a client task failed")?;
    }

    // Liveness: a write after the last heal (or now, without faults).
    let last_heal = timeline.iter().filter(|f| f.action.heals()).filter_map(|f| f.applied_at).max();
    let since = last_heal.unwrap_or_else(|| h.now());
    let probe_until = Instant::now() + Duration::from_secs(15);
    workload::create_order(&h, CLIENTS, &gws, &users[0], &format!("liveness-seed-{seed}"), probe_until).await;

    // Read everything back through a gateway.
    cluster.wait_ready(Duration::from_secs(30)).await?;
    let mut orders = BTreeMap::new();
    for u in &users {
        orders.insert(u.id.clone(), workload::read_back(&gws[0], u).await?);
    }
    drop(cluster);

    let events = h.events();
    let (live, recovery_ms) = check::liveness(&events, since);
    let mut checks = vec![
        check::lost_writes(&events, &orders),
        check::duplicates(&orders),
        check::transitions(&orders),
        check::email_uniqueness(&events),
        check::revocation(&events),
        linear::orders(&events),
        live,
    ];
    if let Some(rss) = rss {
        let (peak, samples) = rss.await.context("the memory sampler failed")?;
        checks.push(check::shedding(&events, &peak, samples));
    }
    history::write_jsonl(&out.join("history.jsonl"), &events)?;
    let workload_ended_at = workload_started_at + duration.as_millis() as u64;
    let faults = windows::per_fault(&events, &timeline, workload_started_at, workload_ended_at);
    let report = Report {
        scenario: scenario.to_owned(),
        seed,
        commit: git_commit(),
        config,
        duration_ms: duration.as_millis() as u64,
        workload_started_at,
        timeline,
        counts: counts(&events),
        latency: latency(&events),
        recovery_ms,
        faults,
        checks,
    };
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)?)?;
    std::fs::write(out.join("report.md"), report.markdown())?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let p = percentiles((1..=100).collect());
        assert_eq!((p.count, p.p50_ms, p.p99_ms), (100, 50, 99));
        assert_eq!(percentiles(vec![]).p99_ms, 0);
    }
}
