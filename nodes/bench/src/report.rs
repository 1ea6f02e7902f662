//! Turns phase runs into rows, the ratios to the baseline, and the three outputs: a table on stdout,
//! `bench.json` for machines and `bench.md` for people.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use simulations::common::{git_commit, median};

use super::cost::{self, CostRow, Idle, NginxComparison};
use super::cpu::{Cpu, ProcessCpu};
use super::goals::{self, Verdict};
use super::load::PhaseRun;
pub use super::table::Table;
use super::workload::Kind;
use super::BenchArgs;

pub const BASELINE: &str = "bare warp";
/// One node started by the command, serving the API itself.
pub const SINGLE: &str = "single node";
/// Three nodes and a gateway started by the command with `playground up`.
pub const CLUSTER: &str = "cluster";
/// nginx started by the command, proxying to the bare warp handler.
pub const NGINX: &str = "nginx → bare warp";

/// How the report explains its own method; kept beside the code that implements it.
const METHOD: &str = "\
- Saturation: a closed loop, `connections` workers each sending its next operation as soon as the last is answered; \
its throughput is the knee estimate. Latency there is from each operation's actual send.
- Open loop: operation *i* is due at t0 + i / rate, whatever the server does. Latency runs from that intended time to \
the end of the answer's body, so queueing in the client or the server counts (no coordinated omission).
- At most 4 × connections operations are outstanding. An operation that finds the cap full at its intended time is \
counted as *dropped*, yet is still sent as soon as a slot frees, and its latency still counts from its intended \
time. Dropped operations still unsent 10 s after the schedule ends count as errors.
- An operation succeeds only if every request in it gets its expected status (201 register, 201 login, 201 create \
order, 200 read order, 200 session check, 200 hello). Anything else, timeouts (10 s) and connection errors count as \
errors, never as successes, and stay out of the latency percentiles.
- Achieved throughput = successful operations / time from the phase's start to its last answer (for open-loop phases at least the scheduled duration).
- The baseline (`GET /hello` on bare warp, in the bench process) runs with the same client code: its saturation \
phase right before each mix's, its open-loop phases right after the mix's at the same operations per second. A register-login operation is two requests; the baseline's is one.
- With `--topology both`, each mix's saturation phase runs against the baseline, the single node and the cluster one \
after the other. The single node's open-loop phases run at 25/50/75 % of its own knee as above, and all three also \
run at 25/50/75 % of the lower of the two knees, so p99s are compared at equal offered rates. Both products run \
for the whole run on the same cores; the idle one still takes a little CPU.";

/// How the failover figure is measured; kept beside the code that implements it.
const FAILOVER_METHOD: &str = "\
- A 3-node cluster with one gateway, started with `playground up` on a fresh data folder; every shard is replicated \
on all three nodes.
- Users are registered until every shard holds at least one (by the shard of the user's id).
- Before each kill: every member up, every shard with a leader, and one order written to every shard.
- The node leading the most shards is killed with SIGKILL. From that instant, one writer per shard creates orders \
(with an idempotency key) through the gateway for that shard's users, one request at a time, 20 ms apart after a \
failure, each request giving up after 2 s. A shard is writable again at the end of its first successful answer \
sent after the kill; the kill's figure is when the last shard got there.
- The launcher restarts the killed node by itself; the next kill waits until it is back, every member is up and \
every shard has a leader. A kill whose shards are not all writable within the deadline is a failure.";

/// One (target, mix, phase) line of the report. Latencies in milliseconds; `None` when nothing succeeded.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseRow {
    pub target: &'static str,
    pub mix: &'static str,
    /// `saturation` or `open`.
    pub phase: &'static str,
    /// Operations per second offered; `None` for the closed loop, which offers whatever it gets.
    pub offered_per_s: Option<f64>,
    pub achieved_per_s: f64,
    pub ok: u64,
    pub errors: u64,
    /// Open-loop operations that found the outstanding cap full and went late (see the method).
    pub dropped: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub elapsed_s: f64,
    pub error_kinds: BTreeMap<String, u64>,
    /// The product's processes over the phase (saturation phases only): per process and in total.
    pub cpu: Option<Cpu>,
    /// The bench's own process over the phase: the client (and the bare warp server, idle then).
    pub client_cpu: Option<ProcessCpu>,
}

