//! Prometheus metrics of the shard groups, `playground_raft_*`, in the process-wide default registry.

use std::sync::LazyLock;

use prometheus::{register, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

fn registered<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    // Registration fails only for a duplicate name, which these statics rule out.
    register(Box::new(c.clone())).expect("metric names are unique");
    c
}

fn per_shard_gauge(name: &str, help: &str) -> IntGaugeVec {
    registered(IntGaugeVec::new(Opts::new(name, help), &["shard"]).expect("valid metric"))
}

pub(crate) static TERM: LazyLock<IntGaugeVec> =
    LazyLock::new(|| per_shard_gauge("playground_raft_term", "Current raft term of each shard group held here."));

pub(crate) static IS_LEADER: LazyLock<IntGaugeVec> =
    LazyLock::new(|| per_shard_gauge("playground_raft_is_leader", "1 when this node leads the shard group, else 0."));

pub(crate) static APPLY_LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    per_shard_gauge(
        "playground_raft_apply_lag_entries",
        "Raft entries committed but not yet applied to the shard's state machine (sampled every second).",
    )
});

pub(crate) static LEADER_CHANGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new("playground_raft_leader_changes_total", "New leaders (or terms) seen by each shard group."),
            &["shard"],
        )
        .expect("valid metric"),
    )
});

pub(crate) static COMMIT_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    registered(
        Histogram::with_opts(
            HistogramOpts::new(
                "playground_raft_commit_duration_seconds",
                "Time of one raft proposal (client_write): replicated to a majority, durable and applied.",
            )
            .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0]),
        )
        .expect("valid metric"),
    )
});

/// Touches the metrics of a shard so that they appear in `/metrics` from the start.
pub(crate) fn init_shard(shard: &str) {
    TERM.with_label_values(&[shard]);
    IS_LEADER.with_label_values(&[shard]);
    APPLY_LAG.with_label_values(&[shard]);
    LEADER_CHANGES.with_label_values(&[shard]);
    LazyLock::force(&COMMIT_SECONDS);
}

pub(crate) static READ_CHECKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "playground_raft_read_checks_total",
                "Leadership checks before a read, by how they were served: on the leader's lease, or by a \
                 read-index round to a quorum.",
            ),
            &["path"],
        )
        .expect("valid metric"),
    )
});

pub(crate) static QUIET_GROUPS: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(
        IntGauge::new(
            "playground_raft_quiet_groups",
            "Groups held here that are quiet now: idle, with no raft heartbeats or timers.",
        )
        .expect("valid metric"),
    )
});

pub(crate) static DETECTED_ELECTIONS: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(
        IntCounter::new(
            "playground_raft_detector_elections_total",
            "Elections this node stood for because the failure detector held its leader's node down.",
        )
        .expect("valid metric"),
    )
});
