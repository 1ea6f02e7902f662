//! What the cluster costs, from a load run: CPU per operation of every product process in every
//! saturation phase, the cluster against the single node (throughput and CPU per operation), the idle
//! cluster, the gateway against nginx proxying to bare warp, and every measured figure beside its target.

use serde::Serialize;

use super::cpu::Cpu;
use super::goals::{self, Goal, Verdict};
use super::report::{ratio, PhaseRow, Report, CLUSTER, NGINX, SINGLE};
use super::table::Table;
use super::workload::Kind;

/// How long the idle cluster is watched with no requests.
pub const IDLE_WINDOW_S: u64 = 10;

/// The products' CPU over [`IDLE_WINDOW_S`] with no requests, once the fixtures exist.
#[derive(Clone, Debug, Serialize)]
pub struct Idle {
    pub window_s: f64,
    pub cluster: Option<Cpu>,
    pub single: Option<Cpu>,
}

/// One load on the cluster beside the same load on the single node, at saturation.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CostRow {
    pub mix: &'static str,
    /// `read` or `write`, and whether every operation went to one user's shard.
    pub class: &'static str,
    pub hot: bool,
    pub single_per_s: Option<f64>,
    pub cluster_per_s: Option<f64>,
    /// Cluster throughput / single-node throughput.
    pub throughput_ratio: Option<f64>,
    /// Every product process together, µs of CPU per successful operation.
    pub single_us_per_op: Option<f64>,
    pub cluster_us_per_op: Option<f64>,
    /// Cluster CPU per op / single-node CPU per op.
    pub cpu_ratio: Option<f64>,
}

/// The saturation row of `target` for `mix`.
fn saturation<'a>(rows: &'a [PhaseRow], target: &str, mix: &str) -> Option<&'a PhaseRow> {
    rows.iter().find(|r| r.target == target && r.mix == mix && r.offered_per_s.is_none())
}

fn us_per_op(row: Option<&PhaseRow>) -> Option<f64> {
    row?.cpu.as_ref()?.total_us_per_op
}

/// One row per load measured at saturation on the single node or the cluster, in the run's order.
pub fn cost_rows(rows: &[PhaseRow]) -> Vec<CostRow> {
    let mut mixes: Vec<&'static str> = Vec::new();
    for r in rows.iter().filter(|r| (r.target == SINGLE || r.target == CLUSTER) && r.offered_per_s.is_none()) {
        if !mixes.contains(&r.mix) {
            mixes.push(r.mix);
        }
    }
    mixes
        .into_iter()
        .map(|mix| {
            let (single, cluster) = (saturation(rows, SINGLE, mix), saturation(rows, CLUSTER, mix));
            let kind = Kind::from_name(mix);
            let (single_per_s, cluster_per_s) = (single.map(|r| r.achieved_per_s), cluster.map(|r| r.achieved_per_s));
            let (single_us, cluster_us) = (us_per_op(single), us_per_op(cluster));
            CostRow {
                mix,
                class: kind.map_or("-", Kind::class),
                hot: kind.is_some_and(Kind::is_hot),
                single_per_s,
                cluster_per_s,
                throughput_ratio: cluster_per_s.zip(single_per_s).and_then(|(c, s)| ratio(c, s)),
                single_us_per_op: single_us,
                cluster_us_per_op: cluster_us,
                cpu_ratio: cluster_us.zip(single_us).and_then(|(c, s)| ratio(c, s)),
            }
        })
        .collect()
}

/// The gateway reading orders against nginx proxying `GET /hello` to bare warp, each at saturation.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct NginxComparison {
    pub gateway_get_order_per_s: f64,
    pub nginx_per_s: f64,
    /// Gateway get-order throughput / nginx throughput.
    pub ratio: Option<f64>,
    /// CPU per operation of the gateway process alone, and of nginx's processes together.
    pub gateway_us_per_op: Option<f64>,
    pub nginx_us_per_op: Option<f64>,
}