impl PhaseRow {
    pub fn new(target: &'static str, mix: &'static str, run: &PhaseRun) -> Self {
        let h = &run.tally.histogram;
        let at = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0);
        Self {
            target,
            mix,
            phase: if run.offered.is_some() { "open" } else { "saturation" },
            offered_per_s: run.offered,
            achieved_per_s: run.achieved_per_s(),
            ok: run.tally.ok,
            errors: run.tally.error_count(),
            dropped: run.tally.dropped,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: (!h.is_empty()).then(|| h.max() as f64 / 1000.0),
            elapsed_s: run.elapsed.as_secs_f64(),
            error_kinds: run.tally.errors.clone(),
            cpu: None,
            client_cpu: None,
        }
    }
}

/// A mix on one target against the baseline.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MixRatio {
    pub target: &'static str,
    pub mix: &'static str,
    pub saturation_per_s: f64,
    pub baseline_saturation_per_s: f64,
    /// Mix saturation throughput / baseline saturation throughput.
    pub throughput_ratio: Option<f64>,
    pub open: Vec<OpenRatio>,
}

/// A mix's p99 against the baseline's at the same offered rate.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OpenRatio {
    pub offered_per_s: f64,
    pub p99_ms: Option<f64>,
    pub baseline_p99_ms: Option<f64>,
    /// Mix p99 / baseline p99.
    pub p99_ratio: Option<f64>,
}

/// `a / b`, when both are meaningful and `b` is not zero.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (a.is_finite() && b.is_finite() && b > 0.0).then(|| a / b)
}

/// Pairs every product saturation row with the baseline saturation row measured last before it, and
/// every open-loop row with the baseline's at the same rate; one entry per target and mix.
pub fn ratios(rows: &[PhaseRow]) -> Vec<MixRatio> {
    let baseline_open = |rate: f64| rows.iter().find(|r| r.target == BASELINE && r.offered_per_s == Some(rate));
    let mut base_sat = 0.0;
    let mut out: Vec<MixRatio> = Vec::new();
    for row in rows {
        if row.target == BASELINE {
            if row.offered_per_s.is_none() {
                base_sat = row.achieved_per_s;
            }
            continue;
        }
        match row.offered_per_s {
            None => out.push(MixRatio {
                target: row.target,
                mix: row.mix,
                saturation_per_s: row.achieved_per_s,
                baseline_saturation_per_s: base_sat,
                throughput_ratio: ratio(row.achieved_per_s, base_sat),
                open: Vec::new(),
            }),
            Some(rate) => {
                let base_p99 = baseline_open(rate).and_then(|b| b.p99_ms);
                let open = OpenRatio {
                    offered_per_s: rate,
                    p99_ms: row.p99_ms,
                    baseline_p99_ms: base_p99,
                    p99_ratio: row.p99_ms.zip(base_p99).and_then(|(a, b)| ratio(a, b)),
                };
                if let Some(mix) = out.iter_mut().rev().find(|m| m.mix == row.mix && m.target == row.target) {
                    mix.open.push(open);
                }
            }
        }
    }
    out
}

/// A mix on the cluster against the same mix on the single node and on bare warp.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TopologyRatio {
    pub mix: &'static str,
    /// `read` or `write`.
    pub class: &'static str,
    pub cluster_saturation_per_s: f64,
    pub single_saturation_per_s: Option<f64>,
    pub baseline_saturation_per_s: f64,
    /// Cluster saturation throughput / single-node saturation throughput.
    pub cluster_to_single: Option<f64>,
    /// Cluster saturation throughput / bare warp saturation throughput.
    pub cluster_to_baseline: Option<f64>,
    pub open: Vec<TopologyOpen>,
}

/// p99 of the cluster, the single node and bare warp at one offered rate.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TopologyOpen {
    pub offered_per_s: f64,
    pub cluster_p99_ms: Option<f64>,
    pub single_p99_ms: Option<f64>,
    pub baseline_p99_ms: Option<f64>,
    /// Cluster p99 / single-node p99.
    pub cluster_to_single_p99: Option<f64>,
}

