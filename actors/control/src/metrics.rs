//! Prometheus metrics of the placement driver (`playground_placement_*`), registered in the
//! process-wide default registry.

use std::sync::LazyLock;

use prometheus::{register, Histogram, HistogramOpts, IntCounter, IntGauge, IntGaugeVec, Opts};

fn registered<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    // Registration fails only for a duplicate name, which these statics rule out.
    register(Box::new(c.clone())).expect("metric names are unique");
    c
}

// The placement driver's, set where it runs (the metadata group's leader); zero elsewhere.

pub static MOVES_IN_PROGRESS: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(
        IntGauge::new("playground_placement_moves_in_progress", "Shards whose replicas are being moved now.")
            .expect("valid metric"),
    )
});

pub static MOVES: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(
        IntCounter::new("playground_placement_moves_total", "Shard replica moves completed.").expect("valid metric"),
    )
});

pub static MOVE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    registered(
        Histogram::with_opts(
            HistogramOpts::new(
                "playground_placement_move_duration_seconds",
                "Time for one round of shard moves: new replicas opened, caught up and voting, old ones removed.",
            )
            .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
        )
        .expect("valid metric"),
    )
});

pub static REPLICAS_PER_NODE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    registered(
        IntGaugeVec::new(
            Opts::new("playground_placement_replicas", "Shard replicas the cluster's record places on each node."),
            &["node"],
        )
        .expect("valid metric"),
    )
});

pub static LEADERS_PER_NODE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    registered(
        IntGaugeVec::new(Opts::new("playground_placement_leaders", "Shards each node leads."), &["node"])
            .expect("valid metric"),
    )
});

pub static UNDER_REPLICATED: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(
        IntGauge::new(
            "playground_placement_under_replicated_shards",
            "Shards with fewer voting replicas than the replication factor.",
        )
        .expect("valid metric"),
    )
});

pub fn set_moves_in_progress(n: usize) {
    MOVES_IN_PROGRESS.set(n as i64);
}

/// `n` moves completed in one round that took `took`.
pub fn moves_done(n: usize, took: std::time::Duration) {
    MOVES.inc_by(n as u64);
    MOVE_SECONDS.observe(took.as_secs_f64());
}

/// Touches every metric so that each appears in `/metrics` from the start, at zero, on every process.
pub fn init() {
    LazyLock::force(&MOVES_IN_PROGRESS);
    LazyLock::force(&MOVES);
    LazyLock::force(&MOVE_SECONDS);
    LazyLock::force(&REPLICAS_PER_NODE);
    LazyLock::force(&LEADERS_PER_NODE);
    LazyLock::force(&UNDER_REPLICATED);
}

/// A node's own series, present from the start at zero so that dashboards find them on every node.
pub fn init_node(node: &str) {
    REPLICAS_PER_NODE.with_label_values(&[node]);
    LEADERS_PER_NODE.with_label_values(&[node]);
}
