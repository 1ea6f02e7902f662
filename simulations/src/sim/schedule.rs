//! The fault schedule of a scenario: what happens, when, to which node, drawn from a seeded RNG so that
//! a seed replays the same schedule.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

pub const SCENARIOS: &[(&str, &str)] = &[
    ("baseline", "no faults"),
    ("kill", "kill -9 a random node and restart it, again and again through the run"),
    ("pause", "SIGSTOP a random node for 5 s, then SIGCONT"),
    ("isolate", "black-hole every link of a random node for 5 s, then heal"),
    (
        "split",
        "cut the leader of a client's shard off from the other nodes until 4/5 of the run; gateways still reach it",
    ),
    ("latency", "delay with jitter on every link"),
    ("partition", "black-hole everything a random node sends (asymmetric) for up to 5 s, then heal"),
    ("reset", "reset every link's open connections a few times"),
    ("panic", "a share of pays, cancels and reads make their entity panic, for up to 5 s"),
    ("rolling", "restart each node in turn (SIGTERM, restart, wait for readiness)"),
    ("drill", "kill -9 every node mid-burst, then restart them all"),
    ("skew", "a random node runs with its wall clock shifted by 2-10 s, either way, for the whole run"),
    ("overload", "64 clients without think time against gateways admitting 16 requests in flight: shedding"),
    ("join", "a fourth node joins under load; replicas and leaders move onto it"),
    ("drain", "a fourth node joins, then a random node of the first three is drained under load"),
    ("lose", "a fourth node joins and a random node is killed for good while shards move onto it"),
];

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Kill9,
    Restart,
    Freeze,
    Thaw,
    Isolate,
    /// Black-hole the links between the node and the other nodes, both ways; the gateways' links stay. The
    /// node is the one leading the first client's shard when it applies (the schedule's draw is the
    /// fallback).
    Split,
    Delay {
        delay_ms: u64,
        jitter_ms: u64,
    },
    Heal,
    /// Black-hole everything the node sends.
    Silence,
    /// Close every open connection on every link.
    Reset,
    /// Start / stop sending `X-Fault-Inject: panic` on a share of the workload's requests.
    PanicOn,
    PanicOff,
    /// SIGTERM, and wait for the exit.
    Terminate,
    /// Restart and wait until the cluster is ready again.
    RestartReady,
    KillAll,
    RestartAll,
    /// Start one more node, which joins the cluster.
    Join,
    /// Drain the node through the admin API (its replicas and leaderships move to the others).
    Drain,
    /// The node runs with its wall clock shifted by `skew_ms` (signed) from its start: set through the
    /// test-only `faults.clock_skew_ms` when the cluster starts, so applying it does nothing.
    Skew {
        skew_ms: i64,
    },
}