/// For every mix measured on the cluster: its figures beside the single node's of the same mix, at the
/// rates the cluster ran (the single node runs those too under `--topology both`).
pub fn topology_ratios(ratios: &[MixRatio]) -> Vec<TopologyRatio> {
    ratios
        .iter()
        .filter(|m| m.target == CLUSTER)
        .map(|cluster| {
            let single = ratios.iter().find(|m| m.target == SINGLE && m.mix == cluster.mix);
            let single_sat = single.map(|s| s.saturation_per_s);
            let open = cluster
                .open
                .iter()
                .map(|o| {
                    let single_p99 = single
                        .and_then(|s| s.open.iter().find(|so| so.offered_per_s == o.offered_per_s))
                        .and_then(|so| so.p99_ms);
                    TopologyOpen {
                        offered_per_s: o.offered_per_s,
                        cluster_p99_ms: o.p99_ms,
                        single_p99_ms: single_p99,
                        baseline_p99_ms: o.baseline_p99_ms,
                        cluster_to_single_p99: o.p99_ms.zip(single_p99).and_then(|(c, s)| ratio(c, s)),
                    }
                })
                .collect();
            TopologyRatio {
                mix: cluster.mix,
                class: Kind::from_name(cluster.mix).map_or("-", Kind::class),
                cluster_saturation_per_s: cluster.saturation_per_s,
                single_saturation_per_s: single_sat,
                baseline_saturation_per_s: cluster.baseline_saturation_per_s,
                cluster_to_single: single_sat.and_then(|s| ratio(cluster.saturation_per_s, s)),
                cluster_to_baseline: cluster.throughput_ratio,
                open,
            }
        })
        .collect()
}

/// One kill of the failover benchmark.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct KillRow {
    /// 1-based.
    pub kill: usize,
    /// The member killed (`node-2`) and how many shards it led.
    pub victim: String,
    pub victim_led_shards: usize,
    /// Time from the kill until every shard had accepted a write; `None` when some did not within the
    /// deadline.
    pub recovered_ms: Option<f64>,
    /// Same measurement just before the kill, with nothing failing: the floor of `recovered_ms`.
    pub healthy_ms: Option<f64>,
    /// Shards not writable again by the deadline.
    pub unrecovered_shards: Vec<u32>,
    /// Failed write attempts between the kill and recovery, all shards together.
    pub failed_writes: u64,
}

/// The failover benchmark's summary over its kills.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Failover {
    pub nodes: usize,
    pub shards: u32,
    pub users: usize,
    pub deadline_s: u64,
    pub kills: Vec<KillRow>,
    /// Over the kills that recovered.
    pub median_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub failures: usize,
    /// Why the run ended before its last kill, if it did.
    pub aborted: Option<String>,
}

impl Failover {
    pub fn new(nodes: usize, shards: u32, users: usize, deadline_s: u64, kills: Vec<KillRow>) -> Self {
        let mut times: Vec<f64> = kills.iter().filter_map(|k| k.recovered_ms).collect();
        times.sort_by(f64::total_cmp);
        let failures = kills.iter().filter(|k| k.recovered_ms.is_none()).count();
        Self {
            nodes,
            shards,
            users,
            deadline_s,
            median_ms: median(&times),
            max_ms: times.last().copied(),
            failures,
            kills,
            aborted: None,
        }
    }
}