pub fn nginx_comparison(rows: &[PhaseRow]) -> Option<NginxComparison> {
    let gateway = saturation(rows, CLUSTER, Kind::GetOrder.name())?;
    let nginx = rows.iter().find(|r| r.target == NGINX && r.offered_per_s.is_none())?;
    Some(NginxComparison {
        gateway_get_order_per_s: gateway.achieved_per_s,
        nginx_per_s: nginx.achieved_per_s,
        ratio: ratio(gateway.achieved_per_s, nginx.achieved_per_s),
        gateway_us_per_op: gateway.cpu.as_ref().and_then(|c| c.process("gateway-1")).and_then(|p| p.us_per_op),
        nginx_us_per_op: nginx.cpu.as_ref().and_then(|c| c.total_us_per_op),
    })
}

/// What the run measured, beside its targets. `nginx_missing`: why the nginx baseline, which the run
/// should have measured, was not; its target is then listed as not measured.
pub fn verdicts(
    costs: &[CostRow],
    nginx: Option<&NginxComparison>,
    nginx_missing: Option<&str>,
    idle: Option<&Idle>,
) -> Vec<Verdict> {
    let mut out = Vec::new();
    let beside = |v: Verdict, hot: bool| if hot { v.with_note("hot: one shard, beside the target") } else { v };
    for spread in [Kind::GetOrder, Kind::CreateOrder] {
        let (throughput, cpu): (Goal, Goal) = match spread {
            Kind::GetOrder => (goals::CLUSTER_READ_THROUGHPUT, goals::CLUSTER_READ_CPU),
            _ => (goals::CLUSTER_CREATE_THROUGHPUT, goals::CLUSTER_CREATE_CPU),
        };
        let loads: Vec<&CostRow> =
            costs.iter().filter(|c| Kind::from_name(c.mix).map(Kind::spread) == Some(spread)).collect();
        for c in loads.iter().filter(|c| c.cluster_per_s.is_some() && c.single_per_s.is_some()) {
            out.push(beside(throughput.judge(c.mix, c.throughput_ratio), c.hot));
        }
        for c in loads.iter().filter(|c| c.cluster_per_s.is_some() && c.single_per_s.is_some()) {
            out.push(beside(cpu.judge(c.mix, c.cpu_ratio), c.hot));
        }
    }
    match (nginx, nginx_missing) {
        (Some(n), _) => out.push(goals::GATEWAY_VS_NGINX.judge(Kind::GetOrder.name(), n.ratio)),
        (None, Some(why)) => out.push(goals::GATEWAY_VS_NGINX.not_measured(Kind::GetOrder.name(), why)),
        (None, None) => {}
    }
    if let Some(cpu) = idle.and_then(|i| i.cluster.as_ref()) {
        out.push(goals::IDLE_CLUSTER.judge("no requests", cpu.total_cores));
    }
    for (goal, kind) in [(goals::SINGLE_CREATE_CPU, Kind::CreateOrder), (goals::SINGLE_READ_CPU, Kind::GetOrder)] {
        let spread = costs.iter().filter(|c| Kind::from_name(c.mix).map(Kind::spread) == Some(kind));
        for c in spread.filter(|c| c.single_us_per_op.is_some()) {
            out.push(beside(goal.judge(c.mix, c.single_us_per_op), c.hot));
        }
    }
    out
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), goals::number)
}

fn times(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{}×", goals::number(v)))
}

/// Cluster against single node: throughput and CPU per operation, per load.
pub fn cost_table(costs: &[CostRow]) -> Table {
    let headers = [
        "mix",
        "class",
        "single ops/s",
        "cluster ops/s",
        "cluster/single",
        "single µs/op",
        "cluster µs/op",
        "CPU cluster/single",
    ];
    let mut t = Table::new(&headers, 2);
    for c in costs {
        t.row(vec![
            c.mix.to_owned(),
            if c.hot { format!("{}, hot", c.class) } else { c.class.to_owned() },
            num(c.single_per_s),
            num(c.cluster_per_s),
            times(c.throughput_ratio),
            num(c.single_us_per_op),
            num(c.cluster_us_per_op),
            times(c.cpu_ratio),
        ]);
    }
    t
}

