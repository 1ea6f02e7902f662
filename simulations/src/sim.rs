//! Fault-injection simulations: a seeded fault schedule against a real proxied cluster, a workload that
//! records a Jepsen-style history, checkers over the history and the state read back after healing, and a
//! report (JSON and Markdown).
//!
//! - `schedule`: the scenarios and their seeded fault schedules.
//! - `workload`: the client tasks and the final read-back.
//! - `history`: events and the JSONL history.
//! - `check`: the checkers.

pub mod check;
pub mod history;
pub mod schedule;
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
use check::Check;
use history::{Event, History};
pub use schedule::SCENARIOS;
use schedule::{Action, FaultEvent};

const NODES: usize = 3;
const GATEWAYS: usize = 2;
const SHARDS: u32 = 8;
const CLIENTS: u64 = 4;
/// Registrations racing for each contested email.
const RACERS: u64 = 3;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50_ms: u64,
    pub p99_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub commit: Option<String>,
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
        s.push_str("\n## Checks\n\n| check | result | detail |\n|---|---|---|\n");
        for c in &self.checks {
            let _ = writeln!(s, "| {} | {} | {} |", c.name, if c.passed { "pass" } else { "FAIL" }, c.detail);
        }
        s
    }
}

fn percentiles(mut ms: Vec<u64>) -> Percentiles {
    ms.sort_unstable();
    let at = |q: f64| -> u64 {
        if ms.is_empty() {
            return 0;
        }
        let i = ((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1;
        ms[i]
    };
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

fn commit() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Guarantees a run can break on purpose (`--break`), to prove that the checkers fail: each names the
/// test-only environment switch the cluster is started with.
pub const BREAKS: &[(&str, &str)] = &[("idempotency", "PLAYGROUND_BREAK_IDEMPOTENCY")];

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
            let api = cluster.node(node);
            crate::process::eventually(Duration::from_secs(30), &format!("node-{} is ready", node + 1), || async {
                (api.get("/readyz", None).await.ok()?.status == 200).then_some(())
            })
            .await?;
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
    for b in breaks {
        let var = BREAKS.iter().find(|(name, _)| name == b).map(|(_, var)| *var);
        env.push((var.with_context(|| format!("unknown guarantee to break {b:?}"))?, "true"));
    }
    let mut cluster = ProcessCluster::start_proxied(binary, NODES, GATEWAYS, SHARDS, &env).await?;
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
    let mut tasks = vec![];
    for (p, user) in users.iter().enumerate() {
        let (h, gws, user, panic) = (h.clone(), gws.clone(), user.clone(), panic.clone());
        tasks.push(tokio::spawn(workload::client(h, p as u64, gws, user, seed, until, panic)));
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
    let checks = vec![
        check::lost_writes(&events, &orders),
        check::duplicates(&orders),
        check::transitions(&orders),
        check::email_uniqueness(&events),
        check::revocation(&events),
        live,
    ];
    history::write_jsonl(&out.join("history.jsonl"), &events)?;
    let report = Report {
        scenario: scenario.to_owned(),
        seed,
        commit: commit(),
        duration_ms: duration.as_millis() as u64,
        workload_started_at,
        timeline,
        counts: counts(&events),
        latency: latency(&events),
        recovery_ms,
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