/// Everything a run found, with what is needed to compare it with another run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub version: &'static str,
    pub git_commit: Option<String>,
    pub timestamp: String,
    pub cores: usize,
    /// `single`, `cluster`, `both`, or `failover`.
    pub topology: &'static str,
    /// What was measured: `started node`, `started cluster (…)`, both, or the `--target` URL.
    pub target: String,
    pub argon2_memory_kib: Option<u32>,
    /// Load phases only; `None` for failover.
    pub duration_s: Option<u64>,
    pub connections: Option<u64>,
    pub max_outstanding: Option<usize>,
    pub phases: Vec<PhaseRow>,
    pub ratios: Vec<MixRatio>,
    /// The cluster against the single node, under `--topology both` (and against bare warp under `cluster`).
    pub topology_ratios: Vec<TopologyRatio>,
    /// Cluster against single node per load: throughput and CPU per operation.
    pub costs: Vec<CostRow>,
    /// The products with no requests, over a fixed window.
    pub idle: Option<Idle>,
    pub nginx: Option<NginxComparison>,
    /// Why the nginx baseline was not measured, in a run that should have measured it.
    pub nginx_not_measured: Option<String>,
    /// Every target the run measured, with the figure and the verdict.
    pub verdicts: Vec<Verdict>,
    pub failover: Option<Failover>,
}

impl Report {
    pub fn new(args: &BenchArgs, topology: &'static str, target: String, max_outstanding: usize) -> Self {
        Self {
            duration_s: Some(args.duration),
            connections: Some(args.connections),
            max_outstanding: Some(max_outstanding),
            ..Self::empty(topology, target, args.argon2_memory_kib)
        }
    }

    pub fn for_failover(argon2_memory_kib: Option<u32>, failover: Failover) -> Self {
        let target = format!("started cluster ({} nodes, 1 gateway, {} shards)", failover.nodes, failover.shards);
        let secs = |ms: Option<f64>| ms.map(|ms| ms / 1000.0);
        let verdicts = vec![
            goals::FAILOVER_MEDIAN.judge(&format!("{} kills", failover.kills.len()), secs(failover.median_ms)),
            goals::FAILOVER_MAX.judge(&format!("{} kills", failover.kills.len()), secs(failover.max_ms)),
        ];
        Self { failover: Some(failover), verdicts, ..Self::empty("failover", target, argon2_memory_kib) }
    }

    fn empty(topology: &'static str, target: String, argon2_memory_kib: Option<u32>) -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION"),
            git_commit: git_commit(),
            timestamp: timestamp(),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            topology,
            target,
            argon2_memory_kib,
            duration_s: None,
            connections: None,
            max_outstanding: None,
            phases: Vec::new(),
            ratios: Vec::new(),
            topology_ratios: Vec::new(),
            costs: Vec::new(),
            idle: None,
            nginx: None,
            nginx_not_measured: None,
            verdicts: Vec::new(),
            failover: None,
        }
    }

    pub fn compute_ratios(&mut self) {
        self.ratios = ratios(&self.phases);
        self.topology_ratios = topology_ratios(&self.ratios);
        self.costs = cost::cost_rows(&self.phases);
        self.nginx = cost::nginx_comparison(&self.phases);
        self.verdicts =
            cost::verdicts(&self.costs, self.nginx.as_ref(), self.nginx_not_measured.as_deref(), self.idle.as_ref());
    }

    fn heading(&self) -> String {
        let mut text = format!(
            "playground {} (commit {}), {}, {} cores, topology: {}, target: {}, argon2 memory: {}",
            self.version,
            self.git_commit.as_deref().unwrap_or("unknown"),
            self.timestamp,
            self.cores,
            self.topology,
            self.target,
            self.argon2_memory_kib.map_or("default".to_owned(), |k| format!("{k} KiB")),
        );
        if let Some(d) = self.duration_s {
            let _ = write!(text, ", {d} s per phase");
        }
        if let Some(c) = self.connections {
            let _ = write!(text, ", {c} connections");
        }
        text
    }

    /// The report's tables, each with its title and an optional note, in the order they are shown.
    fn sections(&self) -> Vec<(&'static str, &'static str, Table)> {
        let mut out = Vec::new();
        if !self.verdicts.is_empty() {
            out.push(("Targets", "Each figure this run measured, beside its target.", goals::table(&self.verdicts)));
        }
        if !self.phases.is_empty() {
            out.push(("Phases", "Latencies in ms.", phase_table(&self.phases)));
            out.push(("Throughput against bare warp", "", saturation_table(&self.ratios)));
            out.push(("p99 against bare warp at the same offered rate", "", open_table(&self.ratios)));
        }
        if !self.topology_ratios.is_empty() {
            out.push((
                "Cluster against single node and bare warp: saturation",
                "Throughput in operations per second at saturation, and the cluster's as a ratio.",
                topology_saturation_table(&self.topology_ratios),
            ));
            out.push((
                "Cluster against single node and bare warp: p99 at the same offered rates",
                "p99 in ms, from intended send time.",
                topology_open_table(&self.topology_ratios),
            ));
        }
        out.extend(cost::sections(self));
        if let Some(f) = &self.failover {
            out.push((
                "Failover: time until every shard accepts writes again",
                "Milliseconds from SIGKILL of the node leading the most shards.",
                super::failover::summary_table(f),
            ));
            out.push(("Failover: each kill", "", super::failover::kills_table(f)));
        }
        out
    }

    pub fn to_text(&self) -> String {
        let mut text = format!("\n{}\n", self.heading());
        for (title, _, table) in self.sections() {
            let _ = write!(text, "\n{title}\n\n{}", table.to_text());
        }
        if let Some(reason) = self.failover.as_ref().and_then(|f| f.aborted.as_deref()) {
            let _ = write!(text, "\nstopped early: {reason}\n");
        }
        text
    }

    pub fn to_markdown(&self) -> String {
        let mut text = format!("# playground bench\n\n{}\n", self.heading());
        for (title, note, table) in self.sections() {
            let _ = write!(text, "\n## {title}\n\n");
            if !note.is_empty() {
                let _ = write!(text, "{note}\n\n");
            }
            text.push_str(&table.to_markdown());
        }
        if let Some(reason) = self.failover.as_ref().and_then(|f| f.aborted.as_deref()) {
            let _ = write!(text, "\nStopped early: {reason}\n");
        }
        if !self.phases.is_empty() {
            let _ = write!(text, "\n## Method\n\n{METHOD}\n");
        }
        if self.failover.is_some() {
            let _ = write!(text, "\n## Failover method\n\n{FAILOVER_METHOD}\n");
        }
        text
    }
}

