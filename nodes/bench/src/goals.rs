//! The cluster's targets, and the verdict of a measured figure against its target: met or not, and by
//! how much. Every report prints the targets its own run measured, each figure beside its target.
//! (`targets.rs` holds the servers a run measures; these are the figures they should reach.)

use serde::Serialize;

use super::table::Table;

/// Which side of the target a figure must be on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    AtLeast,
    AtMost,
}

/// One target: a name, the bound, and the unit its figures are in (`×`, `µs/op`, `cores`, `s`, ``).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Goal {
    pub name: &'static str,
    pub bound: Bound,
    pub target: f64,
    pub unit: &'static str,
}

const fn at_least(name: &'static str, target: f64, unit: &'static str) -> Goal {
    Goal { name, bound: Bound::AtLeast, target, unit }
}

const fn at_most(name: &'static str, target: f64, unit: &'static str) -> Goal {
    Goal { name, bound: Bound::AtMost, target, unit }
}

pub const CLUSTER_READ_THROUGHPUT: Goal = at_least("cluster/single throughput, reads", 0.5, "×");
pub const CLUSTER_CREATE_THROUGHPUT: Goal = at_least("cluster/single throughput, creates", 0.33, "×");
pub const CLUSTER_READ_CPU: Goal = at_most("server CPU per op cluster/single, reads", 2.0, "×");
pub const CLUSTER_CREATE_CPU: Goal = at_most("server CPU per op cluster/single, creates", 3.5, "×");
pub const GATEWAY_VS_NGINX: Goal = at_least("get-order through the gateway / nginx proxying to bare warp", 1.0, "×");
pub const IDLE_CLUSTER: Goal = at_most("idle 3-node cluster, 64 shards", 0.05, "cores");
pub const SINGLE_CREATE_CPU: Goal = at_most("single node CPU per create", 200.0, "µs/op");
pub const SINGLE_READ_CPU: Goal = at_most("single node CPU per read", 50.0, "µs/op");
pub const SCALE_OUT: Goal = at_least("scale-out throughput 6 nodes / 3 nodes", 1.7, "×");
pub const FAILOVER_MEDIAN: Goal = at_most("failover, median", 1.0, "s");
pub const FAILOVER_MAX: Goal = at_most("failover, max", 3.0, "s");
pub const REBALANCE_TIME: Goal = at_most("rebalance: balanced after (max over runs)", 10.0, "s");
pub const REBALANCE_THROUGHPUT: Goal = at_least("rebalance: throughput during moves / before (median)", 0.8, "×");
pub const MEMORY_PER_ENTITY: Goal = at_most("resident memory per active entity", 10.0, "KB");
pub const REBALANCE_EMPTY_BUCKETS: Goal = at_most("rebalance: 250 ms buckets without a success", 0.0, "");

/// The rebalance benchmark's figures beside their targets: the slowest run's time to balance, the median
/// throughput during the moves over before, and the 250 ms buckets without a success over every run.
pub fn rebalance(max_rebalance_ms: Option<f64>, median_ratio: Option<f64>, empty: Option<usize>) -> Vec<Verdict> {
    vec![
        REBALANCE_TIME.judge("4th node joins", max_rebalance_ms.map(|ms| ms / 1000.0)),
        REBALANCE_THROUGHPUT.judge("create + read", median_ratio),
        REBALANCE_EMPTY_BUCKETS.judge("all runs", empty.map(|n| n as f64)),
    ]
}

/// A figure beside its target.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Verdict {
    pub target: &'static str,
    /// What the figure is of, when a target is measured on more than one load (`get-order`).
    pub load: String,
    pub bound: Bound,
    pub goal: f64,
    pub unit: &'static str,
    /// `None`: not measured in this run (the reason is in `note`).
    pub figure: Option<f64>,
    pub met: Option<bool>,
    /// Figure / target; `None` when the target is zero or nothing was measured.
    pub of_target: Option<f64>,
    pub note: String,
}

impl Goal {
    /// This target's verdict on `figure` measured on `load`.
    pub fn judge(&self, load: &str, figure: Option<f64>) -> Verdict {
        let figure = figure.filter(|f| f.is_finite());
        let met = figure.map(|f| match self.bound {
            Bound::AtLeast => f >= self.target,
            Bound::AtMost => f <= self.target,
        });
        let of_target = figure.filter(|_| self.target != 0.0).map(|f| f / self.target);
        Verdict {
            target: self.name,
            load: load.to_owned(),
            bound: self.bound,
            goal: self.target,
            unit: self.unit,
            figure,
            met,
            of_target,
            note: String::new(),
        }
    }

    /// Not measured in this run, and why.
    pub fn not_measured(&self, load: &str, why: &str) -> Verdict {
        Verdict { note: why.to_owned(), ..self.judge(load, None) }
    }
}

impl Verdict {
    pub fn with_note(mut self, note: &str) -> Self {
        self.note = note.to_owned();
        self
    }