impl Action {
    /// Whether this action ends a fault.
    pub fn heals(&self) -> bool {
        matches!(
            self,
            Action::Restart
                | Action::Thaw
                | Action::Heal
                | Action::Reset
                | Action::PanicOff
                | Action::RestartReady
                | Action::RestartAll
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultEvent {
    /// Planned time, in ms since the workload started.
    pub at: u64,
    pub action: Action,
    /// Index of the node (0-based); `None` for every link.
    pub node: Option<usize>,
    /// When it was applied, in ms since the start of the run (filled in as it runs).
    #[serde(default)]
    pub applied_at: Option<u64>,
}

fn event(at: u64, action: Action, node: Option<usize>) -> FaultEvent {
    FaultEvent { at, action, node, applied_at: None }
}

/// The schedule of `scenario` for a workload of `duration` over `nodes` nodes.
pub fn schedule(scenario: &str, seed: u64, duration: Duration, nodes: usize) -> anyhow::Result<Vec<FaultEvent>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let total = duration.as_millis() as u64;
    // A fault starts in the first half, lasts up to 5 s, and ends before the last fifth of the run.
    let start = rng.gen_range(total / 5..=total * 2 / 5);
    let length = 5_000.min((total * 4 / 5).saturating_sub(start)).max(1);
    let node = rng.gen_range(0..nodes.max(1));
    Ok(match scenario {
        "baseline" => vec![],
        "kill" => {
            // Kill after kill, a random node each time, from the first tenth to the last fifth of the run:
            // down for a 24th to an 8th of the run (0.3-3 s), then up a 24th to a 12th before the next.
            let mut events = vec![];
            let mut at = rng.gen_range(total / 10..=total / 5);
            loop {
                let down = rng.gen_range((total / 24).clamp(300, 3_000)..=(total / 8).clamp(300, 3_000));
                if at + down > total * 4 / 5 && !events.is_empty() {
                    break;
                }
                let victim = rng.gen_range(0..nodes.max(1));
                events.push(event(at, Action::Kill9, Some(victim)));
                events.push(event(at + down, Action::Restart, Some(victim)));
                at += down + rng.gen_range((total / 24).max(300)..=(total / 12).max(300));
            }
            events
        }
        "pause" => vec![event(start, Action::Freeze, Some(node)), event(start + length, Action::Thaw, Some(node))],
        "isolate" => vec![event(start, Action::Isolate, Some(node)), event(start + length, Action::Heal, None)],
        // Longer than a request's timeout, so that the clients a cut-off leader held up go on while it lasts.
        "split" => vec![event(start, Action::Split, Some(node)), event(total * 4 / 5, Action::Heal, None)],
        "latency" => {
            let delay_ms = rng.gen_range(5..=30);
            let jitter_ms = rng.gen_range(1..=delay_ms);
            vec![
                event(total / 10, Action::Delay { delay_ms, jitter_ms }, None),
                event(total * 4 / 5, Action::Heal, None),
            ]
        }
        "partition" => vec![event(start, Action::Silence, Some(node)), event(start + length, Action::Heal, None)],
        "reset" => {
            let mut at: Vec<u64> =
                (0..rng.gen_range(3..=5)).map(|_| rng.gen_range(total / 10..=total * 4 / 5)).collect();
            at.sort_unstable();
            at.into_iter().map(|t| event(t, Action::Reset, None)).collect()
        }
        "panic" => vec![event(start, Action::PanicOn, None), event(start + length, Action::PanicOff, None)],
        "rolling" => {
            // Each node in turn, from a seeded first one, in slots over the first four fifths of the run.
            let slot = (total * 7 / 10) / nodes.max(1) as u64;
            (0..nodes)
                .flat_map(|k| {
                    let i = (node + k) % nodes;
                    let at = total / 10 + k as u64 * slot;
                    [event(at, Action::Terminate, Some(i)), event(at + slot / 4, Action::RestartReady, Some(i))]
                })
                .collect()
        }
        "skew" => {
            let skew_ms = rng.gen_range(2_000..=10_000) * if rng.gen_bool(0.5) { 1 } else { -1 };
            vec![event(0, Action::Skew { skew_ms }, Some(node))]
        }
        "overload" => vec![],
        "join" => vec![event(start, Action::Join, None)],
        "drain" => {
            vec![event(total / 10, Action::Join, None), event(start.max(total / 10 + 1_000), Action::Drain, Some(node))]
        }
        "lose" => {
            // Killed half a second into the moves the join starts, and never restarted.
            let at = total / 10;
            vec![event(at, Action::Join, None), event(at + 500, Action::Kill9, Some(node))]
        }
        "drill" => {
            let down = rng.gen_range(500..=2_000);
            vec![event(start, Action::KillAll, None), event(start + down, Action::RestartAll, None)]
        }
        other => anyhow::bail!(
            "unknown scenario {other:?} (one of: {})",
            SCENARIOS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let d = Duration::from_secs(20);
        for (scenario, _) in SCENARIOS {
            assert_eq!(
                schedule(scenario, 7, d, 3).expect("a known scenario"),
                schedule(scenario, 7, d, 3).expect("a known scenario"),
                "{scenario}"
            );
        }
        let kills: std::collections::HashSet<String> =
            (0..20).map(|s| format!("{:?}", schedule("kill", s, d, 3).expect("a known scenario"))).collect();
        assert!(kills.len() > 1, "different seeds give different schedules");
        for e in schedule("pause", 3, d, 3).expect("a known scenario") {
            assert!(e.at < 16_000, "faults end before the last fifth: {e:?}");
        }
        assert!(schedule("nope", 1, d, 3).is_err());
        for s in 0..20 {
            for total in [6, 20, 60] {
                let kills = schedule("kill", s, Duration::from_secs(total), 3).expect("a known scenario");
                let n = kills.iter().filter(|e| e.action == Action::Kill9).count();
                assert!(n >= 2, "a {total} s run kills repeatedly: {kills:?}");
                assert!(kills.windows(2).all(|w| w[0].at < w[1].at), "in time order: {kills:?}");
                assert!(
                    kills.chunks(2).all(|c| c[0].action == Action::Kill9
                        && c[1].action == Action::Restart
                        && c[0].node == c[1].node),
                    "one node down at a time, restarted before the next kill: {kills:?}"
                );
                assert!(kills.last().is_some_and(|e| e.action == Action::Restart && e.at <= total * 800));
            }
        }
        for s in 0..20 {
            match schedule("skew", s, d, 3).expect("a known scenario").as_slice() {
                [FaultEvent { action: Action::Skew { skew_ms }, node: Some(n), .. }] => {
                    assert!((2_000..=10_000).contains(&skew_ms.abs()) && *n < 3, "{skew_ms} {n}")
                }
                other => panic!("one skew: {other:?}"),
            }
        }
    }
}