/// Every saturation phase with CPU figures: one row per process, then the total, then the bench's own
/// process (the client, and bare warp when it runs), which is not part of the total.
pub fn process_table(rows: &[PhaseRow]) -> Table {
    let mut t = Table::new(&["target", "mix", "process", "ops/s", "CPU µs/op", "cores", "share"], 3);
    for r in rows.iter().filter(|r| r.offered_per_s.is_none()) {
        let Some(cpu) = &r.cpu else { continue };
        let share = |ms: Option<f64>| ms.zip(cpu.total_cpu_ms).and_then(|(p, t)| ratio(p, t));
        for p in &cpu.processes {
            t.row(vec![
                r.target.to_owned(),
                r.mix.to_owned(),
                p.name.clone(),
                format!("{:.0}", r.achieved_per_s),
                num(p.us_per_op),
                num(p.cores),
                share(p.cpu_ms).map_or("-".to_owned(), |s| format!("{:.0} %", s * 100.0)),
            ]);
        }
        t.row(vec![
            r.target.to_owned(),
            r.mix.to_owned(),
            "total".to_owned(),
            format!("{:.0}", r.achieved_per_s),
            num(cpu.total_us_per_op),
            num(cpu.total_cores),
            "100 %".to_owned(),
        ]);
        if let Some(c) = &r.client_cpu {
            t.row(vec![
                r.target.to_owned(),
                r.mix.to_owned(),
                format!("({})", c.name),
                format!("{:.0}", r.achieved_per_s),
                num(c.us_per_op),
                num(c.cores),
                "-".to_owned(),
            ]);
        }
    }
    t
}

/// The idle products, per process: cores used with no requests.
pub fn idle_table(idle: &Idle) -> Table {
    let mut t = Table::new(&["target", "process", "CPU ms", "cores"], 2);
    for (target, cpu) in [(CLUSTER, &idle.cluster), (SINGLE, &idle.single)] {
        let Some(cpu) = cpu else { continue };
        for p in &cpu.processes {
            t.row(vec![target.to_owned(), p.name.clone(), num(p.cpu_ms), num(p.cores)]);
        }
        t.row(vec![target.to_owned(), "total".to_owned(), num(cpu.total_cpu_ms), num(cpu.total_cores)]);
    }
    t
}

pub fn nginx_table(n: &NginxComparison) -> Table {
    let headers =
        ["gateway get-order ops/s", "nginx → bare warp ops/s", "gateway/nginx", "gateway µs/op", "nginx µs/op"];
    let mut t = Table::new(&headers, 0);
    t.row(vec![
        format!("{:.0}", n.gateway_get_order_per_s),
        format!("{:.0}", n.nginx_per_s),
        times(n.ratio),
        num(n.gateway_us_per_op),
        num(n.nginx_us_per_op),
    ]);
    t
}