/// Now, in RFC 3339, UTC: when a report was made.
pub fn timestamp() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

pub fn ms(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.2}"))
}

fn times(v: Option<f64>) -> String {
    // Argon2-bound mixes sit far below the baseline; two decimals would show them as zero.
    v.map_or("-".to_owned(), |v| if v < 0.1 { format!("{v:.4}×") } else { format!("{v:.2}×") })
}

fn phase_table(rows: &[PhaseRow]) -> Table {
    let mut t = Table::new(
        &["target", "mix", "phase", "offered/s", "achieved/s", "p50", "p99", "p99.9", "max", "errors", "dropped"],
        3,
    );
    for r in rows {
        t.row(vec![
            r.target.to_owned(),
            r.mix.to_owned(),
            r.phase.to_owned(),
            r.offered_per_s.map_or("max".to_owned(), |v| format!("{v:.0}")),
            format!("{:.0}", r.achieved_per_s),
            ms(r.p50_ms),
            ms(r.p99_ms),
            ms(r.p999_ms),
            ms(r.max_ms),
            r.errors.to_string(),
            r.dropped.to_string(),
        ]);
    }
    t
}

fn saturation_table(ratios: &[MixRatio]) -> Table {
    let mut t = Table::new(&["target", "mix", "saturation/s", "bare warp/s", "ratio"], 2);
    for m in ratios {
        t.row(vec![
            m.target.to_owned(),
            m.mix.to_owned(),
            format!("{:.0}", m.saturation_per_s),
            format!("{:.0}", m.baseline_saturation_per_s),
            times(m.throughput_ratio),
        ]);
    }
    t
}

fn open_table(ratios: &[MixRatio]) -> Table {
    let mut t = Table::new(&["target", "mix", "offered/s", "p99 ms", "bare warp p99 ms", "ratio"], 2);
    for m in ratios {
        for o in &m.open {
            t.row(vec![
                m.target.to_owned(),
                m.mix.to_owned(),
                format!("{:.0}", o.offered_per_s),
                ms(o.p99_ms),
                ms(o.baseline_p99_ms),
                times(o.p99_ratio),
            ]);
        }
    }
    t
}