    /// `met, 1.24× the minimum`, `not met, 2.50× the maximum`, `not met, 3 over`, or `not measured`.
    pub fn outcome(&self) -> String {
        let Some(met) = self.met else { return "not measured".to_owned() };
        let word = if met { "met" } else { "not met" };
        let side = match self.bound {
            Bound::AtLeast => "the minimum",
            Bound::AtMost => "the maximum",
        };
        match (self.of_target, self.figure) {
            (Some(r), _) => format!("{word}, {r:.2}× {side}"),
            (None, Some(f)) => {
                let by = (f - self.goal).abs();
                let dir = if f >= self.goal { "over" } else { "under" };
                if by == 0.0 {
                    format!("{word}, exactly at it")
                } else {
                    format!("{word}, {} {dir}", number(by))
                }
            }
            (None, None) => word.to_owned(),
        }
    }
}

/// A figure at a precision that fits its size.
pub fn number(v: f64) -> String {
    match v.abs() {
        0.0 => "0".to_owned(),
        a if a < 0.1 => format!("{v:.3}"),
        a if a < 10.0 => format!("{v:.2}"),
        a if a < 100.0 => format!("{v:.1}"),
        _ => format!("{v:.0}"),
    }
}

fn with_unit(v: f64, unit: &str) -> String {
    match unit {
        "" => number(v),
        "×" => format!("{}×", number(v)),
        unit => format!("{} {unit}", number(v)),
    }
}

/// The verdicts as a table: target, load, figure, bound, outcome, note.
pub fn table(verdicts: &[Verdict]) -> Table {
    let mut t = Table::new(&["target", "load", "figure", "goal", "verdict", "note"], 2);
    for v in verdicts {
        let bound = match v.bound {
            Bound::AtLeast => "≥",
            Bound::AtMost => "≤",
        };
        t.row(vec![
            v.target.to_owned(),
            if v.load.is_empty() { "-".to_owned() } else { v.load.clone() },
            v.figure.map_or("-".to_owned(), |f| with_unit(f, v.unit)),
            format!("{bound} {}", with_unit(v.goal, v.unit)),
            v.outcome(),
            if v.note.is_empty() { "-".to_owned() } else { v.note.clone() },
        ]);
    }
    t
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_say_met_or_not_and_by_how_much() {
        let v = CLUSTER_READ_THROUGHPUT.judge("get-order", Some(0.62));
        assert_eq!((v.met, v.outcome()), (Some(true), "met, 1.24× the minimum".to_owned()));
        let v = CLUSTER_READ_THROUGHPUT.judge("get-order", Some(0.15));
        assert_eq!((v.met, v.outcome()), (Some(false), "not met, 0.30× the minimum".to_owned()));
        let v = SINGLE_CREATE_CPU.judge("create-order", Some(500.0));
        assert_eq!(v.outcome(), "not met, 2.50× the maximum");
        let v = IDLE_CLUSTER.judge("", Some(0.05));
        assert_eq!(v.met, Some(true), "the bound itself is met");
        // A target of zero has no ratio: the difference instead.
        assert_eq!(REBALANCE_EMPTY_BUCKETS.judge("", Some(0.0)).outcome(), "met, exactly at it");
        assert_eq!(REBALANCE_EMPTY_BUCKETS.judge("", Some(30.0)).outcome(), "not met, 30.0 over");
        let none = GATEWAY_VS_NGINX.not_measured("get-order", "nginx is not installed");
        assert_eq!(
            (none.met, none.outcome(), none.note.as_str()),
            (None, "not measured".into(), "nginx is not installed")
        );
        assert_eq!(FAILOVER_MAX.judge("", Some(f64::NAN)).outcome(), "not measured");
    }

    #[test]
    fn rebalance_figures_are_judged_in_seconds_and_buckets() {
        let v = rebalance(Some(7400.0), Some(0.36), Some(30));
        assert_eq!(v.iter().map(|v| v.met).collect::<Vec<_>>(), [Some(true), Some(false), Some(false)]);
        assert_eq!(v[0].figure, Some(7.4));
        assert!(rebalance(None, None, None).iter().all(|v| v.met.is_none()));
    }

    #[test]
    fn the_table_shows_figure_goal_and_verdict() {
        let rows = [
            SCALE_OUT.judge("", Some(1.85)),
            SINGLE_READ_CPU.judge("get-order", Some(31.4)).with_note("hot"),
            GATEWAY_VS_NGINX.not_measured("get-order", "nginx missing"),
        ];
        let md = table(&rows).to_markdown();
        assert!(
            md.contains(
                "| scale-out throughput 6 nodes / 3 nodes | - | 1.85× | ≥ 1.70× | met, 1.09× the minimum | - |"
            ),
            "{md}"
        );
        assert!(md.contains("| 31.4 µs/op | ≤ 50.0 µs/op | met, 0.63× the maximum | hot |"), "{md}");
        assert!(md.contains("| - | ≥ 1.00× | not measured | nginx missing |"), "{md}");
        assert_eq!((number(0.0123), number(2.0), number(1234.4)), ("0.012".into(), "2.00".into(), "1234".into()));
    }
}