/// The report's sections on cost: CPU per operation, cluster against single node, nginx and the idle
/// products.
pub fn sections(report: &Report) -> Vec<(&'static str, &'static str, Table)> {
    let mut out = Vec::new();
    if report.costs.iter().any(|c| c.single_us_per_op.is_some() || c.cluster_us_per_op.is_some()) {
        out.push((
            "Throughput and CPU per operation at saturation, cluster against single node",
            "CPU: utime + stime of every product process (all threads, /proc/<pid>/stat) over the saturation \
             phase, divided by its successful operations; the cluster's includes the launcher, the gateway and \
             every node.",
            cost_table(&report.costs),
        ));
        out.push((
            "CPU per operation, per process",
            "Cores: CPU time over the phase's wall time. Share: of the product's total. The bench's own process \
             (client and bare warp) is shown in parentheses and is not in the total.",
            process_table(&report.phases),
        ));
    }
    if let Some(n) = &report.nginx {
        out.push((
            "The gateway against nginx",
            "Saturation, same client and connections, one right after the other: get-order through the \
             cluster's gateway, then GET /hello through nginx (keepalive upstream, HTTP/1.1) to bare warp.",
            nginx_table(n),
        ));
    }
    if let Some(idle) = &report.idle {
        out.push((
            "Idle: CPU with no requests",
            "Once the fixtures exist, 10 s with no requests; cores = CPU time / wall time.",
            idle_table(idle),
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::load::{PhaseRun, Tally};

    fn row(target: &'static str, mix: &'static str, ok: u64, cpu_ms: Option<u64>) -> PhaseRow {
        let mut tally = Tally::default();
        for _ in 0..ok {
            tally.record::<String>(Duration::from_millis(1), Ok(()));
        }
        let run = PhaseRun { tally, elapsed: Duration::from_secs(1), offered: None };
        let mut row = PhaseRow::new(target, mix, &run);
        row.cpu = cpu_ms.map(|ms| Cpu::new(vec![("p".into(), Some(Duration::from_millis(ms)))], run.elapsed, ok));
        row
    }

    #[test]
    fn the_cluster_is_compared_with_the_single_node_per_load() {
        let rows = vec![
            row(SINGLE, "get-order", 1000, Some(40)),
            row(CLUSTER, "get-order", 200, Some(60)),
            row(SINGLE, "get-order-hot", 1000, Some(40)),
            row(CLUSTER, "get-order-hot", 100, Some(60)),
            row(SINGLE, "create-order", 500, Some(100)),
            row(CLUSTER, "create-order", 250, None),
        ];
        let costs = cost_rows(&rows);
        assert_eq!(costs.len(), 3);
        let get = &costs[0];
        assert_eq!(
            (get.throughput_ratio, get.single_us_per_op, get.cluster_us_per_op),
            (Some(0.2), Some(40.0), Some(300.0))
        );
        assert_eq!(get.cpu_ratio, Some(7.5));
        assert!(costs[1].hot && !get.hot);
        assert_eq!((costs[2].throughput_ratio, costs[2].cpu_ratio), (Some(0.5), None));
        let v = verdicts(&costs, None, Some("nginx is not installed"), None);
        let names: Vec<(&str, &str, Option<bool>)> = v.iter().map(|v| (v.target, v.load.as_str(), v.met)).collect();
        assert_eq!(
            names,
            [
                (goals::CLUSTER_READ_THROUGHPUT.name, "get-order", Some(false)),
                (goals::CLUSTER_READ_THROUGHPUT.name, "get-order-hot", Some(false)),
                (goals::CLUSTER_READ_CPU.name, "get-order", Some(false)),
                (goals::CLUSTER_READ_CPU.name, "get-order-hot", Some(false)),
                (goals::CLUSTER_CREATE_THROUGHPUT.name, "create-order", Some(true)),
                (goals::CLUSTER_CREATE_CPU.name, "create-order", None),
                (goals::GATEWAY_VS_NGINX.name, "get-order", None),
                (goals::SINGLE_CREATE_CPU.name, "create-order", Some(true)),
                (goals::SINGLE_READ_CPU.name, "get-order", Some(true)),
                (goals::SINGLE_READ_CPU.name, "get-order-hot", Some(true)),
            ]
        );
        assert!(v[1].note.starts_with("hot"));
        assert_eq!(v[6].outcome(), "not measured");
    }

    #[test]
    fn the_gateway_is_compared_with_nginx_and_the_idle_cluster_with_its_target() {
        let rows = vec![row(CLUSTER, "get-order", 3000, Some(900)), row(NGINX, "hello", 6000, Some(300))];
        let n = nginx_comparison(&rows).unwrap();
        assert_eq!((n.ratio, n.nginx_us_per_op, n.gateway_us_per_op), (Some(0.5), Some(50.0), None));
        let idle = Idle {
            window_s: 10.0,
            cluster: Some(Cpu::new(
                vec![("node-1".into(), Some(Duration::from_millis(300)))],
                Duration::from_secs(10),
                0,
            )),
            single: None,
        };
        let v = verdicts(&[], Some(&n), None, Some(&idle));
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].figure, v[0].met), (Some(0.5), Some(false)));
        assert_eq!((v[1].figure, v[1].met), (Some(0.03), Some(true)));
        assert!(idle_table(&idle).to_markdown().contains("| cluster | node-1 | 300 | 0.030 |"));
        assert!(nginx_comparison(&rows[..1]).is_none());
    }

    #[test]
    fn process_rows_show_each_share_and_the_total() {
        let rows = vec![row(SINGLE, "get-order", 1000, Some(40))];
        let md = process_table(&rows).to_markdown();
        assert!(md.contains("| single node | get-order | p | 1000 | 40.0 | 0.040 | 100 % |"), "{md}");
        assert!(md.contains("| single node | get-order | total | 1000 | 40.0 | 0.040 | 100 % |"), "{md}");
        assert!(cost_table(&cost_rows(&rows))
            .to_markdown()
            .contains("| get-order | read | 1000 | - | - | 40.0 | - | - |"));
    }
}