fn per_s(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.0}"))
}

fn topology_saturation_table(ratios: &[TopologyRatio]) -> Table {
    let headers = ["mix", "class", "cluster/s", "single node/s", "bare warp/s", "cluster/single", "cluster/bare warp"];
    let mut t = Table::new(&headers, 2);
    for m in ratios {
        t.row(vec![
            m.mix.to_owned(),
            m.class.to_owned(),
            format!("{:.0}", m.cluster_saturation_per_s),
            per_s(m.single_saturation_per_s),
            format!("{:.0}", m.baseline_saturation_per_s),
            times(m.cluster_to_single),
            times(m.cluster_to_baseline),
        ]);
    }
    t
}

fn topology_open_table(ratios: &[TopologyRatio]) -> Table {
    let headers = ["mix", "class", "offered/s", "cluster p99", "single node p99", "bare warp p99", "cluster/single"];
    let mut t = Table::new(&headers, 2);
    for m in ratios {
        for o in &m.open {
            t.row(vec![
                m.mix.to_owned(),
                m.class.to_owned(),
                format!("{:.0}", o.offered_per_s),
                ms(o.cluster_p99_ms),
                ms(o.single_p99_ms),
                ms(o.baseline_p99_ms),
                times(o.cluster_to_single_p99),
            ]);
        }
    }
    t
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::super::load::Tally;
    use super::*;

    fn run(latencies_ms: &[u64], offered: Option<f64>) -> PhaseRun {
        let mut tally = Tally::default();
        for &ms in latencies_ms {
            tally.record::<String>(Duration::from_millis(ms), Ok(()));
        }
        PhaseRun { tally, elapsed: Duration::from_secs(2), offered }
    }

    #[test]
    fn rows_summarise_percentiles_in_milliseconds() {
        let latencies: Vec<u64> = (1..=1000).collect();
        let row = PhaseRow::new(SINGLE, "get-order", &run(&latencies, Some(500.0)));
        assert_eq!(row.phase, "open");
        assert_eq!(row.achieved_per_s, 500.0);
        // Three significant digits: within 0.1 % of the true value.
        let close = |v: Option<f64>, want: f64| (v.unwrap() - want).abs() <= want * 0.001;
        assert!(close(row.p50_ms, 500.0), "{:?}", row.p50_ms);
        assert!(close(row.p99_ms, 990.0), "{:?}", row.p99_ms);
        assert!(close(row.p999_ms, 999.0), "{:?}", row.p999_ms);
        assert!(close(row.max_ms, 1000.0), "{:?}", row.max_ms);
        let empty = PhaseRow::new(SINGLE, "get-order", &run(&[], None));
        assert_eq!((empty.phase, empty.p99_ms, empty.max_ms), ("saturation", None, None));
    }

    #[test]
    fn ratios_pair_each_mix_with_the_baseline_at_the_same_rate() {
        let rows = vec![
            PhaseRow::new(BASELINE, "hello", &run(&[1; 2000], None)),
            PhaseRow::new(SINGLE, "get-order", &run(&[2; 1000], None)),
            PhaseRow::new(SINGLE, "get-order", &run(&[4; 10], Some(100.0))),
            PhaseRow::new(BASELINE, "hello", &run(&[1; 10], Some(100.0))),
            PhaseRow::new(SINGLE, "get-order", &run(&[], Some(200.0))),
            PhaseRow::new(BASELINE, "hello", &run(&[1; 4000], None)),
            PhaseRow::new(SINGLE, "create-order", &run(&[2; 1000], None)),
        ];
        let r = ratios(&rows);
        assert_eq!(r.len(), 2);
        // Each mix against the baseline knee measured just before it.
        assert_eq!(r[1].throughput_ratio, Some(0.25));
        assert_eq!((r[0].saturation_per_s, r[0].baseline_saturation_per_s), (500.0, 1000.0));
        assert_eq!(r[0].throughput_ratio, Some(0.5));
        assert_eq!(r[0].open.len(), 2);
        // Histogram buckets at three significant digits: equal to 0.1 %.
        assert!((r[0].open[0].p99_ratio.unwrap() - 4.0).abs() < 0.01, "{:?}", r[0].open[0]);
        // No successes, and no baseline at that rate: no ratio rather than a made-up one.
        assert_eq!((r[0].open[1].p99_ms, r[0].open[1].p99_ratio), (None, None));
    }

    #[test]
    fn ratios_keep_targets_apart_and_compare_the_cluster_with_the_single_node() {
        let rows = vec![
            PhaseRow::new(BASELINE, "hello", &run(&[1; 4000], None)),
            PhaseRow::new(SINGLE, "get-order", &run(&[2; 2000], None)),
            PhaseRow::new(CLUSTER, "get-order", &run(&[2; 500], None)),
            PhaseRow::new(SINGLE, "get-order", &run(&[4; 10], Some(100.0))),
            PhaseRow::new(CLUSTER, "get-order", &run(&[8; 10], Some(100.0))),
            PhaseRow::new(BASELINE, "hello", &run(&[2; 10], Some(100.0))),
            PhaseRow::new(SINGLE, "get-order", &run(&[4; 10], Some(500.0))),
            PhaseRow::new(BASELINE, "hello", &run(&[1; 4000], None)),
            PhaseRow::new(CLUSTER, "create-order", &run(&[2; 100], None)),
            PhaseRow::new(CLUSTER, "create-order", &run(&[], Some(100.0))),
        ];
        let r = ratios(&rows);
        let names: Vec<_> = r.iter().map(|m| (m.target, m.mix, m.open.len())).collect();
        assert_eq!(names, [(SINGLE, "get-order", 2), (CLUSTER, "get-order", 1), (CLUSTER, "create-order", 1)]);
        let t = topology_ratios(&r);
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].mix, t[0].class), ("get-order", "read"));
        assert_eq!(t[0].cluster_to_single, Some(0.25));
        assert_eq!(t[0].cluster_to_baseline, Some(0.125));
        assert_eq!(t[0].open.len(), 1, "only the rates the cluster ran");
        let o = &t[0].open[0];
        assert!((o.cluster_to_single_p99.unwrap() - 2.0).abs() < 0.01, "{o:?}");
        assert!(o.baseline_p99_ms.is_some());
        // A mix the single node did not run: no single-node figures, and no made-up ratio.
        assert_eq!((t[1].class, t[1].single_saturation_per_s, t[1].cluster_to_single), ("write", None, None));
        assert_eq!(t[1].open[0].cluster_p99_ms, None);
    }

    fn kill(n: usize, recovered: Option<f64>) -> KillRow {
        KillRow {
            kill: n,
            victim: "node-1".into(),
            victim_led_shards: 22,
            recovered_ms: recovered,
            healthy_ms: Some(40.0),
            unrecovered_shards: if recovered.is_some() { vec![] } else { vec![3, 9] },
            failed_writes: 5,
        }
    }

    #[test]
    fn failover_summarises_recovered_kills_and_counts_failures() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[1.0, 2.0, 10.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0, 4.0, 10.0]), Some(3.0));
        let f = Failover::new(3, 64, 300, 30, vec![kill(1, Some(900.0)), kill(2, None), kill(3, Some(700.0))]);
        assert_eq!((f.median_ms, f.max_ms, f.failures), (Some(800.0), Some(900.0), 1));
        let report = Report::for_failover(None, f);
        let md = report.to_markdown();
        assert!(md.contains("| 3 | 64 | 3 | 2 | 800.00 | 900.00 | 30 |"), "{md}");
        assert!(md.contains("| 2 | node-1 | 22 | failed | 40 | 5 | 3 9 |"), "{md}");
        assert!(md.contains("## Failover method") && !md.contains("## Phases"), "{md}");
        assert!(report.to_text().contains("failed"));
    }

    #[test]
    fn ratio_refuses_meaningless_divisions() {
        assert_eq!(ratio(1.0, 4.0), Some(0.25));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
        assert_eq!(
            (times(Some(0.43)), times(Some(0.00056)), times(None)),
            ("0.43×".into(), "0.0006×".into(), "-".into())
        );
    }
}
