//! Prometheus metrics of the actor and storage layers, registered in the process-wide default registry.

use std::sync::LazyLock;

use prometheus::{
    register, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

fn registered<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    // Registration fails only for a duplicate name, which these statics rule out.
    register(Box::new(c.clone())).expect("metric names are unique");
    c
}

pub static ACTIVATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new("playground_actor_activations_total", "Entity actors activated, by kind."),
            &["kind"],
        )
        .expect("valid metric"),
    )
});

pub static PASSIVATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new("playground_actor_passivations_total", "Entity actors passivated when idle, by kind."),
            &["kind"],
        )
        .expect("valid metric"),
    )
});

pub static RESTARTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "playground_actor_restarts_total",
                "Actors restarted by their supervisor after a failure, by kind.",
            ),
            &["kind"],
        )
        .expect("valid metric"),
    )
});

pub static ACTIVE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    registered(
        IntGaugeVec::new(Opts::new("playground_actor_active", "Entity actors alive now, by kind."), &["kind"])
            .expect("valid metric"),
    )
});

pub static COMMIT_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    registered(
        Histogram::with_opts(
            HistogramOpts::new(
                "playground_storage_commit_duration_seconds",
                "Time to apply one group commit and make it durable (flush plus fdatasync).",
            )
            .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
        )
        .expect("valid metric"),
    )
});

pub static WRITE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    registered(
        Histogram::with_opts(
            HistogramOpts::new(
                "playground_storage_write_duration_seconds",
                "Time from submitting one log entry to it being durable, queueing included.",
            )
            .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
        )
        .expect("valid metric"),
    )
});

pub static BATCH_ENTRIES: LazyLock<Histogram> = LazyLock::new(|| {
    registered(
        Histogram::with_opts(
            HistogramOpts::new("playground_storage_batch_entries", "Log entries made durable by one group commit.")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]),
        )
        .expect("valid metric"),
    )
});

pub static COMMITS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new("playground_storage_commits_total", "Group commits, by outcome (ok or error)."),
            &["outcome"],
        )
        .expect("valid metric"),
    )
});

pub static CALLS: LazyLock<HistogramVec> = LazyLock::new(|| {
    registered(
        HistogramVec::new(
            HistogramOpts::new(
                "playground_actor_call_duration_seconds",
                "Time of one call into a shard, by entity kind and outcome.",
            )
            .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0]),
            &["kind", "outcome"],
        )
        .expect("valid metric"),
    )
});

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

/// Touches every metric so that each appears in `/metrics` from the start, at zero.
pub fn init() {
    for kind in ["user", "order", "email"] {
        ACTIVATIONS.with_label_values(&[kind]);
        PASSIVATIONS.with_label_values(&[kind]);
        RESTARTS.with_label_values(&[kind]);
        ACTIVE.with_label_values(&[kind]);
    }
    RESTARTS.with_label_values(&["shard"]);
    COMMITS.with_label_values(&["ok"]);
    COMMITS.with_label_values(&["error"]);
    LazyLock::force(&COMMIT_SECONDS);
    LazyLock::force(&WRITE_SECONDS);
    LazyLock::force(&BATCH_ENTRIES);
    LazyLock::force(&CALLS);
    LazyLock::force(&MOVES_IN_PROGRESS);
    LazyLock::force(&MOVES);
    LazyLock::force(&MOVE_SECONDS);
    LazyLock::force(&REPLICAS_PER_NODE);
    LazyLock::force(&LEADERS_PER_NODE);
    LazyLock::force(&UNDER_REPLICATED);
}
